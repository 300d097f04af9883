"""Forget-me-not (FMN) task inference: which task do the frames come from? (Kirkpatrick et al.
2017, SI; Milan et al. 2016).

Each task owns a factored per-pixel categorical model of one frame with a Dirichlet prior over
quantised levels (maths in ``ewc_dqn.fmn_maths``). Time is cut into windows of ``window`` model
observations, one every ``update_period`` agent steps. Within a window every model, plus one
untrained *hold-out* model, is tentatively updated with each frame, and each frame is scored by
every model's predictive after the earlier frames of the window, so a window's score is each
model's sequential marginal likelihood. At the window's end the best model keeps the window and
the others revert; when the hold-out wins it becomes a new task and a fresh hold-out is made.
An HMM over the task ids (switch rate alpha_t = switch_rate / t) filters the per-frame
likelihoods and gives the reported task: the most probable existing task.

One addition to flat FMN, for windows that straddle a switch (``split_windows``): when the
hold-out wins a window, or the filter favoured another state during it, the window is also
scored as two segments with one switch, [0, s) by a task and [s, W) by another task or the
hold-out, and split when that explains it better. Without this, every switch between two known
games creates a spurious task (a mixed window is explained better by a fresh model than by
either game), and a new task starts with frames of the previous game.

The episode rule (``episode_switch_steps``, off by default): the task may change only within
the first steps of an episode. Windows then start with episodes, and later windows are held
for the episode's task: kept apart from the models that decide (which so see episode starts and
what won a window) and added to them only to label frames in ``infer``. A game whose screens
change within an episode (rooms, levels, phases) so keeps one task, judged at each episode's
start by what its starts look like.

Frames (``ewc_dqn.fmn_frames``): Atari (H, W) uint8 greyscale, block-averaged by ``downscale``
(84x84 -> 42x42) and quantised to ``levels`` grey levels, one model per pixel with a symmetric
prior; MinAtar (C, 10, 10) 0/1 planes (``channel_axis`` 0, the package's layout) or (10, 10, C)
(``channel_axis`` -1, MinAtar's own), modelled by their counts of set cells per (plane, row), per
(plane, column) and per plane. MinAtar frames are small and mostly empty, so their models have a
prior centred on the pooled background of all tasks (the hold-out predicts that background and
wins on what is new), each (plane, row) model borrows from its task's other rows, a new task
costs ``minatar_new_task_cost`` nats, and models observe every ``minatar_update_period`` steps.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict

import numpy as np

from ewc_dqn.fmn_config import FMNConfig
from ewc_dqn.fmn_frames import (
    FrameCode,
    atari_code,
    atari_level_plane_code,
    atari_palette_code,
    minatar_code,
)
from ewc_dqn.fmn_maths import (
    best_two_segments,
    dirichlet_log_likelihood,
    effective_counts,
    filter_step,
    frame_log_likelihood,
    switch_rate,
)

STATE_FORMAT = 4
"""Layout of ``ForgetMeNot.state_dict``. 4: each id's generation (how often it was given to a
new task; format 3 never reused an id and is read as generation 1). 3: each task's parent, birth
and merge (format 2 ran without merges and is read as such). 2: MinAtar frames are plane counts
(format 1, no ``format`` key, had one model per cell over the first set plane; such states are
refused, Atari ones are read as they are)."""


class ForgetMeNot:
    """Infers the current task id (0, 1, 2, ... in order of creation) from a stream of frames.

    ``observe(frame)`` once per agent step while training; ``infer(frame)`` to label a frame
    without changing anything (evaluation). Deterministic: no randomness is used.
    """

    def __init__(self, config: FMNConfig | None = None) -> None:
        self.config = FMNConfig() if config is None else config
        self.config.validate()
        self._frame_shape: tuple[int, ...] = ()  # fixed by the first frame
        self._code: FrameCode | None = None  # features of a frame, fixed by the first frame
        self._levels = 0
        self._offsets = np.zeros(0, dtype=np.intp)  # (P,) p * levels: flat index of level 0
        self._lut = (np.arange(256) * self.config.levels // 256).astype(np.uint8)
        # The suite's model, fixed by the first frame (Atari: symmetric prior, no new-task cost).
        self._period = self.config.update_period
        self._shrinkage = 0.0
        self._pool_weight = 0.0
        self._new_task_cost = 0.0
        self._merge_observations = 0
        # Models are columns: tasks 0..K-1, then the hold-out (always all-zero counts). Rows are
        # (feature, level) pairs, row p * levels + l.
        self._counts = np.zeros((0, 1), dtype=np.float32)  # (P * levels, K + 1) frames counted
        self._totals = np.zeros(1, dtype=np.float64)  # (K + 1,) frames counted per model
        # Caches, functions of the counts: the pseudo-counts e and their totals E of
        # ``effective_counts`` (the counts themselves when the prior is symmetric) and
        # log(e + beta), which scores a frame under all models with one gather.
        self._effective = self._counts
        self._effective_totals = self._totals
        self._log_table = np.zeros((0, 1), dtype=np.float32)
        # Frames the episode rule held for a task (windows late in an episode): not in the
        # models that decide (those see episode starts and what the task won), only in the
        # labels of ``infer``, whose tables are cached until the next window closes. No rows
        # without the rule.
        self._held = np.zeros((0, 1), dtype=np.float32)  # (P * levels or 0, K + 1)
        self._held_totals = np.zeros(1, dtype=np.float64)
        self._infer_tables: tuple[np.ndarray, np.ndarray] | None = None
        self._window = np.zeros((self.config.window, 0), dtype=np.uint8)  # (W, P) levels
        self._window_fill = 0
        self._window_unsettled = False  # the filter's favourite was not the reported task
        self._last_ll = np.zeros(1)  # (K + 1,) nats, every model's score of the last observation
        self._log_posterior = np.zeros(1)  # (K + 1,) HMM filter, log p(task | frames so far)
        self._observations = 0  # model observations so far
        self._steps = 0  # observe() calls so far
        self._episode_steps = 0  # observe() calls since the last episode start
        self._task = 0
        self._switches = 0
        self._split_windows = 0
        self._cap_refusals = 0
        # Per model column (tasks, then the hold-out): the task it was born from while it is on
        # probation (-1: not on probation), the model observation of its birth, the windows it
        # and its parent won since then, and whether it was merged into its parent.
        self._parent = np.full(1, -1, dtype=np.int64)
        self._born = np.zeros(1, dtype=np.int64)
        self._votes = np.zeros((1, 2), dtype=np.int64)
        self._retired = np.zeros(1, dtype=bool)
        # Per model column: how many tasks the id has been given to (a merged id is given to the
        # next new task, so that the ids in use stay few; the hold-out's is 0).
        self._generation = np.zeros(1, dtype=np.int64)
        self._merges = 0

    # ----------------------------------------------------------------------------------------
    # public interface

    @property
    def num_tasks(self) -> int:
        """Task ids created so far (0 before the first frame), merged ones included: every id
        reported or inferred is below it."""
        return self._counts.shape[1] - 1

    @property
    def merged_tasks(self) -> list[int]:
        """Ids now retired: merged into the task they were born from
        (``minatar_merge_observations``) and not yet given to a new task. A retired id is
        never reported or inferred; the next new task takes the lowest one."""
        return [int(k) for k in np.flatnonzero(self._retired)]

    def generation(self, task: int) -> int:
        """How many tasks ``task`` has been given to: 1 for an id's first task, 2 once it was
        merged and given to a new task, and so on; 0 while it is retired (merged and not yet
        reused) or not yet created. A change of generation tells the owner of per-task state
        (replay, per-task parameters, EWC terms) that the id now names another task."""
        if not 0 <= task < self.num_tasks or self._retired[task]:
            return 0
        return int(self._generation[task])

    @property
    def task(self) -> int:
        """The task id that the last observe() returned."""
        return self._task

    def observe(self, frame: np.ndarray, episode_start: bool = False) -> int:
        """Take the newest frame of the training stream, update the models every
        ``update_period`` calls, and return the current task id. ``episode_start``: the frame
        is an episode's first (used by ``episode_switch_steps``)."""
        self._check(frame)
        step = self._steps
        self._steps += 1
        limit = self.config.episode_switch_steps
        if episode_start and limit:
            if self._window_fill:  # windows start with episodes: the last one's part is closed
                self._close_window(locked=limit < self._episode_steps)
            self._episode_steps = 0
        locked = 0 < limit <= self._episode_steps
        self._episode_steps += 1
        if step % self._period == 0:
            self._observe_levels(self._encode(frame), locked)
        return self._task

    def infer(self, frame: np.ndarray) -> int:
        """The task whose committed model explains ``frame`` best; changes nothing. For
        evaluation, where each frame is labelled on its own (the margins between games are
        hundreds of nats, so no filtering is needed)."""
        return int(np.argmax(self.log_likelihoods(frame)))

    def log_likelihoods(self, frame: np.ndarray) -> np.ndarray:
        """(num_tasks,) float64: log p(frame | task) in nats under each task's committed model,
        with the frames the episode rule held for it (``episode_switch_steps``)."""
        if self.num_tasks == 0:
            raise RuntimeError("no task exists yet: call observe() on the training stream first")
        self._check(frame)
        flat = self._offsets + self._encode(frame)
        k = self.num_tasks
        table, totals = self._label_tables()
        ll = frame_log_likelihood(
            np.take(table, flat, axis=0)[:, :k],
            totals[:k],
            self.config.concentration,
            self._levels,
        )
        return self._without_retired(ll)

    def stats(self) -> dict[str, float]:
        """Scalars for logging under ``tasks/``; log-likelihoods in nats per feature (Atari: per
        pixel) of the last model observation."""
        ll = self._last_ll / max(1, self._offsets.shape[0])
        return {
            "tasks/num_tasks": float(self.num_tasks),
            "tasks/current": float(self._task),
            "tasks/switches": float(self._switches),
            "tasks/split_windows": float(self._split_windows),
            "tasks/cap_refusals": float(self._cap_refusals),
            "tasks/merged": float(self._merges),
            "tasks/live": float(self.num_tasks - int(self._retired.sum())),
            "tasks/posterior": float(np.exp(self._log_posterior[min(self._task, ll.shape[0] - 1)])),
            "tasks/log_likelihood": float(ll[min(self._task, ll.shape[0] - 1)]),
            "tasks/holdout_log_likelihood": float(ll[-1]),
        }

    def memory_per_task_bytes(self) -> int:
        """Bytes one more task adds: its counts and log-table columns (float32 per (feature,
        level) pair), its pseudo-count column where the prior is not symmetric, and four
        float64 scalars."""
        per_row = self._counts.itemsize + self._log_table.itemsize
        if self._effective is not self._counts:
            per_row += self._effective.itemsize
        if self.config.episode_switch_steps:
            per_row += self._held.itemsize
        return self._counts.shape[0] * per_row + 32

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: numpy arrays and plain Python scalars only."""
        return {
            "format": STATE_FORMAT,
            "config": asdict(self.config),
            "frame_shape": list(self._frame_shape),
            "counts": self._counts.copy(),
            "totals": self._totals.copy(),
            "held": self._held.copy(),
            "held_totals": self._held_totals.copy(),
            "window": self._window.copy(),
            "window_fill": self._window_fill,
            "window_unsettled": self._window_unsettled,
            "last_log_likelihood": self._last_ll.copy(),
            "log_posterior": self._log_posterior.copy(),
            "observations": self._observations,
            "steps": self._steps,
            "episode_steps": self._episode_steps,
            "task": self._task,
            "switches": self._switches,
            "split_windows": self._split_windows,
            "cap_refusals": self._cap_refusals,
            "parent": self._parent.copy(),
            "born": self._born.copy(),
            "votes": self._votes.copy(),
            "retired": self._retired.copy(),
            "generation": self._generation.copy(),
            "merges": self._merges,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()`` (arrays may come back as torch tensors). A state of
        format 1 (before MinAtar frames became plane counts) is read when it is an Atari one and
        refused with a ValueError when it is a MinAtar one."""
        saved = dict(state["config"])
        mine = asdict(self.config)
        version = int(state.get("format", 1))
        if version == 1 and len(state["frame_shape"]) == 3:
            raise ValueError(
                "FMN state of format 1 holds MinAtar models over the first set plane of each "
                "cell, which this version replaced by plane counts; they cannot be converted: "
                "start task inference afresh (a new run) or use the version that saved it"
            )
        if version == 1:  # Atari models are unchanged; settings added since take their defaults
            new = ("atari_pool_weight", "minatar_")
            saved = {**{k: v for k, v in asdict(FMNConfig()).items() if k.startswith(new)}, **saved}
        if version <= 2:  # saved before merges: it ran without them
            saved = {"minatar_merge_observations": 0, **saved}
        elif version > STATE_FORMAT:
            raise ValueError(f"FMN state format {version} is unknown (this version reads 1-4)")
        # saved before Atari merges, level planes and the episode rule could be configured: it ran
        # without them
        saved = {
            "atari_merge_observations": 0,
            "atari_features": "pixels",
            "atari_palette_min_pixels": FMNConfig.atari_palette_min_pixels,
            "episode_switch_steps": 0,
            **saved,
        }
        if saved != mine:
            diff = {k: (saved.get(k), v) for k, v in mine.items() if saved.get(k) != v}
            raise ValueError(f"FMN state was saved with another config (saved, current): {diff}")
        self._frame_shape = ()
        if len(state["frame_shape"]):
            self._set_geometry(tuple(int(d) for d in state["frame_shape"]))
        self._counts = np.array(state["counts"], dtype=np.float32)
        self._totals = np.array(state["totals"], dtype=np.float64)
        no_rows = np.zeros((0, self._counts.shape[1]))  # saved before the rule existed
        self._held = np.array(state.get("held", no_rows), dtype=np.float32)
        self._held_totals = np.array(
            state.get("held_totals", np.zeros_like(self._totals)), dtype=np.float64
        )
        self._infer_tables = None
        self._window = np.array(state["window"], dtype=np.uint8)
        self._window_fill = int(state["window_fill"])
        self._window_unsettled = bool(state["window_unsettled"])
        self._last_ll = np.array(state["last_log_likelihood"], dtype=np.float64)
        self._refresh_all()
        self._log_posterior = np.array(state["log_posterior"], dtype=np.float64)
        self._observations = int(state["observations"])
        self._steps = int(state["steps"])
        self._episode_steps = int(state.get("episode_steps", 0))
        self._task = int(state["task"])
        self._switches = int(state["switches"])
        self._split_windows = int(state["split_windows"])
        self._cap_refusals = int(state["cap_refusals"])
        models = self._counts.shape[1]
        self._parent = np.array(state.get("parent", np.full(models, -1)), dtype=np.int64)
        self._born = np.array(state.get("born", np.zeros(models)), dtype=np.int64)
        self._votes = np.array(state.get("votes", np.zeros((models, 2))), dtype=np.int64)
        self._retired = np.array(state.get("retired", np.zeros(models)), dtype=bool)
        # Before format 4 no id was reused: every task id is in its first generation.
        first = np.append(np.ones(models - 1), 0)
        self._generation = np.array(state.get("generation", first), dtype=np.int64)
        self._merges = int(state.get("merges", 0))

    # ----------------------------------------------------------------------------------------
    # frames

    def _check(self, frame: np.ndarray) -> None:
        """Raise a clear error for frames of the wrong type, dtype or shape."""
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8 and not (frame.ndim == 3 and frame.dtype == np.bool_):
            raise TypeError(
                f"frame dtype must be uint8 (MinAtar planes: uint8 or bool), got {frame.dtype}"
            )
        if frame.shape != self._frame_shape:
            if self._frame_shape:
                raise ValueError(
                    f"frame shape {frame.shape} differs from the stream's {self._frame_shape}"
                )
            self._set_geometry(frame.shape)

    def _set_geometry(self, shape: tuple[int, ...]) -> None:
        """Fix features, levels and the suite's model from the first frame's shape and make
        task 0 and the hold-out."""
        d = self.config.downscale
        if len(shape) == 2:
            if shape[0] % d or shape[1] % d or min(shape) == 0:
                raise ValueError(f"greyscale frame {shape} is not divisible by downscale={d}")
            self._period = self.config.update_period
            self._merge_observations = self.config.atari_merge_observations
            if self.config.atari_features == "level-planes":  # planes: MinAtar's model
                if max(shape) // d > 254:
                    raise ValueError(f"greyscale frame {shape} / {d} has more than 254 rows")
                code = atari_level_plane_code(shape, d, self.config.levels)
                self._shrinkage = self.config.minatar_shrinkage
                self._pool_weight = self.config.minatar_pool_weight
                self._new_task_cost = self.config.minatar_new_task_cost
            else:  # the paper's prior: symmetric, or with the pooled background
                if self.config.atari_features == "palette":
                    code = atari_palette_code(self.config.atari_palette_min_pixels)
                else:
                    code = atari_code(shape, d, self.config.levels)
                self._shrinkage = self._new_task_cost = 0.0
                self._pool_weight = self.config.atari_pool_weight
        elif len(shape) == 3:
            axis = self.config.channel_axis
            channels = shape[axis]
            if not 1 <= channels <= 254:
                raise ValueError(
                    f"MinAtar frame {shape} has {channels} planes on axis {axis}; expected 1..254"
                )
            height, width = (shape[1], shape[2]) if axis == 0 else (shape[0], shape[1])
            if max(height, width) > 254:
                raise ValueError(f"MinAtar frame {shape} has more than 254 cells per row")
            code = minatar_code(channels, height, width, axis)
            self._period = self.config.minatar_update_period
            self._shrinkage = self.config.minatar_shrinkage
            self._pool_weight = self.config.minatar_pool_weight
            self._new_task_cost = self.config.minatar_new_task_cost
            self._merge_observations = self.config.minatar_merge_observations
        else:
            raise ValueError(
                f"frame must be (H, W) greyscale or a 3-D MinAtar frame, got shape {shape}"
            )
        self.config.check_suite(minatar=len(shape) == 3)
        self._frame_shape = tuple(shape)
        self._code = code
        self._levels = code.levels
        features = code.num_features
        self._offsets = np.arange(features, dtype=np.intp) * code.levels
        # The first window's only candidates are two empty models, so its winner (task 0) is
        # known now; creating it here lets observe() return a valid id from the first frame.
        self._counts = np.zeros((features * code.levels, 2), dtype=np.float32)
        self._totals = np.zeros(2)
        rows = self._counts.shape[0] if self.config.episode_switch_steps else 0
        self._held = np.zeros((rows, 2), dtype=np.float32)
        self._held_totals = np.zeros(2)
        self._parent = np.full(2, -1, dtype=np.int64)
        self._born = np.zeros(2, dtype=np.int64)
        self._votes = np.zeros((2, 2), dtype=np.int64)
        self._retired = np.zeros(2, dtype=bool)
        self._generation = np.array([1, 0], dtype=np.int64)
        self._refresh_all()
        self._window = np.zeros((self.config.window, features), dtype=np.uint8)
        self._last_ll = np.zeros(2)
        self._log_posterior = np.log(np.full(2, 0.5))

    def _encode(self, frame: np.ndarray) -> np.ndarray:
        """(P,) uint8 level of every feature."""
        assert self._code is not None
        if frame.ndim == 3 and frame.dtype == np.uint8 and frame.max(initial=0) > 1:
            raise ValueError("MinAtar planes must be 0/1; for Atari pass the (84, 84) newest frame")
        return self._code.encode(frame, self._lut)

    # ----------------------------------------------------------------------------------------
    # models and filter

    def _observe_levels(self, levels: np.ndarray, locked: bool = False) -> None:
        """Score one model observation, run the filter, and close the window when it is full.
        ``locked``: the task may not change (``episode_switch_steps``); the filter is held on
        the current task and the window is held for it."""
        flat = self._offsets + levels
        ll = frame_log_likelihood(
            np.take(self._log_table, flat, axis=0),
            self._effective_totals,
            self.config.concentration,
            self._levels,
        )
        ll = self._without_retired(ll)
        self._last_ll = ll
        self._window[self._window_fill] = levels
        self._window_fill += 1
        self._observations += 1
        if locked:
            self._log_posterior = np.full_like(self._log_posterior, -np.inf)
            self._log_posterior[self._task] = 0.0
        else:
            alpha = switch_rate(self._observations, self.config.switch_rate)
            self._log_posterior = filter_step(self._log_posterior, ll, alpha)
            best = int(np.argmax(self._log_posterior))
            self._window_unsettled |= best != self._task
            self._set_task(best)
        if self._window_fill == self.config.window:
            self._close_window(locked)

    def _set_task(self, task: int) -> None:
        """Report ``task`` from now on; the hold-out is not a task until it wins a window, so
        while it is the most probable state the last task stays."""
        if task < self.num_tasks and task != self._task:
            self._task = task
            self._switches += 1

    def _block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (pixel, level) pairs that window frames [start, stop) show, as flat rows
        (Q,), and how many of those frames show each (Q,), sorted by that count, descending."""
        levels = self._window[start:stop]
        n, p = levels.shape
        flat = self._offsets + levels  # (n, P)
        # Most pixels keep their level through a window: one pair each, shown n times.
        steady = (levels == levels[0]).all(axis=0)
        moving = np.flatnonzero(~steady)
        if moving.shape[0] == 0:
            return flat[0], np.full(p, n, dtype=np.int64)
        pairs, frames = np.unique(flat[:, moving], return_counts=True)  # each shown < n times
        order = np.argsort(-frames, kind="stable")
        return (
            np.concatenate([flat[0].compress(steady), pairs[order]]),
            np.concatenate([np.full(p - moving.shape[0], n, dtype=np.int64), frames[order]]),
        )

    def _block_scores(
        self, start: int, stop: int, block: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        """(K + 1,) sequential marginal log-likelihood of window frames [start, stop) under
        every model, each model starting from its committed counts (``block``: the frames'
        ``_block``, when already known)."""
        pairs, frames = self._block(start, stop) if block is None else block
        scores = dirichlet_log_likelihood(
            np.take(self._effective, pairs, axis=0),
            frames,
            self._effective_totals,
            stop - start,
            self._offsets.shape[0],
            self.config.concentration,
            self._levels,
        )
        return self._without_retired(scores)

    def _close_window(self, locked: bool = False) -> None:
        """Commit the window (its ``window`` frames, or fewer at an episode's start) to its best
        explanation, or hold it for the current task when ``locked``; promote the hold-out when
        it wins, and report the filter's most probable task."""
        whole = self._block(0, self._window_fill)
        if locked:
            self._hold(whole)
        else:
            self._commit(whole, self._explain(whole))
        self._window_fill = 0
        self._window_unsettled = False
        self._infer_tables = None
        # the hold-out may just have become a task, a task may have been merged
        self._set_task(int(np.argmax(self._log_posterior)))

    def _hold(self, whole: tuple[np.ndarray, np.ndarray]) -> None:
        """The episode's task, chosen at its start, holds the window (``whole``: its
        ``_block``), which counts as its win in the probations."""
        pairs, frames = whole
        self._held[pairs, self._task] += frames
        self._held_totals[self._task] += self._window_fill
        if self._merge_observations and self._probation(self._task):
            self._refresh_all()

    def _explain(self, whole: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int, int]]:
        """The window's best explanation (``whole``: its ``_block``): (model, start, stop)
        segments, one model or two with one switch, the hold-out only below the task cap."""
        w = self._window_fill
        holdout = self.num_tasks
        scores = self._block_scores(0, w, whole)
        scores[holdout] -= self._new_task_cost
        winner = int(np.argmax(scores))
        segments = [(winner, 0, w)]
        # A window won by the hold-out, or one in which the filter favoured another state than
        # the reported task, may straddle a switch: compare with every explanation by two models
        # with one switch inside the window (the switch costs log alpha).
        if self.config.split_windows and w > 1 and (winner == holdout or self._window_unsettled):
            prefix = np.stack([self._block_scores(0, s) for s in range(1, w)], axis=1)
            suffix = np.stack([self._block_scores(s, w) for s in range(1, w)], axis=1)
            suffix[holdout] -= self._new_task_cost
            score, first, second, at = best_two_segments(prefix, suffix, holdout)
            score += np.log(switch_rate(self._observations, self.config.switch_rate))
            if score > scores[winner]:
                segments = [(first, 0, at), (second, at, w)]
                self._split_windows += 1
        at_cap = self.num_tasks >= self.config.max_tasks and not self._retired.any()
        if segments[-1][0] == holdout and at_cap:
            if self._cap_refusals == 0:
                warnings.warn(
                    f"FMN reached max_tasks={self.config.max_tasks}: frames that fit no task now "
                    "go to the closest existing task (raise FMNConfig.max_tasks to allow more)",
                    RuntimeWarning,
                    stacklevel=4,
                )
            self._cap_refusals += 1
            segments = [(int(np.argmax(scores[:holdout])), 0, w)]
        return segments

    def _commit(
        self, whole: tuple[np.ndarray, np.ndarray], segments: list[tuple[int, int, int]]
    ) -> None:
        """Count each (model, start, stop) segment of the window in its model (``whole``: the
        window's ``_block``), make a task of the hold-out when it takes the last segment, and
        run the probations (the window counts as won by the last segment's model)."""
        w = self._window_fill
        holdout = self.num_tasks
        for model, start, stop in segments:
            pairs, frames = whole if (start, stop) == (0, w) else self._block(start, stop)
            self._counts[pairs, model] += frames
            self._totals[model] += stop - start
            if not self._pooled:  # symmetric prior: only the touched entries change
                self._log_table[pairs, model] = np.log(
                    self._counts[pairs, model] + self.config.concentration
                )
        if segments[-1][0] == holdout:
            task = self._new_task()
            if self._merge_observations:  # on probation, against the task it was born from:
                # the one that explained the window's start (a split window) or the one reported
                self._parent[task] = segments[0][0] if len(segments) > 1 else self._task
                self._born[task] = self._observations
        else:
            merged = bool(self._merge_observations) and self._probation(segments[-1][0])
            if merged or self._pooled:  # a merge, or the pooled background: every prior changed
                self._refresh_all()

    def _probation(self, winner: int) -> bool:
        """Count the window won by ``winner`` for the tasks in the second half of their
        probation, and decide those whose probation has just ended: a task whose parent won
        more of those windows than it did was a second mode of the parent's game (the stream
        went back to it) and is merged into it; any other stays a task. True when a task was
        merged."""
        merged = False
        for child in np.flatnonzero(self._parent >= 0):
            parent = int(self._parent[child])
            age = self._observations - self._born[child]
            # Only the second half votes: a new game that starts late in the probation of a
            # young task goes to that task, and must outvote the parent's earlier windows.
            if 2 * age > self._merge_observations:
                if winner == child:
                    self._votes[child, 0] += 1
                elif winner == parent:
                    self._votes[child, 1] += 1
            if age < self._merge_observations:
                continue
            self._parent[child] = -1  # decided
            if self._votes[child, 1] > self._votes[child, 0]:
                self._merge(int(child), parent)
                merged = True
        return merged

    def _without_retired(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` (one per model, or per task) with the merged ids' at -inf, so they never
        win a window, the filter or ``infer``; as they are until a merge has happened (always on
        Atari), so the observation path pays nothing for merges it does not make."""
        if not self._merges:
            return scores
        return np.where(self._retired[: scores.shape[0]], -np.inf, scores)

    def _merge(self, child: int, parent: int) -> None:
        """Fold ``child``'s counts and filter mass into ``parent`` and retire its id."""
        for counts, totals in ((self._counts, self._totals), (self._held, self._held_totals)):
            counts[:, parent] += counts[:, child]
            totals[parent] += totals[child]
            counts[:, child] = 0.0
            totals[child] = 0.0
        self._retired[child] = True
        self._parent[self._parent == child] = parent  # its children on probation: now parent's
        self._log_posterior[parent] = np.logaddexp(
            self._log_posterior[parent], self._log_posterior[child]
        )
        self._log_posterior[child] = -np.inf
        self._last_ll[child] = -np.inf
        self._merges += 1
        self._infer_tables = None

    @property
    def _pooled(self) -> bool:
        """Whether the prior depends on the counts (pooled background or shrinkage)."""
        return bool(self._pool_weight or self._shrinkage)

    def _refresh_all(self) -> None:
        """Recompute the pseudo-counts, their totals and the log table from the counts."""
        self._effective, self._effective_totals, self._log_table = self._tables(
            self._counts, self._totals
        )

    def _tables(
        self, counts: np.ndarray, totals: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pseudo-counts, their totals and the log table of models with ``counts``
        (the counts themselves where the prior is symmetric)."""
        beta = np.float32(self.config.concentration)
        if not self._pooled:
            return counts, totals, np.log(counts + beta)
        assert self._code is not None
        models = counts.shape[1]
        effective, effective_totals = effective_counts(
            counts.reshape(-1, self._levels, models),
            totals,
            self._code.groups,
            self._code.valid,
            self._shrinkage,
            self._pool_weight,
        )
        effective = effective.reshape(-1, models).astype(np.float32)
        return effective, effective_totals, np.log(effective + beta)

    def _label_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """``infer``'s log table and pseudo-count totals: the models' own, or, once the episode
        rule has held frames, those of the models with the held frames added (cached)."""
        if not self._held_totals.any():
            return self._log_table, self._effective_totals
        if self._infer_tables is None:
            _, totals, table = self._tables(
                self._counts + self._held, self._totals + self._held_totals
            )
            self._infer_tables = (table, totals)
        return self._infer_tables

    def _new_task(self) -> int:
        """The hold-out, having won a window, becomes a task: the lowest retired id when there
        is one, else a new id; a fresh, empty hold-out takes its place. Returns the task's id."""
        retired = np.flatnonzero(self._retired)
        if retired.shape[0] == 0:
            self._add_holdout()
            return self.num_tasks - 1
        task, holdout = int(retired[0]), self.num_tasks
        for column in (self._counts, self._last_ll, self._log_posterior):
            column[..., task] = column[..., holdout]
        self._counts[:, holdout] = 0.0
        self._totals[task], self._totals[holdout] = self._totals[holdout], 0.0
        self._held[:, task] = 0.0  # the hold-out never holds frames
        self._held_totals[task] = 0.0
        # The new hold-out gets probability only through the HMM's switch mass.
        self._log_posterior[holdout] = -np.inf
        self._retired[task] = False
        self._generation[task] += 1
        self._votes[task] = 0
        if self._pooled:
            self._refresh_all()
        else:
            beta = np.float32(self.config.concentration)
            self._log_table[:, task] = np.log(self._counts[:, task] + beta)
            self._log_table[:, holdout] = np.log(beta)
        return task

    def _add_holdout(self) -> None:
        """The old hold-out has become the newest task; append a fresh, empty hold-out."""
        rows = self._counts.shape[0]
        self._counts = np.concatenate([self._counts, np.zeros((rows, 1), np.float32)], axis=1)
        self._totals = np.append(self._totals, 0.0)
        held_column = np.zeros((self._held.shape[0], 1), np.float32)
        self._held = np.concatenate([self._held, held_column], axis=1)
        self._held_totals = np.append(self._held_totals, 0.0)
        if self._pooled:
            self._refresh_all()
        else:
            empty = np.full((rows, 1), np.log(np.float32(self.config.concentration)), np.float32)
            self._log_table = np.concatenate([self._log_table, empty], axis=1)
            self._effective, self._effective_totals = self._counts, self._totals
        self._parent = np.append(self._parent, -1)
        self._born = np.append(self._born, 0)
        self._votes = np.concatenate([self._votes, np.zeros((1, 2), np.int64)])
        self._retired = np.append(self._retired, False)
        self._generation[-1] = 1
        self._generation = np.append(self._generation, 0)
        self._last_ll = np.append(self._last_ll, self._last_ll[-1])
        # The new hold-out gets probability only through the HMM's switch mass.
        self._log_posterior = np.append(self._log_posterior, -np.inf)
