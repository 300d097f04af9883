"""Training throughput of the real loop against stable-baselines3's DQN, interleaved in one run.

What is timed, for each network (``--which``):

- **ours**: ``ewc_dqn.run_builder.start_run`` with the network's preset (``atari`` for the paper
  network on Pong, ``minatar-single`` for the MinAtar network on MinAtar/Breakout) and a single-game
  schedule of ``learning_starts + steps`` agent steps, ``show_progress=False``, in a temporary
  run folder. ``Trainer.train()`` is the whole loop (acting, environment, replay, updates, target
  copies, logging). The clock reads come from the loop's own log calls: ``log_every`` is set so
  that one falls on agent step ``learning_starts`` and one on the last step, and the figures are
  the agent steps and ``agent.updates`` between those two reads over the wall time between them.
  The checkpoint at the end of the schedule falls after the last read (per-visit work, not
  per-step work; the evaluation is skipped); the warm-up (filling the replay) before the first.
- **SB3**: ``stable_baselines3.DQN`` with a features extractor that rebuilds the same shared
  conv/FC layers and ``net_arch=[]`` (so its Q-head is the same Linear(hidden, actions)); our
  per-task gains and biases have no SB3 counterpart and are left out there (they cost one
  multiply-add per unit). Same buffer size, batch, updates per agent step, target interval,
  optimiser and its settings, gradient clip, gamma, number of environment copies and
  preprocessing (ale-py v5 ROM, full action set, no-op starts, 4-frame skip with max-pool, 84x84,
  4-frame stack; MinAtar planes padded to 10 channels, sticky actions 0.1). ``model.learn`` runs
  ``learning_starts`` steps untimed, then ``steps`` more timed (``reset_num_timesteps=False``);
  updates are ``model._n_updates``.
- Both explore with epsilon = 0.01 in the timed phase (so both run the greedy forward pass on
  nearly every step) and use the same ``torch.set_num_threads``.
- Replay bytes per transition: ``FrameReplay.bytes_per_transition()``; for SB3, the allocated
  nbytes of every numpy array of its ``ReplayBuffer`` over ``buffer_size``, with and without
  ``optimize_memory_usage``.

Differences that stay (they are what the comparison measures): our Double DQN target (one more
online forward pass on s' per update; SB3's DQN uses the max target), our loop's per-step
book-keeping, ale-py's threaded C++ vector env against SB3's ``DummyVecEnv`` of Python wrappers,
SB3's FIRE-on-reset for Pong (ours presses no FIRE), and reward clipping in the env (SB3) or in
the learner (ours).

Rounds alternate ours/SB3 (and flip which goes first) so load from other jobs hits both; each
figure is the median over rounds.

``--continual`` adds the continual loop on the ``--continual-preset`` MinAtar preset with the
schedule Breakout, Freeway, Breakout, Freeway (``--visit-steps`` each), against single-game
training on the same preset: (1) single game, no EWC; (2) continual, no EWC, true labels;
(3) continual, EWC, true labels; (4) continual, EWC, forget-me-not labels. The timed window is
the second half (visits 3 and 4, when both replays are past ``learning_starts``); it holds two
task switches with their Fisher estimates and one checkpoint (evaluations are skipped in every
measurement: they are per-visit scoring with learning off, not training). Timers around
``labeler.train_label``, ``ewc.penalty``, ``consolidate`` and ``save`` split the cost; their
per-call figures are averages over the whole run.

    python bench/bench_training.py                        # paper + minatar, 2 rounds
    python bench/bench_training.py --which minatar --continual
"""

from __future__ import annotations

import cProfile
import math
import os
import platform
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import ale_py
import gymnasium as gym
import numpy as np
import torch
import tyro
from minatar.gym import register_envs
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack
from torch import nn

from envs.games import resolve_game
from envs.make import make_env
from envs.minatar_env import NUM_CHANNELS
from envs.schedule import Schedule
from ewc_dqn.config import EvalConfig, TrainConfig, preset
from ewc_dqn.networks import build_q_network
from ewc_dqn.run_builder import make_schedule, single_game_schedule, start_run

CONV_LAYERS: dict[str, tuple[list[tuple[int, int, int]], int]] = {
    "paper": ([(32, 8, 4), (64, 4, 2), (128, 3, 1)], 1024),
    "minatar": ([(16, 3, 1)], 128),
}
"""(out channels, kernel, stride) of each conv and the FC width, as in ewc_dqn.networks."""


