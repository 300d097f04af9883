"""Scoring a Q-network on games with learning off.

Protocol (stated in every evaluation's output): the training preprocessing (no-op starts, sticky
actions and episode cap as in the run's environment config), epsilon-greedy with a small epsilon,
raw (unclipped) episode scores, at most ``episodes`` episodes and ``frames`` emulator frames per
game. Evaluation owns its own random generator, seeded per call, so evaluating never changes the
training run's random stream (a resumed run stays identical to an uninterrupted one).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from envs.games import GameSpec
from envs.make import make_env
from envs.scores import ReferenceNotMeasuredError, normalised_score
from envs.vector import EnvConfig

QFunction = Callable[[torch.Tensor, int], torch.Tensor]
"""Maps observations (B, C, H, W) and a task id to Q-values (B, A): a QNetwork, or one wrapped
(e.g. with weight noise)."""
TaskFn = Callable[[np.ndarray], int]
"""Maps the newest frame of copy 0 (C, H, W) uint8 to the task id to act with."""


@dataclass(frozen=True)
class GameScore:
    """The evaluation of one game."""

    game: str
    episodes: int
    """Completed episodes (0 if none finished within the frame budget)."""
    raw_mean: float
    """Mean raw score (the partial return of the longest episode when none completed)."""
    raw_std: float
    normalised: float
    """(raw_mean - random) / (reference - random), unclipped."""
    frames: int
    """Emulator frames played."""
    task_id: int
    """The task id used most often while playing."""
    returns: list[float] = field(default_factory=list)


def protocol_text(env: EnvConfig, epsilon: float, episodes: int, frames: int) -> str:
    """One line saying how the scores were obtained."""
    return (
        f"epsilon {epsilon}, up to {env.noop_max} no-op starts, sticky actions "
        f"{env.repeat_action_probability}, episode cap {env.max_episode_frames} frames, "
        f"at most {episodes} episodes or {frames} frames per game, raw (unclipped) scores"
    )


@torch.no_grad()
def evaluate_game(
    network: QFunction,
    game: GameSpec,
    env_config: EnvConfig,
    task_fn: TaskFn,
    *,
    episodes: int,
    frames: int,
    epsilon: float,
    seed: int,
    device: torch.device,
) -> GameScore:
    """Play ``game`` with an epsilon-greedy policy until ``episodes`` episodes have finished or
    ``frames`` emulator frames have been played, whichever comes first."""
    rng = np.random.default_rng(seed)
    env = make_env(game, env_config, seed=seed)
    try:
        obs = env.reset()
        c = env.frame_shape[0]
        returns: list[float] = []
        tasks: Counter[int] = Counter()
        played = 0
        partial = np.zeros(env.num_envs)
        while len(returns) < episodes and played < frames:
            task = task_fn(obs[0, -c:])
            tasks[task] += 1
            explore = rng.random(env.num_envs) < epsilon
            q = network(torch.as_tensor(obs, device=device), task)
            actions = np.where(
                explore, rng.integers(0, env.num_actions, env.num_envs), q.argmax(1).cpu().numpy()
            )
            step = env.step(actions)
            played += env.num_envs * env.frames_per_step
            done = step.terminated | step.truncated
            returns.extend(step.episode_return[done].tolist())
            partial = np.where(step.is_first, 0.0, step.episode_return)
            obs = step.obs
    finally:
        env.close()
    returns = returns[:episodes]
    scores = returns if returns else [float(partial.max())]
    raw_mean = float(np.mean(scores))
    return GameScore(
        game=game.name,
        episodes=len(returns),
        raw_mean=raw_mean,
        raw_std=float(np.std(scores)),
        normalised=_normalised(game, raw_mean),
        frames=played,
        task_id=tasks.most_common(1)[0][0] if tasks else -1,
        returns=[float(r) for r in returns],
    )


def _normalised(game: GameSpec, raw: float) -> float:
    """The normalised score, or NaN where the game has no measured reference (yet)."""
    try:
        return float(normalised_score(game, raw))
    except ReferenceNotMeasuredError:
        return float("nan")


def paper_total(scores: list[GameScore]) -> float:
    """The paper's metric: sum over games of the normalised score clipped at 1 from above.

    Games without a usable reference score (NaN) are left out of the sum; ``format_scores`` says
    how many games it covers. NaN only when no game has a reference.
    """
    values = np.array([s.normalised for s in scores], dtype=np.float64)
    if not np.isfinite(values).any():
        return float("nan")
    return float(np.nansum(np.minimum(values, 1.0)))


def paper_mean(scores: list[GameScore]) -> float:
    """Unclipped mean normalised score over the games with a usable reference (NaN if none)."""
    values = np.array([s.normalised for s in scores], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
