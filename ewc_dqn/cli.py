"""The ``ewc-dqn`` command: one subcommand per job, each with the flags of its own ``--help``.

    ewc-dqn train --preset minatar-quick --run-dir runs/quick
    ewc-dqn evaluate runs/quick --episodes 10
    ewc-dqn compare runs/sweep/*/seed* --out runs/sweep/comparison
    ewc-dqn sweep --preset minatar --variants no-ewc,ewc-true --seeds 0-2 --out runs/sweep
    ewc-dqn audit runs/quick
    ewc-dqn export runs/sweep/*/seed* --out results/sweep

Exit status: 0 done; 2 bad input (one line on stderr); 3 stopped on request, to be resumed; 1 a
bug (a traceback), or a run that failed its audit or a sweep with a failed run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ewc_dqn import audit, cli_compare, cli_evaluate, cli_export, cli_train, sweep
from ewc_dqn.errors import EXIT_BAD_INPUT, EXIT_FINISHED

Command = Callable[[list[str]], int]

COMMANDS: dict[str, tuple[Command, str]] = {
    "train": (cli_train.main, "train on one game or continually along a schedule of games"),
    "evaluate": (cli_evaluate.main, "score a checkpoint or a run's newest one, learning off"),
    "compare": (cli_compare.cli_main, "group runs by variant and seed: plots, statistics, report"),
    "sweep": (sweep.sweep_main, "train every (variant, seed) of a preset, then compare them"),
    "audit": (audit.main, "check a run folder against the protocol (the frames of each stage)"),
    "export": (cli_export.main, "copy runs' logs without their checkpoints, to keep or publish"),
}
"""Subcommand -> (its entry point, taking the arguments after the subcommand; its summary)."""


def usage() -> str:
    lines = ["usage: ewc-dqn {" + ",".join(COMMANDS) + "} ...", "", "subcommands:"]
    lines += [f"  {name:<10}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "ewc-dqn SUBCOMMAND --help lists the flags of each."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return EXIT_FINISHED if argv else EXIT_BAD_INPUT
    if argv[0] not in COMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}\n{usage()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    command, _ = COMMANDS[argv[0]]
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