@dataclass(frozen=True)
class Args:
    """Training-throughput benchmark settings."""

    which: str = "paper,minatar"
    """Comma-separated networks to measure: paper (Atari Pong), minatar (MinAtar/Breakout)."""
    steps: int = 0
    """Timed agent steps per measurement (0: 200 for paper, 4000 for minatar)."""
    learning_starts: int = 1_000
    """Agent steps played untimed first (replay fill; updates start after them)."""
    rounds: int = 2
    """Measurements of each implementation, alternating (the median is reported)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where both learners run: 'auto' picks CUDA when available."""
    threads: int = 1
    """torch.set_num_threads for both (0: torch's default). 1 by default: on a shared, loaded
    machine two OpenMP threads on tiny MinAtar ops wait on each other far more than they gain."""
    continual: bool = False
    """Also measure the continual loop against single-game training (MinAtar)."""
    continual_preset: str = "minatar"
    """Preset of the continual measurement (a MinAtar one: minatar, smoke, ...)."""
    visit_steps: int = 1_500
    """Agent steps per visit in the continual measurement (4 visits; the last 2 are timed)."""
    copies: int = 0
    """Environment copies for both learners (0: the preset's own; SB3 gets the same number, with
    its train_freq = train_every / copies vector steps so updates per agent step match)."""
    profile: bool = False
    """Also profile one extra run of our loop per network with cProfile (top functions)."""
    seed: int = 0
    """Seed of both learners and environments."""


@dataclass(frozen=True)
class Setup:
    """One network's measurement: our preset and game, and the matching SB3 settings."""

    name: str
    game: str
    config: TrainConfig
    steps: int


@dataclass
class Measurement:
    """Agent steps and updates over wall seconds of the timed phase."""

    steps: int
    updates: int
    seconds: float
    cpu_seconds: float
    """Process CPU time (all threads) over the same phase: less sensitive to other jobs."""
    replay_bytes: float = math.nan
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def updates_per_second(self) -> float:
        return self.updates / self.seconds

    @property
    def steps_per_cpu_second(self) -> float:
        return self.steps / self.cpu_seconds


# ------------------------------------------------------------------------------------ ours


class LapLogger:
    """Forwards every call to the run's logger and notes the clock, agent step and update
    count at each training-scalar log (the loop's ``perf/steps_per_second`` lines)."""

    def __init__(self, inner: Any, trainer: Any) -> None:
        self.inner = inner
        self.trainer = trainer
        self.laps: list[tuple[float, float, int, int]] = []

    def log(self, step: int, frames: int, scalars: Any) -> None:
        if "perf/steps_per_second" in scalars:
            lap = (time.perf_counter(), time.process_time(), step, self.trainer.agent.updates)
            self.laps.append(lap)
        self.inner.log(step, frames, scalars)

    def csv_size(self) -> int:
        return self.inner.csv_size()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def between(self, first_step: int) -> Measurement:
        """Steps, updates and seconds from the first lap at or after ``first_step`` to the last."""
        start = next(lap for lap in self.laps if lap[2] >= first_step)
        end = self.laps[-1]
        if end[2] <= start[2]:
            raise RuntimeError(f"no log call after step {first_step}: laps {self.laps}")
        wall, cpu = end[0] - start[0], end[1] - start[1]
        return Measurement(end[2] - start[2], end[3] - start[3], wall, cpu)


