"""One training process per run folder: an advisory lock held for the life of the process.

Two processes training in one folder (two ``--resume`` at once, a sweep rerun while its first
invocation still trains) would replace each other's logs, duplicate TensorBoard events and prune
checkpoints the other is about to load. ``RunLock.acquire`` takes an exclusive ``flock`` on
``<run folder>/lock`` without waiting and writes the holder's pid, host and start time into it;
a second process is refused at once with a one-line ``RunInUseError`` naming the holder.

The kernel releases a flock when its process dies, however it dies (kill -9 included), so a lock
file left by a killed run is simply taken over by the next one; its contents are only a
description of the last holder. The file is never deleted: deleting it while another process
has it open would let two processes lock two different files of the same name. On network
filesystems flock works where the filesystem supports locking (Linux NFS emulates it with
fcntl locks, which are shared across hosts).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

from ewc_dqn.errors import UserError

LOCK_FILE = "lock"


class RunInUseError(UserError):
    """Another process holds the lock of the run folder. One-line message naming it."""


class RunLock:
    """The held lock of one run folder; ``release()`` (or the process's end) lets it go."""

    def __init__(self, path: Path, file: IO[str]) -> None:
        self.path = path
        self._file: IO[str] | None = file

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` (which must exist) for this process, or raise RunInUseError naming
        the process that holds it; UserError when the lock file cannot be opened or locked."""
        path = Path(run_dir) / LOCK_FILE
        try:
            file = open(path, "a+")  # held open for the life of the lock
        except OSError as e:
            raise UserError(f"cannot lock run folder {run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = describe_holder(file.read())
            file.close()
            raise RunInUseError(
                f"{run_dir} is in use by {holder}; wait for it to end or stop it first "
                "(only one process may train in a run folder)"
            ) from None
        except OSError as e:
            file.close()
            raise UserError(f"cannot lock run folder {run_dir}: {e.strerror or e}") from None
        file.seek(0)
        file.truncate()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        file.write(json.dumps(record) + "\n")
        file.flush()
        return cls(path, file)

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        """Let the lock go (the file stays, holding the last holder's description)."""
        if self._file is None:
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._file.close()
            self._file = None


def describe_holder(text: str) -> str:
    """'process 1234 on host node7 (since 2026-11-30 14:50:02)' from a lock file's contents."""
    try:
        holder = json.loads(text)
        return f"process {int(holder['pid'])} on host {holder['host']} (since {holder['since']})"
    except (ValueError, TypeError, KeyError):
        return "another process"  # it has not written its name yet
