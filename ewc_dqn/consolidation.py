"""When a task's EWC term is (re-)estimated: the consolidation policy of a continual run.

The paper consolidates a task at every switch away from it. Task inference can flicker between
tasks within a few steps, though, and every switch would then re-estimate a Fisher from a
handful of new transitions (and pay for it); so a task left within ``min_steps`` of its own agent
steps since its last estimate keeps that estimate (the flicker guard; 0: the paper's rule). A
task is always consolidated the first time it is left.
"""

from __future__ import annotations

from typing import Any


class ConsolidationPolicy:
    """Remembers each task's agent steps at its last consolidation; says when the next is due."""

    def __init__(self, min_steps: int) -> None:
        if min_steps < 0:
            raise ValueError(f"min_steps must be >= 0, got {min_steps}")
        self.min_steps = min_steps
        self.consolidated_at: dict[int, int] = {}  # task -> its agent steps at the last one

    def due(self, task: int, task_steps: int) -> bool:
        """Whether leaving ``task`` after ``task_steps`` agent steps of its own consolidates it."""
        if task not in self.consolidated_at:
            return True
        return task_steps - self.consolidated_at[task] >= self.min_steps

    def consolidated(self, task: int, task_steps: int) -> None:
        """Record that ``task`` was consolidated (or tried to be) at ``task_steps``."""
        self.consolidated_at[task] = task_steps

    def forget(self, task: int) -> None:
        """The id ``task`` names another task now: its next departure consolidates it."""
        self.consolidated_at.pop(task, None)

    def state_dict(self) -> dict[str, int]:
        return {str(k): v for k, v in self.consolidated_at.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consolidated_at = {int(k): int(v) for k, v in state.items()}
