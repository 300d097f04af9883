"""The paper's total score, sum over games of min(normalised, 1) with games lacking a reference
left out, and the copies of that formula that must agree with it (ewc_dqn.evaluation,
envs.scores, ewc_dqn.run_folder)."""

import math

import numpy as np
import pytest

from envs.scores import ATARI_HUMAN, ATARI_RANDOM, normalised_score, total_clipped_score
from ewc_dqn.evaluation import GameScore, paper_mean, paper_total
from ewc_dqn.run_folder import (
    CONFIG_FILE,
    EVAL_COLUMNS,
    EVAL_CSV,
    SUMMARY_COLUMNS,
    SUMMARY_CSV,
    CsvLog,
    load_run,
    write_json_atomic,
)

NAN = float("nan")


def _score(normalised: float, game: str = "Pong") -> GameScore:
    return GameScore(game, 1, 0.0, 0.0, normalised, 100, 0)


def test_each_game_is_clipped_at_one_from_above_only():
    # 2.5 counts as 1; -0.75 (below random) stays negative; 0.25 and exactly 1 count as they are.
    assert paper_total([_score(2.5), _score(-0.75), _score(0.25)]) == pytest.approx(0.5)
    assert paper_total([_score(1.0), _score(1.0 + 1e-9)]) == 2.0
    assert paper_total([_score(-2.0), _score(-0.5)]) == pytest.approx(-2.5)
    assert paper_total([_score(30.0)] * 10) == 10.0  # human level on every game of ten


def test_games_without_a_reference_are_left_out():
    assert paper_total([_score(NAN), _score(0.5), _score(3.0)]) == pytest.approx(1.5)
    assert paper_total([_score(NAN), _score(-0.25)]) == pytest.approx(-0.25)
    assert math.isnan(paper_total([_score(NAN), _score(NAN)]))
    assert math.isnan(paper_total([]))
    # The unclipped mean leaves the same games out.
    assert paper_mean([_score(NAN), _score(0.5), _score(3.0)]) == pytest.approx(1.75)
    assert math.isnan(paper_mean([_score(NAN)]))


# Raw scores of three evaluations of four Atari games: above human, below random, in between;
# Skiing's references are negative. None: the game was not scored at that evaluation (NaN).
RAW = {
    "Pong": [30.0, -21.0, 0.0],
    "Breakout": [401.2, 1.7, 10.0],
    "SpaceInvaders": [148.0, 5000.0, None],
    "Skiing": [-30000.0, -4000.0, -9000.0],
}


def _by_hand(game: str, raw: float) -> float:
    """min((raw - random) / (human - random), 1) from dqn_zoo's two numbers."""
    random, human = ATARI_RANDOM[game], ATARI_HUMAN[game]
    return min((raw - random) / (human - random), 1.0)


def _totals_by_hand() -> list[float]:
    return [
        sum(_by_hand(g, raws[e]) for g, raws in RAW.items() if raws[e] is not None)
        for e in range(3)
    ]


def test_paper_total_is_the_sum_of_clipped_normalised_scores():
    for e, want in enumerate(_totals_by_hand()):
        scores = [
            _score(normalised_score(g, raws[e]) if raws[e] is not None else NAN, g)
            for g, raws in RAW.items()
        ]
        assert paper_total(scores) == pytest.approx(want, rel=1e-12)


def test_envs_scores_total_agrees():
    for e, want in enumerate(_totals_by_hand()):
        scored = {g: raws[e] for g, raws in RAW.items() if raws[e] is not None}
        assert total_clipped_score(scored) == pytest.approx(want, rel=1e-12)
    # Per-evaluation arrays give the same totals at once.
    full = {g: np.array(raws) for g, raws in RAW.items() if None not in raws}
    want = [sum(_by_hand(g, raws[e]) for g, raws in full.items()) for e in range(3)]
    np.testing.assert_allclose(total_clipped_score(full), want, rtol=1e-12)


def test_run_files_recomputed_totals_agree(tmp_path):
    # A run logged before its games had reference scores holds NaN normalised scores and totals;
    # reading it normalises the raw scores and recomputes the totals.
    write_json_atomic(tmp_path / CONFIG_FILE, {"variant": "ewc-true", "seed": 0})
    ev = CsvLog(tmp_path / EVAL_CSV, EVAL_COLUMNS)
    summary = CsvLog(tmp_path / SUMMARY_CSV, SUMMARY_COLUMNS)
    for e in range(3):
        common = {"eval_index": e, "step": 100 * e, "frames": 400 * e, "visit": e}
        for game, raws in RAW.items():
            raw = NAN if raws[e] is None else raws[e]
            ev.write(
                {
                    **common,
                    "game": game,
                    "episodes": 1,
                    "raw_mean": raw,
                    "raw_std": 0.0,
                    "normalised": NAN,
                    "task_id": 0,
                    "complete": 1,
                }
            )
        summary.write(
            {
                **common,
                "game": "Pong",
                "total_clipped": NAN,
                "mean_normalised": NAN,
                "label_ari": 1.0,
                "num_tasks": 4,
            }
        )
    ev.close()
    summary.close()
    record = load_run(tmp_path)
    np.testing.assert_allclose(record.summary["total_clipped"], _totals_by_hand(), rtol=1e-12)
