"""Measure the MinAtar reference scores stored in `envs/minatar_reference.json`.

MinAtar has no human scores, so a MinAtar score is normalised between two measured points,
(raw - random) / (dqn - random) (see `envs/scores.py`):

`--random`: a uniform random policy over all 6 MinAtar actions, through
    `minatar.Environment(game, sticky_action_prob=0.1)` (the package's defaults: sticky actions
    with probability 0.1, difficulty ramping on), `--episodes` episodes per game (1000, as
    MinAtar's own `examples/random_play.py`) or until `--time-budget-s` runs out, whichever comes
    first. Episodes are cut at `--max-episode-steps` = 27,000 steps: the Atari protocol caps
    episodes at 108,000 emulator frames = 27,000 agent steps at action repeat 4; MinAtar has no
    frame skip (one step = one frame), so we cap the same number of agent decisions. In practice
    no random MinAtar episode comes near the cap (Freeway ends itself after 2,500 frames); the
    JSON records how many were cut.

`--dqn`: one single-task DQN per game, trained and scored with this package's own CLIs:

    python train_agent.py --game MinAtar/Breakout --steps N --run-dir DIR --preset minatar-single
    python evaluate.py DIR --episodes 100 --json OUT

and the mean of the evaluation returns is stored as the game's reference.

Both parts rewrite only their own entry of each measured game, and record the value, the number
of episodes, the standard error of the mean, the exact command and the date.

Usage (from the repository root):

    python bench/measure_minatar_reference.py --random
    python bench/measure_minatar_reference.py --dqn --steps 5000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from minatar import Environment

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout: `envs` is at the root

from envs.games import MINATAR_GAMES, GameSpec, parse_game_list  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "envs" / "minatar_reference.json"
NUM_ACTIONS = 6  # every MinAtar game takes the same 6 actions
STICKY_ACTION_PROB = 0.1  # MinAtar's default
MAX_EPISODE_STEPS = 27_000  # = 108,000 Atari frames / action repeat 4; MinAtar has no frame skip
PROVISIONAL_DQN_NOTE = (
    "Not measured yet. Young & Tian 2019 (arXiv:1903.03176) publish their DQN results on "
    "MinAtar only as learning-curve plots (the paper's figures, the MinAtar README's "
    "img/results.gif); no per-game number in text was found, so none is transcribed here. "
    "Run `python bench/measure_minatar_reference.py --dqn` to measure it."
)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def _this_command(argv: list[str]) -> str:
    """The command line that ran this script, with the script path relative to the repo root."""
    script = Path(argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *argv[1:]])


def _mean_and_stderr(returns: np.ndarray) -> tuple[float, float]:
    """Sample mean and standard error of the mean (ddof=1; 0 for a single episode)."""
    mean = float(np.mean(returns))
    if returns.size < 2:
        return mean, 0.0
    return mean, float(np.std(returns, ddof=1) / math.sqrt(returns.size))


def random_policy_returns(
    game: GameSpec,
    episodes: int,
    time_budget_s: float,
    max_episode_steps: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play a uniform random policy over the 6 actions.

    Returns (returns, episode_steps, truncated), one entry per finished episode; `truncated` marks
    episodes cut at `max_episode_steps` rather than ended by the game.
    """
    env = Environment(game.env_id, sticky_action_prob=STICKY_ACTION_PROB)
    rng = np.random.default_rng(seed)
    env.seed(int(rng.integers(2**31 - 1)))  # the env's own RandomState: sticky actions, spawns
    returns: list[float] = []
    lengths: list[int] = []
    truncated: list[bool] = []
    deadline = time.monotonic() + time_budget_s
    while len(returns) < episodes and time.monotonic() < deadline:
        env.reset()
        episode_return, steps, terminal = 0.0, 0, False
        while not terminal and steps < max_episode_steps:
            reward, terminal = env.act(int(rng.integers(NUM_ACTIONS)))
            episode_return += float(reward)
            steps += 1
        returns.append(episode_return)
        lengths.append(steps)
        truncated.append(not terminal)
    return np.asarray(returns), np.asarray(lengths), np.asarray(truncated, dtype=bool)


def measure_random(args: argparse.Namespace, games: list[GameSpec], command: str) -> dict:
    """The `random` entry of each game."""
    entries = {}
    for game in games:
        start = time.monotonic()
        returns, lengths, truncated = random_policy_returns(
            game, args.episodes, args.time_budget_s, args.max_episode_steps, args.seed
        )
        if returns.size == 0:
            raise RuntimeError(f"{game.name}: no episode finished within {args.time_budget_s} s")
        mean, stderr = _mean_and_stderr(returns)
        entries[game.name] = {
            "value": round(mean, 4),
            "stderr": round(stderr, 4),
            "episodes": int(returns.size),
            "std": round(float(np.std(returns, ddof=1)) if returns.size > 1 else 0.0, 4),
            "min": float(returns.min()),
            "max": float(returns.max()),
            "mean_episode_steps": round(float(lengths.mean()), 2),
            "truncated_episodes": int(truncated.sum()),
            "policy": f"uniform random over all {NUM_ACTIONS} actions",
            "sticky_action_prob": STICKY_ACTION_PROB,
            "difficulty_ramping": True,
            "max_episode_steps": args.max_episode_steps,
            "seed": args.seed,
            "minatar_version": metadata.version("minatar"),
            "wall_seconds": round(time.monotonic() - start, 1),
            "command": command,
            "date": _now(),
        }
        print(
            f"{game.name:24s} random {mean:9.4f} +- {stderr:.4f} (s.e.) over {returns.size} "
            f"episodes, {int(truncated.sum())} cut at {args.max_episode_steps} steps",
            flush=True,
        )
    return entries


