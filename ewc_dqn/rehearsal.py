"""Rehearsal: a share of every minibatch replayed from the other tasks' memories.

The rehearsal baseline of continual RL (experience replay across tasks, as in CLEAR, Rolnick et
al. 2019, without its behaviour-cloning terms): while task t learns, ``round(fraction * B)`` of
each minibatch of B transitions are drawn uniformly from the pooled sampleable transitions of
every other task's replay (one multinomial split of the share over the tasks in proportion to
what each can sample, then uniform draws within each), and the rest from t's replay as without
rehearsal. Each rehearsed transition is learnt with its own task's gains and biases: the batch
comes grouped by task with its ``TaskRuns`` (ewc_dqn.networks), and the TD loss is the mean over
the whole minibatch, as for a batch of one task. When no other task has a sampleable transition
the whole batch is t's.

Every draw comes from the generator the replays share with the training loop, so a resumed run
draws what the uninterrupted one drew; with ``fraction`` 0 nothing extra is drawn at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ewc_dqn.errors import UserError
from ewc_dqn.networks import TaskRuns
from ewc_dqn.replay import FrameReplay
from ewc_dqn.transition import Transition


@dataclass(frozen=True)
class RehearsalConfig:
    """Rehearsal of the other tasks' replays in every minibatch."""

    fraction: float = 0.0
    """Share of every minibatch drawn from the other tasks' replays, in [0, 1): round(fraction x
    agent.batch_size) transitions (Python's round, half to even); 0: no rehearsal."""

    def rehearsed(self, batch_size: int) -> int:
        """Transitions of a minibatch of ``batch_size`` drawn from the other tasks."""
        return round(self.fraction * batch_size)

    def validate(self, batch_size: int) -> None:
        """Raise UserError (one line) unless the fraction is in [0, 1) and, when not 0, leaves
        a minibatch of ``batch_size`` at least one rehearsed and one current transition."""
        f = self.fraction
        if not (math.isfinite(f) and 0.0 <= f < 1.0):
            raise UserError(f"rehearsal.fraction must be in [0, 1), got {f}")
        if f == 0.0:
            return
        n = self.rehearsed(batch_size)
        if n == 0:
            raise UserError(
                f"rehearsal.fraction {f:g} of a minibatch of {batch_size} rounds to no rehearsed "
                f"transition; use more than {0.5 / batch_size:.3g}, or 0 for no rehearsal"
            )
        if n == batch_size:
            raise UserError(
                f"rehearsal.fraction {f:g} of a minibatch of {batch_size} rounds to the whole "
                "minibatch, leaving none of the current task's transitions"
            )


def rehearsal_minibatch(
    task: int,
    replays: Mapping[int, FrameReplay],
    batch_size: int,
    fraction: float,
    rng: np.random.Generator,
) -> tuple[Transition, TaskRuns | None]:
    """``batch_size`` transitions for an update of ``task`` and their task runs.

    ``round(fraction * batch_size)`` are drawn uniformly from the pooled sampleable transitions
    of the other tasks' replays (the split over tasks from ``rng``, the draws from each replay's
    own generator), the rest from ``replays[task]``; returned grouped by task, ``task`` first
    and then the others in increasing id, with ``((task, count), ...)`` in that order. Without
    rehearsal (``fraction`` 0, or no other task with a sampleable transition) the batch is
    ``replays[task].sample(batch_size)`` and the runs are None: the batch and the draws are
    then exactly those of a run without rehearsal.
    """
    rehearsed = round(fraction * batch_size)
    others: dict[int, int] = {}
    if rehearsed > 0:
        for k in sorted(replays):
            if k != task:
                size = len(replays[k])
                if size > 0:
                    others[k] = size
    if not others:
        return replays[task].sample(batch_size), None
    sizes = np.array(list(others.values()), dtype=np.float64)
    counts = rng.multinomial(rehearsed, sizes / sizes.sum())
    parts = [(task, replays[task].sample(batch_size - rehearsed))]
    parts += [(k, replays[k].sample(int(c))) for k, c in zip(others, counts, strict=True) if c]
    batch = Transition(*(torch.cat(fields) for fields in zip(*(b for _, b in parts), strict=True)))
    runs = tuple((k, int(b.action.shape[0])) for k, b in parts)
    return batch, runs
