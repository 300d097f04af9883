"""Deliberate faults at named points of the training loop, for the crash and stop tests.

``EWC_DQN_FAULT="<stage>@<agent steps>:<action>"`` makes the trainer act the first time it
reaches ``<stage>`` with exactly that many agent steps trained (``<stage>:<action>``: the first
time at any step). Actions: ``KILL``, ``TERM``, ``INT`` (the process sends itself that signal:
KILL dies on the spot like a power cut, TERM and INT ask for a stop as a scheduler or Ctrl-C
would) and ``raise`` (a ValueError standing for a bug). Unset, it costs one comparison per stage.

Stages, in the order of the end of a visit:

    saving              a checkpoint is about to be written (its state is taken)
    renaming            its new chunks and its files are on disk and synced; it is not renamed
                        into place yet
    saved               a checkpoint is complete on disk
    visit-end-saved     the checkpoint that records the visit's pending evaluation is on disk
    evaluated           the evaluation's rows are in the logs, not yet in a checkpoint
    evaluation-saved    the checkpoint taken after the evaluation is on disk
    logged              training scalars were logged (between checkpoints)
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "EWC_DQN_FAULT"
ACTIONS = ("KILL", "TERM", "INT", "raise")


class FaultPoint:
    """The fault asked for by ``EWC_DQN_FAULT``, fired once at its stage and step."""

    def __init__(self, spec: str | None) -> None:
        self.stage: str | None = None
        self.step: int | None = None
        self.action = ""
        if not spec:
            return
        where, _, action = spec.rpartition(":")
        stage, at, step = where.partition("@")
        if not stage or action not in ACTIONS or (at and not step.isdigit()):
            raise ValueError(
                f"{ENV_VAR}={spec!r}: expected <stage>[@<steps>]:<{'|'.join(ACTIONS)}>"
            )
        self.stage, self.step, self.action = stage, int(step) if at else None, action

    @classmethod
    def from_env(cls) -> FaultPoint:
        return cls(os.environ.get(ENV_VAR))

    def at(self, stage: str, step: int) -> None:
        """Act if this is the fault's stage and step (then never again)."""
        if stage != self.stage or (self.step is not None and step != self.step):
            return
        self.stage = None
        if self.action == "raise":
            raise ValueError(f"deliberate fault at {stage}, agent step {step} ({ENV_VAR})")
        os.kill(os.getpid(), getattr(signal, f"SIG{self.action}"))
