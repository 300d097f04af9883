"""Reference scores and normalisation (envs/scores.py, envs/minatar_reference.json)."""

import json
import math

import numpy as np
import pytest

from envs import scores
from envs.games import ATARI_GAMES, MINATAR_GAMES, resolve_game
from envs.scores import (
    ATARI_HUMAN,
    ATARI_RANDOM,
    NATURE_DQN,
    ReferenceNotMeasuredError,
    normalised_score,
    reference_scores,
    total_clipped_score,
)


def test_tables_cover_the_57_games():
    assert set(ATARI_RANDOM) == set(ATARI_HUMAN) == set(ATARI_GAMES)
    assert all(ATARI_HUMAN[g] > ATARI_RANDOM[g] for g in ATARI_GAMES)
    assert set(NATURE_DQN) <= set(ATARI_GAMES)
    assert len(NATURE_DQN) == 49


# google-deepmind/dqn_zoo `dqn_zoo/atari_data.py`, `_ATARI_DATA`, copied as printed there:
# game key: (random, human).
DQN_ZOO_ATARI_DATA = {
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
    "video_pinball": (16256.9, 17667.9),
    "wizard_of_wor": (563.5, 4756.5),
    "yars_revenge": (3092.9, 54576.9),
    "zaxxon": (32.5, 9173.3),
}


def test_the_table_has_every_dqn_zoo_game_once():
    assert len(DQN_ZOO_ATARI_DATA) == 57
    assert {resolve_game(g).dqn_zoo_key for g in ATARI_GAMES} == set(DQN_ZOO_ATARI_DATA)


@pytest.mark.parametrize(("key", "pair"), sorted(DQN_ZOO_ATARI_DATA.items()))
def test_reference_scores_match_dqn_zoo(key, pair):
    random, human = pair
    game = resolve_game(key)
    assert game.dqn_zoo_key == key
    assert (ATARI_RANDOM[game.name], ATARI_HUMAN[game.name]) == (random, human)
    assert reference_scores(key) == (random, human)
    assert reference_scores(game) == (random, human)
    assert normalised_score(game, random) == pytest.approx(0.0)
    assert normalised_score(game, human) == pytest.approx(1.0)


def test_normalised_score_values():
    # (18.9 + 20.7) / (14.6 + 20.7) = 39.6 / 35.3
    assert normalised_score("Pong", 18.9) == pytest.approx(39.6 / 35.3)
    # (401.2 - 1.7) / (30.5 - 1.7) = 399.5 / 28.8
    assert normalised_score("Breakout", 401.2) == pytest.approx(399.5 / 28.8)
    assert normalised_score("ALE/SpaceInvaders-v5", 908.35) == pytest.approx(0.5)
    assert isinstance(normalised_score("Pong", 0.0), float)


def test_clip_is_one_sided():
    assert normalised_score("Breakout", 401.2, clip=True) == 1.0
    below_random = normalised_score("Pong", -21.0, clip=True)
    assert below_random < 0
    assert below_random == pytest.approx(normalised_score("Pong", -21.0))


def test_normalised_score_is_vectorised():
    raw = np.array([[-20.7, 14.6], [18.9, -21.0]])
    out = normalised_score("Pong", raw, clip=True)
    assert out.shape == (2, 2)
    expected = [[0.0, 1.0], [1.0, -0.3 / 35.3]]
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(normalised_score("Pong", [14.6, 32.25]), [1.0, 1.5])


def test_total_clipped_score():
    total = total_clipped_score({"Pong": 18.9, "Breakout": 1.7, "SpaceInvaders": 908.35})
    assert total == pytest.approx(1.0 + 0.0 + 0.5)
    # Human everywhere on 10 games is 10; random everywhere is 0.
    ten = ATARI_GAMES[:10]
    assert total_clipped_score({g: ATARI_HUMAN[g] * 3 + 1 for g in ten}) == pytest.approx(10.0)
    assert total_clipped_score({g: ATARI_RANDOM[g] for g in ten}) == pytest.approx(0.0)


def test_total_clipped_score_per_seed_arrays():
    total = total_clipped_score({"Pong": np.array([14.6, -20.7]), "Breakout": np.array([1e4, 1.7])})
    np.testing.assert_allclose(total, [2.0, 0.0])


def test_total_clipped_score_rejects_the_same_game_twice():
    with pytest.raises(ValueError, match="twice"):
        total_clipped_score({"Pong": 0.0, "pong": 1.0})
    with pytest.raises(ValueError):
        total_clipped_score({})


def test_minatar_reference_json_is_measured_and_used():
    data = scores.load_minatar_reference()
    assert set(data["games"]) == set(MINATAR_GAMES)
    for name in MINATAR_GAMES:
        random = data["games"][name]["random"]
        assert random["episodes"] >= 100
        assert random["value"] >= 0.0
        assert 0.0 <= random["stderr"] < 1.0
        assert random["command"].startswith("python bench/measure_minatar_reference.py --random")
        assert random["date"]
        # The single-task DQN reference is measured and clears random by 3 standard errors:
        # normalisation uses exactly this pair, so random scores 0 and the reference 1.
        dqn = data["games"][name]["dqn"]
        margin = 3 * math.hypot(random["stderr"], dqn["stderr"])
        assert dqn["value"] - random["value"] > margin, name
        assert reference_scores(name) == (random["value"], dqn["value"])
        assert normalised_score(name, dqn["value"]) == pytest.approx(1.0)
        assert normalised_score(name, random["value"]) == pytest.approx(0.0)


