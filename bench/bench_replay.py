"""Memory and speed of FrameReplay against stable-baselines3's ReplayBuffer, in one run.

Memory: allocated numpy bytes per transition of capacity at 84x84 frames, stack 4, 18 actions
(the issue's bound for FrameReplay: 7.2 KB). Speed: median wall time of one ``add`` of a vector
step of ``num_envs`` copies while ``fill_steps`` vector steps are stored, then of
``sample(batch_size)`` (wall times include first-touch page faults of the lazily allocated storage,
for every buffer alike). The floor line is the memory copy every sampler must make: ``np.take``
of ``batch_size * (stack + 1)`` random frames from a filled array of ``capacity`` frames.
stable-baselines3 is given what it needs: whole (4, 84, 84) stacks for obs and next_obs.

    python bench/bench_replay.py --capacity 50000 --num-envs 8
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tyro
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer

from ewc_dqn.replay import FrameReplay

FRAME = (1, 84, 84)
STACK = 4
ACTIONS = 18


@dataclass(frozen=True)
class Args:
    """Benchmark settings."""

    capacity: int = 50_000
    """Transitions per buffer (paper: 50,000 per task)."""
    num_envs: int = 8
    """Copies of the game per vector step."""
    fill_steps: int = 1_500
    """Vector steps added (and timed) before sampling; stable-baselines3 without
    optimize_memory_usage touches 56 KB per transition of them."""
    batch_size: int = 32
    """Minibatch size (paper: 32)."""
    repeats: int = 2_000
    """Timed sample calls (the median is reported)."""
    episode_steps: int = 500
    """Mean episode length in agent steps of the synthetic stream (episodes end at random)."""
    seed: int = 0
    """Seed of the synthetic frames and of the samplers."""


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in seconds, after a few untimed calls."""
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_of_calls(fn: Callable[[tuple], object], steps: list[tuple]) -> float:
    """Median wall time in seconds of ``fn(step)`` over ``steps``, each called once in order."""
    times = []
    for step in steps:
        start = time.perf_counter()
        fn(step)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sb3_nbytes(buffer: ReplayBuffer) -> int:
    """Bytes of every numpy array the buffer allocated."""
    return sum(v.nbytes for v in vars(buffer).values() if isinstance(v, np.ndarray))


def synthetic_steps(args: Args, rng: np.random.Generator):
    """Yield per vector step: newest frames, stacks before and after, action, reward, flags."""
    n = args.num_envs
    frames = rng.integers(0, 256, size=(64, n, *FRAME), dtype=np.uint8)  # reused, copied anyway
    stacks = np.zeros((n, STACK, *FRAME[1:]), dtype=np.uint8)
    is_first = np.ones(n, dtype=bool)
    for step in range(args.fill_steps):
        frame = frames[step % len(frames)]
        previous = stacks.copy()
        stacks[:, :-1] = stacks[:, 1:]
        stacks[:, -1] = frame[:, 0]
        stacks[is_first, :-1] = 0
        action = rng.integers(0, ACTIONS, size=n)
        reward = np.sign(rng.standard_normal(n)).astype(np.float32)
        terminated = ~is_first & (rng.random(n) < 1 / args.episode_steps)
        yield frame, previous, stacks.copy(), action, reward, terminated, is_first.copy()
        is_first = terminated


def main(args: Args) -> None:
    n = args.num_envs
    obs_space = spaces.Box(0, 255, (STACK * FRAME[0], *FRAME[1:]), np.uint8)
    action_space = spaces.Discrete(ACTIONS)
    steps = list(synthetic_steps(args, np.random.default_rng(args.seed)))

    ours = FrameReplay(args.capacity, n, FRAME, STACK, 0.99, np.random.default_rng(args.seed))
    no_truncation = np.zeros(n, dtype=bool)
    ours_add = median_of_calls(
        lambda s: ours.add(s[0], s[3], s[4], s[5], no_truncation, s[6]), steps
    )
    ours_sample = median_seconds(lambda: ours.sample(args.batch_size), args.repeats)
    ours_len = median_seconds(lambda: len(ours), args.repeats)
    print(
        f"capacity {args.capacity}, {n} copies, 84x84 stack {STACK}, "
        f"{args.fill_steps} vector steps added, sample({args.batch_size})"
    )
    print(f"{'buffer':<42}{'bytes/transition':>17}{'add us':>9}{'sample us':>11}")
    print(
        f"{'FrameReplay':<42}{ours.bytes_per_transition():>17,.0f}"
        f"{ours_add * 1e6:>9.1f}{ours_sample * 1e6:>11.1f}   (len() {ours_len * 1e6:.1f} us)"
    )

    # The floor of any sampler: copying the batch's stack + 1 frames per transition (obs and
    # next_obs share the others) from random places of a store of the same size.
    store = np.random.default_rng(args.seed).integers(
        0, 256, size=(args.capacity, *FRAME), dtype=np.uint8
    )
    rows = np.random.default_rng(args.seed + 1)
    frames = args.batch_size * (STACK + 1)
    copy = median_seconds(
        lambda: np.take(store, rows.integers(0, len(store), frames), axis=0), args.repeats
    )
    print(
        f"{'floor: np.take of ' + str(frames) + ' random frames':<42}{'':>17}{'':>9}"
        f"{copy * 1e6:>11.1f}   ({frames * store[0].nbytes / 1e6:.2f} MB)"
    )

    infos: list[dict] = [{} for _ in range(n)]
    for optimize in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its "not enough memory" warning counts lazy pages
            sb3 = ReplayBuffer(
                args.capacity,
                obs_space,
                action_space,
                device="cpu",
                n_envs=n,
                optimize_memory_usage=optimize,
                handle_timeout_termination=False,
            )
        sb3_add = median_of_calls(
            lambda s, b=sb3: b.add(s[1], s[2], s[3], s[4], s[5], infos), steps
        )
        sb3_sample = median_seconds(lambda b=sb3: b.sample(args.batch_size), args.repeats)
        name = f"SB3 ReplayBuffer optimize_memory_usage={optimize}"
        print(
            f"{name:<42}{sb3_nbytes(sb3) / args.capacity:>17,.0f}"
            f"{sb3_add * 1e6:>9.1f}{sb3_sample * 1e6:>11.1f}"
        )
        del sb3


if __name__ == "__main__":
    main(tyro.cli(Args))
