"""``ewc-dqn compare RUN_DIR...`` (``python evaluate.py compare``): the command line of
``ewc_dqn.compare.compare_runs``."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.compare import compare_runs
from ewc_dqn.compare_data import CompareError
from ewc_dqn.compare_report import format_summary
from ewc_dqn.errors import EXIT_BAD_INPUT


@dataclass
class CompareArgs:
    """Compare training runs: score curves, final aggregates, forgetting, transfer, task labels."""

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Run folders (each made by train_agent.py), any mix of variants and seeds."""
    out: Path | None = None
    """Folder for the PNGs, report.md and summary.json; None: <first run's parent>/comparison."""
    baselines: tuple[Path, ...] = ()
    """Single-game run folders; their final normalised scores are drawn as per-game baselines."""
    reps: int = 2000
    """Bootstrap replicates for every confidence interval except the probability of improvement."""
    poi_reps: int = 1000
    """Bootstrap replicates for the probability of improvement (rliable computes each one with a
    Mann-Whitney test per game: about reps x games ms per pair of groups)."""
    seed: int = 0
    """Seed of the bootstrap resampling."""


def cli_main(argv: list[str] | None = None, prog: str = "ewc-dqn compare") -> int:
    """``ewc-dqn compare RUN...``: parse ``argv`` (default: the process's arguments), compare."""
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        return main(tyro.cli(CompareArgs, args=argv, prog=prog))
    return EXIT_BAD_INPUT


def main(args: CompareArgs) -> int:
    """The ``ewc-dqn compare`` command: run, print the summary; on bad input, one line, 2."""
    try:
        result = compare_runs(
            args.runs, args.out, args.baselines, args.reps, args.seed, args.poi_reps
        )
    except CompareError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0
