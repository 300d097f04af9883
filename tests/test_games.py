"""Name resolution for Atari and MinAtar games (envs/games.py)."""

import re

import pytest

from envs.games import (
    ATARI_GAMES,
    MINATAR_GAMES,
    GameSpec,
    UnknownGameError,
    parse_game_list,
    resolve_game,
)


def test_suites_have_57_and_5_games():
    assert len(ATARI_GAMES) == len(set(ATARI_GAMES)) == 57
    assert MINATAR_GAMES == (
        "MinAtar/Asterix",
        "MinAtar/Breakout",
        "MinAtar/Freeway",
        "MinAtar/Seaquest",
        "MinAtar/SpaceInvaders",
    )


@pytest.mark.parametrize("name", ATARI_GAMES)
def test_every_atari_rom_exists_in_ale_py(name):
    roms = pytest.importorskip("ale_py.roms")
    spec = resolve_game(name)
    assert spec.env_id in roms.get_all_rom_ids()
    assert roms.get_rom_path(spec.env_id) is not None


def test_canonical_names_are_gymnasium_ale_v5_ids():
    gym = pytest.importorskip("gymnasium")
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    missing = [name for name in ATARI_GAMES if f"ALE/{name}-v5" not in gym.registry]
    assert missing == []


def test_every_minatar_game_loads():
    minatar = pytest.importorskip("minatar")
    for name in MINATAR_GAMES:
        env = minatar.Environment(resolve_game(name).env_id)
        assert env.num_actions() == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pong", "Pong"),
        ("pong", "Pong"),
        ("PONG", "Pong"),
        ("ALE/Pong-v5", "Pong"),
        ("PongNoFrameskip-v4", "Pong"),
        ("PongDeterministic-v4", "Pong"),
        ("space_invaders", "SpaceInvaders"),
        ("SpaceInvaders", "SpaceInvaders"),
        ("spaceinvaders", "SpaceInvaders"),
        ("ALE/SpaceInvaders-v5", "SpaceInvaders"),
        ("montezuma_revenge", "MontezumaRevenge"),
        ("MontezumaRevengeNoFrameskip-v4", "MontezumaRevenge"),
        (" breakout ", "Breakout"),
        ("MinAtar/Breakout", "MinAtar/Breakout"),
        ("minatar/breakout", "MinAtar/Breakout"),
        ("MinAtar/Breakout-v1", "MinAtar/Breakout"),
        ("minatar:breakout", "MinAtar/Breakout"),
        ("MinAtar-SpaceInvaders", "MinAtar/SpaceInvaders"),
        ("minatar/space_invaders", "MinAtar/SpaceInvaders"),
        ("MINATAR/SEAQUEST", "MinAtar/Seaquest"),
    ],
)
def test_accepted_spellings(text, expected):
    assert resolve_game(text).name == expected


def test_spec_fields():
    assert resolve_game("SpaceInvaders") == GameSpec(
        suite="atari", name="SpaceInvaders", env_id="space_invaders", dqn_zoo_key="space_invaders"
    )
    assert resolve_game("minatar:space_invaders") == GameSpec(
        suite="minatar", name="MinAtar/SpaceInvaders", env_id="space_invaders", dqn_zoo_key=None
    )
    with pytest.raises(AttributeError):
        resolve_game("Pong").name = "Breakout"  # frozen


def test_bare_breakout_is_atari_not_minatar():
    assert resolve_game("breakout").suite == "atari"
    assert resolve_game("minatar/breakout").suite == "minatar"


def test_every_canonical_name_resolves_to_itself():
    for name in ATARI_GAMES + MINATAR_GAMES:
        assert resolve_game(name).name == name


def test_unknown_game_message_is_one_line_with_suggestion_and_list():
    with pytest.raises(UnknownGameError) as info:
        resolve_game("Pongg")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown game 'Pongg'; did you mean 'Pong'? valid Atari games: ")
    assert "Alien, Amidar, " in message
    assert message.endswith("MinAtar games: " + ", ".join(MINATAR_GAMES))
    assert isinstance(info.value, ValueError)


def test_unknown_minatar_name_suggests_within_minatar():
    with pytest.raises(UnknownGameError, match=re.escape("did you mean 'MinAtar/Seaquest'?")):
        resolve_game("MinAtar/Seaquset")


def test_unknown_name_without_close_match_has_no_suggestion():
    with pytest.raises(UnknownGameError) as info:
        resolve_game("qqqqqqqqqq")
    assert "did you mean" not in str(info.value)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        resolve_game(3)  # type: ignore[arg-type]


def test_parse_game_list():
    specs = parse_game_list("Pong, breakout,ALE/SpaceInvaders-v5")
    assert [s.name for s in specs] == ["Pong", "Breakout", "SpaceInvaders"]
    assert [s.name for s in parse_game_list("minatar/breakout,MinAtar-Asterix")] == [
        "MinAtar/Breakout",
        "MinAtar/Asterix",
    ]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("Pong,,Breakout", "empty entry"),
        ("Pong,", "empty entry"),
        ("", "empty entry"),
        ("Pong,pong", "appears twice"),
        ("space_invaders,SpaceInvaders", "appears twice"),
        ("Pong,MinAtar/Breakout", "mixes Atari and MinAtar"),
        ("Pong,Pongg", "did you mean 'Pong'"),
    ],
)
def test_parse_game_list_errors(text, pattern):
    with pytest.raises(ValueError, match=pattern):
        parse_game_list(text)
