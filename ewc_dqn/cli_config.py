"""How the command lines choose the preset that fills their defaults, and apply ``--games``.

``train_agent.py`` and ``train_agent.py sweep`` both build their config with tyro from a preset:
``--preset``, ``--game`` and ``--games`` are read first to choose it (the suite of the games picks
the Atari or MinAtar version of a preset) and ``--scale`` to scale it as a whole
(``ewc_dqn.config.scaled``), then every field can be overridden (``--agent.lr 1e-4``); an
override is taken as given, not scaled. ``consolidation_flags`` reads the flags of earlier
versions: ``--no-ewc`` is ``--consolidation none``; ``--ewc.mode`` is refused (``--consolidation``
replaced it).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

from envs.games import Suite, parse_game_list, resolve_game
from ewc_dqn.config import CONSOLIDATIONS, DEFAULT_PRESET, PRESETS, TrainConfig, preset, scaled
from ewc_dqn.errors import UserError


def default_config(argv: Sequence[str]) -> TrainConfig:
    """The preset named by ``--preset`` (default: atari, or minatar for MinAtar games), in the
    version for the suite of ``--game`` or ``--games`` when given, with the games of ``--games``;
    one-line UserError for an unknown preset, an unknown game or a preset that does not serve
    the games' suite."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--preset", "--game", "--games"):
        parser.add_argument(flag)
    parser.add_argument("--scale", type=float)
    pre, _ = parser.parse_known_args(list(argv))
    if pre.preset is not None and pre.preset not in PRESETS:
        raise UserError(f"unknown preset {pre.preset!r}; presets: {', '.join(PRESETS)}")
    suite: Suite
    if pre.game:
        suite = resolve_game(pre.game).suite
    elif pre.games:
        suite = parse_game_list(pre.games)[0].suite
    elif pre.preset is not None:
        suite = next(iter(PRESETS[pre.preset]))
    else:
        suite = "atari"
    config = preset(pre.preset or DEFAULT_PRESET[suite], suite)
    if pre.scale is not None:
        config = scaled(config, pre.scale)
    # The games go into the defaults tyro parses against, so that schedule flags that need
    # explicit games (--schedule.order given) are checked together with them.
    return with_games(config, pre.games) if pre.games else config


def with_games(config: TrainConfig, games: str) -> TrainConfig:
    """``config`` with the schedule's games set from a comma-separated list (``--games``)."""
    specs = parse_game_list(games)
    schedule = replace(config.schedule, games=tuple(s.name for s in specs), num_games=len(specs))
    return replace(config, schedule=schedule)


def consolidation_flags(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--no-ewc`` (earlier versions' flag) as ``--consolidation none``.

    One-line UserError for ``--ewc.mode`` (``--consolidation`` replaced it: one field says which
    consolidation runs), for an unknown ``--consolidation`` value (the flag parser's own message
    is a box of several lines), and for ``--no-ewc`` with another consolidation.
    """
    out: list[str] = []
    chosen: list[str] = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag == "--ewc.mode":
            raise UserError(
                "--ewc.mode was replaced by --consolidation: use --consolidation online-ewc for "
                "online EWC, --consolidation ewc (the default) for one term per task"
            )
        if flag == "--consolidation":
            if not eq:
                value = argv[i + 1] if i + 1 < len(argv) else ""
            if value not in CONSOLIDATIONS:
                known = ", ".join(CONSOLIDATIONS)
                raise UserError(f"unknown --consolidation {value!r}; expected one of {known}")
            chosen.append(value)
        if arg == "--no-ewc":
            chosen.append("none")
            out += ["--consolidation", "none"]
        else:
            out.append(arg)
    if "--no-ewc" in argv and set(chosen) != {"none"}:
        raise UserError("--no-ewc is --consolidation none; give one of them, not another with it")
    return out