class CallTimer:
    """Wall seconds and calls of the wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self.seconds[name], self.calls[name] = 0.0, 0

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed


def bench_config(
    config: TrainConfig, learning_starts: int, lap: int, threads: int, total_steps: int
) -> TrainConfig:
    """``config`` with updates from ``learning_starts``, epsilon at its floor by then, a log
    call every ``lap`` agent steps, one checkpoint period as long as the run (``total_steps``
    agent steps: no periodic checkpoint inside it) and a one-frame evaluation."""
    if lap % config.env.num_envs:
        raise ValueError(f"steps and learning_starts must be multiples of {config.env.num_envs}")
    return replace(
        config,
        agent=replace(
            config.agent,
            learning_starts=learning_starts,
            eps_decay_start=0,
            eps_decay_end=learning_starts,
        ),
        eval=EvalConfig(episodes=1, frames=1, epsilon=0.05, num_envs=1),
        checkpoint_every=total_steps,
        save_replay=False,
        log_every=lap,
        torch_threads=threads,
    )


def run_ours(
    config: TrainConfig,
    schedule: Schedule,
    timed_from: int,
    device: str,
    profiler: cProfile.Profile | None = None,
) -> Measurement:
    """Run the real loop in a temporary folder; measure from agent step ``timed_from`` on."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = start_run(config, schedule, Path(tmp) / "run", device, show_progress=False)
        laps = LapLogger(trainer.logger, trainer)
        trainer.logger = laps  # type: ignore[assignment]
        timer = CallTimer()
        # Instance attributes shadow the methods the loop calls through self.
        # Evaluation (learning off, once per visit) is not training throughput, and scoring a
        # MinAtar game needs its reference scores in envs/minatar_reference.json; skip it.
        trainer.evaluate = timer.wrap("evaluate", lambda visit: [])  # type: ignore[method-assign]
        trainer.save = timer.wrap("save", trainer.save)  # type: ignore[method-assign]
        trainer.consolidate = timer.wrap("consolidate", trainer.consolidate)  # type: ignore
        labeler = trainer.labeler
        labeler.train_label = timer.wrap("label", labeler.train_label)  # type: ignore
        if trainer.ewc is not None:
            trainer.ewc.penalty = timer.wrap("penalty", trainer.ewc.penalty)  # type: ignore
        try:
            if profiler is not None:
                profiler.enable()
            trainer.train()
        finally:
            if profiler is not None:
                profiler.disable()
            trainer.close()
        m = laps.between(timed_from)
        m.replay_bytes = trainer.replays[0].bytes_per_transition()
        m.extra = {
            **{f"{k}_s": v for k, v in timer.seconds.items()},
            **{f"{k}_calls": float(v) for k, v in timer.calls.items()},
            "tasks": float(trainer.labeler.num_tasks),
        }
    return m


def measure_ours(setup: Setup, args: Args, threads: int, profiler=None) -> Measurement:
    ls = args.learning_starts
    config = bench_config(setup.config, ls, math.gcd(ls, setup.steps), threads, ls + setup.steps)
    frames_per_step = config.env.frame_skip if config.suite == "atari" else 1
    schedule = single_game_schedule(setup.game, (ls + setup.steps) * frames_per_step)
    return run_ours(config, schedule, ls, args.device, profiler)


# ------------------------------------------------------------------------------------- SB3


class SharedLayers(BaseFeaturesExtractor):
    """Our Q-network's shared conv and FC layers (ReLU after each), without per-task gains."""

    def __init__(self, observation_space: gym.spaces.Box, arch: str) -> None:
        convs, hidden = CONV_LAYERS[arch]
        super().__init__(observation_space, features_dim=hidden)
        layers: list[nn.Module] = []
        cin = observation_space.shape[0]
        for cout, kernel, stride in convs:
            layers += [nn.Conv2d(cin, cout, kernel, stride), nn.ReLU()]
            cin = cout
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *observation_space.shape)).shape[1]
        self.fc = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(obs))


