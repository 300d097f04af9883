"""Checks that a folder or file can be created, made before anything is created or computed.

A run folder that cannot be made (its parent is read-only, a regular file stands in its place,
its path is too long for the files a run writes into it) is refused as one line before anything
is written, so that no half-made folder is left behind; ``evaluate.py --json`` checks its output
file before evaluating rather than after the scores are printed.
"""

from __future__ import annotations

import os
from pathlib import Path

from ewc_dqn.errors import UserError


def check_creatable_folder(path: Path, what: str, room: int = 0) -> None:
    """Raise UserError unless ``path`` is a folder, or can be made one, in which files whose
    paths relative to it are up to ``room`` characters long can be written."""
    # os.path's tests, not Path's: these answer False for a path too long to look up.
    path = Path(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path} is a file, not a folder")
    anchor = _nearest_existing(path)
    if not os.path.isdir(anchor):
        raise UserError(f"cannot make {what} {path}: {anchor} is a file, not a folder")
    name_max = _pathconf(anchor, "PC_NAME_MAX", 255)
    long_names = [p for p in path.parts if len(os.fsencode(p)) > name_max]
    if long_names:
        raise UserError(
            f"cannot make {what} {_short(path)}: a folder name is longer than the filesystem's "
            f"{name_max} characters ({_short(Path(long_names[0]))})"
        )
    path_max = _pathconf(anchor, "PC_PATH_MAX", 4096)
    if len(os.fsencode(str(path))) + room >= path_max:
        raise UserError(
            f"cannot make {what} {_short(path)}: its path is too long (the files inside it "
            f"would pass the filesystem's {path_max - 1} characters)"
        )
    if not os.access(anchor, os.W_OK | os.X_OK):
        target = "write in" if anchor == path else "make"
        raise UserError(f"cannot {target} {what} {path}: {anchor} is not writable")


def check_writable_file(path: Path, what: str) -> None:
    """Raise UserError unless a file can be written at ``path`` (its folder may be missing)."""
    path = Path(path)
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder, not a file")
    if os.path.lexists(path) and not os.access(path, os.W_OK):
        raise UserError(f"cannot write {what} {path}: it is not writable")
    check_creatable_folder(path.parent, f"the folder of {what}", room=len(path.name) + 8)


def make_folder(path: Path) -> Path | None:
    """``mkdir -p path``; the topmost folder this created (None if ``path`` existed), so that a
    caller that fails later can remove exactly what it made."""
    path = Path(path)
    anchor = _nearest_existing(path)
    path.mkdir(parents=True, exist_ok=True)
    if anchor == path:
        return None
    created = path
    while created.parent != anchor:
        created = created.parent
    return created


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a relative path ends at '.')."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError):
        return default


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-30:]}"
