"""The continual schedule (envs/schedule.py)."""

import itertools
from collections import Counter

import pytest

from envs.games import resolve_game
from envs.schedule import (
    DQN_HUMAN_LEVEL_POOL,
    MINATAR_POOL,
    Schedule,
    ScheduleConfig,
    Visit,
    build_schedule,
)
from envs.scores import NATURE_DQN, normalised_score


def _config(**kwargs) -> ScheduleConfig:
    defaults = dict(visits_per_game=3, visit_frames=1000, seed=0)
    return ScheduleConfig(**(defaults | kwargs))


def test_pool_is_the_top_19_nature_dqn_games_by_normalised_score():
    ranked = sorted(NATURE_DQN, key=lambda g: normalised_score(g, NATURE_DQN[g]), reverse=True)
    assert DQN_HUMAN_LEVEL_POOL == tuple(ranked[:19])
    assert all(normalised_score(g, NATURE_DQN[g]) >= 1.0 for g in DQN_HUMAN_LEVEL_POOL)
    assert all(resolve_game(g).name == g for g in DQN_HUMAN_LEVEL_POOL)
    assert len(MINATAR_POOL) == 5


def test_total_frames_property():
    config = _config(num_games=10, visits_per_game=4, visit_frames=250)
    assert config.total_frames == 10 * 4 * 250
    assert build_schedule(config).total_frames == config.total_frames
    assert _config(games=("Pong", "Breakout"), visit_frames=7).total_frames == 2 * 3 * 7


def test_budget_sets_the_visit_length():
    config = _config(num_games=5, visits_per_game=3, visit_frames=999, budget_frames=1_500_000)
    assert config.frames_per_visit == 100_000
    schedule = build_schedule(config)
    assert schedule.total_frames == config.total_frames == 1_500_000
    assert {visit.frames for visit in schedule.visits} == {100_000}
    # Without a budget the visit length is visit_frames.
    assert _config(num_games=5, visit_frames=999).frames_per_visit == 999
    # The budget travels with the saved schedule.
    assert Schedule.from_json(schedule.to_json()) == schedule


def test_same_seed_same_schedule_and_different_seeds_differ():
    a = build_schedule(_config(seed=5))
    assert a == build_schedule(_config(seed=5))
    others = {build_schedule(_config(seed=s)).visits for s in range(6, 12)}
    assert a.visits not in others
    assert len(others) > 1


def test_draws_num_games_distinct_games_from_the_pool():
    schedule = build_schedule(_config(num_games=10))
    assert len(schedule.games) == 10
    assert set(schedule.games) <= set(DQN_HUMAN_LEVEL_POOL)
    drawn = {frozenset(build_schedule(_config(seed=s)).games) for s in range(10)}
    assert len(drawn) > 1  # the draw depends on the seed


@pytest.mark.parametrize("seed", range(20))
def test_random_order_invariants(seed):
    config = _config(num_games=6, visits_per_game=5, seed=seed)
    schedule = build_schedule(config)
    names = [v.game for v in schedule.visits]
    # Every game recurs exactly visits_per_game times.
    assert Counter(names) == {g: 5 for g in schedule.games}
    # Never the same game twice in a row.
    assert all(a != b for a, b in itertools.pairwise(names))
    # Every game once before any recurs: each round of 6 is a permutation.
    for r in range(5):
        assert sorted(names[6 * r : 6 * (r + 1)]) == sorted(schedule.games)
    # Task labels: index in games, which is the order of first visit.
    assert [v.task for v in schedule.visits[:6]] == list(range(6))
    assert all(schedule.games[v.task] == v.game for v in schedule.visits)


def test_two_games_alternate():
    schedule = build_schedule(_config(games=("Pong", "Breakout"), visits_per_game=4, seed=3))
    names = [v.game for v in schedule.visits]
    assert names in (["Pong", "Breakout"] * 4, ["Breakout", "Pong"] * 4)


def test_given_order_cycles_and_canonicalises():
    config = _config(games=("pong", "ALE/Breakout-v5", "space_invaders"), order="given")
    schedule = build_schedule(config)
    assert schedule.games == ("Pong", "Breakout", "SpaceInvaders")
    assert [v.game for v in schedule.visits] == list(schedule.games) * 3
    assert [v.task for v in schedule.visits] == [0, 1, 2] * 3


def test_minatar_schedule():
    schedule = build_schedule(_config(pool=MINATAR_POOL, num_games=5))
    assert set(schedule.games) == set(MINATAR_POOL)


def test_visit_at_boundaries():
    schedule = build_schedule(_config(num_games=3, visits_per_game=2, visit_frames=100))
    first, into = schedule.visit_at(0)
    assert (first.index, into) == (0, 0)
    assert schedule.visit_at(99) == (schedule.visits[0], 99)
    assert schedule.visit_at(100) == (schedule.visits[1], 0)
    assert schedule.visit_at(599) == (schedule.visits[5], 99)
    for bad in (-1, 600):
        with pytest.raises(ValueError, match="outside"):
            schedule.visit_at(bad)
    # Visits tile the frames back to back.
    assert [(v.start_frame, v.end_frame) for v in schedule.visits] == [
        (100 * k, 100 * (k + 1)) for k in range(6)
    ]


def test_json_round_trip():
    schedule = build_schedule(_config(games=("Pong", "Breakout", "Boxing"), seed=9))
    again = Schedule.from_json(schedule.to_json())
    assert again == schedule
    assert again.config == schedule.config
    assert again.visit_at(1234) == schedule.visit_at(1234)
    pool_based = build_schedule(_config())
    assert Schedule.from_json(pool_based.to_json()) == pool_based


def test_from_json_rejects_gaps():
    schedule = build_schedule(_config(games=("Pong", "Breakout"), visits_per_game=1))
    bad = schedule.to_json().replace('"start_frame": 1000', '"start_frame": 1001')
    with pytest.raises(ValueError, match="back to back"):
        Schedule.from_json(bad)


def test_schedule_check_valid_rejects_wrong_task_labels():
    visits = (Visit(0, "Pong", 1, 0, 10), Visit(1, "Breakout", 0, 10, 10))
    with pytest.raises(ValueError):
        Schedule(games=("Pong", "Breakout"), visits=visits)


def test_describe_lists_every_visit():
    schedule = build_schedule(_config(num_games=3, visits_per_game=2))
    text = schedule.describe()
    assert len(text.splitlines()) == 2 + 6
    for visit in schedule.visits:
        assert visit.game in text
    assert "6,000 frames" in text


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(games=("Pong",)), "at least 2 games"),
        (dict(num_games=1), "at least 2 games"),
        (dict(num_games=20), "exceeds the pool"),
        (dict(games=("Pong", "pong")), "more than once"),
        (dict(pool=("Pong", "Breakout", "PONG"), num_games=2), "more than once"),
        (dict(games=("Pong", "Pongg")), "unknown game 'Pongg'"),
        (dict(games=("Pong", "MinAtar/Breakout")), "mixes Atari and MinAtar"),
        (dict(num_games=0), "int >= 1"),
        (dict(visits_per_game=0), "int >= 1"),
        (dict(visit_frames=-5), "int >= 1"),
        (dict(budget_frames=-1), "int >= 0"),
        (dict(num_games=5, budget_frames=1_000_001), "try 999,990 or 1,000,005"),
        (dict(seed=-1), "non-negative"),
        (dict(order="shuffled"), "order"),
        (dict(order="given"), "needs explicit games"),
    ],
)
def test_bad_config(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        _config(**kwargs).validate()
    assert "\n" not in str(info.value)
