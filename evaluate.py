"""Evaluate checkpoints and compare runs; the same commands as ``ewc-dqn evaluate`` and
``ewc-dqn compare``.

    python evaluate.py runs/pong --episodes 10                 # a checkpoint or run folder
    python evaluate.py checkpoint runs/cont --frames 125000 --task-labels inferred --json s.json
    python evaluate.py compare runs/sweep/*/seed* --out runs/sweep/comparison

``checkpoint`` (the default when the first argument is a path) plays every game of the run's
schedule (or ``--games``) with learning off and prints raw and human-normalised scores
(``ewc_dqn.cli_evaluate``). ``compare`` groups runs by variant and seed and writes plots,
aggregate statistics with bootstrap confidence intervals and a Markdown report
(``ewc_dqn.cli_compare``).
"""

from __future__ import annotations

import sys

from ewc_dqn import cli_compare, cli_evaluate


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "compare":
        return cli_compare.cli_main(argv[1:], prog="evaluate.py compare")
    if argv and argv[0] == "checkpoint":
        argv = argv[1:]
    return cli_evaluate.main(argv, prog="evaluate.py [checkpoint]")


if __name__ == "__main__":
    sys.exit(main())
