"""Scoring a Q-network on games with learning off.

Protocol (stated in every evaluation's output): the training preprocessing (no-op starts, sticky
actions and episode cap as in the run's environment config), epsilon-greedy with a small epsilon,
raw (unclipped) episode scores. Evaluation owns its own random generator, seeded per call, so
evaluating never changes the training run's random stream (a resumed run stays identical to an
uninterrupted one).

Which episodes count. Keeping the first ``episodes`` episodes to finish across N parallel copies
favours short episodes (in most games the bad ones), so the count does not depend on the order
in which copies finish:

- each copy has a fixed quota, ``episodes`` split as evenly as possible (copies beyond
  ``episodes`` are not made);
- ``frames`` is a budget on *starting* episodes: once that many emulator frames have been played,
  no copy starts another one, and every episode already started is played to its end. Whether an
  episode starts depends only on the lengths of the ones before it, so the sum of the counted
  returns is unbiased (Wald's identity), unlike a count of the episodes that happen to end
  within a budget;
- the environment's episode cap (``max_episode_frames``: 108,000 frames on Atari) bounds the
  overrun to one cap per copy. As a safety net against an environment that overruns its cap,
  play stops there anyway; an episode cut that way does not count and the game is reported as
  incomplete (``complete`` False), and with no finished episode it has no score at all (NaN),
  never a partial return.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from envs.games import GameSpec
from envs.make import EnvCache, make_env
from envs.scores import ReferenceNotMeasuredError, clipped_total, normalised_score
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
    """Episodes that counted (all finished; 0 when none did)."""
    raw_mean: float
    """Mean raw score of the counted episodes (NaN when none)."""
    raw_std: float
    normalised: float
    """(raw_mean - random) / (reference - random), unclipped; NaN without a reference or a
    counted episode."""
    frames: int
    """Emulator frames played."""
    task_id: int
    """The task id used most often while playing."""
    complete: bool = True
    """False when an episode was cut by the safety limit (an environment that overran its
    episode cap) or no episode finished."""
    returns: list[float] = field(default_factory=list)


def protocol_text(env: EnvConfig, epsilon: float, episodes: int, frames: int) -> str:
    """One line saying how the scores were obtained."""
    return (
        f"epsilon {epsilon}, up to {env.noop_max} no-op starts, sticky actions "
        f"{env.repeat_action_probability}, episode cap {env.max_episode_frames} frames, "
        f"{episodes} episodes per game split evenly over the copies, no episode started after "
        f"{frames} frames (started ones play to their end), raw (unclipped) scores"
    )


def episode_quotas(episodes: int, copies: int) -> np.ndarray:
    """Episodes per copy: ``episodes`` split as evenly as possible over ``copies`` (N,) int."""
    if episodes < 1 or copies < 1:
        raise ValueError(f"episodes and copies must be >= 1, got {episodes} and {copies}")
    return np.array([episodes // copies + (i < episodes % copies) for i in range(copies)])


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
    envs: EnvCache | None = None,
) -> GameScore:
    """Play ``game`` epsilon-greedily: ``episodes`` episodes split over the copies, no episode
    started after ``frames`` emulator frames (see the module docstring). ``envs`` keeps the
    environment open for the next call (the result is the same)."""
    rng = np.random.default_rng(seed)
    copies = min(env_config.num_envs, episodes)
    # Scores are of whole games, whatever ends an episode for learning.
    config = replace(env_config, num_envs=copies, terminal_on_life_loss=False)
    env = envs.get(game, config) if envs is not None else make_env(game, config, seed=seed)
    quota = episode_quotas(episodes, copies)
    # Episodes started within the budget end within one episode cap (and its no-op start) of
    # each copy's frames.
    longest = env_config.max_episode_frames + (env_config.noop_max + 1) * env.frames_per_step
    hard_limit = frames + copies * longest
    try:
        obs = env.reset(seed=seed)
        c = env.frame_shape[0]
        returns: list[list[float]] = [[] for _ in range(copies)]
        playing = np.ones(copies, dtype=bool)  # the copy's current episode counts
        tasks: Counter[int] = Counter()
        played = 0
        while playing.any() and played < hard_limit:
            task = task_fn(obs[0, -c:])
            tasks[task] += 1
            explore = rng.random(copies) < epsilon
            q = network(torch.as_tensor(obs, device=device), task)
            actions = np.where(
                explore, rng.integers(0, env.num_actions, copies), q.argmax(1).cpu().numpy()
            )
            step = env.step(actions)
            played += copies * env.frames_per_step
            done = (step.terminated | step.truncated) & playing
            for i in np.flatnonzero(done):
                returns[i].append(float(step.episode_return[i]))
            # A copy starts another counted episode only within its quota and the budget.
            playing &= ~done | ((np.array([len(r) for r in returns]) < quota) & (played < frames))
            obs = step.obs
    finally:
        if envs is None:
            env.close()
    counted = [r for per_copy in returns for r in per_copy]
    raw_mean = float(np.mean(counted)) if counted else float("nan")
    return GameScore(
        game=game.name,
        episodes=len(counted),
        raw_mean=raw_mean,
        raw_std=float(np.std(counted)) if counted else float("nan"),
        normalised=_normalised(game, raw_mean) if counted else float("nan"),
        frames=played,
        task_id=tasks.most_common(1)[0][0] if tasks else -1,
        complete=bool(counted) and not playing.any(),
        returns=counted,
    )


def evaluate_games(
    network: QFunction,
    games: Sequence[GameSpec],
    true_tasks: Sequence[int],
    env_config: EnvConfig,
    eval_label: Callable[[np.ndarray, int], int],
    *,
    episodes: int,
    frames: int,
    epsilon: float,
    seed_of: Callable[[int], int],
    device: torch.device,
    envs: EnvCache | None = None,
) -> list[GameScore]:
    """``evaluate_game`` on each game in turn: ``true_tasks`` its task in the run's schedule (-1
    for a game the run never trained), ``eval_label(frame, true task)`` the task id the network
    plays with, ``seed_of(true task)`` the seed of that game's evaluation."""
    return [
        evaluate_game(
            network,
            game,
            env_config,
            functools.partial(_label_as, eval_label, true_task=true_task),
            episodes=episodes,
            frames=frames,
            epsilon=epsilon,
            seed=seed_of(true_task),
            device=device,
            envs=envs,
        )
        for game, true_task in zip(games, true_tasks, strict=True)
    ]