class MinAtarPlanes(gym.ObservationWrapper):
    """MinAtar's (10, 10, C) bool state -> (10, 10, 10) uint8 0/1 planes, channels first and
    zero-padded to 10 channels, as ``envs.minatar_env`` gives them. The Box's high of 1 keeps
    SB3 from treating it as an image (no /255, no transpose), like our input_scale of 1."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 1, (NUM_CHANNELS, 10, 10), np.uint8)
        self._planes = np.zeros((NUM_CHANNELS, 10, 10), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        c = observation.shape[-1]
        planes = self._planes.copy()
        planes[:c] = np.moveaxis(observation, -1, 0)
        return planes


def sb3_env(config: TrainConfig, game: str, seed: int) -> VecEnv:
    """SB3's environment chain with our preset's settings."""
    spec = resolve_game(game)
    env_cfg = config.env
    if config.suite == "atari":
        gym.register_envs(ale_py)
        env = make_atari_env(
            f"ALE/{spec.name}-v5",
            n_envs=env_cfg.num_envs,
            seed=seed,
            env_kwargs=dict(
                frameskip=1,
                repeat_action_probability=env_cfg.repeat_action_probability,
                full_action_space=True,
                max_num_frames_per_episode=env_cfg.max_episode_frames,
            ),
            wrapper_kwargs=dict(
                noop_max=env_cfg.noop_max,
                frame_skip=env_cfg.frame_skip,
                terminal_on_life_loss=False,
                clip_reward=config.agent.clip_rewards,
            ),
        )
        return VecFrameStack(env, n_stack=env_cfg.frame_stack)
    if "MinAtar/Breakout-v0" not in gym.registry:
        register_envs()
    game_id = spec.name.split("/")[1]

    def make() -> gym.Env:
        env = gym.make(
            f"MinAtar/{game_id}-v0",  # v0: MinAtar's full 6-action set, as ours
            sticky_action_prob=env_cfg.repeat_action_probability,
            max_episode_steps=env_cfg.max_episode_frames,
        )
        return MinAtarPlanes(env)

    return make_vec_env(make, n_envs=env_cfg.num_envs, seed=seed)


def sb3_model(config: TrainConfig, env: VecEnv, args: Args, optimize_memory: bool) -> DQN:
    """SB3's DQN with our preset's learner settings and network layers."""
    agent = config.agent
    n = env.num_envs
    if agent.train_every % n:
        raise ValueError("train_every must be a multiple of num_envs to match SB3's train_freq")
    if agent.optimizer == "rmsprop":
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.RMSprop
        optimizer_kwargs: dict[str, Any] = dict(
            alpha=agent.rmsprop_decay,
            eps=agent.rmsprop_eps,
            momentum=0.0,
            centered=agent.rmsprop_centered,
            foreach=True,
        )
    else:
        optimizer_class = torch.optim.Adam
        optimizer_kwargs = dict(eps=agent.adam_eps, foreach=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the replay's memory warning counts lazy pages
        return DQN(
            "CnnPolicy",
            env,
            learning_rate=agent.lr,
            buffer_size=config.replay.capacity,
            learning_starts=args.learning_starts,
            batch_size=agent.batch_size,
            gamma=agent.gamma,
            # SB3 counts train_freq in vector steps and target_update_interval in agent steps.
            train_freq=(agent.train_every // n, "step"),
            gradient_steps=1,
            target_update_interval=agent.target_update,
            exploration_initial_eps=agent.eps_end,
            exploration_final_eps=agent.eps_end,
            max_grad_norm=agent.max_grad_norm,
            optimize_memory_usage=optimize_memory,
            replay_buffer_kwargs=dict(handle_timeout_termination=not optimize_memory),
            policy_kwargs=dict(
                features_extractor_class=SharedLayers,
                features_extractor_kwargs=dict(arch=config.network.arch),
                net_arch=[],
                optimizer_class=optimizer_class,
                optimizer_kwargs=optimizer_kwargs,
            ),
            seed=args.seed,
            device=args.device,
            verbose=0,
        )


def sb3_replay_bytes(config: TrainConfig, env: VecEnv, optimize_memory: bool) -> float:
    """Allocated numpy bytes of SB3's ReplayBuffer per transition of buffer size."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = ReplayBuffer(
            config.replay.capacity,
            env.observation_space,
            env.action_space,
            device="cpu",
            n_envs=env.num_envs,
            optimize_memory_usage=optimize_memory,
            handle_timeout_termination=not optimize_memory,
        )
    arrays = [v for v in vars(buffer).values() if isinstance(v, np.ndarray)]
    return sum(a.nbytes for a in arrays) / config.replay.capacity


def measure_sb3(setup: Setup, args: Args, threads: int) -> Measurement:
    torch.set_num_threads(threads)
    env = sb3_env(setup.config, setup.game, args.seed)
    model = sb3_model(setup.config, env, args, optimize_memory=False)
    model.learn(total_timesteps=args.learning_starts)
    s0, u0 = model.num_timesteps, model._n_updates
    t0, c0 = time.perf_counter(), time.process_time()
    model.learn(total_timesteps=setup.steps, reset_num_timesteps=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    m = Measurement(model.num_timesteps - s0, model._n_updates - u0, seconds, cpu)
    m.replay_bytes = sb3_replay_bytes(setup.config, env, optimize_memory=False)
    m.extra["replay_bytes_optimized"] = sb3_replay_bytes(setup.config, env, optimize_memory=True)
    m.extra["shared_params"] = float(sum(p.numel() for p in model.q_net.parameters()))
    env.close()
    return m


# ------------------------------------------------------------------------------ reporting


def median_of(ms: list[Measurement]) -> tuple[float, float, float]:
    """Medians of steps/s, updates/s and steps per CPU second."""
    return (
        statistics.median(m.steps_per_second for m in ms),
        statistics.median(m.updates_per_second for m in ms),
        statistics.median(m.steps_per_cpu_second for m in ms),
    )


def machine_line(threads: int, device: str) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} logical cores{load}; torch {torch.__version__}, "
        f"{threads} torch threads, device {device}; {date.today().isoformat()}"
    )


