"""Bad input as one type of error, and the exit statuses of the command lines.

A ``UserError`` says that what the user gave cannot work: a flag value, a game name, a run folder,
a checkpoint, the room left on a disk, settings under which training diverges. The command lines
print its one-line message alone and exit with status 2. Any other exception is a bug: it keeps
its traceback and exits with status 1.

``UserError`` derives from ``ValueError`` so that code written against the ValueErrors of the
``validate()`` methods keeps working; the command lines catch ``UserError`` alone, so a ValueError
from an internal check still shows its traceback.
"""

from __future__ import annotations

EXIT_FINISHED = 0
"""The run (or command) did all it was asked to."""
EXIT_INTERNAL_ERROR = 1
"""A bug: Python's own status for an uncaught exception, printed with its traceback."""
EXIT_BAD_INPUT = 2
"""A ``UserError``: one line on stderr (argparse and tyro use 2 for bad flags as well)."""
EXIT_STOPPED = 3
"""Stopped on request (``--stop-after-steps``, Ctrl-C, SIGTERM) after a checkpoint: resumable."""


class UserError(ValueError):
    """Input that cannot work, reported as one line without a traceback (exit status 2)."""
