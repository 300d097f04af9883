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


@pytest.mark.parametrize(
    ("game", "random", "human"),
    # Values as printed in dqn_zoo/atari_data.py.
    [("Pong", -20.7, 14.6), ("Breakout", 1.7, 30.5), ("SpaceInvaders", 148.0, 1668.7)],
)
def test_reference_scores_match_dqn_zoo(game, random, human):
    assert reference_scores(game) == (random, human)
    assert reference_scores(resolve_game(game)) == (random, human)
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


def test_minatar_reference_json_random_part_is_measured():
    data = scores.load_minatar_reference()
    assert set(data["games"]) == set(MINATAR_GAMES)
    for name in MINATAR_GAMES:
        random = data["games"][name]["random"]
        assert random["episodes"] >= 100
        assert random["value"] >= 0.0
        assert 0.0 <= random["stderr"] < 1.0
        assert random["command"].startswith("python bench/measure_minatar_reference.py --random")
        assert random["date"]
        dqn = data["games"][name]["dqn"]
        assert "source" in dqn and "value" in dqn


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


def test_nature_dqn_spot_values():
    # Mnih et al. 2015 Extended Data Table 2.
    assert NATURE_DQN["Breakout"] == 401.2
    assert NATURE_DQN["Pong"] == 18.9
    assert NATURE_DQN["SpaceInvaders"] == 1976.0
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
