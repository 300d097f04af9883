"""Where the agent's task id comes from: the schedule (true labels) or forget-me-not (inferred).

Both give the id of the task to act, learn and consolidate under. ``train_label`` may learn from
the frame (FMN updates its models) and is told whether it starts an episode; ``eval_label``
never learns. The agent in inferred mode never
sees the true label: it is passed in only so the true-label variant has the same interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ewc_dqn.fmn import ForgetMeNot


class TaskLabeler(Protocol):
    """The source of task ids."""

    @property
    def num_tasks(self) -> int: ...

    def train_label(self, frame: np.ndarray, true_task: int, episode_start: bool) -> int: ...

    def eval_label(self, frame: np.ndarray, true_task: int) -> int: ...

    def generation(self, task: int) -> int:
        """How many tasks the id ``task`` has named (0: none now). When it changes, the id
        names another task, and what was kept for it (replay, per-task parameters, EWC
        terms) belongs to the old one."""
        ...

    def stats(self) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TrueLabels:
    """Task id = the schedule's label of the game being played."""

    def __init__(self) -> None:
        self._seen: set[int] = set()

    @property
    def num_tasks(self) -> int:
        return len(self._seen)

    def train_label(self, frame: np.ndarray, true_task: int, episode_start: bool) -> int:
        self._seen.add(true_task)
        return true_task

    def eval_label(self, frame: np.ndarray, true_task: int) -> int:
        return true_task

    def generation(self, task: int) -> int:
        return 1 if task in self._seen else 0

    def stats(self) -> dict[str, float]:
        return {"tasks/num_tasks": float(self.num_tasks)}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": sorted(self._seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._seen = {int(t) for t in state["seen"]}


class InferredLabels:
    """Task id = forget-me-not's most probable context for the frames seen so far."""

    def __init__(self, fmn: ForgetMeNot) -> None:
        self.fmn = fmn

    @property
    def num_tasks(self) -> int:
        return self.fmn.num_tasks

    def train_label(self, frame: np.ndarray, true_task: int, episode_start: bool) -> int:
        return self.fmn.observe(fmn_frame(frame), episode_start)

    def eval_label(self, frame: np.ndarray, true_task: int) -> int:
        return self.fmn.infer(fmn_frame(frame))

    def generation(self, task: int) -> int:
        return self.fmn.generation(task)

    def stats(self) -> dict[str, float]:
        return dict(self.fmn.stats())

    def state_dict(self) -> dict[str, Any]:
        return self.fmn.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fmn.load_state_dict(state)


def fmn_frame(frame: np.ndarray) -> np.ndarray:
    """The environment's newest frame (C, H, W) in the layout FMN takes: Atari (84, 84)
    greyscale; MinAtar (10, 10, 10) planes, channels first (FMNConfig.channel_axis = 0)."""
    return frame[0] if frame.shape[0] == 1 else frame
