"""Checkpoints that are written atomically and loaded without executing any code.

A checkpoint is a folder ``checkpoints/step_<agent steps, 12 digits>/`` holding

    tensors.safetensors   every tensor and numpy array of the state, by its path in the state,
                          except the replay frames and the EWC terms
    state.json            everything else (numbers, strings, lists, dicts), with placeholders
                          pointing at the tensors and at the chunks
    COMPLETE              written last, inside the temporary folder, before the atomic rename

and the replay frames and EWC terms it holds are chunks in ``checkpoints/chunks/``
(``ewc_dqn.chunk_store``): immutable files named by the digest of their contents, shared by every
checkpoint that holds them, so a checkpoint writes only the chunks that are new since the chunks
on disk (the slots the replays wrote into, the terms consolidated since).

The state is any nesting of dicts, lists and tuples whose leaves are tensors, numpy arrays,
``Chunks``, numbers, strings, booleans or None: the explicit union of the ``state_dict()`` of each
owner (agent, optimiser, EWC, task inference, replay, counters, RNGs). Its new chunks are written
and fsynced first; then the rest goes to a hidden temporary folder, fsynced, marked complete and
renamed into place (Dopamine's sentinel idea), so a crash at any moment leaves either the
previous checkpoints or a complete new one, each with all of its chunks; loading considers only
complete folders. After the rename all but the newest ``keep`` checkpoints are deleted, then the
temporary folders of saves that were killed, then the chunks none of the kept checkpoints refers
to (none at all while the state.json of a kept one cannot be read: its chunks are unknown).
Nothing is unpickled: safetensors and the chunks hold raw arrays and JSON the rest, so a
checkpoint from elsewhere cannot run code.

A write that fails (a full disk, a read-only folder) removes its temporary folder and the chunks
it wrote and raises a one-line ``CheckpointError``; the checkpoints already written stay as they
were. A complete checkpoint damaged afterwards (a truncated copy, a disk error, a chunk missing,
truncated or altered) is skipped by ``load_newest_checkpoint``, which sets it aside and falls
back to the next newest one. A set-aside checkpoint keeps its own files, not its chunks. A chunk
shared by several checkpoints is one file: damage to it reaches all of them. A save checks a
chunk already on disk once per process (by reading and hashing it, unless the process wrote it
or loaded it itself) and writes a damaged one again, so a resumed run never refers to it.

A checkpoint folder is not self-contained: it loads from inside its run's ``checkpoints/``, beside
``chunks/``. Copy the whole ``checkpoints/`` folder (or the run folder) to move one.

Format 1 (before the chunk store: every array inside ``tensors.safetensors``) still loads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ewc_dqn.chunk_store import (
    CHUNK_DIR,
    ChunkError,
    Chunks,
    collect_garbage,
    fsync_dir,
    read_chunks,
    remove,
    write_chunks,
)
from ewc_dqn.errors import UserError

CHECKPOINT_DIR = "checkpoints"
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
COMPLETE_FILE = "COMPLETE"
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
"""Format versions that load: 1 held every array in ``tensors.safetensors``."""
_LEFTOVER_PREFIXES = (".tmp-step_", ".old-step_")
"""Folders of a save killed before its rename (``.tmp-``) or while replacing a checkpoint of
the same step (``.old-``)."""
DAMAGED_PREFIX = "damaged-"
"""A damaged checkpoint set aside by ``load_newest_checkpoint``: ``damaged-step_<steps>``."""
_NAME = re.compile(r"^step_(\d{12})$")
_OS_ERROR = re.compile(r"os error (\d+)")


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete, corrupt, does not fit the run or cannot be written."""


def does_not_fit(
    path: Path, error: BaseException, run: str = "its run's config"
) -> CheckpointError:
    """The error for a checkpoint whose state does not load into the run's objects (another
    suite, network or variant; a field of the wrong type): ``error`` is what loading raised."""
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    return CheckpointError(f"checkpoint {path} does not fit {run}: {reason}")


def checkpoint_name(step: int) -> str:
    return f"step_{step:012d}"


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: Mapping[str, Any],
    keep: int = 3,
    before_rename: Callable[[], None] | None = None,
) -> Path:
    """Write ``state`` as the checkpoint of ``step`` under ``run_dir/checkpoints`` atomically,
    delete all but the newest ``keep`` complete checkpoints and then the chunks none of them
    refers to. ``before_rename`` is called once everything is on disk and synced, just before
    the checkpoint is renamed into place (``ewc_dqn.faults``). Returns the checkpoint folder."""
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    new_chunks: list[Path] = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tensors: dict[str, torch.Tensor] = {}
        chunks: list[Chunks] = []
        meta = _encode(state, "", tensors, chunks)
        # The chunks first: a checkpoint is never in place before every chunk it refers to.
        new_chunks = write_chunks(root / CHUNK_DIR, chunks)
        tmp.mkdir()
        _save_tensors(tensors, tmp / TENSORS_FILE)
        doc = {"format_version": FORMAT_VERSION, "step": step, "state": meta}
        _write_synced(tmp / STATE_FILE, json.dumps(doc).encode())
        _write_synced(tmp / COMPLETE_FILE, b"ok\n")
        fsync_dir(tmp)
        if before_rename is not None:
            before_rename()
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        remove(new_chunks)  # new to the store, so no other checkpoint refers to them
        if isinstance(e, OSError):
            raise CheckpointError(
                f"cannot write checkpoint {final}: {_os_reason(e)}; the checkpoints written "
                "before it are intact"
            ) from e
        raise
    if final.exists():  # re-saving the same step (e.g. a final save right after a periodic one)
        old = root / f".old-{checkpoint_name(step)}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(root)
    for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    _remove_leftovers(root)
    referenced = referenced_chunks(run_dir)
    if referenced is not None:  # else a kept checkpoint could not be read: delete no chunk
        collect_garbage(root / CHUNK_DIR, referenced)
    return final


