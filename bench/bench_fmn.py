"""How well and how fast forget-me-not task inference labels a real stream of Atari frames.

A random policy plays each game through the package's own environments (``envs.make``), or,
with ``--policy``, a trained agent plays the games of its run (epsilon-greedy, each game with
its true task id; the others stay random), since a skilled player reaches screens a random one
never shows (MinAtar games work too: ``--games MinAtar/Breakout,...``). With several
checkpoints, ``--policy EARLY ... LATE``, the stream's visits go to them in turn (the first
1/n of the visits to the first, and so on), so the screens change along the stream as they do
in training while the agent learns. The stream visits
every game once in random order, then revisits random games (never the same game twice in a
row), ``segment_steps`` agent steps per visit. A revisit continues the game's own environment, as
the training schedule does. ``ForgetMeNot.observe`` sees the newest frame of each step, as in
training (``ewc_dqn.labels.fmn_frame``), and the bench prints:

- ARI: adjusted Rand index between inferred task ids and true games (1 = perfect);
- tasks created vs games, games split over several tasks and tasks shared by several games
  (a game counts as split when a second task holds >= 5 % of its steps);
- revisits that got the game's first id back;
- detection delay after each switch: agent steps until the label first equals the segment's
  majority label (median and max), and steps after that with another label (relapses);
- evaluation labels: once the stream is observed, ``ForgetMeNot.infer`` (each frame on its own,
  learning off, as evaluation labels its episodes) on every ``--eval-every``-th frame of the
  stream: the ARI of those labels against the games, and the least share of a game's frames
  given its main training task;
- microseconds per observe() on one thread, amortised over the stream, and memory per task.

With ``--seeds`` the same run is repeated on several stream seeds and summarised one line per
seed; with ``--draws`` the games are drawn at random from all Atari games (``--draw-size`` per
draw, draw i seeded by ``--draw-seed`` + i) and each draw is one line.

    python bench/bench_fmn.py                      # defaults: 10 games, 24 segments of 2000
    python bench/bench_fmn.py --sweep              # concentration x window table
    python bench/bench_fmn.py --games Pong,Enduro,Krull,Boxing --segments 8
    python bench/bench_fmn.py --games minatar --segments 15 --segment-steps 3000 --seeds 0,1,2
    python bench/bench_fmn.py --draws 5 --draw-seed 0 --segments 16 --segment-steps 1000
    python bench/bench_fmn.py --games MinAtar/Breakout,MinAtar/Freeway,MinAtar/Asterix \
        --policy runs/minatar/ewc-true/seed0 --sweep
    python bench/bench_fmn.py --games minatar --segments 15 --segment-steps 5000 --seeds 0,1 \
        --policy ckpts/step_000000100000 ckpts/step_000000700000 ckpts/step_000001500000
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import tyro
from scipy.sparse import csr_matrix  # type: ignore[import-untyped]
from scipy.sparse.csgraph import connected_components  # type: ignore[import-untyped]
from sklearn.metrics import adjusted_rand_score

from envs.games import ATARI_GAMES, MINATAR_GAMES, resolve_game
from envs.make import make_env
from envs.vector import EnvConfig
from ewc_dqn.config import DEFAULT_PRESET, preset
from ewc_dqn.fmn import FMNConfig, ForgetMeNot
from ewc_dqn.fmn_config import AtariFeatures
from ewc_dqn.labels import fmn_frame
from ewc_dqn.run_builder import TrainedPolicy, load_trained_policy

STABLE_GAMES = (
    "Pong,Breakout,SpaceInvaders,Seaquest,Boxing,Freeway,Asterix,RoadRunner,Atlantis,Kangaroo"
)
UNPLAYABLE = ("Skiing",)
"""Atari games left out of ``--draws``: ale-py 0.12.1's AtariVectorEnv hangs in Skiing's first
step under some actions (action 15 of the full set), so a random player cannot play it."""


@dataclass
class Args:
    """Forget-me-not benchmark on real ALE frames."""

    games: str = STABLE_GAMES
    """Comma-separated game names (at least 2), or ``minatar`` for the five MinAtar games."""
    segments: int = 24
    """Visits in the stream (the first len(games) visit every game once)."""
    segment_steps: int = 2000
    """Agent steps per visit."""
    seed: int = 0
    """Seeds the visit order, the random policy and the environments."""
    seeds: str = ""
    """Comma-separated stream seeds: one summary line per seed instead of the single run."""
    draws: int = 0
    """Draw this many sets of Atari games at random from all Atari games (one line each)."""
    draw_seed: int = 0
    """Seed of the first draw; draw i uses draw_seed + i."""
    draw_size: int = 10
    """Games per draw."""
    concentration: float = FMNConfig.concentration
    """Dirichlet concentration for the single run."""
    window: int = FMNConfig.window
    """Window width (model observations) for the single run."""
    atari_pool_weight: float = FMNConfig.atari_pool_weight
    """Frames' worth of the pooled background in Atari models' prior (0: symmetric prior)."""
    minatar_new_task_cost: float = FMNConfig.minatar_new_task_cost
    """Nats a MinAtar window must gain to make a new task."""
    minatar_pool_weight: float = FMNConfig.minatar_pool_weight
    """Frames' worth of the pooled background in MinAtar models' prior."""
    minatar_shrinkage: float = FMNConfig.minatar_shrinkage
    """Weight of a MinAtar task's mean over a plane's rows (columns) in each row's prior."""
    max_tasks: int = FMNConfig.max_tasks
    """Cap on tasks (the ``minatar`` presets use 64)."""
    minatar_merge_observations: int = FMNConfig.minatar_merge_observations
    """Probation of a new MinAtar task in model observations (0: no merges)."""
    atari_merge_observations: int = FMNConfig.atari_merge_observations
    """Probation of a new Atari task in model observations (0: no merges)."""
    atari_features: AtariFeatures = FMNConfig.atari_features
    """What an Atari task models: 'pixels', 'level-planes' or 'palette'
    (FMNConfig.atari_features)."""
    atari_palette_min_pixels: int = FMNConfig.atari_palette_min_pixels
    """Pixels that make a grey value present ('palette' features)."""
    downscale: int = FMNConfig.downscale
    """Block-average factor per side of Atari frames."""
    sweep: bool = False
    """Measure concentration x window instead of a single run."""
    policy: tuple[Path, ...] = ()
    """Checkpoints or run folders whose agents play the games of their schedule, in turn along
    the stream (none: random play)."""
    epsilon: float = 0.05
    """Exploration of the trained agent (probability of a random action)."""
    join_alternations: str = ""
    """Also the ARI after joining alternating ids, for each ``L:K`` (or ``L:K:mutual``) of this
    comma-separated list (``join_alternating``); not with ``--sweep``."""
    reset_visits: bool = False
    """Reset a game's environment at the start of each visit, as training does (default: a
    revisit goes on with the episode the game's last visit left)."""
    episode_switch_steps: int = FMNConfig.episode_switch_steps
    """Agent steps after an episode's start within which the task may change (0: anywhere);
    use with ``--reset-visits``, as in training, where every visit starts an episode."""
    eval_every: int = 7
    """Label every this many frames of the observed stream with ``infer`` for the evaluation
    labels' ARI (1: every frame)."""
    evict_mib: int = 0
    """Also time observe() with this many MiB written between calls, as the training loop's
    updates do between its FMN calls (0: not measured); single run only."""


