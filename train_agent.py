"""Train a DQN agent: on one game, or continually along a schedule of games.

    python train_agent.py --game Pong --steps 1000000 --run-dir runs/pong
    python train_agent.py --game MinAtar/Breakout --steps 200000 --run-dir runs/breakout
    python train_agent.py --preset minatar-quick --run-dir runs/quick
    python train_agent.py --preset atari --task-labels inferred --run-dir runs/atari-fmn
    python train_agent.py --resume runs/atari-fmn
    python train_agent.py sweep --preset minatar --variants no-ewc,ewc-true,ewc-inferred \\
        --seeds 0-2 --out runs/sweep

Every field of the preset can be overridden (``--agent.lr``, ``--ewc.lam``, ``--schedule.seed``
...); ``--help`` lists them with their units. Agent steps count transitions summed over the
parallel environment copies; frames count emulator frames (4 per agent step on Atari).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import tyro

from envs.games import parse_game_list, resolve_game
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.config import DEFAULT_PRESET, PRESETS, TrainConfig, preset


@dataclass(frozen=True)
class TrainArgs:
    """Train a Double DQN with EWC on one game or a schedule of games."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    preset: str | None = None
    """Named preset: smoke, minatar-quick, minatar, minatar-single, atari-short, atari (default:
    atari for Atari games, minatar for MinAtar games)."""
    game: str | None = None
    """Train on this one game (Pong, ALE/Pong-v5, MinAtar/Breakout, ...) instead of a schedule."""
    steps: int | None = None
    """With --game: agent steps to train (default: one visit of the preset)."""
    games: str | None = None
    """Comma-separated games of the continual schedule (default: drawn from the preset's pool)."""
    run_dir: Path | None = None
    """Run folder for logs, config, schedule and checkpoints (must not hold another run)."""
    resume: Path | None = None
    """Continue the run in this folder from its latest checkpoint, with its saved config."""
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""
    quiet: bool = False
    """No progress bar or evaluation tables."""


def _pre_parse(argv: list[str]) -> argparse.Namespace:
    """--preset, --game, --games and --resume decide which preset fills the defaults."""
    p = argparse.ArgumentParser(add_help=False)
    for flag in ("--preset", "--game", "--games", "--resume"):
        p.add_argument(flag)
    known, _ = p.parse_known_args(argv)
    return known


def _default_config(pre: argparse.Namespace) -> TrainConfig:
    if pre.preset is not None and pre.preset not in PRESETS:
        raise ValueError(f"unknown preset {pre.preset!r}; presets: {', '.join(PRESETS)}")
    if pre.game:
        suite = resolve_game(pre.game).suite
    elif pre.games:
        suite = parse_game_list(pre.games)[0].suite
    elif pre.preset is not None:
        suite = next(iter(PRESETS[pre.preset]))
    else:
        suite = "atari"
    return preset(pre.preset or DEFAULT_PRESET[suite], suite)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "sweep":
        from ewc_dqn.sweep import sweep_main

        return sweep_main(argv[1:])
    with exit_on_user_errors():
        pre = _pre_parse(argv)
        default = TrainArgs(config=_default_config(pre))
        args = tyro.cli(
            TrainArgs, default=default, args=argv, config=(tyro.conf.FlagCreatePairsOff,)
        )
        return _train(args, argv)
    return 2


def _train(args: TrainArgs, argv: list[str]) -> int:
    from ewc_dqn.run import RunError, single_game_schedule, start_run

    if args.resume is not None:
        overrides = [a for a in argv if a.startswith("--") and a.split("=")[0] not in
                     ("--resume", "--device", "--quiet")]
        if overrides:
            raise RunError(f"--resume takes the run's saved config; drop {' '.join(overrides)}")
        trainer = start_run(None, None, args.resume, args.device, resume=True,
                            show_progress=not args.quiet)
        run_dir = args.resume
    else:
        if args.run_dir is None:
            raise RunError("--run-dir is required for a new run (or use --resume DIR)")
        config = args.config
        if args.game is not None:
            if args.games is not None:
                raise RunError("give either --game (one game) or --games (a schedule), not both")
            spec = resolve_game(args.game)
            steps = args.steps or config.schedule.visit_frames // _frame_skip(config)
            config = replace(config, suite=spec.suite)
            schedule = single_game_schedule(spec.name, steps * _frame_skip(config))
        else:
            if args.steps is not None:
                raise RunError("--steps goes with --game; a schedule's length is set by "
                               "--schedule.visit-frames and --schedule.visits-per-game")
            if args.games is not None:
                specs = parse_game_list(args.games)
                config = replace(config, suite=specs[0].suite, schedule=replace(
                    config.schedule, games=tuple(s.name for s in specs), num_games=len(specs)))
            from ewc_dqn.run import make_schedule

            schedule = make_schedule(config)
        if not args.quiet:
            print(schedule.describe())
        trainer = start_run(config, schedule, args.run_dir, args.device,
                            show_progress=not args.quiet)
        run_dir = args.run_dir
    try:
        finished = trainer.run()
    finally:
        trainer.close()
    if finished:
        from ewc_dqn.run_report import write_run_plots

        plots = write_run_plots(run_dir)
        print(f"finished: {run_dir} (plots: {', '.join(str(p) for p in plots)})")
        return 0
    print(f"stopped; continue with: python train_agent.py --resume {run_dir}")
    return 130


def _frame_skip(config: TrainConfig) -> int:
    return config.env.frame_skip if config.suite == "atari" else 1


if __name__ == "__main__":
    sys.exit(main())
