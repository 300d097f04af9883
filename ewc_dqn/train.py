"""The continual training loop: one game at a time along a schedule, one task id per inferred
task, one replay buffer, epsilon schedule and EWC (or L2) term per task id, optionally a share of
every minibatch rehearsed from the other tasks' replays, evaluation after every visit.

Single-game training is the same loop with a one-visit schedule.

Reproducibility and resume. Everything random draws from one ``np.random.Generator`` owned here
(acting, replay sampling, Fisher minibatches) plus the environments' own seeds; evaluation uses
generators seeded per call. The environment is re-created and reset with a seed derived from the
frame counter at every *segment* start: at the start of each visit and after each periodic
checkpoint. A run resumed from a periodic checkpoint therefore replays exactly what the
uninterrupted run did (``tests/test_train_e2e.py`` checks identical weights). A checkpoint taken
on Ctrl-C/SIGTERM mid-segment resumes with a fresh episode, so that resume is exact in every
learned state but not in the interrupted episode. Rehearsal draws from the same generator.

Crashes. A checkpoint records the size of every CSV log, and resuming cuts the logs back to it,
so the rows of an evaluation that ran after the last checkpoint are written again exactly once.
The run is finished (``final.json``) only when every evaluation has run. A non-finite loss,
gradient or weight stops the run with a ``DivergenceError`` before any checkpoint can hold it.
``ewc_dqn.faults`` kills or stops the process at named stages for the tests of all this.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from envs.games import resolve_game
from envs.make import EnvCache
from envs.schedule import Schedule, Visit
from envs.vector import EnvConfig
from ewc_dqn.agent import DQNAgent
from ewc_dqn.checkpoint import does_not_fit, latest_checkpoint, load_checkpoint, save_checkpoint
from ewc_dqn.config import TrainConfig
from ewc_dqn.consolidation import ConsolidationPolicy
from ewc_dqn.errors import UserError
from ewc_dqn.evaluation import GameScore, evaluate_games, format_scores, paper_mean, paper_total
from ewc_dqn.ewc import EWCConsolidator
from ewc_dqn.faults import FaultPoint
from ewc_dqn.labels import TaskLabeler
from ewc_dqn.metrics import MetricsLogger
from ewc_dqn.networks import TaskRuns
from ewc_dqn.rand_index import adjusted_rand_from_counts
from ewc_dqn.rehearsal import rehearsal_minibatch
from ewc_dqn.replay import FrameReplay
from ewc_dqn.run_folder import (
    EVAL_COLUMNS,
    EVAL_CSV,
    FINAL_FILE,
    SUMMARY_COLUMNS,
    SUMMARY_CSV,
    TRAIN_CSV,
    CsvLog,
    truncate_csv_after,
    truncate_file,
    write_json_atomic,
)
from ewc_dqn.run_lock import RunLock
from ewc_dqn.stop_signals import StopSignals
from ewc_dqn.transition import Transition

ReplayFactory = Callable[[np.random.Generator], FrameReplay]


class DivergenceError(UserError):
    """Training met a non-finite loss, gradient or weight. One line: when and which."""


@dataclass
class TaskCounters:
    """Per-task agent steps and frames trained (epsilon and the EWC delay run on these)."""

    steps: dict[int, int]
    frames: dict[int, int]

    def add(self, task: int, steps: int, frames: int) -> None:
        self.steps[task] = self.steps.get(task, 0) + steps
        self.frames[task] = self.frames.get(task, 0) + frames

    def forget(self, task: int) -> None:
        self.steps.pop(task, None)
        self.frames.pop(task, None)

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": {str(k): v for k, v in self.steps.items()},
            "frames": {str(k): v for k, v in self.frames.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = {int(k): int(v) for k, v in state["steps"].items()}
        self.frames = {int(k): int(v) for k, v in state["frames"].items()}


class Trainer:
    """Runs a schedule to its end, checkpointing and evaluating along the way."""

    def __init__(
        self,
        config: TrainConfig,
        schedule: Schedule,
        run_dir: Path,
        agent: DQNAgent,
        labeler: TaskLabeler,
        ewc: EWCConsolidator | None,
        consolidation: ConsolidationPolicy,
        make_replay: ReplayFactory,
        rng: np.random.Generator,
        logger: MetricsLogger,
        device: torch.device,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.schedule = schedule
        self.run_dir = Path(run_dir)
        self.agent = agent
        self.labeler = labeler
        self.ewc = ewc
        self.consolidation = consolidation  # when a task left is consolidated (with self.ewc)
        self.make_replay = make_replay
        self.rng = rng
        self.logger = logger
        self.device = device
        self.show_progress = show_progress
        self.games = [resolve_game(g) for g in schedule.games]
        self.frames_per_step = config.frames_per_step
        # State (everything below is in state_dict()).
        self.step = 0  # agent steps, summed over copies
        self.frames = 0  # emulator frames
        self.replays: dict[int, FrameReplay] = {}
        self.replay_born: dict[int, int] = {}  # task -> its agent steps when its replay was made
        self.counters = TaskCounters({}, {})
        self.current_task: int | None = None
        self.eval_index = 0
        self.pending_eval: int | None = None  # visit whose end-of-visit evaluation is due
        self.next_eval_frames = config.eval.every_frames or math.inf
        # (true task, task id used, the id's generation) -> agent steps
        self.label_counts: dict[tuple[int, int, int], int] = defaultdict(int)
        self.task_generation: dict[int, int] = {}  # task id -> the labeler's generation of it
        # Transient.
        self.run_lock: RunLock | None = None  # the run folder's lock, released by close()
        self._fault = FaultPoint.from_env()
        self._finite_at = 0  # agent steps at the last check that found everything finite
        self._stop = StopSignals()
        self._envs = EnvCache()  # training and evaluation environments, reset with a seed
        self._acc: dict[str, list[float]] = defaultdict(list)
        self._eval_log = CsvLog(self.run_dir / EVAL_CSV, EVAL_COLUMNS)
        self._summary_log = CsvLog(self.run_dir / SUMMARY_CSV, SUMMARY_COLUMNS)

    # ------------------------------------------------------------------------------ the loop

    def train(self, stop_after_steps: int | None = None) -> bool:
        """Train until the schedule's end, a stop signal, or the first checkpoint at or after
        ``stop_after_steps`` agent steps (for time-sliced jobs); True when the schedule
        finished."""
        total = self.schedule.total_frames
        bar = tqdm(
            total=total // self.frames_per_step,
            initial=self.step,
            unit="step",
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        with self._stop:
            self._evaluate_pending()  # a visit ended just before the last checkpoint
            while self.frames < total and not self._stop.requested:
                visit, _ = self.schedule.visit_at(self.frames)
                ckpt_frames = self._next_checkpoint_step() * self.frames_per_step
                self._play_segment(visit, min(visit.end_frame, ckpt_frames), bar)
                if self._stop.requested:
                    break
                if self.frames >= visit.end_frame:
                    self.pending_eval = visit.index
                # Checkpoint before evaluating, so a crash in the evaluation loses no training.
                self.save()
                if self.pending_eval is not None:
                    self._fault.at("visit-end-saved", self.step)
                self._evaluate_pending()
                if stop_after_steps is not None and self.step >= stop_after_steps:
                    break
        bar.close()
        if self._stop.requested:
            self.save()
        # A stop that came while the last visit's checkpoint was written leaves its evaluation
        # pending: the run is then unfinished, and resuming runs that evaluation first.
        finished = self.frames >= total and self.pending_eval is None
        if finished:
            self._write_final()
        self.logger.flush()
        return finished

    def _evaluate_pending(self) -> None:
        if self.pending_eval is not None and not self._stop.requested:
            self.evaluate(self.schedule.visits[self.pending_eval])
            self._fault.at("evaluated", self.step)
            self.pending_eval = None
            self.save()
            self._fault.at("evaluation-saved", self.step)

    def _next_checkpoint_step(self) -> int:
        every = self.config.checkpoint_every
        return (self.step // every + 1) * every

    def _play_segment(self, visit: Visit, end_frame: int, bar: tqdm) -> None:
        """Play ``visit``'s game from a fresh reset until ``end_frame`` frames in all."""
        env = self._envs.get(self.games[visit.task], self.config.env)
        n = env.num_envs
        c = env.frame_shape[0]
        obs = env.reset(seed=self._segment_seed())
        need_first = True  # obs must open a stream in the acting task's replay
        episode_start = True  # of the first copy, whose frames task inference sees
        t0, s0 = time.perf_counter(), self.step
        while self.frames < end_frame and not self._stop.requested:
            task = self.labeler.train_label(obs[0, -c:], visit.task, episode_start)
            if task != self.current_task:
                self._switch_task(task)
                need_first = True
            self.label_counts[(visit.task, task, self.task_generation[task])] += n
            replay = self.replays[task]
            if need_first:
                # A stream opens with obs as an episode start: after a task switch in the
                # middle of an episode the first few stacks are zero-padded in that replay.
                zeros = np.zeros(n)
                false = np.zeros(n, dtype=bool)
                replay.add(obs[:, -c:], zeros, zeros, false, false, np.ones(n, dtype=bool))
                need_first = False
            eps = self.agent.epsilon(self.counters.steps.get(task, 0))
            actions = self.agent.act(obs, task, eps, self.rng)
            step = env.step(actions)
            replay.add(
                step.obs[:, -c:],
                actions,
                self.agent.learning_reward(step.reward),
                step.terminated,
                step.truncated,
                step.is_first,
            )
            prev_step = self.step
            self.step += n
            self.frames += n * env.frames_per_step
            self.counters.add(task, n, n * env.frames_per_step)
            if self.ewc is not None:
                self.ewc.add_frames(task, n * env.frames_per_step)
            self._learn(task, replay, n)
            self._record_episodes(visit, step)
            obs = step.obs
            episode_start = bool(step.is_first[0])
            bar.update(n)
            if self.step // self.config.log_every > prev_step // self.config.log_every:
                sps = (self.step - s0) / max(time.perf_counter() - t0, 1e-9)
                self._log_train(task, eps, sps)
                bar.set_postfix(game=visit.game, task=task, eps=f"{eps:.2f}", sps=f"{sps:.0f}")
            if self.frames >= self.next_eval_frames:
                # At a visit's last frame the end-of-visit evaluation that follows is this one.
                if self.frames < visit.end_frame:
                    self.evaluate(visit)
                self.next_eval_frames += self.config.eval.every_frames

    def _segment_seed(self) -> int:
        return (self.config.seed * 1_000_003 + self.frames) % (2**31 - 1)

    def _learn(self, task: int, replay: FrameReplay, new_steps: int) -> None:
        """Hand the agent the steps just played; it updates and syncs as its rules say."""
        penalty = self.ewc.penalty if self.ewc is not None else None

        def sample(n: int) -> tuple[Transition, TaskRuns | None]:
            if self.config.rehearsal.fraction == 0:
                return replay.sample(n), None
            batch, runs = rehearsal_minibatch(
                task, self.replays, n, self.config.rehearsal.fraction, self.rng
            )
            own = runs[0][1] if runs is not None else n
            self._acc["rehearsal/share"].append(1.0 - own / n)
            return batch, runs

        self.agent.learn(
            task,
            sample,
            new_steps,
            replay_steps=self.counters.steps[task] - self.replay_born[task],
            run_steps=self.step,
            penalty=penalty,
        )

    def _switch_task(self, task: int) -> None:
        """The acting task changes: consolidate the task just left, open the new one."""
        # Task inference retires ids (merged into another task) and gives them to new tasks
        # only while a task is left, so this is where the loop learns of it.
        self._forget_renamed_tasks()
        left = self.current_task
        if left is not None and left in self.task_generation and self.ewc is not None:
            left_steps = self.counters.steps.get(left, 0)
            if self.consolidation.due(left, left_steps):
                self.consolidate(left)
                self.consolidation.consolidated(left, left_steps)
        if task not in self.replays:
            self.replays[task] = self.make_replay(self.rng)
            self.replay_born[task] = self.counters.steps.get(task, 0)
        self.task_generation[task] = self.labeler.generation(task)
        self.current_task = task
        self._acc["tasks/switches"].append(1.0)

    def _forget_renamed_tasks(self) -> None:
        """Forget what the loop keeps for every task id whose generation changed (it was
        merged into another task, or merged and given to a new one): its replay and step
        counters (epsilon and learning start again), its consolidation record and EWC term,
        and the agent's gains and biases of it with their optimiser state. The new task of a
        reused id thus starts as a never-used id would."""
        for task, generation in list(self.task_generation.items()):
            if self.labeler.generation(task) == generation:
                continue
            del self.task_generation[task]
            self.replays.pop(task, None)
            self.replay_born.pop(task, None)
            self.counters.forget(task)
            self.consolidation.forget(task)
            if self.ewc is not None:
                self.ewc.forget(task)
            self.agent.forget_task(task)
            self.logger.log(self.step, self.frames, {"tasks/forgotten_task": float(task)})

    def consolidate(self, task: int) -> None:
        """(Re)compute the Fisher of ``task`` from its replay (all ones for L2, drawing nothing)
        and replace its term, anchored at the current weights."""
        assert self.ewc is not None
        self.check_finite()  # a diverged network would give a non-finite Fisher
        replay = self.replays.get(task)
        cfg = self.ewc.config
        if replay is None or (self.ewc.needs_replay and len(replay) < cfg.fisher_batch_size):
            return  # too little data to estimate anything; the old term (if any) stays
        t0 = time.perf_counter()
        self.ewc.consolidate_from_replay(
            task, lambda b: replay.sample(b).to(self.device), self.agent.target
        )
        scalars = {f"{self.ewc.namespace}/consolidated_task": float(task)}
        if self.ewc.needs_replay:
            scalars["perf/fisher_seconds"] = time.perf_counter() - t0
        self.logger.log(self.step, self.frames, {**scalars, **self.ewc.stats()})

    def _record_episodes(self, visit: Visit, step) -> None:
        done = step.terminated | step.truncated
        if done.any():
            for ret in step.episode_return[done]:
                self._acc["train/episode_return"].append(float(ret))
                self._acc[f"train/{visit.game}/episode_return"].append(float(ret))

    def _log_train(self, task: int, eps: float, sps: float) -> None:
        self.check_finite()
        scalars = {k: float(np.mean(v)) for k, v in self._acc.items() if k != "tasks/switches"}
        scalars["tasks/switches"] = float(len(self._acc.get("tasks/switches", [])))
        scalars.update(self.agent.take_stats())  # the updates' means, read from the device once
        scalars.update(
            {
                "train/epsilon": eps,
                "train/task": float(task),
                "train/task_steps": float(self.counters.steps.get(task, 0)),
                "train/frames": float(self.frames),
                "perf/steps_per_second": sps,
                "perf/updates": float(self.agent.updates),
                "perf/target_syncs": float(self.agent.target_syncs),
                "tasks/label_ari": self._label_ari(),
            }
        )
        scalars.update(self.labeler.stats())
        if self.ewc is not None:
            scalars.update(self.ewc.stats())
            if self.ewc.namespace != "ewc" and "losses/ewc_penalty" in scalars:
                # The agent names its penalty EWC's; an L2 run's logs name theirs.
                scalars[f"losses/{self.ewc.namespace}_penalty"] = scalars.pop("losses/ewc_penalty")
        self.logger.log(self.step, self.frames, scalars)
        self._acc.clear()
        self._fault.at("logged", self.step)

    def check_finite(self) -> None:
        """Raise DivergenceError when an update since the last check met a non-finite loss or
        gradient norm, or the weights hold a NaN or an infinity. One host sync: called when
        logging, before a Fisher estimate and before every checkpoint."""
        found = self.agent.divergence()
        if found is not None:
            update, what = found
            raise self._diverged(
                f"the {' and '.join(what)} became NaN or infinite at update {update:,}"
            )
        bad = self.agent.nonfinite_weights()
        if bad:
            more = f" and {len(bad) - 2} more" if len(bad) > 2 else ""
            raise self._diverged(f"weights became NaN or infinite ({', '.join(bad[:2])}{more})")
        self._finite_at = self.step

    def _diverged(self, what: str) -> DivergenceError:
        newest = latest_checkpoint(self.run_dir)
        kept = (
            f"the newest checkpoint, {newest.name}, holds finite weights"
            if newest is not None
            else "no checkpoint was written"
        )
        return DivergenceError(
            f"training diverged between agent steps {self._finite_at:,} and {self.step:,}: "
            f"{what}; {kept}. Lower --agent.lr or check the other settings"
        )

    # --------------------------------------------------------------------------- evaluation

    def evaluate(self, visit: Visit) -> list[GameScore]:
        """Score every game of the schedule with learning off; log and return the scores."""
        ev = self.config.eval
        seed = 10_000_019 * (self.config.seed + 1) + 7919 * self.eval_index
        scores = evaluate_games(
            self.agent.online,
            self.games,
            range(len(self.games)),
            _eval_env_config(self.config),
            self.labeler.eval_label,
            episodes=ev.episodes,
            frames=ev.frames,
            epsilon=ev.epsilon,
            seed_of=lambda true_task: seed + true_task,
            device=self.device,
            envs=self._envs,
        )
        total = paper_total(scores)
        mean = paper_mean(scores)
        ari = self._label_ari()
        base = {
            "eval_index": self.eval_index,
            "step": self.step,
            "frames": self.frames,
            "visit": visit.index,
        }
        self._eval_log.write_many(
            {
                **base,
                "game": s.game,
                "episodes": s.episodes,
                "raw_mean": s.raw_mean,
                "raw_std": s.raw_std,
                "normalised": s.normalised,
                "task_id": s.task_id,
                "complete": int(s.complete),
            }
            for s in scores
        )
        self._summary_log.write(
            {
                **base,
                "game": visit.game,
                "total_clipped": total,
                "mean_normalised": mean,
                "label_ari": ari,
                "num_tasks": self.labeler.num_tasks,
            }
        )
        scalars = {
            "eval/total_clipped": total,
            "eval/mean_normalised": mean,
            "eval/label_ari": ari,
            "tasks/num_tasks": float(self.labeler.num_tasks),
        }
        for s in scores:
            scalars[f"eval/{s.game}/raw"] = s.raw_mean
            scalars[f"eval/{s.game}/normalised"] = s.normalised
        self.logger.log(self.step, self.frames, scalars)
        self.eval_index += 1
        if self.show_progress:
            tqdm.write(
                format_scores(
                    scores,
                    total,
                    header=f"evaluation {self.eval_index} "
                    f"after visit {visit.index} ({visit.game}), "
                    f"{self.frames:,} frames",
                )
            )
        return scores

    def _write_final(self) -> None:
        write_json_atomic(
            self.run_dir / FINAL_FILE,
            {
                "step": self.step,
                "frames": self.frames,
                "evaluations": self.eval_index,
                "num_tasks": self.labeler.num_tasks,
                "label_ari": self._label_ari(),
                "training_steps_by_task": self._label_table(),
            },
        )

    def _label_table(self) -> dict[str, dict[str, int]]:
        """Agent steps of training per game and per task id used (the true id with true labels,
        FMN's with inferred ones): the confusion table behind ``label_ari``."""
        table: dict[str, dict[str, int]] = {}
        for (true, used, generation), steps in sorted(self.label_counts.items()):
            table.setdefault(self.schedule.games[true], {})[_label_name(used, generation)] = steps
        return table

    def _label_ari(self) -> float:
        """Adjusted Rand index of the games against the task labels used in training (an id
        given to a new task is a new label)."""
        return adjusted_rand_from_counts(
            {(true, (used, gen)): steps for (true, used, gen), steps in self.label_counts.items()}
        )

    # ------------------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "loop": {
                "step": self.step,
                "frames": self.frames,
                "current_task": self.current_task,
                "eval_index": self.eval_index,
                "pending_eval": self.pending_eval,
                "next_eval_frames": None
                if math.isinf(self.next_eval_frames)
                else self.next_eval_frames,
                # The agent's (in the loop's fields, where checkpoints have always kept it).
                "update_debt": self.agent.update_debt,
                # [true, used, steps], with the id's generation appended when not its first
                "label_counts": [
                    [t, u, c] if g == 1 else [t, u, c, g]
                    for (t, u, g), c in sorted(self.label_counts.items())
                ],
                "task_generation": {str(k): v for k, v in sorted(self.task_generation.items())},
            },
            "counters": self.counters.state_dict(),
            "consolidated_at": self.consolidation.state_dict(),
            "replay_born": {str(k): v for k, v in self.replay_born.items()},
            "agent": self.agent.state_dict(),
            "labeler": self.labeler.state_dict(),
            "rng": self.rng.bit_generator.state,
            # Kept for the checkpoint format; nothing in training draws from torch's generator.
            "torch_rng": torch.get_rng_state(),
            "replay_tasks": sorted(self.replays),
            # The logs as they stand at this checkpoint; resuming cuts them back to these sizes.
            "log_sizes": {
                TRAIN_CSV: self.logger.csv_size(),
                EVAL_CSV: self._eval_log.size(),
                SUMMARY_CSV: self._summary_log.size(),
            },
        }
        if self.ewc is not None:
            state["ewc"] = self.ewc.state_dict(chunked=True)
        if self.config.save_replay:
            # Frames as chunks: a checkpoint writes only those new since the chunks on disk.
            state["replays"] = {str(k): r.state_dict(chunked=True) for k, r in self.replays.items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything ``state_dict`` holds; ValueError or KeyError for a state that does
        not fit this run (``restore`` reports it as a CheckpointError)."""
        loop = state["loop"]
        _check_types(loop, _LOOP_TYPES, "loop")
        if not all(
            isinstance(row, list) and len(row) in (3, 4) and all(_is_int(x) for x in row)
            for row in loop["label_counts"]
        ):
            raise ValueError(
                "loop.label_counts must be a list of [true task, task, steps(, generation)]"
            )
        if (self.ewc is None) != ("ewc" not in state):
            raise ValueError(
                "it holds no consolidation terms (a --consolidation none run's) and this run "
                f"uses {self.config.consolidation}"
                if self.ewc is not None
                else "it holds consolidation terms and this run is --consolidation none"
            )
        self.step = int(loop["step"])
        self.frames = int(loop["frames"])
        self.current_task = loop["current_task"]
        self.eval_index = int(loop["eval_index"])
        self.pending_eval = loop["pending_eval"]
        nxt = loop["next_eval_frames"]
        self.next_eval_frames = math.inf if nxt is None else nxt
        self.label_counts = defaultdict(
            int,
            {
                (row[0], row[1], row[3] if len(row) == 4 else 1): row[2]
                for row in loop["label_counts"]
            },
        )
        self.counters.load_state_dict(state["counters"])
        self.consolidation.load_state_dict(state["consolidated_at"])
        self.agent.load_state_dict(state["agent"])
        self.agent.update_debt = float(loop["update_debt"])
        self.labeler.load_state_dict(state["labeler"])
        self.rng.bit_generator.state = state["rng"]
        if self.ewc is not None:
            self.ewc.load_state_dict(state["ewc"])
        self.replays = {}
        saved = state.get("replays", {})
        born = {int(k): int(v) for k, v in state["replay_born"].items()}
        for task in state["replay_tasks"]:
            replay = self.make_replay(self.rng)
            if str(task) in saved:
                replay.load_state_dict(saved[str(task)])
            else:  # saved without replay: the task's learning starts again from an empty one
                born[int(task)] = self.counters.steps.get(int(task), 0)
            self.replays[int(task)] = replay
        self.replay_born = born
        # Checkpoints from before ids were reused: every id known to the loop is in its first
        # generation.
        known = set(self.replays) | ({self.current_task} - {None})
        saved_generations = loop.get("task_generation", {str(k): 1 for k in known})
        if not isinstance(saved_generations, dict):
            raise ValueError("loop.task_generation must be a dict of task id -> generation")
        self.task_generation = {int(k): int(v) for k, v in saved_generations.items()}
        self._cut_logs(state.get("log_sizes"))

    def _cut_logs(self, sizes: Any) -> None:
        """Cut the CSV logs back to their sizes at the checkpoint being resumed: what was written
        after it (rows of an evaluation it did not record, a half-written row) is dropped and
        written again by the resumed run."""
        if not isinstance(sizes, dict):  # a checkpoint from before the sizes were recorded
            self.truncate_logs(self.step)
            return
        self._eval_log.close()
        self._summary_log.close()
        for name in (EVAL_CSV, SUMMARY_CSV):
            size = sizes.get(name)
            if not (isinstance(size, int) and truncate_file(self.run_dir / name, size)):
                truncate_csv_after(self.run_dir / name, self.step)
        self._eval_log = CsvLog(self.run_dir / EVAL_CSV, EVAL_COLUMNS)
        self._summary_log = CsvLog(self.run_dir / SUMMARY_CSV, SUMMARY_COLUMNS)
        size = sizes.get(TRAIN_CSV)
        if isinstance(size, int):
            self.logger.truncate_csv(size)

    def truncate_logs(self, step: int) -> None:
        """Drop evaluation rows written after ``step`` (by a run that crashed after it)."""
        self._eval_log.close()
        self._summary_log.close()
        for name in (EVAL_CSV, SUMMARY_CSV):
            truncate_csv_after(self.run_dir / name, step)
        self._eval_log = CsvLog(self.run_dir / EVAL_CSV, EVAL_COLUMNS)
        self._summary_log = CsvLog(self.run_dir / SUMMARY_CSV, SUMMARY_COLUMNS)

    def save(self) -> Path:
        """Checkpoint the whole state. DivergenceError instead when anything is not finite, so a
        checkpoint never holds a diverged network; CheckpointError when it cannot be written (a
        full disk), the older checkpoints then intact."""
        self.check_finite()
        state = self.state_dict()
        self._fault.at("saving", self.step)
        path = save_checkpoint(
            self.run_dir,
            self.step,
            state,
            keep=self.config.keep_checkpoints,
            before_rename=lambda: self._fault.at("renaming", self.step),
        )
        self._fault.at("saved", self.step)
        return path

    def restore(self, path: Path, state: dict[str, Any] | None = None) -> None:
        """Continue from the checkpoint at ``path`` (``state``: its contents, already loaded);
        CheckpointError when it does not fit this run (another suite, network or variant, a
        field of the wrong type)."""
        if state is None:
            # On the CPU: each owner moves what it needs (the network's weights and the
            # optimiser's moments to the device; Adam's step counters stay on the host, where a
            # non-fused Adam reads them without a device sync).
            _, state = load_checkpoint(path, device="cpu")
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            cfg = self.config
            run = f"this run ({cfg.variant}, {cfg.suite}, network {cfg.network.arch})"
            raise does_not_fit(path, e, run) from None

    def close(self) -> None:
        """Close the logs and let the run folder's lock go."""
        self._envs.close()
        self._eval_log.close()
        self._summary_log.close()
        self.logger.close()
        if self.run_lock is not None:
            self.run_lock.release()


_LOOP_TYPES: dict[str, tuple[type | None, ...]] = {
    "step": (int,),
    "frames": (int,),
    "current_task": (int, None),
    "eval_index": (int,),
    "pending_eval": (int, None),
    "next_eval_frames": (int, float, None),
    "update_debt": (int, float),
    "label_counts": (list,),
}
"""The loop fields of a checkpoint and the JSON types each may have."""


def _label_name(task: int, generation: int) -> str:
    """A task label of the confusion table: the id, then '.<generation>' from its second task on
    ('3', '3.2')."""
    return str(task) if generation == 1 else f"{task}.{generation}"


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_types(fields: Any, types: dict[str, tuple[type | None, ...]], where: str) -> None:
    """ValueError naming the first field of ``fields`` missing or not of its type."""
    if not isinstance(fields, dict):
        raise ValueError(f"{where} must be a dict, got {type(fields).__name__}")
    for name, allowed in types.items():
        if name not in fields:
            raise ValueError(f"{where}.{name} is missing")
        value = fields[name]
        if not any(_is_a(value, kind) for kind in allowed):
            kinds = " or ".join("null" if k is None else k.__name__ for k in allowed)
            raise ValueError(f"{where}.{name} must be {kinds}, got {value!r}")


def _is_a(value: Any, kind: type | None) -> bool:
    """JSON typing: None is null, and a bool is neither an int nor a float."""
    if kind is None:
        return value is None
    return isinstance(value, kind) and not isinstance(value, bool)


def _eval_env_config(config: TrainConfig) -> EnvConfig:
    return replace(config.env, num_envs=config.eval.num_envs)
