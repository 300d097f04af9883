"""How the command-line tools report bad input: one line on stderr and exit status 2.

Errors a user can cause (unknown game, bad flag value, missing or corrupt checkpoint, a run
folder holding another run or in use by another process, a full disk) are ``UserError``s raised
with one-line messages (``ewc_dqn.errors``); the entry points turn them into ``error: <message>``
without a traceback. Every other exception is a bug and keeps its traceback (exit status 1). Set
``EWC_DQN_DEBUG=1`` to see the traceback of a ``UserError`` too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ewc_dqn.errors import EXIT_BAD_INPUT, UserError


@contextmanager
def exit_on_user_errors() -> Iterator[None]:
    """Turn a UserError raised inside the block into one line on stderr and exit status 2."""
    try:
        yield
    except UserError as e:
        if os.environ.get("EWC_DQN_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
