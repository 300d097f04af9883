"""``ewc-dqn evaluate`` (``python evaluate.py``): score a checkpoint with learning off.

    ewc-dqn evaluate runs/pong --episodes 10                 # a checkpoint or run folder
    ewc-dqn evaluate runs/cont --frames 125000 --task-labels inferred --json s.json

Plays every game of the run's schedule (or ``--games``) and prints raw and human-normalised
scores with the evaluation protocol.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import tyro

from envs.games import parse_game_list
from ewc_dqn.checkpoint import does_not_fit
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.errors import EXIT_BAD_INPUT, EXIT_FINISHED, UserError
from ewc_dqn.evaluation import evaluate_games, format_scores, paper_mean, paper_total, protocol_text
from ewc_dqn.fmn import ForgetMeNot
from ewc_dqn.labels import InferredLabels, TaskLabeler, TrueLabels
from ewc_dqn.run_builder import load_trained_policy, resolve_device
from ewc_dqn.run_folder import write_json_atomic
from ewc_dqn.writable import check_writable_file


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate a checkpoint with learning off."""

    path: tyro.conf.Positional[Path]
    """A checkpoint folder, a file in one, or a run folder (its newest checkpoint)."""
    games: str | None = None
    """Comma-separated games to score (default: every game of the run's schedule)."""
    episodes: int | None = None
    """Episodes per game (default: the run's eval.episodes)."""
    frames: int | None = None
    """No episode starts after this many emulator frames per game; started ones play to their
    end (default: the run's eval.frames, or no limit when --episodes is given)."""
    epsilon: float = 0.05
    """Exploration rate while evaluating."""
    task_labels: Literal["run", "true", "inferred"] = "run"
    """Task ids from the schedule ('true'), from the checkpoint's forget-me-not ('inferred'),
    or as the run was trained ('run')."""
    seed: int = 0
    """Seed of the evaluation environments and exploration (same seed, same numbers)."""
    num_envs: int | None = None
    """Parallel copies per game (default: the run's eval.num_envs)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    json: Path | None = None
    """Also write the scores to this JSON file."""


def evaluate_checkpoint(args: EvalArgs) -> dict:
    """Score the checkpoint's network on the chosen games; returns the JSON-ready result."""
    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.frames is not None and args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    if not 0.0 <= args.epsilon <= 1.0:
        raise UserError(f"--epsilon must be in [0, 1], got {args.epsilon}")
    device = resolve_device(args.device)
    # The network and the task inference only: the replays and EWC terms are never read.
    policy = load_trained_policy(args.path, device, parts=("labeler",))
    ckpt, step, state, net = policy.checkpoint, policy.step, policy.state, policy.network
    config, schedule = policy.config, policy.schedule
    labels = config.task_labels if args.task_labels == "run" else args.task_labels
    games = parse_game_list(args.games) if args.games else parse_game_list(",".join(schedule.games))
    if any(g.suite != config.suite for g in games):
        raise UserError(
            f"the run trained {config.suite} games; cannot score "
            f"{', '.join(g.name for g in games if g.suite != config.suite)}"
        )
    if labels == "true":
        unknown = [g.name for g in games if g.name not in schedule.games]
        if unknown:
            raise UserError(
                f"{', '.join(unknown)} not in the run's schedule, so it has no true "
                "task label; use --task-labels inferred"
            )

    env_cfg = replace(config.env, num_envs=args.num_envs or config.eval.num_envs)
    env_cfg.validate()
    try:
        if labels == "inferred":
            inferred = InferredLabels(ForgetMeNot(config.fmn))
            inferred.load_state_dict(state["labeler"])
            labeler: TaskLabeler = inferred
        else:
            labeler = TrueLabels()
    except (KeyError, RuntimeError, ValueError) as e:
        raise does_not_fit(ckpt, e) from None
    episodes = args.episodes or config.eval.episodes
    frames = args.frames or (10**12 if args.episodes else config.eval.frames)
    scores = evaluate_games(
        net,
        games,
        [schedule.games.index(g.name) if g.name in schedule.games else -1 for g in games],
        env_cfg,
        labeler.eval_label,
        episodes=episodes,
        frames=frames,
        epsilon=args.epsilon,
        seed_of=lambda true_task: args.seed * 1_000_003 + max(true_task, 0),
        device=device,
    )
    total = paper_total(scores)
    protocol = protocol_text(env_cfg, args.epsilon, episodes, frames)
    print(f"checkpoint {ckpt} (step {step:,}), task labels: {labels}")
    print(f"protocol: {protocol}")
    print(format_scores(scores, total))
    return {
        "checkpoint": str(ckpt),
        "step": step,
        "task_labels": labels,
        "protocol": protocol,
        "seed": args.seed,
        "total_clipped": total,
        "mean_normalised": paper_mean(scores),
        "games": {
            s.game: {
                "episodes": s.episodes,
                "raw_mean": s.raw_mean,
                "raw_std": s.raw_std,
                "normalised": s.normalised,
                "frames": s.frames,
                "task_id": s.task_id,
                "complete": s.complete,
                "returns": s.returns,
            }
            for s in scores
        },
    }


def main(argv: list[str] | None = None, prog: str = "ewc-dqn evaluate") -> int:
    """Parse ``argv`` (default: the process's arguments), score, print; the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        args = tyro.cli(
            EvalArgs,
            args=argv,
            prog=prog,
            config=(tyro.conf.FlagCreatePairsOff,),
        )
        if args.json is not None:
            check_writable_file(args.json, "--json")  # before the scores, not after
        result = evaluate_checkpoint(args)
        if args.json is not None:
            try:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(args.json, result)
            except OSError as e:  # checked above; the disk may still have filled up since
                raise UserError(f"cannot write --json {args.json}: {e.strerror or e}") from None
            print(f"wrote {args.json}")
        json.dumps(result)  # fail here, not later, if anything is not JSON-ready
        return EXIT_FINISHED
    return EXIT_BAD_INPUT