def _label_as(
    eval_label: Callable[[np.ndarray, int], int], frame: np.ndarray, true_task: int
) -> int:
    return eval_label(frame, true_task)


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
    return float(clipped_total([s.normalised for s in scores]))


def paper_mean(scores: list[GameScore]) -> float:
    """Unclipped mean normalised score over the games with a usable reference (NaN if none)."""
    values = np.array([s.normalised for s in scores], dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def format_scores(scores: list[GameScore], total: float, header: str = "") -> str:
    """A terminal table of per-game scores and the paper's total."""
    lines = [header] if header else []
    lines.append(f"  {'game':<24}{'episodes':>9}{'raw score':>14}{'normalised':>12}{'task':>6}")
    for s in scores:
        norm = f"{s.normalised:.3f}" if np.isfinite(s.normalised) else "n/a"
        raw = f"{s.raw_mean:>14.1f}" if np.isfinite(s.raw_mean) else f"{'no episode':>14}"
        flag = "" if s.complete else "  incomplete: an episode was cut"
        lines.append(f"  {s.game:<24}{s.episodes:>9}{raw}{norm:>12}{s.task_id:>6}{flag}")
    counted = sum(1 for s in scores if np.isfinite(s.normalised))
    scope = (
        ""
        if counted == len(scores)
        else f", over the {counted} games with a reference score and a finished episode"
    )
    lines.append(
        f"  total normalised score (clipped at 1 per game{scope}, max {counted}): {total:.3f}"
    )
    return "\n".join(lines)
