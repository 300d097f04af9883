"""The number of CPU threads torch uses, a setting of the whole process.

A command sets it once at its entry (``set_torch_threads``); work that runs inside another
program (an experiment called from a test, one run of a sequential sweep) sets it for its own
duration and restores it after (``torch_threads``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch in this process; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """``threads`` CPU threads for torch inside the block (0: unchanged), restored after."""
    before = torch.get_num_threads()
    set_torch_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
