"""Scalar logging to a CSV that survives resume and to TensorBoard, with namespaced tags.

Tags follow ``train/``, ``losses/``, ``eval/<game>/``, ``ewc/``, ``tasks/``, ``perf/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from ewc_dqn.run_folder import TRAIN_COLUMNS, TRAIN_CSV, CsvLog, truncate_csv_after, truncate_file


class MetricsLogger:
    """Writes every scalar to ``train.csv`` (long format) and to TensorBoard under ``tb/``."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        run_dir = Path(run_dir)
        self._path = run_dir / TRAIN_CSV
        if resume_step is not None:
            truncate_csv_after(self._path, resume_step)
        self._csv = CsvLog(self._path, TRAIN_COLUMNS)
        self._tb_dir = run_dir / "tb" if tensorboard else None
        self._resume_step = resume_step
        self._tb: Any = None  # opened at the first scalar: a resume refused before it adds no file

    def log(self, step: int, frames: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` at ``step`` (agent steps); ``frames`` is kept alongside."""
        self._csv.write_many(
            {"step": step, "frames": frames, "tag": tag, "value": float(v)}
            for tag, v in scalars.items()
        )
        if self._tb_dir is not None:
            if self._tb is None:
                # purge_step drops TensorBoard events past the checkpoint we resumed from.
                self._tb = SummaryWriter(str(self._tb_dir), purge_step=self._resume_step)
            for tag, v in scalars.items():
                self._tb.add_scalar(tag, float(v), step)

    def csv_size(self) -> int:
        """Bytes in train.csv: what a checkpoint records."""
        return self._csv.size()

    def truncate_csv(self, size: int) -> bool:
        """Cut train.csv back to ``size`` bytes (resuming from a checkpoint that recorded it)."""
        self._csv.close()
        try:
            return truncate_file(self._path, size)
        finally:
            self._csv = CsvLog(self._path, TRAIN_COLUMNS)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._csv.close()
        if self._tb is not None:
            self._tb.close()
