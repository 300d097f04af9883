"""Train a DQN agent: on one game, or continually along a schedule of games; the same command as
``ewc-dqn train`` (``ewc_dqn.cli_train``), and ``python train_agent.py sweep ...`` is
``ewc-dqn sweep ...`` (``ewc_dqn.sweep``).

    python train_agent.py --preset minatar-quick --run-dir runs/quick
    python train_agent.py --resume runs/quick
    python train_agent.py sweep --preset minatar --variants no-ewc,ewc-true,ewc-inferred \\
        --seeds 0-2 --out runs/sweep

``--help`` lists every flag with its units.
"""

from __future__ import annotations

import sys

from ewc_dqn import cli_train, sweep


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sweep":
        return sweep.sweep_main(argv[1:], prog="train_agent.py sweep")
    return cli_train.main(argv, prog="python train_agent.py")


if __name__ == "__main__":
    sys.exit(main())
