"""Reference scores and the normalised score the paper reports.

Atari. `ATARI_RANDOM` and `ATARI_HUMAN` are transcribed digit for digit from
google-deepmind/dqn_zoo `dqn_zoo/atari_data.py` (`_ATARI_DATA`, 57 games). Protocol of those
numbers (per that file): undiscounted episode returns averaged over at least 3 episodes; each
episode starts with a uniform random number (1 to 30) of no-op actions; episodes are capped at
108,000 frames (30 minutes). 'random' picks actions uniformly at random on each step; 'human' is a
professional human games tester. A score is human-normalised as (raw - random) / (human - random):
0 = random, 1 = human.

`NATURE_DQN` holds the per-game scores of the Nature DQN (Mnih et al., "Human-level control through
deep reinforcement learning", Nature 518:529-533, 2015, Extended Data Table 2, "DQN" column: 49
games, no-op starts, the same 30-minute episode cap), transcribed as tabulated in
seungjaeryanlee/rldb `rldb/db/paper__dqn/algo__dqn/entries.py`. They are used only to choose the
pool of games on which a standalone DQN reaches human level (`envs/schedule.py`).

MinAtar has no human scores. Its reference pair is (a) a uniform random policy and (b) a
single-task DQN trained with this package, both measured by `bench/measure_minatar_reference.py`
and stored with their protocol in `envs/minatar_reference.json`; normalised = (raw - random) /
(dqn - random). Until the DQN part is measured its value is null and normalising a MinAtar score
raises `ReferenceNotMeasuredError` rather than inventing a number.

The paper's score (Kirkpatrick et al. 2017): the normalised score of each game clipped at 1 from
above only (a game scored below random stays negative), summed over the games: 10 = human level
on all of 10 games, 0 = random.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from envs.games import ATARI_GAMES, GameSpec, resolve_game

# dqn_zoo `_ATARI_DATA`, keyed by its own game keys: (random, human).
_DQN_ZOO_ATARI_DATA: dict[str, tuple[float, float]] = {
    "alien": (227.8, 7127.7),
    "amidar": (5.8, 1719.5),
    "assault": (222.4, 742.0),
    "asterix": (210.0, 8503.3),
    "asteroids": (719.1, 47388.7),
    "atlantis": (12850.0, 29028.1),
    "bank_heist": (14.2, 753.1),
    "battle_zone": (2360.0, 37187.5),
    "beam_rider": (363.9, 16926.5),
    "berzerk": (123.7, 2630.4),
    "bowling": (23.1, 160.7),
    "boxing": (0.1, 12.1),
    "breakout": (1.7, 30.5),
    "centipede": (2090.9, 12017.0),
    "chopper_command": (811.0, 7387.8),
    "crazy_climber": (10780.5, 35829.4),
    "defender": (2874.5, 18688.9),
    "demon_attack": (152.1, 1971.0),
    "double_dunk": (-18.6, -16.4),
    "enduro": (0.0, 860.5),
    "fishing_derby": (-91.7, -38.7),
    "freeway": (0.0, 29.6),
    "frostbite": (65.2, 4334.7),
    "gopher": (257.6, 2412.5),
    "gravitar": (173.0, 3351.4),
    "hero": (1027.0, 30826.4),
    "ice_hockey": (-11.2, 0.9),
    "jamesbond": (29.0, 302.8),
    "kangaroo": (52.0, 3035.0),
    "krull": (1598.0, 2665.5),
    "kung_fu_master": (258.5, 22736.3),
    "montezuma_revenge": (0.0, 4753.3),
    "ms_pacman": (307.3, 6951.6),
    "name_this_game": (2292.3, 8049.0),
    "phoenix": (761.4, 7242.6),
    "pitfall": (-229.4, 6463.7),
    "pong": (-20.7, 14.6),
    "private_eye": (24.9, 69571.3),
    "qbert": (163.9, 13455.0),
    "riverraid": (1338.5, 17118.0),
    "road_runner": (11.5, 7845.0),
    "robotank": (2.2, 11.9),
    "seaquest": (68.4, 42054.7),
    "skiing": (-17098.1, -4336.9),
    "solaris": (1236.3, 12326.7),
    "space_invaders": (148.0, 1668.7),
    "star_gunner": (664.0, 10250.0),
    "surround": (-10.0, 6.5),
    "tennis": (-23.8, -8.3),
    "time_pilot": (3568.0, 5229.2),
    "tutankham": (11.4, 167.6),
    "up_n_down": (533.4, 11693.2),
    "venture": (0.0, 1187.5),
    # dqn_zoo notes that under other evaluation protocols the random score on Video Pinball
    # can exceed the human one.
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}


def _by_canonical_name(column: int) -> dict[str, float]:
    table = {}
    for name in ATARI_GAMES:
        key = resolve_game(name).dqn_zoo_key
        assert key is not None
        table[name] = _DQN_ZOO_ATARI_DATA[key][column]
    return table


ATARI_RANDOM: dict[str, float] = _by_canonical_name(0)
"""Random-policy score per Atari game (canonical name), dqn_zoo table."""

ATARI_HUMAN: dict[str, float] = _by_canonical_name(1)
"""Professional human tester score per Atari game (canonical name), dqn_zoo table."""

NATURE_DQN: dict[str, float] = {
    "Alien": 3069.0,
    "Amidar": 739.5,
    "Assault": 3359.0,
    "Asterix": 6012.0,
    "Asteroids": 1629.0,
    "Atlantis": 85641.0,
    "BankHeist": 429.7,
    "BattleZone": 26300.0,
    "BeamRider": 6846.0,
    "Bowling": 42.4,
    "Boxing": 71.8,
    "Breakout": 401.2,
    "Centipede": 8309.0,
    "ChopperCommand": 6687.0,
    "CrazyClimber": 114103.0,
    "DemonAttack": 9711.0,
    "DoubleDunk": -18.1,
    "Enduro": 301.8,
    "FishingDerby": -0.8,
    "Freeway": 30.3,
    "Frostbite": 328.3,
    "Gopher": 8520.0,
    "Gravitar": 306.7,
    "Hero": 19950.0,
    "IceHockey": -1.6,
    "Jamesbond": 576.7,
    "Kangaroo": 6740.0,
    "Krull": 3805.0,
    "KungFuMaster": 23270.0,
    "MontezumaRevenge": 0.0,
    "MsPacman": 2311.0,
    "NameThisGame": 7257.0,
    "Pong": 18.9,
    "PrivateEye": 1788.0,
    "Qbert": 10596.0,
    "Riverraid": 8316.0,
    "RoadRunner": 18257.0,
    "Robotank": 51.6,
    "Seaquest": 5286.0,
    "SpaceInvaders": 1976.0,
    "StarGunner": 57997.0,
    "Tennis": -2.5,
    "TimePilot": 5947.0,
    "Tutankham": 186.7,
    "UpNDown": 8456.0,
    "Venture": 380.0,
    "VideoPinball": 42684.0,
    "WizardOfWor": 3393.0,
    "Zaxxon": 4977.0,
}
"""Nature DQN score per game (49 games, Mnih et al. 2015 Extended Data Table 2)."""


class ReferenceNotMeasuredError(ValueError):
    """A reference score this package has not measured yet (MinAtar DQN). One-line message."""


@cache
def load_minatar_reference() -> dict[str, Any]:
    """The parsed `envs/minatar_reference.json` (read once; treat as read-only)."""
    text = resources.files("envs").joinpath("minatar_reference.json").read_text()
    return json.loads(text)


def _spec(game: GameSpec | str) -> GameSpec:
    return game if isinstance(game, GameSpec) else resolve_game(game)


def reference_scores(game: GameSpec | str) -> tuple[float, float]:
    """(random, reference) for a game: the reference is human (Atari) or single-task DQN (MinAtar).

    Raises:
        ReferenceNotMeasuredError: a MinAtar reference is still missing from the JSON.
    """
    spec = _spec(game)
    if spec.suite == "atari":
        return ATARI_RANDOM[spec.name], ATARI_HUMAN[spec.name]
    entry = load_minatar_reference()["games"][spec.name]
    missing = [part for part in ("random", "dqn") if (entry[part] or {}).get("value") is None]
    if missing:
        raise ReferenceNotMeasuredError(
            f"no measured {' and '.join(missing)} reference score for {spec.name} in "
            f"envs/minatar_reference.json; run python bench/measure_minatar_reference.py "
            + " ".join(f"--{part}" for part in missing)
        )
    random, dqn = entry["random"], entry["dqn"]
    margin = 3.0 * float(np.hypot(random.get("stderr") or 0.0, dqn.get("stderr") or 0.0))
    if not float(dqn["value"]) - float(random["value"]) > margin:
        # A reference within noise of random would divide by ~0 (or flip the sign).
        raise ReferenceNotMeasuredError(
            f"the single-task DQN reference for {spec.name} ({dqn['value']}) is not above its "
            f"random score ({random['value']}) by 3 standard errors; train a longer reference "
            "with python bench/measure_minatar_reference.py --dqn --steps N"
        )
    return float(random["value"]), float(dqn["value"])


@overload
def normalised_score(game: GameSpec | str, raw: float, clip: bool = False) -> float: ...
@overload
def normalised_score(
    game: GameSpec | str, raw: npt.ArrayLike, clip: bool = False
) -> np.ndarray: ...
def normalised_score(
    game: GameSpec | str, raw: float | npt.ArrayLike, clip: bool = False
) -> float | np.ndarray:
    """(raw - random) / (reference - random); with `clip`, capped at 1 from above only.

    `raw` may be a number (returns a float) or any array of raw scores of that game (returns an
    array of the same shape). The paper's clip is one-sided: a below-random score stays negative.
    """
    random, reference = reference_scores(game)
    norm = (np.asarray(raw, dtype=np.float64) - random) / (reference - random)
    if clip:
        norm = np.minimum(norm, 1.0)
    return float(norm) if norm.ndim == 0 else norm


def clipped_total(normalised: npt.ArrayLike, axis: int | None = None) -> float | np.ndarray:
    """The paper's metric from normalised scores: min(score, 1) summed over the games (along
    ``axis``; None: all of them).

    A game whose score is NaN (no reference score, or no finished episode) is left out of the
    sum; the total is NaN only where no game has a score. The one place of this formula: the
    evaluations, the run files and the comparison all total through it.
    """
    values = np.asarray(normalised, dtype=np.float64)
    total = np.nansum(np.minimum(values, 1.0), axis=axis)
    total = np.where(np.isfinite(values).any(axis=axis), total, np.nan)
    return float(total) if np.ndim(total) == 0 else total


def total_clipped_score(
    scores_by_game: Mapping[GameSpec | str, float | npt.ArrayLike],
) -> float | np.ndarray:
    """The paper's metric from raw scores: sum over games of min(normalised score, 1)
    (``clipped_total``).

    Values may be numbers (returns a float) or equally shaped arrays, e.g. one entry per seed or
    per evaluation point (returns the element-wise total).

    Raises:
        ValueError: no games, or the same game given twice under two spellings.
    """
    if not scores_by_game:
        raise ValueError("total_clipped_score needs at least one game")
    names = [_spec(game).name for game in scores_by_game]
    if len(set(names)) != len(names):
        raise ValueError(f"a game appears twice in the scores: {sorted(names)}")
    terms = [normalised_score(game, raw) for game, raw in scores_by_game.items()]
    return clipped_total(np.broadcast_arrays(*map(np.asarray, terms)), axis=0)
