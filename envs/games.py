"""Game names for the two suites this package trains on, and how user input maps onto them.

Atari: the 57 games of the table that the field normalises against, google-deepmind/dqn_zoo
`dqn_zoo/atari_data.py`. Each has a canonical CamelCase name (`SpaceInvaders`), the ale-py ROM id
it is loaded from (`space_invaders`; ale-py 0.12 names ROMs in snake_case) and its key in the
dqn_zoo table (also `space_invaders`: for all 57 games the two coincide).

MinAtar (Young & Tian 2019): five 10x10 games. `breakout`, `seaquest`, ... clash with Atari names,
so MinAtar names always carry a `MinAtar` prefix: canonical `MinAtar/Breakout`; accepted
`minatar/breakout`, `MinAtar/Breakout-v1`, `minatar:breakout`, `MinAtar-SpaceInvaders`. A bare
`breakout` is the Atari game.

Matching ignores case, `_`, `-` and spaces, so `Pong`, `pong`, `ALE/Pong-v5`, `PongNoFrameskip-v4`,
`space_invaders` and `SpaceInvaders` all resolve.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from ewc_dqn.errors import UserError

Suite = Literal["atari", "minatar"]

# (canonical name, dqn_zoo key == ale-py ROM id), in the dqn_zoo table's (alphabetical) order.
_ATARI: tuple[tuple[str, str], ...] = (
    ("Alien", "alien"),
    ("Amidar", "amidar"),
    ("Assault", "assault"),
    ("Asterix", "asterix"),
    ("Asteroids", "asteroids"),
    ("Atlantis", "atlantis"),
    ("BankHeist", "bank_heist"),
    ("BattleZone", "battle_zone"),
    ("BeamRider", "beam_rider"),
    ("Berzerk", "berzerk"),
    ("Bowling", "bowling"),
    ("Boxing", "boxing"),
    ("Breakout", "breakout"),
    ("Centipede", "centipede"),
    ("ChopperCommand", "chopper_command"),
    ("CrazyClimber", "crazy_climber"),
    ("Defender", "defender"),
    ("DemonAttack", "demon_attack"),
    ("DoubleDunk", "double_dunk"),
    ("Enduro", "enduro"),
    ("FishingDerby", "fishing_derby"),
    ("Freeway", "freeway"),
    ("Frostbite", "frostbite"),
    ("Gopher", "gopher"),
    ("Gravitar", "gravitar"),
    ("Hero", "hero"),
    ("IceHockey", "ice_hockey"),
    ("Jamesbond", "jamesbond"),
    ("Kangaroo", "kangaroo"),
    ("Krull", "krull"),
    ("KungFuMaster", "kung_fu_master"),
    ("MontezumaRevenge", "montezuma_revenge"),
    ("MsPacman", "ms_pacman"),
    ("NameThisGame", "name_this_game"),
    ("Phoenix", "phoenix"),
    ("Pitfall", "pitfall"),
    ("Pong", "pong"),
    ("PrivateEye", "private_eye"),
    ("Qbert", "qbert"),
    ("Riverraid", "riverraid"),
    ("RoadRunner", "road_runner"),
    ("Robotank", "robotank"),
    ("Seaquest", "seaquest"),
    ("Skiing", "skiing"),
    ("Solaris", "solaris"),
    ("SpaceInvaders", "space_invaders"),
    ("StarGunner", "star_gunner"),
    ("Surround", "surround"),
    ("Tennis", "tennis"),
    ("TimePilot", "time_pilot"),
    ("Tutankham", "tutankham"),
    ("UpNDown", "up_n_down"),
    ("Venture", "venture"),
    ("VideoPinball", "video_pinball"),
    ("WizardOfWor", "wizard_of_wor"),
    ("YarsRevenge", "yars_revenge"),
    ("Zaxxon", "zaxxon"),
)

# (canonical name, minatar game name as passed to `minatar.Environment`).
_MINATAR: tuple[tuple[str, str], ...] = (
    ("MinAtar/Asterix", "asterix"),
    ("MinAtar/Breakout", "breakout"),
    ("MinAtar/Freeway", "freeway"),
    ("MinAtar/Seaquest", "seaquest"),
    ("MinAtar/SpaceInvaders", "space_invaders"),
)

ATARI_GAMES: tuple[str, ...] = tuple(name for name, _ in _ATARI)
"""Canonical names of the 57 Atari games, alphabetical."""

MINATAR_GAMES: tuple[str, ...] = tuple(name for name, _ in _MINATAR)
"""Canonical names of the 5 MinAtar games, alphabetical."""


@dataclass(frozen=True)
class GameSpec:
    """One game, resolved.

    suite: which emulator runs it.
    name: canonical name (`Pong`, `MinAtar/Breakout`); the key used everywhere in this package.
    env_id: ale-py ROM id (`pong`) for Atari, `minatar.Environment` game name for MinAtar.
    dqn_zoo_key: key in dqn_zoo's random/human table (Atari), None for MinAtar.
    """

    suite: Suite
    name: str
    env_id: str
    dqn_zoo_key: str | None

    def __str__(self) -> str:
        return self.name


class UnknownGameError(UserError):
    """A game name that matches no game of either suite. The message is one line."""


def _key(text: str) -> str:
    """Matching key: lower case without `_`, `-`, spaces."""
    return re.sub(r"[\s_\-]", "", text).lower()


_ATARI_BY_KEY: dict[str, GameSpec] = {
    _key(name): GameSpec("atari", name, rom, rom) for name, rom in _ATARI
}
_MINATAR_BY_KEY: dict[str, GameSpec] = {
    _key(name.split("/", 1)[1]): GameSpec("minatar", name, game, None) for name, game in _MINATAR
}

# `minatar/`, `minatar:`, `minatar-`, `minatar_` or `minatar ` in front, any case.
_MINATAR_PREFIX = re.compile(r"^\s*minatar\s*[/:\-_ ]\s*", re.IGNORECASE)
# Gym/Gymnasium decorations around an Atari name: `ALE/`, `NoFrameskip`, `Deterministic`, `-v5`.
_ALE_PREFIX = re.compile(r"^\s*ale\s*/\s*", re.IGNORECASE)
_VERSION_SUFFIX = re.compile(r"-v\d+\s*$", re.IGNORECASE)
_GYM_SUFFIX = re.compile(r"(noframeskip|deterministic)$")


def _suggest(query_key: str, table: dict[str, GameSpec]) -> str | None:
    """Closest canonical name to `query_key` in `table`, or None if nothing is close."""
    close = difflib.get_close_matches(query_key, list(table), n=1, cutoff=0.6)
    return table[close[0]].name if close else None


def resolve_game(name: str) -> GameSpec:
    """Resolve any accepted spelling of a game (see module docstring) to its `GameSpec`.

    Raises:
        UnknownGameError: `name` is no game; the one-line message suggests the closest name and
            lists every valid one.
    """
    if not isinstance(name, str):
        raise TypeError(f"game name must be a str, got {type(name).__name__}")
    text = _VERSION_SUFFIX.sub("", name.strip())
    prefix = _MINATAR_PREFIX.match(text)
    if prefix:
        table = _MINATAR_BY_KEY
        key = _key(text[prefix.end() :])
    else:
        table = _ATARI_BY_KEY
        key = _GYM_SUFFIX.sub("", _key(_ALE_PREFIX.sub("", text)))
    if key in table:
        return table[key]
    other = _ATARI_BY_KEY if table is _MINATAR_BY_KEY else _MINATAR_BY_KEY
    suggestion = _suggest(key, table) or _suggest(key, other)
    hint = f"; did you mean '{suggestion}'?" if suggestion else ";"
    raise UnknownGameError(
        f"unknown game {name!r}{hint} valid Atari games: {', '.join(ATARI_GAMES)}; "
        f"MinAtar games: {', '.join(MINATAR_GAMES)}"
    )


def parse_game_list(text: str) -> list[GameSpec]:
    """Parse a comma-separated game list (`--games Pong,Breakout,SpaceInvaders`).

    Raises:
        UserError: an entry is empty, a game appears twice (after resolving aliases), or the list
            mixes Atari and MinAtar games. UnknownGameError (a UserError) for an unknown name.
    """
    entries = [entry.strip() for entry in text.split(",")]
    if any(not entry for entry in entries):
        raise UserError(f"empty entry in game list {text!r}")
    specs = [resolve_game(entry) for entry in entries]
    seen: dict[str, str] = {}
    for entry, spec in zip(entries, specs, strict=True):
        if spec.name in seen:
            raise UserError(
                f"game {spec.name} appears twice in game list {text!r} "
                f"(as {seen[spec.name]!r} and {entry!r})"
            )
        seen[spec.name] = entry
    suites = {spec.suite for spec in specs}
    if len(suites) > 1:
        raise UserError(f"game list {text!r} mixes Atari and MinAtar games; use one suite")
    return specs