def _evaluation_returns(result: Any, game: GameSpec) -> np.ndarray:
    """Per-episode returns of `game` from `evaluate.py --json` output.

    Accepted layouts: {"games": {name: {"returns": [...]}}}, {name: {"returns": [...]}} or
    {"returns": [...]} (single-game run), with `name` the canonical game name.
    """
    candidates = []
    if isinstance(result, dict):
        games = result.get("games")
        if isinstance(games, dict):
            candidates.append(games.get(game.name))
        candidates.append(result.get(game.name))
        candidates.append(result)
    for entry in candidates:
        if isinstance(entry, dict) and isinstance(entry.get("returns"), list):
            return np.asarray(entry["returns"], dtype=np.float64)
    keys = sorted(result) if isinstance(result, dict) else type(result).__name__
    raise ValueError(
        f"evaluate.py output has no per-episode 'returns' for {game.name} (top-level keys: {keys})"
    )


def measure_dqn(args: argparse.Namespace, games: list[GameSpec], command: str) -> dict:
    """The `dqn` entry of each game: train a single-task DQN, then score it with learning off."""
    entries = {}
    runs_dir = Path(args.runs_dir)
    for game in games:
        run_dir = runs_dir / game.name.replace("/", "-")
        out_json = run_dir / "reference_eval.json"
        train = [
            args.python, "train_agent.py", "--game", game.name, "--steps", str(args.steps),
            "--run-dir", str(run_dir), "--preset", "minatar-single",
        ]  # fmt: skip
        evaluate = [
            args.python, "evaluate.py", str(run_dir), "--episodes", str(args.eval_episodes),
            "--json", str(out_json),
        ]  # fmt: skip
        start = time.monotonic()
        for cmd in (train, evaluate):
            print("+", shlex.join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=REPO_ROOT)
        returns = _evaluation_returns(json.loads(out_json.read_text()), game)
        mean, stderr = _mean_and_stderr(returns)
        entries[game.name] = {
            "value": round(mean, 4),
            "stderr": round(stderr, 4),
            "episodes": int(returns.size),
            "train_steps": args.steps,
            "preset": "minatar-single",
            "status": "measured",
            "source": "single-task DQN trained and evaluated with this package",
            "wall_seconds": round(time.monotonic() - start, 1),
            "command": " && ".join(shlex.join(["python", *c[1:]]) for c in (train, evaluate)),
            "measured_by": command,
            "date": _now(),
        }
        print(f"{game.name:24s} dqn {mean:9.4f} +- {stderr:.4f} over {returns.size} episodes")
    return entries


def _write_json(path: Path, data: dict) -> None:
    """Write atomically, so an interrupted run never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; this is package data
    os.replace(tmp, path)


def _empty_reference() -> dict:
    return {
        "description": (
            "MinAtar reference scores for normalisation: (raw - random) / (dqn - random). "
            "Written by bench/measure_minatar_reference.py; see its docstring for the protocol."
        ),
        "games": {
            name: {
                "random": None,
                "dqn": {"value": None, "status": "not measured", "source": PROVISIONAL_DQN_NOTE},
            }
            for name in MINATAR_GAMES
        },
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", action="store_true", help="measure the random policy")
    parser.add_argument("--dqn", action="store_true", help="train and score single-task DQNs")
    parser.add_argument(
        "--games", default=",".join(MINATAR_GAMES), help="comma-separated MinAtar games"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="file to update")
    parser.add_argument("--seed", type=int, default=0, help="random policy seed")
    parser.add_argument("--episodes", type=int, default=1000, help="random policy episodes/game")
    parser.add_argument(
        "--time-budget-s", type=float, default=600.0, help="random policy seconds/game (cap)"
    )
    parser.add_argument(
        "--max-episode-steps", type=int, default=MAX_EPISODE_STEPS, help="episode cap (steps)"
    )
    parser.add_argument(
        "--steps", type=int, default=5_000_000, help="DQN training agent steps (= frames)/game"
    )
    parser.add_argument("--eval-episodes", type=int, default=100, help="DQN evaluation episodes")
    parser.add_argument("--runs-dir", default="runs/minatar_reference", help="DQN run folders")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the CLIs")
    args = parser.parse_args(argv[1:])
    if not (args.random or args.dqn):
        parser.error("choose --random and/or --dqn")
    games = parse_game_list(args.games)
    if any(game.suite != "minatar" for game in games):
        parser.error(f"--games must be MinAtar games: {', '.join(MINATAR_GAMES)}")

    command = _this_command(argv)
    data = json.loads(args.json.read_text()) if args.json.exists() else _empty_reference()
    for part, measure in (("random", measure_random), ("dqn", measure_dqn)):
        if getattr(args, part):
            for name, entry in measure(args, games, command).items():
                data["games"][name][part] = entry
            _write_json(args.json, data)  # after each part, so a failed --dqn keeps --random
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
