"""Settings of forget-me-not task inference (``ewc_dqn.fmn``); defaults measured in docs/fmn.md.
``ewc_dqn.fmn`` re-exports ``FMNConfig``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ewc_dqn.errors import UserError

AtariFeatures = Literal["pixels", "level-planes", "palette"]
"""What an Atari task models (``FMNConfig.atari_features``)."""


@dataclass(frozen=True)
class FMNConfig:
    """Settings of forget-me-not task inference. Defaults measured in docs/fmn.md."""

    window: int = 4
    """Window width in model observations (paper: 4); one window spans window * update_period
    agent steps."""
    update_period: int = 4
    """Agent steps between model observations (paper: 4); other steps reuse the current task."""
    concentration: float = 0.01
    """Dirichlet pseudo-count per level and pixel (dimensionless); small values let the hold-out
    fit a new game within one window."""
    levels: int = 16
    """Grey levels after quantisation of Atari frames (MinAtar: number of planes + 1, fixed)."""
    downscale: int = 2
    """Block-average factor per side for Atari frames, 84x84 -> 42x42 (paper: 2)."""
    max_tasks: int = 32
    """Cap on tasks; at the cap a winning hold-out gives its window to the best existing task
    and a RuntimeWarning is raised once."""
    switch_rate: float = 1.0
    """HMM switch probability alpha_t = switch_rate / t, t = model observations so far
    (capped at 1/2)."""
    split_windows: bool = True
    """Refuse a new task when two existing tasks with one switch explain the window better."""
    channel_axis: int = 0
    """Axis of the planes in 3-D (MinAtar) frames: 0 for (C, 10, 10), -1 for (10, 10, C)."""
    atari_pool_weight: float = 0.0
    """Atari: frames' worth of the pooled grey-level background (all tasks' counts) in every
    model's prior; 0 keeps the symmetric prior. docs/fmn.md measures 1.0: fewer merged dark
    games, more split multi-screen games, several times the cost per observation."""
    minatar_update_period: int = 8
    """Agent steps between model observations on MinAtar frames (Atari: ``update_period``)."""
    minatar_pool_weight: float = 10.0
    """MinAtar: frames' worth of the pooled background (all tasks' counts per plane and block) in
    every model's prior; the hold-out is this prior alone."""
    minatar_shrinkage: float = 0.3
    """MinAtar: weight of a task's own mean over a plane's rows (columns) in each (plane, row)
    ((plane, column)) model's prior, relative to its counts."""
    minatar_new_task_cost: float = 60.0
    """MinAtar: nats by which a window's hold-out score must beat every task's to start a task."""
    atari_features: AtariFeatures = "pixels"
    """Atari: what a task models. 'pixels': every downscaled pixel's grey level (the paper's
    model, with ``atari_pool_weight``). 'level-planes': one plane per grey level, modelled as
    MinAtar planes are (set pixels per row, per column and in all; ``minatar_pool_weight``,
    ``minatar_shrinkage`` and ``minatar_new_task_cost`` apply), so a game's screens with the
    same palette and layout of bands look alike; docs/fmn.md measures it with ``downscale`` 4:
    higher ARI on random draws of ten games, three times the cost per observation. 'palette':
    which of the 256 grey values the frame shows (on at least ``atari_palette_min_pixels``
    pixels), one Bernoulli per value with the symmetric prior: games drawn on black in different
    colours no longer share a task; a game whose screens change colours gets one per palette
    (docs/fmn.md)."""
    atari_palette_min_pixels: int = 3
    """Atari, 'palette' features: pixels of the (84, 84) frame that must show a grey value for
    it to count as present (1: any pixel, including the blends that resizing makes at edges)."""
    atari_merge_observations: int = 0
    """Atari: probation of a new task, in model observations (0: no merges), as
    ``minatar_merge_observations``. docs/fmn.md measures 32 and 64 on random draws of ten
    games: fewer tasks for multi-screen games, no draw moved across ARI 0.95."""
    episode_switch_steps: int = 0
    """Agent steps after an episode's start within which the task may change (a switch, a new
    task); later in the episode every window is held for the current task, for ``infer`` to
    label such frames, and kept out of the models that decide at episode starts (0: off, the
    paper's FMN, which may change the task anywhere). It assumes that tasks change only
    between episodes, as in a schedule whose visits each start with a reset, and needs
    ``observe(frame, episode_start)``; at least two windows (``episode_switch_floor``). The
    ``atari`` presets use 32 with 'palette' features; docs/fmn.md measures it."""
    minatar_merge_observations: int = 0
    """MinAtar: probation of a new task, in model observations (0: no merges). A task whose
    parent (the task it was born from) won more windows than it did in the second half of
    this many observations after its birth was a second mode of the parent's game (a board
    the game's model had not seen), not a new game: its counts join the parent's and its id is
    never reported again."""

    def validate(self) -> None:
        """Raise UserError with a one-line message for values that cannot work."""
        if not 1 <= self.window <= 255:
            raise UserError(f"window must be in [1, 255] observations, got {self.window}")
        if self.update_period < 1:
            raise UserError(f"update_period must be >= 1 agent step, got {self.update_period}")
        if not 1e-4 <= self.concentration <= 1e3:
            raise UserError(f"concentration must be in [1e-4, 1e3], got {self.concentration}")
        if not 2 <= self.levels <= 256:
            raise UserError(f"levels must be in [2, 256], got {self.levels}")
        if self.downscale < 1:
            raise UserError(f"downscale must be >= 1, got {self.downscale}")
        if self.max_tasks < 1:
            raise UserError(f"max_tasks must be >= 1, got {self.max_tasks}")
        if self.switch_rate <= 0:
            raise UserError(f"switch_rate must be > 0, got {self.switch_rate}")
        if self.channel_axis not in (0, -1):
            raise UserError(f"channel_axis must be 0 or -1, got {self.channel_axis}")
        if self.minatar_update_period < 1:
            raise UserError(
                f"minatar_update_period must be >= 1 agent step, got {self.minatar_update_period}"
            )
        if self.atari_features not in get_args(AtariFeatures):
            choices = ", ".join(repr(c) for c in get_args(AtariFeatures))
            raise UserError(f"atari_features must be one of {choices}, got {self.atari_features!r}")
        # Without the suite, the floor of the suite whose windows are shortest; a run's suite
        # is checked against its own floor once it is known (``check_suite``).
        self.check_suite(minatar=self.minatar_update_period < self.update_period)
        if self.atari_palette_min_pixels < 1:
            raise UserError(
                f"atari_palette_min_pixels must be >= 1, got {self.atari_palette_min_pixels}"
            )
        for name in ("atari_merge_observations", "minatar_merge_observations"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0 (0: no merges), got {getattr(self, name)}")
        names = ("atari_pool_weight", "minatar_pool_weight", "minatar_shrinkage")
        for name in (*names, "minatar_new_task_cost"):
            if not 0 <= getattr(self, name) <= 1e6:
                raise UserError(f"{name} must be in [0, 1e6], got {getattr(self, name)}")

    def episode_switch_floor(self, minatar: bool) -> int:
        """The least ``episode_switch_steps`` that can see a switch at an episode's start, in
        agent steps: two windows of the suite's frames (when the first window of an episode
        closes, the filter may still report the last game; the second window moves it)."""
        period = self.minatar_update_period if minatar else self.update_period
        return 2 * self.window * period

    def check_suite(self, minatar: bool) -> None:
        """Raise UserError (one line) unless these settings can work on the suite's frames
        (``validate`` checks what does not depend on the suite)."""
        floor = self.episode_switch_floor(minatar)
        if self.episode_switch_steps and self.episode_switch_steps < floor:
            suite, field = (
                ("MinAtar", "minatar_update_period") if minatar else ("Atari", "update_period")
            )
            raise UserError(
                f"episode_switch_steps must be 0 (off) or >= {floor} agent steps on {suite} "
                f"frames (two windows: 2 x window x {field}), got {self.episode_switch_steps}"
            )
