"""What every environment of the package looks like to the training loop.

All environments are vectors of ``num_envs`` copies of one game with *next-step autoreset*: the
step after an episode ends returns the first observation of a new episode, flagged ``is_first``,
with no reward and the action ignored (gymnasium's ``AutoresetMode.NEXT_STEP``, dm_env's
``StepType.FIRST``). Observations are uint8 stacks of the last ``stack`` frames on the channel
axis, ``(N, stack * C, H, W)``, zero before the episode's first frame (what ale-py does).

Rewards are raw game points: clipping for learning is the learner's business, so the score that
gets reported is always the unclipped one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

import numpy as np

from ewc_dqn.errors import UserError


@dataclass(frozen=True)
class EnvConfig:
    """Environment settings shared by the Atari and MinAtar backends."""

    num_envs: int = 1
    """Parallel copies of the same game stepped together (one agent step each per vector step)."""
    frame_skip: int = 4
    """Emulator frames per agent step, max-pooled over the last two (Atari; MinAtar uses 1)."""
    frame_stack: int = 4
    """Frames stacked into one observation (Atari 4; MinAtar 1, its planes carry motion)."""
    noop_max: int = 30
    """Up to this many no-op actions after each reset (emulator steps of frame_skip frames)."""
    repeat_action_probability: float = 0.0
    """Sticky actions: 0 as in the paper; 0.25 for Machado et al. 2018; MinAtar uses 0.1."""
    max_episode_frames: int = 108_000
    """Episode cap in emulator frames (30 minutes of play at 60 Hz); a capped episode is
    truncated, not terminated, and bootstraps."""
    resize: Literal["bilinear", "area"] = "bilinear"
    """Atari 210x160 -> 84x84 interpolation: 'bilinear' as in the paper (done here with OpenCV on
    the max-pooled frame), or 'area' (ale-py's native vector resize; slightly faster)."""
    backend: Literal["vector", "gymnasium"] = "vector"
    """Atari: ale-py's multi-threaded C++ AtariVectorEnv, or gymnasium's ALE env in a Python
    SyncVectorEnv (for platforms or features the vector env lacks)."""
    num_threads: int = field(default=0, metadata={"not_a_variant": True})
    """Threads of ale-py's vector env (0: one per copy, capped by the CPU count)."""
    fire_reset: bool = False
    """Press FIRE after reset (SB3's FireResetEnv). Off: the paper uses no-op starts only."""
    terminal_on_life_loss: bool = False
    """Atari, training only: a lost life ends the episode for learning (no bootstrap across it,
    a new frame stack after it) while the game goes on, as stable-baselines3's and CleanRL's
    defaults do. Off in the paper's protocol. Training returns are then per life; evaluation
    always plays whole games."""

    def validate(self) -> None:
        """Raise UserError with a one-line message for values that cannot work."""
        if self.num_envs < 1:
            raise UserError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.frame_skip < 1 or self.frame_stack < 1:
            raise UserError("frame_skip and frame_stack must be >= 1")
        if self.noop_max < 0:
            raise UserError(f"noop_max must be >= 0, got {self.noop_max}")
        if not 0.0 <= self.repeat_action_probability < 1.0:
            raise UserError("repeat_action_probability must be in [0, 1)")
        if self.max_episode_frames < 1:
            raise UserError("max_episode_frames must be >= 1")


class EnvStep(NamedTuple):
    """One vector step. Arrays have a leading dimension num_envs.

    obs:            (N, stack * C, H, W) uint8
    reward:         (N,) float32, raw (unclipped) game points of this step
    terminated:     (N,) bool, the episode ended in a terminal state
    truncated:      (N,) bool, the episode hit the frame cap (bootstrap from obs)
    is_first:       (N,) bool, obs is the first of a new episode (no transition into it)
    episode_return: (N,) float64, raw return of the current episode so far (final where done)
    episode_frames: (N,) int64, emulator frames of the current episode so far
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    is_first: np.ndarray
    episode_return: np.ndarray
    episode_frames: np.ndarray


class VectorEnv(Protocol):
    """The interface the training loop and the evaluator use."""

    game: str
    num_envs: int
    num_actions: int
    frame_shape: tuple[int, int, int]
    frames_per_step: int

    def reset(self, seed: int | None = None) -> np.ndarray: ...

    def step(self, actions: np.ndarray) -> EnvStep: ...

    def close(self) -> None: ...


class FrameStacker:
    """Keeps the last ``stack`` frames of every copy; zero-fills them when an episode starts.

    Also keeps each copy's raw return and length, so every backend reports episodes the same way.
    """

    def __init__(self, num_envs: int, frame_shape: tuple[int, int, int], stack: int) -> None:
        c, h, w = frame_shape
        self.channels = c
        self.obs = np.zeros((num_envs, stack * c, h, w), dtype=np.uint8)
        self.episode_return = np.zeros(num_envs, dtype=np.float64)
        self.episode_frames = np.zeros(num_envs, dtype=np.int64)

    def reset(self, frames: np.ndarray) -> np.ndarray:
        """Start a new episode in every copy with ``frames`` (N, C, H, W)."""
        self.obs[:] = 0
        self.obs[:, -self.channels :] = frames
        self.episode_return[:] = 0.0
        self.episode_frames[:] = 0
        return self.obs.copy()

    def step(
        self,
        frames: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_first: np.ndarray,
        frames_per_step: int,
    ) -> EnvStep:
        """Push the newest frames (N, C, H, W) and book-keep episodes."""
        c = self.channels
        self.obs[:, :-c] = self.obs[:, c:]
        self.obs[:, -c:] = frames
        if is_first.any():
            self.obs[is_first, :-c] = 0
            self.episode_return[is_first] = 0.0
            self.episode_frames[is_first] = 0
        playing = ~is_first
        reward = np.where(playing, reward, 0.0).astype(np.float32)
        self.episode_return += reward
        self.episode_frames += playing * frames_per_step
        return EnvStep(
            obs=self.obs.copy(),
            reward=reward,
            terminated=terminated & playing,
            truncated=truncated & playing & ~terminated,
            is_first=is_first.copy(),
            episode_return=self.episode_return.copy(),
            episode_frames=self.episode_frames.copy(),
        )
