"""Ctrl-C and SIGTERM as a request to stop: the training loop checkpoints and returns.

Inside ``with StopSignals() as stop:`` the first SIGINT or SIGTERM sets ``stop.received`` (the
loop polls it after every step); a second one raises KeyboardInterrupt at once. Outside the main
thread (a Ray worker's thread) signals cannot be caught and the block runs without handlers.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType
from typing import Any

from tqdm import tqdm


class StopSignals:
    """The stop request of one block of work: which signal asked for it, if any."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.received = signum
        tqdm.write(f"received {signal.Signals(signum).name}: saving a checkpoint and stopping")

    def __enter__(self) -> StopSignals:
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread (e.g. inside a Ray worker thread)
            self._old = {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}