def _remove_leftovers(root: Path) -> None:
    """Delete the temporary folders of saves that were killed (one process writes a run's
    checkpoints, ``ewc_dqn.run_lock``, and this save's own are renamed or gone by now)."""
    for path in root.iterdir():
        if path.name.startswith(_LEFTOVER_PREFIXES) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def referenced_chunks(run_dir: Path) -> set[str] | None:
    """Digests of the chunks that the complete checkpoints of ``run_dir`` refer to; None when
    the state.json of one of them cannot be read or parsed (its chunks are unknown, so garbage
    collection waits until it is rotated out)."""
    found: set[str] = set()
    for folder in list_checkpoints(run_dir):
        chunks = chunks_of(folder)
        if chunks is None:
            return None
        found |= chunks
    return found


def chunks_of(folder: Path) -> set[str] | None:
    """Digests of the chunks one checkpoint folder refers to; None when its state.json cannot be
    read or parsed."""
    try:
        doc = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    found: set[str] = set()
    _collect_chunks(doc.get("state") if isinstance(doc, dict) else None, found)
    return found


def _collect_chunks(node: Any, found: set[str]) -> None:
    if isinstance(node, list):
        for v in node:
            _collect_chunks(v, found)
    elif isinstance(node, dict):
        chunks = node.get("__chunks__")
        if isinstance(chunks, dict) and isinstance(chunks.get("parts"), list):
            found.update(p[0] for p in chunks["parts"] if isinstance(p, list) and p)
            return
        for v in node.values():
            _collect_chunks(v, found)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / COMPLETE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder or a checkpoint's file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file or folder: {path}")
    if path.is_file() and path.name in (TENSORS_FILE, STATE_FILE, COMPLETE_FILE):
        path = path.parent
    if (path / STATE_FILE).exists() or (path / TENSORS_FILE).exists():
        if not (path / COMPLETE_FILE).is_file():
            raise CheckpointError(f"{path} is an incomplete checkpoint (no {COMPLETE_FILE})")
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(f"{path} holds no complete checkpoint")
    return latest


