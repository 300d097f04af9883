"""The whole configuration of a run as nested, typed dataclasses, and the presets.

One dataclass per concern (environment, network, agent, replay, EWC, rehearsal, task inference,
schedule, evaluation), each field with its unit. A preset is a plain ``TrainConfig`` value;
every field of it can be overridden on the command line (``--agent.lr 1e-4``). The resolved
config is written to ``config.json`` in every run folder, and ``config_from_dict`` reads it back.

Units: *agent steps* count transitions summed over the parallel copies of the environment;
*frames* count emulator frames (agent steps x frame skip: 4 on Atari, 1 on MinAtar).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from envs.games import Suite, resolve_game
from envs.schedule import MINATAR_POOL, Schedule, ScheduleConfig
from envs.vector import EnvConfig
from ewc_dqn.agent import AgentConfig
from ewc_dqn.errors import UserError
from ewc_dqn.ewc import ConsolidatorKind, EWCConfig
from ewc_dqn.fmn import FMNConfig
from ewc_dqn.networks import NetworkConfig
from ewc_dqn.rehearsal import RehearsalConfig

Consolidation = Literal["ewc", "online-ewc", "l2", "none"]
"""What protects the earlier tasks' weights: a consolidator of that kind (ewc_dqn.ewc), or none."""
CONSOLIDATIONS: tuple[str, ...] = typing.get_args(Consolidation)


@dataclass(frozen=True)
class ReplayConfig:
    """Replay memory: one buffer per (inferred) task."""

    capacity: int = 50_000
    """Transitions held per task (the paper: 50,000)."""