def ours_shared_params(config: TrainConfig, game: str) -> int:
    """Parameter count of our network's shared layers (without per-task gains and biases)."""
    env = make_env(game, replace(config.env, num_envs=1), seed=0)
    c, h, w = env.frame_shape
    num_actions = env.num_actions
    env.close()
    net = build_q_network((config.env.frame_stack * c, h, w), num_actions, config.network, 1.0)
    shared = set(net.shared_parameter_names())
    return sum(p.numel() for n, p in net.named_parameters() if n in shared)


def with_copies(config: TrainConfig, copies: int) -> TrainConfig:
    """``config`` with ``copies`` environment copies (0: unchanged)."""
    return replace(config, env=replace(config.env, num_envs=copies)) if copies else config


def throughput(args: Args, threads: int) -> None:
    atari, minatar = preset("atari", "atari"), preset("minatar-single", "minatar")
    setups = {
        "paper": Setup("paper (Pong)", "Pong", with_copies(atari, args.copies), args.steps or 200),
        "minatar": Setup(
            "minatar (MinAtar/Breakout)",
            "MinAtar/Breakout",
            with_copies(minatar, args.copies),
            args.steps or 4000,
        ),
    }
    chosen = [setups[w.strip()] for w in args.which.split(",") if w.strip()]
    results: dict[str, dict[str, list[Measurement]]] = {
        s.name: {"ours": [], "sb3": []} for s in chosen
    }
    for r in range(args.rounds):
        for setup in chosen:
            order = ("ours", "sb3") if r % 2 == 0 else ("sb3", "ours")
            for impl in order:
                fn = measure_ours if impl == "ours" else measure_sb3
                m = fn(setup, args, threads)
                results[setup.name][impl].append(m)
                print(
                    f"  round {r + 1} {setup.name:<28} {impl:<5} {m.steps:>6} steps "
                    f"{m.updates:>5} updates {m.seconds:>7.1f} s  "
                    f"{m.steps_per_second:>8.1f} steps/s {m.updates_per_second:>7.2f} upd/s "
                    f"{m.steps_per_cpu_second:>8.1f} steps/cpu-s",
                    flush=True,
                )
    print()
    print(
        "| network | learner | agent steps/s | updates/s | steps/CPU-s | replay bytes/transition | "
        "buffer, copies, batch, steps/update |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for setup in chosen:
        cfg = setup.config
        shape = (
            f"{cfg.replay.capacity:,}, {cfg.env.num_envs}, {cfg.agent.batch_size}, "
            f"{cfg.agent.train_every}"
        )
        ours, sb3 = results[setup.name]["ours"], results[setup.name]["sb3"]
        (os_, ou, oc), (ss, su, sc) = median_of(ours), median_of(sb3)
        print(
            f"| {setup.name} | ours (Double DQN, FrameReplay) | {os_:,.1f} | {ou:,.2f} | "
            f"{oc:,.1f} | "
            f"{ours[0].replay_bytes:,.0f} | {shape} |"
        )
        print(
            f"| {setup.name} | SB3 DQN | {ss:,.1f} | {su:,.2f} | {sc:,.1f} | "
            f"{sb3[0].replay_bytes:,.0f} ({sb3[0].extra['replay_bytes_optimized']:,.0f} with "
            f"optimize_memory_usage) | {shape} |"
        )
        print(
            f"| {setup.name} | ours / SB3 | {os_ / ss:.2f}x | {ou / su:.2f}x | {oc / sc:.2f}x | "
            f"{ours[0].replay_bytes / sb3[0].replay_bytes:.2f}x | |"
        )
    print()
    for setup in chosen:
        sb3 = results[setup.name]["sb3"][0]
        print(
            f"{setup.name}: shared parameters ours "
            f"{ours_shared_params(setup.config, setup.game):,}, SB3 q_net "
            f"{sb3.extra['shared_params']:,.0f}; timed {setup.steps} agent steps after "
            f"{args.learning_starts} untimed, {args.rounds} rounds"
        )
    if args.profile:
        for setup in chosen:
            profile_ours(setup, args, threads)


def profile_ours(setup: Setup, args: Args, threads: int) -> None:
    profiler = cProfile.Profile()
    measure_ours(setup, args, threads, profiler)
    print(f"\ncProfile of our loop, {setup.name} (whole run incl. warm-up), top by tottime:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def continual(args: Args, threads: int) -> None:
    """Single game vs the continual loop without EWC, with EWC, and with EWC and FMN labels."""
    base = preset(args.continual_preset, "minatar")
    v, ls = args.visit_steps, args.learning_starts
    if v < ls:
        raise ValueError("--visit-steps must be at least --learning-starts")
    base = bench_config(base, ls, math.gcd(ls, v), threads, 4 * v)
    base = replace(
        base,
        schedule=replace(
            base.schedule,
            games=("MinAtar/Breakout", "MinAtar/Freeway"),
            num_games=2,
            order="given",
            visits_per_game=2,
            visit_frames=v,
        ),
    )
    single = single_game_schedule("MinAtar/Breakout", 4 * v)
    schedule = make_schedule(base)
    variants: list[tuple[str, TrainConfig, Schedule]] = [
        ("single game, no EWC", replace(base, consolidation="none"), single),
        ("continual, no EWC, true labels", replace(base, consolidation="none"), schedule),
        ("continual, EWC, true labels", replace(base, task_labels="true"), schedule),
        ("continual, EWC, FMN labels", replace(base, task_labels="inferred"), schedule),
    ]
    results: dict[str, list[Measurement]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, config, sched in order:
            m = run_ours(config, sched, 2 * v, args.device)
            results[name].append(m)
            print(
                f"  round {r + 1} {name:<32} {m.steps:>6} steps {m.updates:>5} updates "
                f"{m.seconds:>6.1f} s {m.steps_per_second:>8.1f} steps/s "
                f"{m.steps_per_cpu_second:>8.1f} steps/cpu-s",
                flush=True,
            )
    print(
        f"\ncontinual loop, preset {args.continual_preset!r}: Breakout, Freeway, Breakout, "
        f"Freeway, {v} agent steps per visit; timed: visits 3-4 ({2 * v} steps, 2 task "
        f"switches); medians of {args.rounds} rounds"
    )
    print(
        "| loop | agent steps/s | updates/s | steps/CPU-s | us/step | us/step over single | "
        "FMN us/step | EWC penalty us/update | Fisher s/switch | eval+save s/visit | tasks |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor = None
    for name, _, _ in variants:
        ms = results[name]
        sps, ups, cps = median_of(ms)
        us = 1e6 / sps
        floor = us if floor is None else floor

        def med(key: str, per: str, ms=ms) -> float:
            vals = [m.extra.get(key, 0.0) / max(m.extra.get(per, 0.0), 1.0) for m in ms]
            return statistics.median(vals)

        label = med("label_s", "label_calls") * 1e6
        penalty = med("penalty_s", "penalty_calls") * 1e6
        fisher = statistics.median(
            m.extra.get("consolidate_s", 0.0) / max(m.extra.get("consolidate_calls", 0.0), 1.0)
            for m in ms
        )
        per_visit = statistics.median(
            (m.extra["evaluate_s"] + m.extra["save_s"]) / max(m.extra["save_calls"], 1.0)
            for m in ms
        )
        tasks = statistics.median(m.extra["tasks"] for m in ms)
        print(
            f"| {name} | {sps:,.0f} | {ups:,.1f} | {cps:,.0f} | {us:,.0f} | {us - floor:+,.0f} | "
            f"{label:,.1f} | {penalty:,.1f} | {fisher:.2f} | {per_visit:.2f} | {tasks:.0f} |"
        )


def main(args: Args) -> None:
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    device = (
        "cuda"
        if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
        else "cpu"
    )
    print(machine_line(threads, device), flush=True)
    if args.which:
        throughput(args, threads)
    if args.continual:
        continual(args, threads)


if __name__ == "__main__":
    main(tyro.cli(Args))