def load_checkpoint(
    path: Path, device: torch.device | str = "cpu", parts: Collection[str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Load (step, state) from a checkpoint folder, a run folder (its newest checkpoint) or a file
    of a checkpoint. Tensors come back as torch tensors on ``device`` where they were tensors,
    as numpy arrays where they were arrays, and as ``Chunks`` (the array read, with the digests
    just checked; ``np.asarray`` gives the array) where they were chunks.

    ``parts``: only these owners of the state (its top-level keys, e.g. ``("agent", "labeler")``)
    are decoded; the others are left out of the returned state, and their chunks (the replays'
    frames, the EWC terms: gigabytes at Atari scale) are never read or hashed."""
    folder = resolve_checkpoint(path)
    try:
        doc = json.loads((folder / STATE_FILE).read_text())
        tensors = load_file(str(folder / TENSORS_FILE), device="cpu")
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"checkpoint {folder} is unreadable: {_one_line(e)}") from None
    if not isinstance(doc, dict) or doc.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(f"checkpoint {folder} has an unknown format")
    step = doc.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {folder} has no valid step (got {step!r})")
    try:
        node = doc.get("state")
        if parts is not None and isinstance(node, dict) and isinstance(node.get("__dict__"), dict):
            node = {"__dict__": {k: v for k, v in node["__dict__"].items() if k in parts}}
        state = _decode(node, tensors, torch.device(device), folder.parent / CHUNK_DIR)
    except ChunkError as e:
        raise CheckpointError(f"checkpoint {folder} is damaged: {e}") from None
    except OSError as e:
        raise CheckpointError(f"checkpoint {folder} is unreadable: {_one_line(e)}") from None
    except KeyError as e:
        raise CheckpointError(f"checkpoint {folder} is missing tensor {e}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {folder} is corrupt: {_one_line(e)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {folder} holds no state")
    return step, state


StateCheck = Callable[[dict[str, Any]], "str | None"]
"""Looks at a loaded state; returns why it cannot be used, or None."""


def load_newest_checkpoint(
    run_dir: Path, device: torch.device | str = "cpu", check: StateCheck | None = None
) -> tuple[Path, int, dict[str, Any]] | None:
    """(folder, step, state) of the newest complete checkpoint of ``run_dir`` that loads and
    passes ``check``; None when the run has no complete checkpoint.

    A newer checkpoint that fails is damaged (truncated, corrupt, non-finite weights): it is
    renamed ``damaged-step_<steps>`` so that it is never loaded or kept in place of a good one,
    and a warning naming it goes to stderr. CheckpointError when every checkpoint fails (then
    nothing is renamed)."""
    found = list_checkpoints(run_dir)
    skipped: list[tuple[Path, str]] = []
    for folder in reversed(found):
        try:
            step, state = load_checkpoint(folder, device=device)
            why = check(state) if check is not None else None
        except CheckpointError as e:
            why = str(e)
        if why is None:
            for bad, reason in skipped:
                aside = _set_aside(bad)
                print(
                    f"warning: skipping damaged checkpoint {bad} ({reason}); moved to {aside}; "
                    f"resuming from {folder}",
                    file=sys.stderr,
                )
            return folder, step, state
        skipped.append((folder, why))
    if skipped:
        reasons = "; ".join(f"{folder.name}: {why}" for folder, why in skipped)
        raise CheckpointError(f"{run_dir} holds no loadable checkpoint ({reasons})")
    return None


def _set_aside(folder: Path) -> Path:
    """Rename a damaged checkpoint out of the ``step_*`` names (kept for inspection)."""
    target = folder.with_name(DAMAGED_PREFIX + folder.name)
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{DAMAGED_PREFIX}{folder.name}-{n}")
    os.replace(folder, target)
    return target


# --- encoding -----------------------------------------------------------------------------


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], chunks: list[Chunks]) -> Any:
    if isinstance(obj, Chunks):
        chunks.append(obj)
        parts = [[d, list(p.shape)] for d, p in zip(obj.digests, obj.parts, strict=True)]
        return {"__chunks__": {"dtype": obj.dtype.name, "shape": list(obj.shape), "parts": parts}}
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous()  # written before anything changes
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {"__ndarray__": path}
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        if all(isinstance(k, str) for k in keys):
            return {"__dict__": {k: _encode(obj[k], f"{path}/{k}", tensors, chunks) for k in keys}}
        if all(isinstance(k, (int, np.integer)) for k in keys):  # optimiser state: int keys
            return {
                "__intdict__": {
                    str(int(k)): _encode(obj[k], f"{path}/{k}", tensors, chunks) for k in keys
                }
            }
        raise TypeError(f"checkpoint state at {path or '/'} mixes key types: {keys[:5]}")
    if isinstance(obj, tuple):
        return {
            "__tuple__": [_encode(v, f"{path}/{i}", tensors, chunks) for i, v in enumerate(obj)]
        }
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors, chunks) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {path or '/'}")


def _decode_chunks(node: Any, store: Path) -> Chunks:
    """An array from its chunks (``Chunks``, digests checked); ChunkError for any description
    but the one ``_encode`` writes (plain numbers, a list of non-negative sizes, the parts)."""
    if not (isinstance(node, dict) and {"dtype", "shape", "parts"} <= set(node)):
        raise ChunkError("a chunked array lacks its dtype, shape or parts")
    shape = node["shape"]
    if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
    ):
        raise ChunkError(f"a chunked array has no valid shape (got {shape!r})")
    try:
        dtype = np.dtype(node["dtype"])
    except (TypeError, ValueError):
        raise ChunkError(f"a chunked array has no valid dtype (got {node['dtype']!r})") from None
    return read_chunks(store, dtype, tuple(shape), node["parts"])


def _decode(
    obj: Any, tensors: Mapping[str, torch.Tensor], device: torch.device, store: Path
) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, device, store) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]].to(device)
    if "__ndarray__" in obj:
        return tensors[obj["__ndarray__"]].numpy()
    if "__chunks__" in obj:
        return _decode_chunks(obj["__chunks__"], store)
    if "__dict__" in obj:
        return {k: _decode(v, tensors, device, store) for k, v in obj["__dict__"].items()}
    if "__intdict__" in obj:
        return {int(k): _decode(v, tensors, device, store) for k, v in obj["__intdict__"].items()}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, device, store) for v in obj["__tuple__"])
    raise ValueError(f"unknown checkpoint node {sorted(obj)[:3]}")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, fsynced; its I/O errors (reported as SafetensorError) as OSError.
    Tensors that share memory (views of one storage, which safetensors refuses) are copied."""
    seen: set[int] = set()
    unshared = {}
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr()
        unshared[name] = tensor.clone() if storage in seen and tensor.numel() else tensor
        seen.add(storage)
    try:
        save_file(unshared, str(path))
    except SafetensorError as e:
        match = _OS_ERROR.search(str(e))
        if match is None:
            raise
        code = int(match.group(1))
        raise OSError(code, os.strerror(code), str(path)) from e
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_reason(e: OSError) -> str:
    return e.strerror or _one_line(e)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
