"""A run's store of checkpoint chunks: immutable files named by the digest of their contents.

A replay's frames are most of a checkpoint (353 MB per task at Atari's 50,000 transitions) and
most of them have not changed since the previous checkpoint: only the slots the circular buffer
wrote since then have. The EWC terms come next (52 MB per task with the paper's network) and
change only when their task is consolidated again. So a checkpoint does not hold them itself; it
refers to *chunks* (a slot range of one environment copy's frames,
``FrameReplay.state_dict(chunked=True)``; one tensor of a term,
``EWCConsolidator.state_dict(chunked=True)``) in

    checkpoints/chunks/<digest>.bin   the raw bytes of one C-contiguous array

where ``<digest>`` is the first 128 bits (32 hex digits) of the SHA-256 of the array's dtype,
shape and bytes, and the array's dtype and shape are written beside the digest in the
``state.json`` of every checkpoint that refers to it. A chunk already in the store is never
written again: each checkpoint writes the chunks that are new since the ones still on disk. The
owners keep the digests they computed and compute one again only for a chunk that changed (a
replay from its entry count, EWC from the tensor objects of its terms), so a checkpoint hashes
about what it writes.

A chunk is written to a hidden temporary file, fsynced and renamed into place, and the folder is
fsynced after the last one, all before the checkpoint that refers to them is renamed into place
(``ewc_dqn.checkpoint.save_checkpoint``). Reading checks each chunk's size and digest, so a
missing, truncated or altered chunk makes its checkpoint fail to load (``ChunkError``) rather than
give other values. Nothing is unpickled: a chunk is bytes read into an array of a known dtype.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CHUNK_DIR = "chunks"
"""The store's folder, inside a run's ``checkpoints/``."""
SUFFIX = ".bin"
TEMP_PREFIX = ".tmp-"
_DIGEST = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[0-9a-f]{32}\.bin$")
_WORKERS = min(8, os.cpu_count() or 1)
"""Threads that read, hash and write the chunks of one save or load."""


class ChunkError(ValueError):
    """A chunk that a checkpoint refers to is missing, truncated or altered."""


@dataclass(frozen=True)
class Chunks:
    """An array checkpointed as parts in the chunk store.

    ``parts`` are C-contiguous arrays of one dtype whose bytes, one after the other, are the
    bytes of the array of ``shape`` (a replay's frames, ``(copies, slots, C, H, W)``, as the slot
    ranges of copy 0, then of copy 1, ...); ``digests[i]`` is ``content_digest(parts[i])``, the
    name of its file. The parts may be views of live storage: save before changing it.
    ``whole``: the array itself when the parts are views of it, one after the other (as
    ``read_chunks`` gives them), so that ``joined`` need not copy.

    Read back from the store, an array comes as ``Chunks`` rather than joined, so its owner can
    keep the digests the read has just checked instead of hashing the same bytes again at its
    next save (``np.asarray`` of it is the array).
    """

    shape: tuple[int, ...]
    parts: tuple[np.ndarray, ...]
    digests: tuple[str, ...]
    whole: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.parts) != len(self.digests):
            raise ValueError(f"{len(self.parts)} parts but {len(self.digests)} digests")
        if len({p.dtype for p in self.parts}) > 1:
            raise ValueError("the parts of one array must share a dtype")
        if sum(p.size for p in self.parts) != int(np.prod(self.shape)):
            raise ValueError(f"the parts do not add up to an array of shape {self.shape}")
        if self.whole is not None and tuple(self.whole.shape) != tuple(self.shape):
            raise ValueError(f"whole is {self.whole.shape}, not the array of shape {self.shape}")

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype if self.parts else np.dtype(np.uint8)

    def joined(self) -> np.ndarray:
        """The whole array: ``whole`` where it is set, else a copy of the parts joined."""
        if self.whole is not None:
            return self.whole
        if not self.parts:
            return np.zeros(self.shape, dtype=self.dtype)
        return np.concatenate([p.reshape(-1) for p in self.parts]).reshape(self.shape)

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        array = self.joined() if dtype is None else self.joined().astype(dtype, copy=False)
        return array.copy() if copy and array is self.whole else array


class TensorDigests:
    """Tensors as ``Chunks`` of one part each, for owners whose tensors are replaced and not
    changed in place (EWC's terms): a tensor's digest is computed once and reused while the
    state holds the same tensor object (kept here, so its id cannot be reused by another) at the
    same version counter (which every in-place operation moves). A tensor with no version
    counter (made under ``torch.inference_mode``) is hashed at every save."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[torch.Tensor, int | None, str]] = {}

    def chunks(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, Chunks | torch.Tensor]:
        """``tensors`` with each one that numpy can hold as ``Chunks`` (a view of a CPU tensor,
        a host copy of another); the others (bfloat16) as they are. Forgets the tensors that
        are no longer in the state."""
        known: dict[str, tuple[torch.Tensor, int | None, str]] = {}
        out: dict[str, Chunks | torch.Tensor] = {}
        for key, tensor in tensors.items():
            try:
                array = tensor.detach().to("cpu").contiguous().numpy()
            except TypeError:  # a dtype numpy lacks
                out[key] = tensor
                continue
            version = _version_of(tensor)
            seen = self._known.get(key)
            if (
                seen is not None
                and seen[0] is tensor
                and version is not None
                and seen[1] == version
            ):
                digest = seen[2]
            else:
                digest = content_digest(array)
            known[key] = (tensor, version, digest)
            out[key] = Chunks(tuple(array.shape), (array,), (digest,))
        self._known = known
        return out

    def remember(self, key: str, tensor: torch.Tensor, digest: str) -> None:
        """Take ``digest`` (checked when it was read) as the digest of ``tensor`` under ``key``
        while it stays this object at its current version, as if ``chunks`` had computed it."""
        self._known[key] = (tensor, _version_of(tensor), digest)


def _version_of(tensor: torch.Tensor) -> int | None:
    try:
        return int(tensor._version)
    except RuntimeError:  # an inference tensor
        return None


def content_digest(part: np.ndarray) -> str:
    """32 hex digits of the SHA-256 of ``part``'s dtype, shape and bytes: its chunk's name."""
    h = hashlib.sha256(f"{part.dtype.str}{tuple(part.shape)}".encode())
    h.update(_bytes_of(part))
    return h.hexdigest()[:32]


def chunk_path(store: Path, digest: str) -> Path:
    return store / f"{digest}{SUFFIX}"


def write_chunks(store: Path, arrays: Iterable[Chunks]) -> list[Path]:
    """Write every part of ``arrays`` that the store lacks and make the new names durable;
    returns the files written, for the caller to remove if the checkpoint that needs them cannot
    be completed. A file already there counts if this process wrote it or read it whole since
    its last change; another one is read and hashed first, and written again when it does not
    match its name (damaged: a resumed run must not refer to it again). Each file is fsynced
    before its rename and the folder after the last rename, so once this returns every chunk is
    on disk whole under its name."""
    missing: dict[str, np.ndarray] = {}
    for chunks in arrays:
        for part, digest in zip(chunks.parts, chunks.digests, strict=True):
            if digest not in missing and not _holds(chunk_path(store, digest), digest, part):
                missing[digest] = part
    if not missing:
        return []
    new_store = not store.is_dir()
    store.mkdir(parents=True, exist_ok=True)
    if new_store:
        fsync_dir(store.parent)
    written: list[Path] = []
    failure: BaseException | None = None
    with _threads(len(missing)) as pool:  # hashing and writing release the GIL
        futures = [pool.submit(_write_one, store, d, p) for d, p in missing.items()]
        for future in futures:
            try:
                written.append(future.result())
            except BaseException as e:
                failure = failure or e
    try:
        if failure is not None:
            raise failure
        fsync_dir(store)
    except BaseException:
        remove(written)
        raise
    return written


def _write_one(store: Path, digest: str, part: np.ndarray) -> Path:
    path = chunk_path(store, digest)
    tmp = store / f"{TEMP_PREFIX}{digest}-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(_bytes_of(part))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _vouch(path)
    return path


def digests_of(parts: Sequence[np.ndarray]) -> list[str]:
    """``content_digest`` of each part, on several threads."""
    if len(parts) < 2:
        return [content_digest(p) for p in parts]
    with _threads(len(parts)) as pool:
        return list(pool.map(content_digest, parts))


def _threads(tasks: int) -> ThreadPoolExecutor:
    """A pool for one save's or load's files (a new one each time: a pool made before a fork
    has no threads in the child)."""
    return ThreadPoolExecutor(max_workers=max(1, min(tasks, _WORKERS)))


def read_chunks(store: Path, dtype: np.dtype, shape: tuple[int, ...], parts: object) -> Chunks:
    """The array of ``shape`` from its parts, ``[[digest, part shape], ...]`` as a checkpoint
    records them, as ``Chunks`` whose parts are views of the one array read (``whole``) and
    whose digests have just been checked. ChunkError for a description that is not one of plain
    numbers in the store, and when a part is missing, has the wrong size or does not match its
    digest. Every part's file is found and sized before the array is allocated, so an altered
    description cannot ask for more memory than the chunks on disk hold."""
    if dtype.kind not in "biuf" or dtype.hasobject:
        raise ChunkError(f"chunks of dtype {dtype} are not stored")  # raw bytes: numbers only
    if any(n < 0 for n in shape):
        raise ChunkError(f"an array of shape {shape} cannot be stored")
    if not isinstance(parts, list):
        raise ChunkError("the chunk list is not a list")
    planned: list[tuple[str, tuple[int, ...], Path]] = []
    total = 0
    for item in parts:
        digest, part_shape = _part(item)
        path = chunk_path(store, digest)
        nbytes = math.prod(part_shape) * dtype.itemsize
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ChunkError(f"chunk {path.name} is missing") from None
        if size != nbytes:
            raise ChunkError(f"chunk {path.name} is {size:,} bytes, expected {nbytes:,}")
        planned.append((digest, part_shape, path))
        total += nbytes
    if total != math.prod(shape) * dtype.itemsize:
        raise ChunkError(f"the chunks hold {total:,} bytes, not an array of {shape} {dtype}")
    out = np.empty(shape, dtype=dtype)
    flat = _bytes_of(out)
    views, offset = [], 0
    for _, part_shape, _ in planned:
        views.append(np.ndarray(part_shape, dtype=dtype, buffer=flat, offset=offset))
        offset += views[-1].nbytes
    with _threads(len(planned)) as pool:
        for _ in pool.map(_read_one, planned, views):
            pass  # the first ChunkError is raised here
    return Chunks(shape, tuple(views), tuple(d for d, _, _ in planned), whole=out)


def _read_one(plan: tuple[str, tuple[int, ...], Path], view: np.ndarray) -> None:
    digest, _, path = plan
    try:
        with open(path, "rb") as f:
            got = f.readinto(_bytes_of(view))
    except FileNotFoundError:
        raise ChunkError(f"chunk {path.name} is missing") from None
    if got != view.nbytes or content_digest(view) != digest:
        raise ChunkError(f"chunk {path.name} does not match its digest")
    _vouch(path)


def _part(item: object) -> tuple[str, tuple[int, ...]]:
    """(digest, shape) of one entry of a chunk list, checked."""
    if not (isinstance(item, list) and len(item) == 2):
        raise ChunkError(f"{item!r} does not describe a chunk")
    digest, shape = item
    if not (isinstance(digest, str) and _DIGEST.match(digest)):
        raise ChunkError(f"{digest!r} is not the name of a chunk")
    if not (
        isinstance(shape, list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ChunkError(f"chunk {digest} has no valid shape (got {shape!r})")
    return digest, tuple(shape)


def collect_garbage(store: Path, referenced: set[str]) -> None:
    """Delete the chunks that no name in ``referenced`` (digests) points to, and temporary files
    left by a save that was killed."""
    if not store.is_dir():
        return
    for path in store.iterdir():
        stale = path.name.startswith(TEMP_PREFIX)
        unused = _NAME.match(path.name) is not None and path.name[:32] not in referenced
        if stale or unused:
            remove([path])


def stored_digests(store: Path) -> set[str]:
    """The digests of the chunks in the store."""
    if not store.is_dir():
        return set()
    return {p.name[:32] for p in store.iterdir() if _NAME.match(p.name)}


def remove(paths: Iterable[Path]) -> None:
    """Delete files (and forget that this process vouched for them)."""
    for path in paths:
        path.unlink(missing_ok=True)
        _vouched.pop(path.absolute(), None)


_vouched: dict[Path, tuple[int, int, int]] = {}
"""Chunk files this process wrote or read whole and found to match their names, with their
(inode, size, modification time) then."""


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _vouch(path: Path) -> None:
    signature = _signature(path)
    if signature is not None:
        _vouched[path.absolute()] = signature


def _holds(path: Path, digest: str, part: np.ndarray) -> bool:
    """Whether the chunk file ``path`` holds ``part``: vouched for by this process since its last
    change, or else read and hashed now (once per process and file: a chunk left by an earlier
    process, which a damaged copy could be; that one is then written again)."""
    signature = _signature(path)
    if signature is None or signature[1] != part.nbytes:
        return False
    if _vouched.get(path.absolute()) == signature:
        return True
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), dtype=part.dtype).reshape(part.shape)
    except (OSError, ValueError):
        return False
    if content_digest(data) != digest:
        return False
    _vouched[path.absolute()] = signature
    return True


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    if not array.flags.c_contiguous:
        raise ValueError("a chunk must be C-contiguous")
    return array.reshape(-1).view(np.uint8).data


def fsync_dir(path: Path) -> None:
    """Make the names in a folder durable (where the file system supports it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
