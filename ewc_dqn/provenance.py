"""What a run was made with: ``provenance.json`` in every run folder.

Written once, when the run folder is created::

    {
      "python": "3.11.9",
      "packages": {"torch": "2.13.0", "numpy": ..., "ale-py": ..., "gymnasium": ...,
                   "minatar": ..., "ewc-dqn": ...},          # None where not installed
      "git": {"commit": "<sha>", "dirty": false} | null,     # null outside a git checkout
      "roms": {"Pong": "<md5>", ...},                        # Atari games of the schedule
      "device": "cpu" | "cuda:0 (<name>)",
      "cpu": {"model": "AMD EPYC", "capability": "AVX512"},  # capability: torch's kernels
      "torch_threads": 2,
      "created": "2026-11-30T12:00:00+00:00"
    }

Some of it changes results (``result_fields``: the interpreter, the numerical and environment
packages, the ROMs, the kind of device and the CPU's instruction set); the rest (this package's
commit, the CPU's name, threads, date) is recorded for the reader. The instruction set is there
because torch dispatches its CPU kernels by it (``torch.backends.cpu.get_cpu_capability()``), so
the same seed, commit and packages give other floating-point results, and within some thousand
steps another run, on another CPU. ``evaluate.py compare`` warns when runs differ in a result
field, and ``--resume`` refuses a run whose ROMs are not the installed ones. Recording never
fails a run: what cannot be read is written as null.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from ale_py import roms

from envs.games import resolve_game
from ewc_dqn.errors import UserError
from ewc_dqn.run_folder import read_json, write_json_atomic

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("torch", "numpy", "ale-py", "gymnasium", "minatar", "ewc-dqn")
RESULT_FIELDS = ("python", "torch", "numpy", "ale-py", "gymnasium", "minatar")
"""Versions that change results; every ROM, the device and the CPU's instruction set do too."""
OPTIONAL_FIELDS = ("rom ", "device", "cpu instruction set")
"""Result fields a record may lack without clashing: a game a run does not play, and what
records made before it was kept do not say."""


class ProvenanceError(UserError):
    """A run's record does not fit this installation (one-line message)."""


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state(root: Path) -> dict[str, Any] | None:
    """{"commit", "dirty"} when ``root`` is the top of a git checkout, else None (also without
    git). Untracked files do not make the tree dirty."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        # An installed package can sit inside some other checkout (a venv in a project): only
        # a checkout whose top is the package's own parent folder counts.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"commit": git("rev-parse", "HEAD"), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def rom_md5(rom_id: str) -> str | None:
    """MD5 of the ROM file ale-py loads for ``rom_id`` (``pong``); None if it has none, or the
    file is not the one ale-py expects."""
    try:
        path = roms.get_rom_path(rom_id)
    except OSError:
        return None
    return None if path is None else hashlib.md5(Path(path).read_bytes()).hexdigest()


def installed_roms(games: Iterable[str]) -> dict[str, str | None]:
    """{game: MD5 of its installed ROM} for the Atari games among ``games``."""
    specs = [resolve_game(g) for g in games]
    return {s.name: rom_md5(s.env_id) for s in specs if s.suite == "atari"}


def cpu_description() -> dict[str, str | None]:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``) and the
    instruction set torch's CPU kernels dispatch to (``"AVX512"``, ``"AVX2"``, ...)."""
    model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability()}


def build_provenance(games: Iterable[str], device: torch.device, threads: int) -> dict[str, Any]:
    """The record of a run playing ``games`` on ``device`` with ``threads`` torch threads
    (0: torch's current setting)."""
    name = str(device)
    if device.type == "cuda" and torch.cuda.is_available():
        name += f" ({torch.cuda.get_device_name(device)})"
    return {
        "python": platform.python_version(),
        "packages": {p: package_version(p) for p in PACKAGES},
        "git": git_state(Path(__file__).resolve().parents[1]),
        "roms": installed_roms(games),
        "device": name,
        "cpu": cpu_description(),
        "torch_threads": threads if threads > 0 else torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_provenance(
    run_dir: Path, games: Iterable[str], device: torch.device, threads: int
) -> None:
    """Write ``run_dir/provenance.json`` (see the module docstring)."""
    write_json_atomic(Path(run_dir) / PROVENANCE_FILE, build_provenance(games, device, threads))


def read_provenance(run_dir: Path) -> dict[str, Any] | None:
    """A run's record, or None for a run made before records existed (or unreadable)."""
    path = Path(run_dir) / PROVENANCE_FILE
    try:
        record = read_json(path)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def device_kind(device: str) -> str:
    """What of a recorded device changes results: ``cpu``, or the card's name for CUDA
    (``"cuda:1 (NVIDIA H200)"`` -> ``"NVIDIA H200"``: which card of a machine does not)."""
    if "(" in device:
        return device[device.index("(") + 1 : device.rindex(")")]
    return device.split(":")[0]


def result_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a record that change results: versions, ROM MD5s (``rom <game>``), the
    device and the CPU's instruction set (those two only where recorded: records made before
    they were kept do not clash on them)."""
    packages = record.get("packages") or {}
    fields = {"python": record.get("python")}
    fields.update({p: packages.get(p) for p in RESULT_FIELDS if p != "python"})
    fields.update({f"rom {g}": md5 for g, md5 in (record.get("roms") or {}).items()})
    if record.get("device"):
        fields["device"] = device_kind(record["device"])
    if isinstance(record.get("cpu"), dict):
        fields["cpu instruction set"] = record["cpu"].get("capability")
    return fields


def differences(records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per result field on which the records ``{run name: record}`` disagree,
    naming which runs have which value."""
    fields = {name: result_fields(r) for name, r in records.items()}
    keys = sorted({k for f in fields.values() for k in f})
    lines = []
    for key in keys:
        by_value: dict[str, list[str]] = {}
        for name, f in fields.items():
            if key in f or not key.startswith(OPTIONAL_FIELDS):
                by_value.setdefault(str(f.get(key)), []).append(name)
        if len(by_value) > 1:
            parts = "; ".join(f"{v} in {', '.join(runs)}" for v, runs in by_value.items())
            lines.append(f"{key}: {parts}")
    return lines


def compare_warnings(run_dirs: Iterable[Path]) -> list[str]:
    """Warnings for ``evaluate.py compare``: runs that differ in a result field
    (``result_fields``), and runs without a record."""
    records: dict[str, dict[str, Any]] = {}
    missing = []
    for run in run_dirs:
        record = read_provenance(run)
        if record is None:
            missing.append(str(run))
        else:
            records[str(run)] = record
    notes = [
        f"warning: runs made with different {line}; results may differ for that reason alone"
        for line in differences(records)
    ]
    if missing and records:
        notes.append(
            f"no {PROVENANCE_FILE} in {', '.join(missing)} (made before runs recorded one): "
            "versions and ROMs cannot be compared"
        )
    return notes


def check_roms(run_dir: Path) -> None:
    """Raise ProvenanceError if a ROM recorded in ``run_dir`` differs from the installed one
    (nothing to check for a run without a record)."""
    record = read_provenance(run_dir)
    if record is None:
        return
    recorded = record.get("roms") or {}
    installed = installed_roms(recorded)
    changed = [g for g, md5 in recorded.items() if installed.get(g) != md5]
    if changed:
        detail = ", ".join(
            f"{g} (run {recorded[g]}, installed {installed.get(g) or 'none'})" for g in changed
        )
        raise ProvenanceError(
            f"{run_dir} was trained with other ROMs than the installed ones: {detail}; "
            "install the ale-py version it was made with to resume it"
        )
