"""``ewc-dqn export RUN_DIR... --out DIR``: copy runs' logs without their checkpoints.

A finished ``minatar`` run folder holds a few hundred kB of logs beside hundreds of MB of
checkpoints (networks, replays, Fisher chunks) and TensorBoard events. The logs alone are what
``ewc-dqn compare``, ``ewc-dqn audit`` and the plots read, so a study's runs can be kept or
published (a results folder under version control, a paper's supplement) as their logs and
compared again later without the checkpoints:

    ewc-dqn export runs/study/*/seed* --out results/study
    ewc-dqn compare results/study/*/seed* --out results/study/comparison

Each run goes to ``<out>/<variant>/seed<k>`` (the names of its ``config.json``), so runs of a
sweep keep the sweep's layout. An exported folder is a run folder that cannot be resumed or
evaluated (it has no checkpoint); exporting onto an existing folder replaces its logs.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.errors import EXIT_BAD_INPUT, EXIT_FINISHED, UserError
from ewc_dqn.provenance import PROVENANCE_FILE
from ewc_dqn.run_folder import (
    CONFIG_FILE,
    EVAL_CSV,
    FINAL_FILE,
    SCHEDULE_FILE,
    SUMMARY_CSV,
    TRAIN_CSV,
    is_run_dir,
    load_run,
)

LOG_FILES = (
    CONFIG_FILE,
    SCHEDULE_FILE,
    PROVENANCE_FILE,
    TRAIN_CSV,
    EVAL_CSV,
    SUMMARY_CSV,
    FINAL_FILE,
)
"""What an exported run keeps: everything compare, audit and the plots read (a file the run has
not written yet, such as final.json of an unfinished run, is skipped)."""


@dataclass
class ExportArgs:
    """Copy run folders' logs (config, schedule, CSV logs, final summary), not their checkpoints."""

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Run folders made by train_agent.py."""
    out: Path
    """Folder that receives <variant>/seed<k> for each run."""


def export_run(run_dir: Path, out: Path) -> Path:
    """Copy the logs of ``run_dir`` to ``out/<variant>/seed<k>``; returns that folder."""
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    record = load_run(run_dir)
    dest = out / record.variant / f"seed{record.seed}"
    if dest.resolve() == Path(run_dir).resolve():
        raise UserError(f"{run_dir} would be exported onto itself")
    dest.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        if (run_dir / name).is_file():
            # copy then rename: an interrupted export never leaves a half-written log
            tmp = dest / f".{name}.tmp"
            shutil.copyfile(run_dir / name, tmp)
            tmp.replace(dest / name)
    return dest


def main(argv: list[str] | None = None, prog: str = "ewc-dqn export") -> int:
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        args = tyro.cli(ExportArgs, args=argv, prog=prog)
        missing = [str(r) for r in args.runs if not is_run_dir(r)]
        if missing:
            raise UserError(f"not run folders (no {CONFIG_FILE}): {', '.join(missing)}")
        for run in args.runs:
            dest = export_run(run, args.out)
            finished = "finished" if (dest / FINAL_FILE).is_file() else "unfinished"
            print(f"{run} -> {dest} ({finished})")
        return EXIT_FINISHED
    return EXIT_BAD_INPUT