def test_minatar_normalisation_uses_random_and_dqn(monkeypatch):
    fake = {
        "games": {
            "MinAtar/Breakout": {"random": {"value": 0.5}, "dqn": {"value": 10.5}},
        }
    }
    monkeypatch.setattr(scores, "load_minatar_reference", lambda: fake)
    assert reference_scores("minatar/breakout") == (0.5, 10.5)
    assert normalised_score("MinAtar/Breakout", 5.5) == pytest.approx(0.5)
    assert normalised_score("MinAtar/Breakout", 20.5, clip=True) == 1.0


def test_minatar_without_measured_dqn_raises(monkeypatch):
    fake = {"games": {"MinAtar/Freeway": {"random": {"value": 0.1}, "dqn": {"value": None}}}}
    monkeypatch.setattr(scores, "load_minatar_reference", lambda: fake)
    with pytest.raises(ReferenceNotMeasuredError, match="--dqn") as info:
        normalised_score("MinAtar/Freeway", 3.0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("random", "dqn", "usable"),
    [
        ({"value": 0.9, "stderr": 0.1}, {"value": 1.0, "stderr": 0.1}, False),  # within noise
        ({"value": 0.5, "stderr": 0.3}, {"value": 2.0, "stderr": 0.4}, False),  # exactly 3 se
        ({"value": 0.5, "stderr": 0.3}, {"value": 2.1, "stderr": 0.4}, True),
        ({"value": 0.5}, {"value": 0.6}, True),  # no standard errors given: any gain counts
        ({"value": 0.5, "stderr": None}, {"value": 0.4, "stderr": None}, False),  # below random
    ],
)
def test_minatar_reference_must_clear_random_by_three_standard_errors(
    monkeypatch, random, dqn, usable
):
    fake = {"games": {"MinAtar/Seaquest": {"random": random, "dqn": dqn}}}
    monkeypatch.setattr(scores, "load_minatar_reference", lambda: fake)
    if usable:
        assert reference_scores("MinAtar/Seaquest") == (random["value"], dqn["value"])
    else:
        with pytest.raises(ReferenceNotMeasuredError, match="by 3 standard errors"):
            reference_scores("MinAtar/Seaquest")


# Nature DQN scores (Mnih et al. 2015, Extended Data Table 2) as seungjaeryanlee/rldb
# `rldb/db/paper__dqn/algo__dqn/entries.py` tabulates them ("atari-" dropped from its titles).
RLDB_NATURE_DQN = {
    "alien": 3069,
    "amidar": 739.5,
    "assault": 3359,
    "asterix": 6012,
    "asteroids": 1629,
    "atlantis": 85641,
    "bank-heist": 429.7,
    "battle-zone": 26300,
    "beam-rider": 6846,
    "bowling": 42.4,
    "boxing": 71.8,
    "breakout": 401.2,
    "centipede": 8309,
    "chopper-command": 6687,
    "crazy-climber": 114103,
    "demon-attack": 9711,
    "double-dunk": -18.1,
    "enduro": 301.8,
    "fishing-derby": -0.8,
    "freeway": 30.3,
    "frostbite": 328.3,
    "gopher": 8520,
    "gravitar": 306.7,
    "hero": 19950,
    "ice-hockey": -1.6,
    "jamesbond": 576.7,
    "kangaroo": 6740,
    "krull": 3805,
    "kung-fu-master": 23270,
    "montezuma-revenge": 0,
    "ms-pacman": 2311,
    "name-this-game": 7257,
    "pong": 18.9,
    "private-eye": 1788,
    "qbert": 10596,
    "riverraid": 8316,
    "road-runner": 18257,
    "robotank": 51.6,
    "seaquest": 5286,
    "space-invaders": 1976,
    "star-gunner": 57997,
    "tennis": -2.5,
    "time-pilot": 5947,
    "tutankham": 186.7,
    "up-n-down": 8456,
    "venture": 380.0,
    "video-pinball": 42684,
    "wizard-of-wor": 3393,
    "zaxxon": 4977,
}


def test_nature_dqn_matches_rldb():
    assert len(RLDB_NATURE_DQN) == 49
    by_name = {resolve_game(title).name: score for title, score in RLDB_NATURE_DQN.items()}
    assert by_name == NATURE_DQN
    assert math.isclose(normalised_score("Pong", NATURE_DQN["Pong"]), 1.1218, abs_tol=1e-4)


def _load_measure_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "measure_minatar_reference.py"
    spec = importlib.util.spec_from_file_location("measure_minatar_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_script_random_part_writes_only_its_entry(tmp_path):
    pytest.importorskip("minatar")
    measure = _load_measure_script()
    out = tmp_path / "ref.json"
    argv = ["bench/measure_minatar_reference.py", "--random", "--games", "MinAtar/Breakout"]
    measure.main([*argv, "--episodes", "30", "--json", str(out)])
    data = json.loads(out.read_text())
    entry = data["games"]["MinAtar/Breakout"]["random"]
    assert entry["episodes"] == 30
    assert entry["command"] == "python " + " ".join(argv) + " --episodes 30 --json " + str(out)
    assert entry["value"] >= 0 and entry["max_episode_steps"] == 27_000
    assert data["games"]["MinAtar/Breakout"]["dqn"]["value"] is None
    assert data["games"]["MinAtar/Asterix"]["random"] is None  # not measured in this call


def test_measure_script_reads_evaluation_returns():
    measure = _load_measure_script()
    game = resolve_game("MinAtar/Breakout")
    for layout in (
        {"games": {"MinAtar/Breakout": {"returns": [1.0, 3.0]}}},
        {"MinAtar/Breakout": {"returns": [1.0, 3.0]}},
        {"returns": [1.0, 3.0]},
    ):
        np.testing.assert_array_equal(measure._evaluation_returns(layout, game), [1.0, 3.0])
    with pytest.raises(ValueError, match="no per-episode 'returns'"):
        measure._evaluation_returns({"mean": 2.0}, game)
