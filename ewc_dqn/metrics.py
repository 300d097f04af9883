"""Scalar logging to a CSV that survives resume and to TensorBoard, with namespaced tags.

Tags follow ``train/``, ``losses/``, ``eval/<game>/``, ``ewc/``, ``tasks/``, ``perf/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ewc_dqn.run_files import TRAIN_COLUMNS, TRAIN_CSV, CsvLog, truncate_csv_after


class MetricsLogger:
    """Writes every scalar to ``train.csv`` (long format) and to TensorBoard under ``tb/``."""

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        run_dir = Path(run_dir)
        if resume_step is not None:
            truncate_csv_after(run_dir / TRAIN_CSV, resume_step)
        self._csv = CsvLog(run_dir / TRAIN_CSV, TRAIN_COLUMNS)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops TensorBoard events past the checkpoint we resumed from.
            self._tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def log(self, step: int, frames: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` at ``step`` (agent steps); ``frames`` is kept alongside."""
        self._csv.write_many(
            {"step": step, "frames": frames, "tag": tag, "value": float(v)}
            for tag, v in scalars.items()
        )
        if self._tb is not None:
            for tag, v in scalars.items():
                self._tb.add_scalar(tag, float(v), step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._csv.close()
        if self._tb is not None:
            self._tb.close()