def fmn_config(args: Args) -> FMNConfig:
    """The FMN settings of the single run, ``--seeds`` and ``--draws``: every ``Args`` field
    named as an ``FMNConfig`` field, the others at their defaults."""
    names = {f.name for f in dataclasses.fields(FMNConfig)}
    return FMNConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Args) if f.name in names}
    )


class Stream(NamedTuple):
    """What a stream of visits showed, one entry per agent step."""

    frames: np.ndarray
    """(T, ...) uint8, as FMN sees them in training."""
    labels: np.ndarray
    """(T,) the true game's index."""
    starts: np.ndarray
    """Each visit's first step."""
    episode_starts: np.ndarray
    """(T,) bool: the frame is an episode's first."""


def make_stream(
    games: list[str],
    segments: int,
    segment_steps: int,
    seed: int,
    policies: Sequence[TrainedPolicy] = (),
    epsilon: float = 0.05,
    reset_visits: bool = False,
) -> Stream:
    """The stream of ``segments`` visits of ``segment_steps`` steps each. Visit i is played by
    ``policies[i * len(policies) // segments]`` (each game it trained on; the others at
    random), or at random when there are none. ``reset_visits``: every visit starts an
    episode (a reset seeded by the stream seed and the visit), as in training; otherwise a
    revisit goes on where the game's last visit stopped."""
    rng = np.random.default_rng(seed)
    order = [int(g) for g in rng.permutation(len(games))]
    while len(order) < segments:
        game = int(rng.integers(len(games)))
        if game != order[-1]:
            order.append(game)
    order = order[:segments]
    suite = resolve_game(games[0]).suite
    config = policies[0].config if policies else preset(DEFAULT_PRESET[suite], suite)
    env_config: EnvConfig = replace(config.env, num_envs=1)
    envs, obs = {}, {}
    frames: list[np.ndarray] = []
    firsts: list[bool] = []
    first: dict[int, bool] = {}  # per game: its env's obs starts an episode
    for i, game in enumerate(order):
        name = games[game]
        policy = policies[i * len(policies) // segments] if policies else None
        trained = policy.schedule.games if policy else ()
        tasks = {g: trained.index(g) for g in games if g in trained}
        if game not in envs:
            envs[game] = make_env(name, env_config, seed=seed + 1000 * game)
            obs[game], first[game] = envs[game].reset(), True
        elif reset_visits:
            obs[game], first[game] = envs[game].reset(seed=seed + 1000 * game + i), True
        env = envs[game]
        c = env.frame_shape[0]
        for _ in range(segment_steps):
            frames.append(fmn_frame(obs[game][0, -c:]))
            firsts.append(first[game])
            action = rng.integers(0, env.num_actions, size=1)
            if policy is not None and name in tasks and rng.random() >= epsilon:
                with torch.no_grad():
                    q = policy.network(torch.as_tensor(obs[game]), tasks[name])
                action = q.argmax(1).numpy()
            step = env.step(action)
            obs[game], first[game] = step.obs, bool(step.is_first[0])
    for env in envs.values():
        env.close()
    labels = np.repeat(np.array(order), segment_steps)
    starts = np.arange(segments) * segment_steps
    return Stream(np.stack(frames), labels, starts, np.array(firsts))


def draw_games(size: int, seed: int) -> list[str]:
    """``size`` Atari games drawn without replacement from all playable Atari games, sorted."""
    pool = [g for g in ATARI_GAMES if g not in UNPLAYABLE]
    picked = np.random.default_rng(seed).choice(len(pool), size=size, replace=False)
    return sorted(pool[i] for i in picked)


def eval_labels(
    fmn: ForgetMeNot, frames: np.ndarray, labels: np.ndarray, predicted: np.ndarray, every: int
) -> tuple[float, float]:
    """The labels evaluation gives, ``infer`` on every ``every``-th frame of a stream ``fmn``
    has observed (``predicted``: its training labels), each frame on its own: their ARI against
    the frames' true games, and the smallest share of a game's frames labelled with the game's
    main training task."""
    picked = np.arange(0, frames.shape[0], every)
    inferred = np.array([fmn.infer(frames[t]) for t in picked])
    truth = labels[picked]
    share = 1.0
    for game in np.unique(truth):
        main = np.bincount(predicted[labels == game]).argmax()
        share = min(share, float(np.mean(inferred[truth == game] == main)))
    return float(adjusted_rand_score(truth, inferred)), share


def run_fmn(
    config: FMNConfig, frames: np.ndarray, episode_starts: np.ndarray | None = None
) -> tuple[np.ndarray, float, ForgetMeNot]:
    """Inferred ids per step and microseconds per observe() (amortised over the stream);
    ``episode_starts``: (T,) bool, each frame's ``observe(frame, episode_start)``."""
    fmn = ForgetMeNot(config)
    predicted = np.empty(frames.shape[0], dtype=np.int64)
    firsts = np.zeros(frames.shape[0], dtype=bool) if episode_starts is None else episode_starts
    start = time.perf_counter()
    for t, frame in enumerate(frames):
        predicted[t] = fmn.observe(frame, bool(firsts[t]))
    micros = (time.perf_counter() - start) / frames.shape[0] * 1e6
    return predicted, micros, fmn


def time_with_tasks(
    config: FMNConfig, frames: np.ndarray, episode_starts: np.ndarray
) -> tuple[float, float]:
    """Microseconds per observe() once every game of the stream has a task (the stream is
    played once untimed, then again, timed): wall clock and this process's CPU time, which is
    less sensitive to other processes on a shared machine."""
    fmn = ForgetMeNot(config)
    for frame, first in zip(frames, episode_starts, strict=True):
        fmn.observe(frame, bool(first))
    wall, cpu = time.perf_counter(), time.process_time()
    for frame, first in zip(frames, episode_starts, strict=True):
        fmn.observe(frame, bool(first))
    n = frames.shape[0]
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


def time_evicted(
    config: FMNConfig, frames: np.ndarray, episode_starts: np.ndarray, evict_bytes: int
) -> float:
    """Microseconds per observe() (wall clock of the calls alone) on a first pass of the stream
    with ``evict_bytes`` written between calls: the caches hold what the writes left of FMN's
    tables, as in the training loop, where updates run between FMN calls."""
    fmn = ForgetMeNot(config)
    junk = np.zeros(max(evict_bytes // 4, 1), dtype=np.float32)
    total = 0.0
    for frame, first in zip(frames, episode_starts, strict=True):
        junk += 1.0
        start = time.perf_counter()
        fmn.observe(frame, bool(first))
        total += time.perf_counter() - start
    return total / frames.shape[0] * 1e6


def join_alternating(predicted: np.ndarray, short: int, handovers: int, mutual: bool) -> np.ndarray:
    """The reported ids relabelled after the fact: two ids are joined (connected components,
    the lowest id names the group) when the stream went from a run of one to a run of the
    other, both runs no longer than ``short`` steps, at least ``handovers`` times; ``mutual``:
    only where one id is the other's most frequent such partner. What an online rule that merges
    alternating tasks could give at most on labels alone (the models are left as they are)."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(predicted)) + 1])
    lengths = np.diff(np.append(starts, predicted.shape[0]))
    names, runs = np.unique(predicted[starts], return_inverse=True)  # runs: each run's id index
    both_short = (lengths[:-1] <= short) & (lengths[1:] <= short)
    pairs = np.sort(np.stack([runs[:-1], runs[1:]], axis=1)[both_short], axis=1)
    counts = np.zeros((names.shape[0], names.shape[0]), dtype=np.int64)
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    counts += counts.T  # symmetric: handovers either way between ids i and j
    joined = counts >= handovers
    if mutual:  # each id's most frequent partner (among those with a handover at all)
        best = np.where(counts.any(axis=1), counts.argmax(axis=1), -1)
        favourite = best[:, None] == np.arange(names.shape[0])[None, :]
        joined &= favourite | favourite.T
    _, component = connected_components(csr_matrix(joined), directed=False)
    lowest = np.array([names[component == c].min() for c in component])
    return lowest[np.searchsorted(names, predicted)].astype(predicted.dtype)


def score(
    labels: np.ndarray, predicted: np.ndarray, starts: np.ndarray, segment_steps: int
) -> dict:
    """ARI, splits, merges (games whose main task, the one holding most of their steps, is
    another game's too), the smallest share of a game's steps in its main task, revisits and
    detection delays of one run."""
    games = np.unique(labels)
    majority = {}
    split_games = []
    main_share = 1.0
    for g in games:
        ids, counts = np.unique(predicted[labels == g], return_counts=True)
        majority[int(g)] = int(ids[np.argmax(counts)])
        main_share = min(main_share, float(counts.max() / counts.sum()))
        if np.sum(counts >= 0.05 * counts.sum()) > 1:
            split_games.append(int(g))
    owners: dict[int, list[int]] = {}
    for g, task in majority.items():
        owners.setdefault(task, []).append(g)
    merged = [gs for gs in owners.values() if len(gs) > 1]
    delays, relapses, revisits, first_id = [], 0, [0, 0], {}
    for i, start in enumerate(starts):
        seg = predicted[start : start + segment_steps]
        g = int(labels[start])
        ids, counts = np.unique(seg, return_counts=True)
        final = int(ids[np.argmax(counts)])
        if g in first_id:
            revisits[0] += int(final == first_id[g])
            revisits[1] += 1
        else:
            first_id[g] = final
        found = int(np.argmax(seg == final))
        relapses += int(np.sum(seg[found:] != final))
        if i > 0:
            delays.append(found)
    return {
        "ari": adjusted_rand_score(labels, predicted),
        "split_games": split_games,
        "merged_games": merged,
        "main_share": main_share,
        "revisits": revisits,
        "delay_median": float(np.median(delays)) if delays else 0.0,
        "delay_max": int(max(delays)) if delays else 0,
        "relapses": relapses,
    }


def main(args: Args) -> None:
    # One core, as the timing target says: numpy's element-wise maths is single-threaded and
    # the FMN uses no BLAS; torch is pinned in case an environment uses it.
    torch.set_num_threads(1)
    if args.eval_every < 1:
        raise SystemExit("--eval-every takes a number of frames >= 1")
    if args.evict_mib < 0 or (args.evict_mib and (args.sweep or args.seeds or args.draws)):
        raise SystemExit("--evict-mib takes MiB >= 0 and goes with the single run")
    if args.draws:
        if args.policy:
            raise SystemExit("--draws plays at random; --policy plays the games of --games")
        run_draws(args)
        return
    games = parse_games(args.games)
    if len(games) < 2:
        raise SystemExit("--games needs at least two games")
    if args.sweep and args.join_alternations:
        raise SystemExit("--join-alternations goes with a single configuration, not --sweep")
    rules = join_rules(args.join_alternations)
    policies = load_policies(args.policy, games)
    if args.seeds:
        run_seeds(args, games, policies)
        return
    start = time.perf_counter()
    frames, labels, starts, episodes = make_stream(
        games,
        args.segments,
        args.segment_steps,
        args.seed,
        policies,
        args.epsilon,
        args.reset_visits,
    )
    print(
        f"stream: {len(games)} games, {args.segments} segments x {args.segment_steps} steps = "
        f"{frames.shape[0]} frames, seed {args.seed} ({time.perf_counter() - start:.0f} s to play)"
    )
    if args.sweep:
        configs = [
            FMNConfig(concentration=c, window=w)
            for c in (0.5, 0.1, 0.01, 0.001)
            for w in (4, 8, 16)
        ]
        print(
            "concentration window   ARI  tasks split merged revisits delay_med delay_max "
            "relapses  us"
        )
    else:
        configs = [fmn_config(args)]
    for config in configs:
        predicted, micros, fmn = run_fmn(config, frames, episodes)
        s = score(labels, predicted, starts, args.segment_steps)
        if args.sweep:
            print(
                f"{config.concentration:13g} {config.window:6d} {s['ari']:6.3f} "
                f"{fmn.num_tasks:6d} {len(s['split_games']):5d} {len(s['merged_games']):6d} "
                f"{s['revisits'][0]:4d}/{s['revisits'][1]:<4d} {s['delay_median']:9.0f} "
                f"{s['delay_max']:9d} {s['relapses']:8d} {micros:5.1f}"
            )
            continue
        print(f"config: {dataclasses.asdict(config)}")
        print(f"ARI: {s['ari']:.4f}")
        evaluation = eval_labels(fmn, frames, labels, predicted, args.eval_every)
        print(
            f"evaluation labels (infer, every {args.eval_every}th frame): ARI {evaluation[0]:.4f}, "
            f"least share of a game's frames in its main task {evaluation[1]:.2f}"
        )
        print(f"tasks created: {fmn.num_tasks} for {len(games)} games")
        print(f"games split over several tasks: {[games[g] for g in s['split_games']]}")
        print(f"games sharing one task: {[[games[g] for g in gs] for gs in s['merged_games']]}")
        print(f"revisits that got their first id back: {s['revisits'][0]}/{s['revisits'][1]}")
        print(
            f"detection delay (agent steps): median {s['delay_median']:.0f}, max {s['delay_max']}; "
            f"steps relabelled after detection: {s['relapses']}"
        )
        for g, name in enumerate(games):
            ids, counts = np.unique(predicted[labels == g], return_counts=True)
            shares = ", ".join(f"task {i}: {c}" for i, c in zip(ids, counts, strict=True))
            print(f"  {name:14s} {shares}")
        print_joined(rules, labels, predicted, starts, args.segment_steps, games)
        print(f"us per observe(), amortised over the stream: {micros:.1f}")
        wall, cpu = time_with_tasks(config, frames, episodes)
        print(
            f"us per observe() with {fmn.num_tasks} tasks (stream replayed): wall {wall:.1f}, "
            f"CPU {cpu:.1f} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
        if args.evict_mib:
            evicted = time_evicted(config, frames, episodes, args.evict_mib << 20)
            print(
                f"us per observe() with {args.evict_mib} MiB written between calls: "
                f"{evicted:.1f} (first pass; {micros:.1f} without)"
            )
        print(f"memory per task: {fmn.memory_per_task_bytes() / 1024:.0f} KiB")
        print(f"stats: {fmn.stats()}")


def parse_games(text: str) -> list[str]:
    """Game names from ``--games``; ``minatar`` stands for the five MinAtar games."""
    if text.strip().lower() == "minatar":
        return list(MINATAR_GAMES)
    return [g.strip() for g in text.split(",") if g.strip()]


def summary_line(
    s: dict, fmn: ForgetMeNot, games: list[str], evaluation: tuple[float, float]
) -> str:
    """ARI, evaluation labels' ARI and least main share (``eval_labels``), tasks, main-task
    share, split and merged games of one run, on one line."""
    merged = ["+".join(games[g] for g in gs) for gs in s["merged_games"]]
    return (
        f"ARI {s['ari']:.3f}  eval ARI {evaluation[0]:.3f} (share {evaluation[1]:.2f})  "
        f"tasks {fmn.num_tasks:2d}  "
        f"main share {s['main_share']:.2f}  "
        f"split {[games[g] for g in s['split_games']]}  merged {merged}"
    )


def load_policies(paths: Sequence[Path], games: list[str]) -> list[TrainedPolicy]:
    """The trained agents of ``--policy``, in the order given, each announced with its step."""
    # the networks only: a checkpoint whose replay chunks are gone still plays
    policies = [load_trained_policy(path, torch.device("cpu"), parts=()) for path in paths]
    for policy in policies:
        played = [g for g in games if g in policy.schedule.games]
        print(f"policy: {policy.checkpoint} (step {policy.step:,}) plays {', '.join(played)}")
    return policies


def run_seeds(args: Args, games: list[str], policies: Sequence[TrainedPolicy] = ()) -> None:
    """The single configuration on several stream seeds, one line per seed."""
    config = fmn_config(args)
    rules = join_rules(args.join_alternations)
    print(f"{len(games)} games, {args.segments} segments x {args.segment_steps} steps per seed")
    aris = []
    for seed in (int(x) for x in args.seeds.split(",")):
        frames, labels, starts, episodes = make_stream(
            games,
            args.segments,
            args.segment_steps,
            seed,
            policies,
            args.epsilon,
            args.reset_visits,
        )
        predicted, micros, fmn = run_fmn(config, frames, episodes)
        s = score(labels, predicted, starts, args.segment_steps)
        aris.append(s["ari"])
        evaluation = eval_labels(fmn, frames, labels, predicted, args.eval_every)
        line = summary_line(s, fmn, games, evaluation)
        print(f"seed {seed:3d}  {line}  us/observe {micros:.1f}", flush=True)
        print_joined(rules, labels, predicted, starts, args.segment_steps, games)
    print(f"ARI: min {min(aris):.3f}, mean {np.mean(aris):.3f} over {len(aris)} seeds")


def join_rules(text: str) -> list[tuple[int, int, bool]]:
    """``--join-alternations``: (L, K, mutual) per rule; a malformed one exits before any play."""
    rules = []
    for rule in filter(None, text.split(",")):
        parts = rule.split(":")
        numbers = len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit()
        if not numbers or parts[2:] not in ([], ["mutual"]):
            raise SystemExit(f"--join-alternations: {rule!r} is not L:K or L:K:mutual")
        rules.append((int(parts[0]), int(parts[1]), parts[2:] == ["mutual"]))
    return rules


def print_joined(
    rules: Sequence[tuple[int, int, bool]],
    labels: np.ndarray,
    predicted: np.ndarray,
    starts: np.ndarray,
    segment_steps: int,
    games: list[str],
) -> None:
    """One line per rule: the stream's ARI and ids after ``join_alternating``, and the games
    that then share their main task (joins of a game's modes help; joins of games harm)."""
    for short, handovers, mutual in rules:
        joined = join_alternating(predicted, short, handovers, mutual)
        s = score(labels, joined, starts, segment_steps)
        merged = ["+".join(games[g] for g in gs) for gs in s["merged_games"]]
        rule = f"{short}:{handovers}{':mutual' if mutual else ''}"
        print(
            f"  alternations joined ({rule}): ARI {s['ari']:.3f}, {len(np.unique(joined))} ids, "
            f"merged {merged}",
            flush=True,
        )


def run_draws(args: Args) -> None:
    """The single configuration on ``args.draws`` random draws of Atari games, one line each."""
    config = fmn_config(args)
    rules = join_rules(args.join_alternations)
    print(
        f"{args.draws} draws of {args.draw_size} of {len(ATARI_GAMES) - len(UNPLAYABLE)} Atari "
        f"games, {args.segments} segments x {args.segment_steps} steps, stream seed {args.seed}"
    )
    aris = []
    for i in range(args.draws):
        games = draw_games(args.draw_size, args.draw_seed + i)
        frames, labels, starts, episodes = make_stream(
            games, args.segments, args.segment_steps, args.seed, reset_visits=args.reset_visits
        )
        predicted, micros, fmn = run_fmn(config, frames, episodes)
        s = score(labels, predicted, starts, args.segment_steps)
        aris.append(s["ari"])
        print(f"draw {args.draw_seed + i}: {', '.join(games)}", flush=True)
        evaluation = eval_labels(fmn, frames, labels, predicted, args.eval_every)
        print(f"  {summary_line(s, fmn, games, evaluation)}  us/observe {micros:.1f}", flush=True)
        print_joined(rules, labels, predicted, starts, args.segment_steps, games)
    print(f"ARI: min {min(aris):.3f}, mean {np.mean(aris):.3f} over {len(aris)} draws")


if __name__ == "__main__":
    main(tyro.cli(Args))
