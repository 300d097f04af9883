"""``ewc-dqn train`` (``python train_agent.py``): train a DQN agent on one game, or continually
along a schedule of games.

    ewc-dqn train --game Pong --steps 1000000 --run-dir runs/pong
    ewc-dqn train --game MinAtar/Breakout --steps 200000 --run-dir runs/breakout
    ewc-dqn train --preset minatar-quick --run-dir runs/quick
    ewc-dqn train --preset atari --task-labels inferred --run-dir runs/atari-fmn
    ewc-dqn train --resume runs/atari-fmn

Every field of the preset can be overridden (``--agent.lr``, ``--ewc.lam``, ``--schedule.seed``
...); ``--help`` lists them with their units. Agent steps count transitions summed over the
parallel environment copies; frames count emulator frames (4 per agent step on Atari).

Exit status: 0 the run finished; 2 bad input (one line on stderr: a flag, a run folder, a
checkpoint, a full disk, training that diverged); 3 stopped on request (``--stop-after-steps``,
Ctrl-C, SIGTERM) after a checkpoint, to be continued with ``--resume``; 1 a bug (a traceback).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from envs.games import resolve_game
from ewc_dqn.cli_config import consolidation_flags, default_config, with_games
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.config import TrainConfig
from ewc_dqn.errors import EXIT_BAD_INPUT, EXIT_FINISHED, EXIT_STOPPED
from ewc_dqn.run_builder import RunError, make_schedule, single_game_schedule, start_run
from ewc_dqn.run_plots import write_run_plots
from ewc_dqn.threads import set_torch_threads


@dataclass(frozen=True)
class TrainArgs:
    """Train a Double DQN with EWC on one game or a schedule of games."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    preset: str | None = None
    """Named preset: smoke, minatar-quick, minatar, minatar-single, atari-dry, atari-cpu,
    atari-short, atari (default: atari for Atari games, minatar for MinAtar games)."""
    game: str | None = None
    """Train on this one game (Pong, ALE/Pong-v5, MinAtar/Breakout, ...) instead of a schedule."""
    steps: int | None = None
    """With --game: agent steps to train (default: one visit of the preset)."""
    scale: float | None = None
    """Multiply every count of time and memory of the preset (visits, learning start, replay,
    epsilon decay, target period, EWC delay, checkpoints, evaluation) by this factor in (0, 1]:
    e.g. --preset atari --scale 2.5e-5 runs the whole ten-game protocol on a CPU in minutes."""
    games: str | None = None
    """Comma-separated games of the continual schedule (default: drawn from the preset's pool)."""
    run_dir: Path | None = None
    """Run folder for logs, config, schedule and checkpoints (must not hold another run)."""
    resume: Path | None = None
    """Continue the run in this folder from its latest checkpoint, with its saved config (only
    --device, --torch-threads, --stop-after-steps and --quiet may be given with it)."""
    device: str = "auto"
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""
    quiet: bool = False
    """No progress bar or evaluation tables."""
    stop_after_steps: int | None = None
    """Stop at the first checkpoint at or after this many agent steps (resume later with
    --resume; exit status 3); for time-limited cluster jobs."""


RESUME_FLAGS = ("--resume", "--device", "--quiet", "--stop-after-steps", "--torch-threads")
"""Flags a resumed run takes: where and how this process runs, never what it trains. Threads
change neither the config nor the run's maths, only (on the CPU) the order of float sums."""


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def main(argv: list[str] | None = None, prog: str = "ewc-dqn train") -> int:
    """Parse ``argv`` (default: the process's arguments), train; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        default = TrainArgs(config=default_config(argv))
        args = tyro.cli(
            TrainArgs,
            default=default,
            args=consolidation_flags(argv),
            prog=prog,
            config=(tyro.conf.FlagCreatePairsOff,),
        )
        return _train(args, argv, prog)
    return EXIT_BAD_INPUT


def _train(args: TrainArgs, argv: list[str], prog: str) -> int:
    if args.stop_after_steps is not None and args.stop_after_steps < 1:
        raise RunError(
            f"--stop-after-steps must be a positive number of agent steps, got "
            f"{args.stop_after_steps}"
        )
    if args.resume is not None:
        overrides = [a for a in argv if a.startswith("--") and a.split("=")[0] not in RESUME_FLAGS]
        if overrides:
            raise RunError(f"--resume takes the run's saved config; drop {' '.join(overrides)}")
        trainer = start_run(
            None, None, args.resume, args.device, resume=True, show_progress=not args.quiet
        )
        run_dir = args.resume
    else:
        if args.run_dir is None:
            raise RunError("--run-dir is required for a new run (or use --resume DIR)")
        config = args.config
        if args.game is not None:
            if args.games is not None:
                raise RunError("give either --game (one game) or --games (a schedule), not both")
            spec = resolve_game(args.game)
            steps = args.steps
            if steps is None:
                steps = config.schedule.frames_per_visit // config.frames_per_step
            if steps < 1:
                raise RunError(f"--steps must be positive, got {steps}")
            if steps % config.env.num_envs:
                raise RunError(
                    f"--steps {steps} is not a multiple of the {config.env.num_envs} environment "
                    "copies (--env.num-envs) that step together"
                )
            schedule = single_game_schedule(spec.name, steps * config.frames_per_step)
        else:
            if args.steps is not None:
                raise RunError(
                    "--steps goes with --game; a schedule's length is set by "
                    "--schedule.visit-frames and --schedule.visits-per-game"
                )
            if args.games is not None:
                config = with_games(config, args.games)
            schedule = make_schedule(config)
        trainer = start_run(
            config, schedule, args.run_dir, args.device, show_progress=not args.quiet
        )
        if not args.quiet:
            print(schedule.describe())
            print(f"method: {config.describe_method()}")
        run_dir = args.run_dir
    threads = trainer.config.torch_threads
    if args.resume is not None and _given(argv, "--torch-threads"):
        threads = args.config.torch_threads  # this process only; the run's config keeps its own
    set_torch_threads(threads)  # for this process, before any update
    try:
        finished = trainer.train(stop_after_steps=args.stop_after_steps)
    finally:
        trainer.close()
    if finished:
        plots = write_run_plots(run_dir)
        print(f"finished: {run_dir} (plots: {', '.join(str(p) for p in plots)})")
        return EXIT_FINISHED
    print(f"stopped; continue with: {prog} --resume {run_dir}")
    return EXIT_STOPPED
