"""How the command-line tools report bad input: one line on stderr and exit status 2.

Errors a user can cause (unknown game, bad flag value, missing or corrupt checkpoint, a run
folder holding another run) are ValueErrors or CheckpointErrors raised with one-line messages;
the entry points turn them into ``error: <message>`` without a traceback. Set
``EWC_DQN_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ewc_dqn.checkpoint import CheckpointError

USER_ERRORS = (ValueError, CheckpointError, FileNotFoundError, NotADirectoryError)


@contextmanager
def exit_on_user_errors() -> Iterator[None]:
    """Turn a user error raised inside the block into one line on stderr and exit status 2."""
    try:
        yield
    except USER_ERRORS as e:
        if os.environ.get("EWC_DQN_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
