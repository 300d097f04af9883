"""The files of a run folder: one place that writes them and one that reads them.

A run folder holds::

    config.json        the resolved configuration (every dataclass field) plus "variant"
    schedule.json      envs.schedule.Schedule.to_json(): {"games", "visits": [{"index", "game",
                       "task", "start_frame", "frames"}], "config"}; task = true label
    train.csv          training scalars, long format: step, frames, tag, value
    eval.csv           one row per (evaluation, game): see EVAL_COLUMNS
    eval_summary.csv   one row per evaluation: see SUMMARY_COLUMNS
    provenance.json    what the run was made with: versions, commit, ROM MD5s, device
                       (ewc_dqn.provenance)
    final.json         written last, when the run trained its budget and ran every evaluation
                       (sweeps skip such runs):
                       steps, frames, evaluations, tasks, label ARI, and training steps per
                       game and task id (the label confusion table)
    checkpoints/       see ewc_dqn.checkpoint
    tb/                TensorBoard event files (the same scalars as the CSVs)
    lock               held by the process training in the folder (ewc_dqn.run_lock)

Units: ``step`` counts agent steps (transitions, summed over parallel environments); ``frames``
counts emulator frames (step * frame skip; equal to steps on MinAtar).

CSV files survive resume: every checkpoint records the size of each CSV file when it was taken,
and a run resumed from it cuts the files back to those sizes before appending. The rows written
after the checkpoint (an evaluation's rows, a half-written row, the scalars of a crashed
segment) are written again by the resumed run exactly once, so the files never hold two
histories, a row twice or a row missing. (Checkpoints written before the sizes were recorded
fall back to dropping the rows with a step above the checkpoint's.)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.scores import ReferenceNotMeasuredError, clipped_total, normalised_score
from ewc_dqn.config import config_from_dict, config_to_dict, upgrade_config_dict

CONFIG_FILE = "config.json"
SCHEDULE_FILE = "schedule.json"
TRAIN_CSV = "train.csv"
EVAL_CSV = "eval.csv"
SUMMARY_CSV = "eval_summary.csv"
FINAL_FILE = "final.json"

TRAIN_COLUMNS = ("step", "frames", "tag", "value")
EVAL_COLUMNS = (
    "eval_index",  # 0, 1, ... in order of evaluation
    "step",  # agent steps trained when evaluated
    "frames",  # emulator frames trained when evaluated
    "visit",  # index of the schedule visit just finished (or in progress)
    "game",  # canonical game name
    "episodes",  # evaluation episodes that counted (see ewc_dqn.evaluation)
    "raw_mean",  # mean unclipped episode score (empty when no episode finished)
    "raw_std",  # standard deviation of the episode scores
    "normalised",  # (raw_mean - random) / (reference - random), unclipped
    "task_id",  # task id the agent used for this game (majority, in inferred mode)
    "complete",  # 1, or 0 when an episode was cut or none finished (ewc_dqn.evaluation)
)
SUMMARY_COLUMNS = (
    "eval_index",
    "step",
    "frames",
    "visit",
    "game",  # game being trained when the evaluation ran
    "total_clipped",  # the paper's metric: sum over games of min(normalised, 1)
    "mean_normalised",  # unclipped mean of normalised scores
    "label_ari",  # adjusted Rand index, inferred vs true labels (1.0 with true labels)
    "num_tasks",  # tasks the agent has created so far
)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


class CsvLog:
    """Append-only CSV with a fixed header, flushed after every write."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.columns)
            self._file.flush()

    def size(self) -> int:
        """Bytes in the file (every write is flushed): what a checkpoint records."""
        return os.fstat(self._file.fileno()).st_size

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow([_fmt(row[c]) for c in self.columns])
        self._file.flush()

    def write_many(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self._writer.writerow([_fmt(row[c]) for c in self.columns])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(v: Any) -> Any:
    """Floats (numpy's too) as their shortest exact decimal; numpy 2's repr would write
    'np.float64(0.5)'."""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def truncate_file(path: Path, size: int) -> bool:
    """Cut ``path`` back to its first ``size`` bytes (a log's size recorded in a checkpoint);
    False, leaving it alone, when it is shorter than that (edited or replaced since)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size < size:
        return False
    os.truncate(path, size)
    return True


def truncate_csv_after(path: Path, max_step: int) -> None:
    """Drop the rows whose ``step`` column exceeds ``max_step`` (used when resuming)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    i = header.index("step")
    kept = [r for r in body if r and int(float(r[i])) <= max_step]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(kept)
    os.replace(tmp, path)


@dataclass
class RunRecord:
    """Everything an analysis needs from one finished or unfinished run folder."""

    path: Path
    config: dict[str, Any]
    schedule: list[dict[str, Any]]  # the visits of schedule.json
    eval: pd.DataFrame  # EVAL_COLUMNS
    summary: pd.DataFrame  # SUMMARY_COLUMNS
    finished: bool

    @property
    def variant(self) -> str:
        return str(self.config.get("variant", "unknown"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def is_run_dir(path: Path) -> bool:
    """True when ``path`` holds a run's config (and so was made by train_agent.py)."""
    return (Path(path) / CONFIG_FILE).is_file()


def with_default_fields(config: dict[str, Any]) -> dict[str, Any]:
    """config.json of a run with every field of this version: fields added after the run was
    written take their defaults, which keep the earlier behaviour, and fields replaced since
    take their new form (``no_ewc`` and ``ewc.mode`` become ``consolidation``), so runs from
    different versions compare field by field. A config this version cannot read is returned as
    it is."""
    try:
        parsed = config_from_dict(config)
    except (ValueError, TypeError):
        return config
    return {**upgrade_config_dict(config), **config_to_dict(parsed)}


def load_run(path: Path) -> RunRecord:
    """Read a run folder; raises FileNotFoundError with a clear message if it is not one."""
    path = Path(path)
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is not a run folder (no {CONFIG_FILE})")
    config = with_default_fields(read_json(path / CONFIG_FILE))
    schedule = read_json(path / SCHEDULE_FILE) if (path / SCHEDULE_FILE).exists() else {}
    visits = schedule.get("visits", []) if isinstance(schedule, dict) else schedule
    ev = _read_csv(path / EVAL_CSV, EVAL_COLUMNS)
    summ = _read_csv(path / SUMMARY_CSV, SUMMARY_COLUMNS)
    ev, summ = _fill_normalised(ev, summ)
    return RunRecord(path, config, visits, ev, summ, (path / FINAL_FILE).exists())


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(columns))
    return pd.read_csv(path)


def _fill_normalised(ev: pd.DataFrame, summ: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Normalise the raw scores that were evaluated before their game had a reference score.

    A MinAtar run evaluated before ``envs/minatar_reference.json`` held the DQN reference logs
    NaN; once the reference is measured, the raw scores (always logged) give the normalised
    ones, and the per-evaluation totals are recomputed from them.
    """
    missing = ev["normalised"].isna() if not ev.empty else None
    if missing is None or not missing.any():
        return ev, summ
    ev = ev.copy()
    filled = set()
    for i in ev.index[missing]:
        if not np.isfinite(ev.at[i, "raw_mean"]):
            continue
        try:
            ev.at[i, "normalised"] = float(normalised_score(ev.at[i, "game"], ev.at[i, "raw_mean"]))
        except ReferenceNotMeasuredError:
            continue
        filled.add(int(ev.at[i, "eval_index"]))
    if not filled:
        return ev, summ
    by_eval = ev.groupby("eval_index")["normalised"]
    totals = by_eval.apply(lambda x: clipped_total(x.to_numpy()))
    means = by_eval.mean()
    summ = summ.copy()
    todo = summ["eval_index"].isin(filled)
    summ.loc[todo, "total_clipped"] = summ.loc[todo, "eval_index"].map(totals)
    summ.loc[todo, "mean_normalised"] = summ.loc[todo, "eval_index"].map(means)
    return ev, summ