@dataclass(frozen=True)
class EvalConfig:
    """Scoring every game of the schedule with learning off."""

    episodes: int = 10
    """Episodes per game, split evenly over the copies (ewc_dqn.evaluation)."""
    frames: int = 500_000
    """Emulator frames per game after which no episode starts (dqn_zoo's budget: 500,000);
    episodes already started play to their end, so none is cut short and short ones are not
    favoured."""
    epsilon: float = 0.05
    """Exploration rate while evaluating."""
    num_envs: int = 4
    """Parallel copies per game during evaluation."""
    every_frames: int = 0
    """Also evaluate every this many training frames (0: only at the end of every visit)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run."""

    env: EnvConfig = field(default_factory=EnvConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    ewc: EWCConfig = field(default_factory=EWCConfig)
    rehearsal: RehearsalConfig = field(default_factory=RehearsalConfig)
    fmn: FMNConfig = field(default_factory=lambda: FMNConfig(max_tasks=20))
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    consolidation: Consolidation = "ewc"
    """'ewc': one EWC term per task (the paper); 'online-ewc': one running Fisher and anchor
    (Schwarz et al. 2018); 'l2': one term per task with a uniform metric and ewc.l2_lam (the
    paper's L2 baseline); 'none': plain DQN (--no-ewc is --consolidation none)."""
    consolidation_min_steps: int = 0
    """Agent steps a task must have been trained since its last consolidation before leaving it
    re-estimates its Fisher (0: at every switch, as the paper). Guards the cost of EWC against
    inferred labels that flicker between tasks for a few steps."""
    task_labels: Literal["true", "inferred"] = "true"
    """Task identity from the schedule ('true') or from forget-me-not on the frames ('inferred')."""
    seed: int = field(default=0, metadata={"not_a_variant": True})
    """Seed of the agent, the environments and the replay (the schedule has its own)."""
    checkpoint_every: int = field(default=1_000_000, metadata={"not_a_variant": True})
    """Agent steps between checkpoints (also at every visit's end and at the end of the run)."""
    keep_checkpoints: int = field(default=2, metadata={"not_a_variant": True})
    """Complete checkpoints kept on disk (older ones are deleted)."""
    save_replay: bool = True
    """Replay buffers go into checkpoints (on by default). `--no-save-replay` leaves them out:
    smaller checkpoints, but a resumed run restarts with empty buffers, so resume is only
    approximate."""
    log_every: int = field(default=10_000, metadata={"not_a_variant": True})
    """Agent steps between training-scalar log lines."""
    torch_threads: int = field(default=0, metadata={"not_a_variant": True})
    """CPU threads for torch (0: torch's default)."""
    deterministic: bool = field(default=False, metadata={"not_a_variant": True})
    """CUDA only (the CPU path is always deterministic): deterministic cuDNN and cuBLAS
    algorithms, no TF32 and no cuDNN autotuning, so that a resumed run repeats an unbroken one
    bit for bit, at some cost in speed. Off: cuDNN picks its fastest kernels and matmuls and
    convolutions may use TF32, so runs on a GPU are repeatable only statistically."""

    @property
    def suite(self) -> Suite:
        """The suite of the schedule's games (or of its pool when the games are drawn)."""
        names = self.schedule.games or self.schedule.pool
        return resolve_game(names[0]).suite

    @property
    def frames_per_step(self) -> int:
        """Emulator frames per agent step of one environment copy: the Atari action repeat;
        1 on MinAtar, which has none."""
        return self.env.frame_skip if self.suite == "atari" else 1

    @property
    def consolidator(self) -> ConsolidatorKind | None:
        """The kind of EWCConsolidator the run builds, None for 'none'."""
        return None if self.consolidation == "none" else self.consolidation

    @property
    def variant(self) -> str:
        """Short label of the method, used for run folders and compare tables: the consolidation
        and the task-label source (ewc-true, online-ewc-inferred, l2-true, ...), no-ewc without
        consolidation (whatever the labels, as ever), rehearsal-true / rehearsal-inferred for
        rehearsal without consolidation and e.g. l2-rehearsal-true for both."""
        rehearsal = self.rehearsal.fraction > 0
        if self.consolidation == "none":
            return f"rehearsal-{self.task_labels}" if rehearsal else "no-ewc"
        method = f"{self.consolidation}-rehearsal" if rehearsal else self.consolidation
        return f"{method}-{self.task_labels}"

    def describe_method(self) -> str:
        """One line naming what protects the earlier tasks, with its strength."""
        parts = {
            "ewc": f"EWC (lambda {self.ewc.lam:g})",
            "online-ewc": f"online EWC (lambda {self.ewc.lam:g}, gamma {self.ewc.online_gamma:g})",
            "l2": f"L2 (lambda {self.ewc.l2_lam:g})",
            "none": "no consolidation",
        }
        text = f"{self.variant}: {parts[self.consolidation]}"
        if self.rehearsal.fraction > 0:
            share = self.rehearsal.rehearsed(self.agent.batch_size)
            text += (
                f", rehearsal of {share} of every {self.agent.batch_size} transitions "
                f"(fraction {self.rehearsal.fraction:g})"
            )
        return f"{text}, {self.task_labels} task labels"

    def validate(self) -> None:
        """Raise UserError (one line) for settings that cannot run."""
        self.env.validate()
        self.agent.validate()
        self.schedule.validate()
        if self.consolidation not in CONSOLIDATIONS:
            raise UserError(
                f"unknown consolidation {self.consolidation!r}; expected one of "
                f"{', '.join(CONSOLIDATIONS)}"
            )
        self.ewc.validate(self.consolidator)
        self.rehearsal.validate(self.agent.batch_size)
        self.fmn.validate()
        self.fmn.check_suite(minatar=self.suite == "minatar")
        if self.replay.capacity < self.agent.batch_size:
            raise UserError("replay.capacity must be at least agent.batch_size")
        if self.consolidation_min_steps < 0:
            raise UserError("consolidation_min_steps must be >= 0")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise UserError("checkpoint_every and log_every must be >= 1")
        if self.eval.episodes < 1 or self.eval.frames < 1 or self.eval.num_envs < 1:
            raise UserError("eval.episodes, eval.frames and eval.num_envs must be >= 1")
        if not 0.0 <= self.eval.epsilon <= 1.0:
            raise UserError("eval.epsilon must be in [0, 1]")
        self.check_visit_frames(self.schedule.frames_per_visit)
        if self.task_labels == "inferred" and self.fmn.max_tasks > self.network.max_tasks:
            raise UserError(
                f"fmn.max_tasks ({self.fmn.max_tasks}) exceeds the network's per-task parameter "
                f"sets (network.max_tasks = {self.network.max_tasks})"
            )

    def check_schedule(self, schedule: Schedule) -> None:
        """Raise UserError (one line, naming the fields) unless the run of ``schedule`` (the one
        actually trained, which for single-game runs is not built from ``self.schedule``) can
        do what this config asks: every visit whole vectorised steps, every game's task reaching
        its learning start and its epsilon floor, an EWC term active before the last visit, a
        visit at least one window of task inference, a checkpoint within the run, and with true
        labels one per-task parameter set of the network per game."""
        for visit in schedule.visits:
            self.check_visit_frames(visit.frames)
        steps_by_game: dict[str, int] = {}
        for visit in schedule.visits:
            steps = visit.frames // self.frames_per_step
            steps_by_game[visit.game] = steps_by_game.get(visit.game, 0) + steps
        game, least = min(steps_by_game.items(), key=lambda kv: kv[1])
        agent = self.agent
        if agent.learning_starts > least:
            raise UserError(
                f"agent.learning_starts ({agent.learning_starts:,} agent steps of a task) is "
                f"never reached: {game} is trained for {least:,} agent steps in all, so it "
                "would never be learned"
            )
        if agent.eps_decay_end > least:
            raise UserError(
                f"agent.eps_decay_end ({agent.eps_decay_end:,} agent steps of a task) is never "
                f"reached: {game} is trained for {least:,} agent steps in all, so its epsilon "
                f"never falls to agent.eps_end ({agent.eps_end})"
            )
        total_steps = schedule.total_frames // self.frames_per_step
        if self.checkpoint_every > total_steps:
            raise UserError(
                f"checkpoint_every ({self.checkpoint_every:,} agent steps) is longer than the "
                f"run ({total_steps:,} agent steps)"
            )
        if len(schedule.games) > 1 and self.consolidation != "none":
            last_start = schedule.visits[-1].start_frame
            if self.ewc.start_frames > last_start:
                raise UserError(
                    f"ewc.start_frames ({self.ewc.start_frames:,} frames) keeps every "
                    f"{self.consolidation} term inactive until the last visit starts (frame "
                    f"{last_start:,}), so it would change nothing; lower it or train with "
                    "--consolidation none"
                )
        if self.rehearsal.fraction > 0 and len(schedule.games) < 2:
            raise UserError(
                f"rehearsal.fraction {self.rehearsal.fraction:g} replays the other games, and "
                f"this run trains one game ({schedule.games[0]}); rehearsal needs a schedule of "
                "two games or more"
            )
        if self.task_labels == "inferred":
            period, period_field = (
                (self.fmn.update_period, "fmn.update_period")
                if self.suite == "atari"
                else (self.fmn.minatar_update_period, "fmn.minatar_update_period")
            )
            window = self.fmn.window * period  # vector steps
            shortest = min(v.frames for v in schedule.visits)
            vector_steps = shortest // (self.frames_per_step * self.env.num_envs)
            if vector_steps < window:
                raise UserError(
                    f"a visit of {shortest:,} frames is {vector_steps} steps of the "
                    f"{self.env.num_envs} copies, shorter than one window of task inference "
                    f"(fmn.window x {period_field} = {window} steps)"
                )
            merge_field = f"{'atari' if self.suite == 'atari' else 'minatar'}_merge_observations"
            probation = getattr(self.fmn, merge_field) * period
            if probation and vector_steps <= probation:
                flag = "--fmn." + merge_field.replace("_", "-")
                raise UserError(
                    f"a visit of {shortest:,} frames is {vector_steps} steps, not longer than a "
                    f"new task's probation (fmn.{merge_field} x {period_field} = "
                    f"{probation} steps): a game visited for less could be merged into the game "
                    f"before it; lengthen the visits or set {flag} 0"
                )
        if self.task_labels == "true" and len(schedule.games) > self.network.max_tasks:
            raise UserError(
                f"the schedule has {len(schedule.games)} games, each its own task with true "
                f"labels, but the network has {self.network.max_tasks} per-task parameter sets "
                f"(network.max_tasks); raise --network.max-tasks to {len(schedule.games)}"
            )

    def check_visit_frames(self, frames: int) -> None:
        """Raise UserError unless a visit of ``frames`` emulator frames is a whole number of
        vectorised steps (a visit that is not would run into the next one)."""
        chunk = self.frames_per_step * self.env.num_envs  # frames of one vectorised step
        if frames % chunk:
            raise UserError(
                f"a visit of {frames:,} frames is not a whole number of steps of {chunk} frames "
                f"({self.env.num_envs} environment copies x {self.frames_per_step} frames per step)"
            )


# --- presets ------------------------------------------------------------------------------

ATARI = TrainConfig(
    env=EnvConfig(num_envs=4),
    network=NetworkConfig(arch="paper", max_tasks=20),
    agent=AgentConfig(),
    replay=ReplayConfig(capacity=50_000),
    ewc=EWCConfig(lam=400.0, start_frames=20_000_000),
    # Task inference from the grey values a frame shows, deciding only in the first 32 agent
    # steps of an episode (two windows): on 12 random draws of ten games every game keeps its
    # own task (ARI 0.987 or more on each; the paper's per-pixel model without the rule: 2 of 6
    # draws at 0.95, dark games share a task and games with rooms split; docs/fmn.md).
    fmn=FMNConfig(max_tasks=20, atari_features="palette", episode_switch_steps=32),
    schedule=ScheduleConfig(num_games=10, visits_per_game=3, visit_frames=20_000_000),
    eval=EvalConfig(episodes=10, frames=500_000, epsilon=0.05, num_envs=4),
    checkpoint_every=1_000_000,
    consolidation_min_steps=50_000,
)
"""The paper's protocol (Table S2): 10 games, visits of 20M frames, 3 visits per game (600M
frames), the EWC penalty of a task active after 20M frames of it. For a GPU."""

ATARI_SHORT = replace(
    ATARI,
    agent=replace(ATARI.agent, eps_decay_start=50_000, eps_decay_end=300_000),
    ewc=replace(ATARI.ewc, start_frames=2_000_000),
    schedule=replace(ATARI.schedule, visits_per_game=2, visit_frames=2_000_000),
    eval=replace(ATARI.eval, episodes=5, frames=125_000),
    checkpoint_every=250_000,
)
"""The paper's protocol with visits of 2M frames (40M frames in all) and the EWC delay and the
epsilon decay scaled to match: for one GPU in hours."""

MINATAR_AGENT = AgentConfig(
    optimizer="adam",
    lr=1e-3,
    batch_size=32,
    train_every=4,
    target_update=1_000,
    learning_starts=2_000,
    eps_decay_start=2_000,
    eps_decay_end=25_000,
)
"""One DQN for every MinAtar preset: the single-task reference and the continual runs share it."""

MINATAR = TrainConfig(
    env=EnvConfig(
        num_envs=1,
        frame_skip=1,
        frame_stack=1,
        noop_max=0,
        repeat_action_probability=0.1,
        max_episode_frames=27_000,
    ),
    # 64 per-task parameter sets: room for the ids of task inference, which retires the id of
    # every second board it merges into its game's task (about 60 in a 1.5M-frame run,
    # docs/fmn.md) until a new task takes it; 64 rows cost 21k floats.
    network=NetworkConfig(arch="minatar", max_tasks=64),
    agent=MINATAR_AGENT,
    replay=ReplayConfig(capacity=100_000),
    # Lambda 40, not the paper's 400: of 40, 100 and 400 on this preset, 40 scored the highest
    # total averaged over the run (2.14 and 2.31 in two runs, 1.80 at 100, 1.38 at 400) because
    # it learns the new games that 400 barely learns; 100 forgot less in its one run
    # (docs/continual-minatar.md). L2's strength keeps the stiffness match of docs/ewc.md at
    # that lambda: 40 x the mean Fisher per protected weight (8.8e-4) = 0.035.
    ewc=EWCConfig(lam=40.0, l2_lam=0.035, start_frames=0),
    # A task that hands the stream back to its parent within 128 observations (1,024 agent
    # steps) was a new board of the parent's game, not a new game: merged (docs/fmn.md).
    fmn=FMNConfig(max_tasks=64, minatar_merge_observations=128),
    schedule=ScheduleConfig(
        pool=MINATAR_POOL, num_games=5, visits_per_game=3, visit_frames=100_000
    ),
    eval=EvalConfig(episodes=10, frames=20_000, epsilon=0.05, num_envs=4),
    checkpoint_every=100_000,
    consolidation_min_steps=2_000,
    log_every=5_000,
    torch_threads=1,
)
"""The five MinAtar games, 3 visits of 100k frames each (1.5M frames): about an hour on 2 CPU
cores when the machine is otherwise idle. MinAtar frames are agent steps."""

MINATAR_QUICK = replace(
    MINATAR,
    schedule=replace(MINATAR.schedule, visits_per_game=2, visit_frames=30_000),
    eval=replace(MINATAR.eval, episodes=5, frames=5_000),
    checkpoint_every=30_000,
    log_every=2_000,
)
"""The README's main command: the five MinAtar games, 2 visits of 30k frames (300k frames),
about 15 minutes on an idle 2-core CPU."""

MINATAR_SINGLE = replace(MINATAR, eval=replace(MINATAR.eval, episodes=20, frames=100_000))
"""Single-game MinAtar training (the reference DQN scores, 80k steps per game): the same agent as
the continual presets."""

SMOKE = replace(
    ATARI,
    env=replace(ATARI.env, num_envs=2),
    agent=replace(
        ATARI.agent,
        batch_size=8,
        learning_starts=100,
        target_update=100,
        eps_decay_start=0,
        eps_decay_end=300,
    ),
    replay=ReplayConfig(capacity=2_000),
    ewc=replace(ATARI.ewc, start_frames=0, fisher_batches=2, fisher_batch_size=8),
    schedule=ScheduleConfig(
        games=("Pong", "Breakout"), order="given", visits_per_game=2, visit_frames=800
    ),
    eval=EvalConfig(episodes=1, frames=400, epsilon=0.05, num_envs=2),
    checkpoint_every=200,
    log_every=100,
)
"""Seconds on a CPU: two Atari games, two short visits each, tiny replay; for tests and CI."""

SMOKE_MINATAR = replace(
    MINATAR,
    agent=replace(
        MINATAR.agent, learning_starts=100, target_update=100, eps_decay_start=0, eps_decay_end=200
    ),
    replay=ReplayConfig(capacity=2_000),
    ewc=replace(MINATAR.ewc, fisher_batches=2, fisher_batch_size=8),
    fmn=replace(MINATAR.fmn, minatar_merge_observations=16),  # shorter than a 600-frame visit
    schedule=replace(
        MINATAR.schedule,
        games=("MinAtar/Breakout", "MinAtar/Freeway"),
        order="given",
        visits_per_game=2,
        visit_frames=600,
    ),
    eval=EvalConfig(episodes=1, frames=300, epsilon=0.05, num_envs=2),
    checkpoint_every=400,
    log_every=100,
)
"""The smoke preset for MinAtar games."""


def scaled(config: TrainConfig, factor: float) -> TrainConfig:
    """``config`` with every count of time or memory multiplied by ``factor``: visit length and
    total budget, learning start, replay capacity, epsilon decay points, target period, EWC
    activation delay and the Fisher's minibatches, the consolidation guard, a new task's
    probation (MinAtar), checkpoint and log periods, evaluation budget and episodes, and the
    episode cap. The ratios between them stay
    those of ``config`` (the learning budget, batch and update period are untouched), so the
    protocol's rules fire in the same order at a fraction of the cost: a dry run of the ``atari``
    preset on a CPU (docs/atari-protocol.md).

    Each count keeps the least value that still works: a visit or a target period of one
    vectorised step, a learning start of one minibatch, a replay that holds two minibatches, one
    Fisher minibatch, one evaluation episode, an episode cap of twice the longest no-op start, a
    checkpoint period of one visit.
    """
    if not (math.isfinite(factor) and 0.0 < factor <= 1.0):
        raise UserError(f"scale must be in (0, 1], got {factor}")
    if factor == 1.0:
        return config

    def count(value: int, least: int) -> int:
        return max(least, round(value * factor))

    fps, n = config.frames_per_step, config.env.num_envs
    chunk = fps * n  # frames of one vectorised step: visits are whole ones

    def frames(value: int, least: int) -> int:
        """Frames rounded to whole vectorised steps, so that counts equal before scaling (a
        visit and the EWC delay) stay equal."""
        return max(least, round(value * factor / chunk) * chunk)

    sched = config.schedule
    visits = sched.num_selected_games * sched.visits_per_game
    schedule = replace(
        sched,
        visit_frames=frames(sched.visit_frames, chunk),
        budget_frames=frames(sched.budget_frames, visits * chunk)
        // (visits * chunk)
        * (visits * chunk)
        if sched.budget_frames
        else 0,
    )
    agent = config.agent
    eps_start = count(agent.eps_decay_start, 0)
    agent = replace(
        agent,
        learning_starts=count(agent.learning_starts, agent.batch_size),
        eps_decay_start=eps_start,
        eps_decay_end=max(eps_start, count(agent.eps_decay_end, 0)),
        target_update=count(agent.target_update, n),
    )
    env = config.env
    cap = env.max_episode_frames
    env = replace(env, max_episode_frames=count(cap, min(cap, 2 * (env.noop_max + 1) * fps)))
    # Enough for a minibatch and a Fisher minibatch of whole stacks in every copy.
    least_replay = 2 * max(agent.batch_size, config.ewc.fisher_batch_size)
    least_replay += n * (env.frame_stack + 2)

    def probation(observations: int) -> int:
        """A probation scales with the visits it must stay shorter than; 0 (no merges) stays."""
        return count(observations, 1) if observations else 0

    return replace(
        config,
        env=env,
        agent=agent,
        replay=replace(config.replay, capacity=count(config.replay.capacity, least_replay)),
        ewc=replace(
            config.ewc,
            start_frames=frames(config.ewc.start_frames, 0),
            fisher_batches=count(config.ewc.fisher_batches, 1),
        ),
        schedule=schedule,
        eval=replace(
            config.eval,
            episodes=count(config.eval.episodes, 1),
            frames=count(config.eval.frames, 1),
            every_frames=frames(config.eval.every_frames, 0),
        ),
        fmn=replace(
            config.fmn,
            atari_merge_observations=probation(config.fmn.atari_merge_observations),
            minatar_merge_observations=probation(config.fmn.minatar_merge_observations),
        ),
        consolidation_min_steps=count(config.consolidation_min_steps, 0),
        # A checkpoint holds the whole state (networks, optimiser, every EWC term) however short
        # the run, so a scaled period would write it hundreds of times; one visit at least.
        checkpoint_every=count(config.checkpoint_every, schedule.visit_frames // fps),
        log_every=count(config.log_every, 1),
    )


ATARI_DRY_SCALE = 2.5e-5
"""The scale of the ``atari-dry`` preset: visits of 496 frames (31 steps of the 4 copies), the
whole protocol of 600M frames in 14,880 (3,720 agent steps, about 850 updates of the paper
network)."""

ATARI_DRY = scaled(ATARI, ATARI_DRY_SCALE)
"""The ``atari`` preset scaled as a whole by ``ATARI_DRY_SCALE``: ten games, three visits each,
the paper network and the full Atari preprocessing, every rule of the protocol in the same order,
in minutes on a CPU. A check of the machinery, not of learning."""

ATARI_CPU = replace(
    ATARI,
    env=replace(ATARI.env, terminal_on_life_loss=True),
    network=replace(ATARI.network, arch="nature"),
    agent=replace(
        ATARI.agent,
        optimizer="adam",
        lr=1e-4,
        learning_starts=20_000,
        eps_decay_start=20_000,
        eps_decay_end=120_000,
        target_update=2_000,
    ),
    replay=ReplayConfig(capacity=100_000),
    ewc=replace(ATARI.ewc, start_frames=1_200_000),
    schedule=replace(ATARI.schedule, num_games=3, visits_per_game=2, visit_frames=1_200_000),
    eval=replace(ATARI.eval, episodes=8, frames=40_000),
    consolidation_min_steps=5_000,
    checkpoint_every=100_000,
    log_every=5_000,
)
"""Atari at a CPU's scale, through the full preprocessing (action repeat, max-pooling, frame
stacking): the Nature DQN network (a quarter of the paper network's compute), Adam at 1e-4
(CleanRL's and Dopamine's choice for short budgets), updates from 20k agent steps of a task and
epsilon at its floor by 120k, a target period of 2,000 agent steps (500 updates), 100k
transitions of replay per task; 3 games x 2 visits of 1.2M frames (300k agent steps) with the
EWC delay equal to one visit; a lost life ends the episode for learning (stable-baselines3's and
CleanRL's default, not the paper's: without it Breakout stayed at random play for 210k agent
steps). Measured in docs/atari-cpu.md."""

PRESETS: dict[str, dict[Suite, TrainConfig]] = {
    "atari": {"atari": ATARI},
    "atari-short": {"atari": ATARI_SHORT},
    "atari-dry": {"atari": ATARI_DRY},
    "atari-cpu": {"atari": ATARI_CPU},
    "minatar": {"minatar": MINATAR},
    "minatar-quick": {"minatar": MINATAR_QUICK},
    "minatar-single": {"minatar": MINATAR_SINGLE},
    "smoke": {"atari": SMOKE, "minatar": SMOKE_MINATAR},
}
"""Preset name -> the preset for each suite it supports."""

DEFAULT_PRESET: dict[Suite, str] = {"atari": "atari", "minatar": "minatar"}
"""The preset used when none is named, by the suite of the games."""


def preset(name: str, suite: Suite | None = None) -> TrainConfig:
    """The preset ``name`` for ``suite`` (its only suite when None); one-line UserError if the
    name is unknown or the preset does not serve that suite."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    by_suite = PRESETS[name]
    if suite is None:
        return next(iter(by_suite.values()))
    if suite not in by_suite:
        raise UserError(f"preset {name!r} is for {'/'.join(by_suite)} games, not {suite}")
    return by_suite[suite]


# --- (de)serialisation --------------------------------------------------------------------


NOT_A_VARIANT = "not_a_variant"
"""Metadata key of the config fields whose value never makes two runs different experiments: a
seed (runs that differ in seeds alone are replicates), a thread count, the checkpoint and log
cadence. The comparison of runs groups them by every other field."""


def not_a_variant_fields(config: Any = None, prefix: str = "") -> frozenset[str]:
    """Dotted names of the fields of ``config`` (default: ``TrainConfig()``), nested configs
    included, marked ``metadata={"not_a_variant": True}``."""
    config = TrainConfig() if config is None else config
    names: set[str] = set()
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get(NOT_A_VARIANT):
            names.add(prefix + f.name)
        elif dataclasses.is_dataclass(value):
            names |= not_a_variant_fields(value, f"{prefix}{f.name}.")
    return frozenset(names)


def unused_field_prefixes(config: dict[str, Any]) -> tuple[str, ...]:
    """Dotted-name prefixes of the settings a run with this ``config_to_dict`` output never
    reads, so they cannot set it apart from another run: task inference's (``fmn.``) with true
    labels, consolidation's (``ewc.``, the consolidation guard) without consolidation."""
    unused: list[str] = []
    if config.get("task_labels") == "true":
        unused.append("fmn.")
    if config.get("consolidation") == "none":
        unused += ["ewc.", "consolidation_min_steps"]
    return tuple(unused)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Nested plain dict of every field (tuples as lists), for config.json."""
    return _plain(dataclasses.asdict(config))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


_DERIVED = {"variant", "suite"}
"""Keys of config.json derived from the fields (written for readers, ignored when loading)."""

_LEGACY_MODES = {"separate": "ewc", "online": "online-ewc"}
"""``ewc.mode`` of config.json files written before ``consolidation`` -> its consolidation."""


def upgrade_config_dict(data: Any) -> Any:
    """A config.json written before ``consolidation`` existed, with this version's fields:
    ``no_ewc: true`` is ``consolidation: 'none'``, otherwise ``ewc.mode`` 'separate' is 'ewc'
    and 'online' is 'online-ewc' (both keys are dropped). Other data is returned as it is; a
    config holding both the old keys and ``consolidation``, or old keys of the wrong type, is a
    UserError."""
    if not isinstance(data, dict):
        return data
    ewc = data.get("ewc")
    has_mode = isinstance(ewc, dict) and "mode" in ewc
    if "no_ewc" not in data and not has_mode:
        return data
    if "consolidation" in data:
        raise UserError("the config has both consolidation and the no_ewc / ewc.mode it replaced")
    out = dict(data)
    no_ewc = out.pop("no_ewc", False)
    mode = "separate"
    if has_mode:
        out["ewc"] = dict(ewc)  # type: ignore[arg-type]
        mode = out["ewc"].pop("mode")
    if not isinstance(no_ewc, bool) or mode not in _LEGACY_MODES:
        raise UserError(
            f"config fields no_ewc ({no_ewc!r}) and ewc.mode ({mode!r}) must be a bool and "
            "'separate' or 'online'"
        )
    out["consolidation"] = "none" if no_ewc else _LEGACY_MODES[mode]
    return out


def config_from_dict(data: dict[str, Any], cls: type = TrainConfig, where: str = "") -> Any:
    """Rebuild a (nested) config dataclass from ``config_to_dict`` output; unknown keys and
    values of the wrong type are a UserError naming the field, so a config from another
    version or an edited one is neither silently half-read nor a crash later. A TrainConfig
    from before ``consolidation`` is read through ``upgrade_config_dict``."""
    if cls is TrainConfig:
        data = upgrade_config_dict(data)
    if not isinstance(data, dict):
        name = f"config field {where.rstrip('.')}" if where else "the config"
        raise UserError(f"{name} must be a JSON object, got {data!r}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names - _DERIVED
    if unknown:
        raise UserError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    for name in names & set(data):
        value, hint = data[name], hints[name]
        if dataclasses.is_dataclass(hint):
            value = config_from_dict(value, hint, f"{where}{name}.")  # type: ignore[arg-type]
        else:
            if _is_tuple(hint) and isinstance(value, list):
                value = tuple(value)
            if not _has_type(value, hint):
                raise UserError(
                    f"config field {where}{name} must be {_type_name(hint)}, got {data[name]!r}"
                )
        kwargs[name] = value
    return cls(**kwargs)


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type (an int is a float; a bool is neither)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is tuple:
        items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
        return isinstance(value, tuple) and all(_has_type(v, items[0]) for v in value)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is tuple:
        return f"a list of {args[0].__name__}s"
    return "null" if hint is type(None) else f"a{'n' if hint is int else ''} {hint.__name__}"


def _is_tuple(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple(a) for a in typing.get_args(hint))
    return origin is tuple or hint is tuple
