"""Tests of the run comparison (ewc_dqn.compare*) on synthetic run folders with known scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ewc_dqn import compare_stats as st
from ewc_dqn import rand_index as ri
from ewc_dqn.cli_compare import CompareArgs, main
from ewc_dqn.compare import compare_runs
from ewc_dqn.compare_data import CompareError, group_labels, is_ignored
from ewc_dqn.compare_report import format_summary
from ewc_dqn.run_folder import (
    CONFIG_FILE,
    EVAL_COLUMNS,
    EVAL_CSV,
    FINAL_FILE,
    SCHEDULE_FILE,
    SUMMARY_COLUMNS,
    SUMMARY_CSV,
    CsvLog,
    write_json_atomic,
)

REPS = 200  # enough for stable tests, small enough to keep the file fast
VISIT_FRAMES = 1000


def make_run(
    path: Path,
    games: list[str],
    visits: list[str],
    scores_eg: np.ndarray,
    *,
    variant: str = "ewc-true",
    seed: int = 0,
    visit_e: list[int] | None = None,
    config: dict | None = None,
    label_ari: float = 1.0,
    task_ids: list[int] | None = None,
    finished: bool = True,
) -> Path:
    """Write a run folder with the real writers; one evaluation per visit unless visit_e says."""
    path.mkdir(parents=True)
    scores_eg = np.asarray(scores_eg, dtype=float)
    visit_e = list(range(len(visits))) if visit_e is None else visit_e
    assert len(visit_e) == len(scores_eg)
    cfg = {"variant": variant, "seed": seed, "torch_threads": 1, "env": {"num_threads": 2}}
    cfg.update(config or {"ewc": {"lam": 400.0}, "agent": {"lr": 0.00025}})
    write_json_atomic(path / CONFIG_FILE, cfg)
    schedule = [
        {"index": i, "game": g, "task": games.index(g), "frames": VISIT_FRAMES}
        for i, g in enumerate(visits)
    ]
    write_json_atomic(path / SCHEDULE_FILE, schedule)
    ev, summ = CsvLog(path / EVAL_CSV, EVAL_COLUMNS), CsvLog(path / SUMMARY_CSV, SUMMARY_COLUMNS)
    task_ids = list(range(len(games))) if task_ids is None else task_ids
    for e, (v, row) in enumerate(zip(visit_e, scores_eg, strict=True)):
        # mid-visit evaluations sit halfway through their visit
        last_of_visit = e == len(visit_e) - 1 or visit_e[e + 1] != v
        frames = (v + 1) * VISIT_FRAMES if last_of_visit else v * VISIT_FRAMES + VISIT_FRAMES // 2
        common = {"eval_index": e, "step": frames, "frames": frames, "visit": v}
        for j, game in enumerate(games):
            ev.write(
                {
                    **common,
                    "game": game,
                    "episodes": 3,
                    "raw_mean": 10.0 * row[j],
                    "raw_std": 1.0,
                    "normalised": float(row[j]),
                    "task_id": task_ids[j],
                    "complete": 1,
                }
            )
        summ.write(
            {
                **common,
                "game": visits[v],
                "total_clipped": float(np.minimum(row, 1.0).sum()),
                "mean_normalised": float(row.mean()),
                "label_ari": label_ari,
                "num_tasks": len(set(task_ids)),
            }
        )
    ev.close()
    summ.close()
    if finished:
        write_json_atomic(path / FINAL_FILE, {"frames": len(visits) * VISIT_FRAMES})
    return path


def final_only(final_g: list[float], n_visits: int) -> np.ndarray:
    """Scores that rise linearly from 0 to ``final_g`` over the evaluations."""
    return np.linspace(0, 1, n_visits)[:, None] * np.asarray(final_g)[None, :]


GAMES4 = ["alien", "breakout", "pong", "qbert"]
VISITS4 = ["pong", "alien", "qbert", "breakout", "alien", "pong"]
FINAL3 = [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 2.0]]


@pytest.fixture
def three_runs(tmp_path: Path) -> list[Path]:
    return [
        make_run(tmp_path / f"run{i}", GAMES4, VISITS4, final_only(f, len(VISITS4)), seed=i)
        for i, f in enumerate(FINAL3)
    ]


def test_compare_three_runs_exact_scores(three_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = compare_runs(three_runs, out, reps=REPS, seed=1)
    assert result.games == tuple(GAMES4)
    assert [g.label for g in result.groups] == ["ewc-true"]
    g = result.groups[0]
    # Clipped at 1, the 12 scores are 0.1 ... 0.9, 1, 1, 1: the IQM drops 3 at each end.
    assert g.aggregates["IQM"][0] == pytest.approx(np.mean([0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
    assert g.aggregates["Mean"][0] == pytest.approx((4.5 + 3.0) / 12)
    assert g.aggregates["Median"][0] == pytest.approx(np.median([1.5, 1.8, 2.0, 2.2]) / 3)
    assert g.aggregates["Optimality gap"][0] == pytest.approx(1 - 7.5 / 12)
    assert g.final_total[0] == pytest.approx(np.mean([1.0, 2.6, 3.9]))
    for point, low, high in g.aggregates.values():
        assert low <= point + 1e-12 and point <= high + 1e-12 and low < high
    np.testing.assert_allclose(g.final_scores, FINAL3)  # unclipped in the tables
    # The files exist, the report links every figure, summary.json is strict JSON.
    report = result.report_path.read_text()
    for name in result.figures.values():
        assert (out / name).stat().st_size > 0
        assert f"]({name})" in report
    summary = json.loads(result.summary_path.read_text(), parse_constant=_no_nan)
    assert summary["groups"][0]["aggregates"]["IQM"]["point"] == pytest.approx(0.65)
    text = format_summary(result)
    assert "ewc-true" in text and "2.50 [" in text and str(result.report_path) in text


def test_bootstrap_is_seeded_and_leaves_global_numpy_alone() -> None:
    # rliable draws from numpy's global generator: compare_stats seeds it per call and restores it.
    scores = np.random.default_rng(0).uniform(size=(4, 3))
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = st.stratified_bootstrap_ci(scores, st.aggregate_scores, 50, np.random.default_rng(3))
    b = st.stratified_bootstrap_ci(scores, st.aggregate_scores, 50, np.random.default_rng(3))
    c = st.stratified_bootstrap_ci(scores, st.aggregate_scores, 50, np.random.default_rng(4))
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert not np.array_equal(np.stack(a), np.stack(c))
    x, y = scores, scores[::-1] - 0.2
    p1 = st.probability_of_improvement_ci(x, y, 30, np.random.default_rng(5))
    p2 = st.probability_of_improvement_ci(x, y, 30, np.random.default_rng(5))
    assert p1 == p2
    band1 = st.bootstrap_mean_over_runs(scores, 50, np.random.default_rng(6))
    band2 = st.bootstrap_mean_over_runs(scores, 50, np.random.default_rng(6))
    np.testing.assert_array_equal(np.stack(band1), np.stack(band2))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_groups_variants_configs_and_single_runs(tmp_path: Path) -> None:
    scores = final_only([0.5, 0.5, 0.5, 0.5], len(VISITS4))
    runs = [
        make_run(tmp_path / "dqn0", GAMES4, VISITS4, 0.2 * scores, variant="dqn", seed=0),
        make_run(tmp_path / "dqn1", GAMES4, VISITS4, 0.3 * scores, variant="dqn", seed=1),
        make_run(
            tmp_path / "inf0",
            GAMES4,
            VISITS4,
            scores,
            variant="ewc-inferred",
            seed=0,
            label_ari=0.5,
            task_ids=[0, 0, 1, 2],
        ),
        make_run(
            tmp_path / "inf1",
            GAMES4,
            VISITS4,
            scores,
            variant="ewc-inferred",
            seed=1,
            config={"ewc": {"lam": 100.0}, "agent": {"lr": 0.00025}},
            label_ari=0.7,
        ),
    ]
    result = compare_runs(runs, reps=REPS)
    assert result.out_dir == tmp_path / "comparison"
    labels = [g.label for g in result.groups]
    assert labels == ["dqn", "ewc-inferred [ewc.lam=100.0]", "ewc-inferred [ewc.lam=400.0]"]
    dqn, inf100, inf400 = result.groups
    assert inf400.config == {"ewc.lam": 400.0} and dqn.config == {}
    # One run: point estimates, no interval, and a note saying so.
    assert np.isnan(inf100.aggregates["IQM"][1]) and inf100.aggregates["IQM"][0] == 0.5
    assert any("ewc.lam=100.0]: one run" in n for n in result.notes)
    # Every EWC score beats every DQN score on every game.
    p = {(x, y): (pt, lo) for x, y, pt, lo, _ in result.improvement}
    # Pairs name the better group first.
    assert p[("ewc-inferred [ewc.lam=100.0]", "dqn")][0] == 1.0
    assert p[("ewc-inferred [ewc.lam=400.0]", "dqn")][0] == 1.0
    assert p[("ewc-inferred [ewc.lam=100.0]", "ewc-inferred [ewc.lam=400.0]")][0] == 0.5
    # Task inference: the label ARI as logged; games 0 and 1 shared a task at evaluation.
    assert inf400.label_ari_final[0] == 0.5 and inf100.label_ari_final[0] == 0.7
    assert inf400.eval_label_ari < 1.0 and inf100.eval_label_ari == 1.0
    assert inf400.num_tasks == 3
    assert "(CI needs 2+ runs)" in result.report_path.read_text()
    # Every run shares one schedule: pong trained in visits 0 and 5.
    assert result.train_spans["pong"] == [(0.0, 1000.0), (5000.0, 6000.0)]


def test_baselines_are_read_and_checked(three_runs: list[Path], tmp_path: Path) -> None:
    pong = [
        make_run(tmp_path / f"pong{i}", ["pong"], ["pong"], [[0.6 + 0.2 * i]], seed=i)
        for i in range(2)
    ]
    other = make_run(tmp_path / "seaquest", ["seaquest"], ["seaquest"], [[0.3]])
    result = compare_runs(three_runs, tmp_path / "out", baselines=[*pong, other], reps=REPS)
    assert result.baselines == {"pong": pytest.approx(0.7)}
    assert any("seaquest" in n and "ignored" in n for n in result.notes)
    with pytest.raises(CompareError, match="a baseline trains one"):
        compare_runs(three_runs, tmp_path / "out", baselines=[three_runs[0]], reps=REPS)


def test_bad_inputs_give_clear_errors(three_runs: list[Path], tmp_path: Path) -> None:
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    with pytest.raises(CompareError, match=r"empty is not a run folder \(no config.json\)"):
        compare_runs([three_runs[0], not_a_run], tmp_path / "o")
    games = ["alien", "breakout", "pong", "seaquest"]
    mixed = make_run(tmp_path / "mixed", games, ["seaquest"], [[0.1, 0.2, 0.3, 0.4]])
    with pytest.raises(CompareError, match="cannot compare runs over different games"):
        compare_runs([three_runs[0], mixed], tmp_path / "o")
    fresh = make_run(
        tmp_path / "fresh", GAMES4, VISITS4, np.zeros((0, 4)), visit_e=[], finished=False
    )
    with pytest.raises(CompareError, match="no evaluations yet"):
        compare_runs([fresh], tmp_path / "o")
    with pytest.raises(CompareError, match="no run folders"):
        compare_runs([], tmp_path / "o")
    assert issubclass(CompareError, ValueError)


def test_unfinished_run_and_different_eval_frames(tmp_path: Path) -> None:
    games = ["alien", "pong"]
    a = make_run(tmp_path / "a", games, ["alien", "pong"], [[0.5, 0.0], [0.4, 0.8]])
    # b also evaluated halfway through the first visit, and its last visit has not ended.
    b = make_run(
        tmp_path / "b",
        games,
        ["alien", "pong", "alien"],
        [[0.2, 0.0], [0.6, 0.1], [0.5, 0.9], [0.7, 0.7]],
        visit_e=[0, 0, 1, 2],
        seed=1,
        finished=False,
    )
    result = compare_runs([a, b], reps=REPS)
    band = result.groups[0].total_band
    assert band.interpolated
    np.testing.assert_array_equal(band.frames, [1000, 2000])  # the span both runs cover
    np.testing.assert_allclose(band.mean, [(0.5 + 0.7) / 2, (1.2 + 1.4) / 2])
    assert result.train_spans is None  # the schedules differ
    assert any("has not finished" in n for n in result.notes)
    assert any("interpolated" in n for n in result.notes)


def test_games_without_reference_scores_give_na_not_errors(tmp_path: Path) -> None:
    # MinAtar before its DQN reference is measured: normalised scores (and totals) are NaN.
    games = ["alien", "pong"]
    scores = [[np.nan, 0.2], [np.nan, 0.8]]
    runs = [
        make_run(tmp_path / f"{v}{k}", games, games, scores, variant=v, seed=k)
        for v in ("dqn", "ewc-true")
        for k in range(2)
    ]
    for run in runs:  # what the trainer writes when a game has no reference: a NaN total
        summary = (run / SUMMARY_CSV).read_text().splitlines()
        (run / SUMMARY_CSV).write_text(
            "\n".join([summary[0], *(_nan_total(line) for line in summary[1:])]) + "\n"
        )
    result = compare_runs(runs, tmp_path / "out", reps=REPS, poi_reps=20)
    assert [g.label for g in result.groups] == ["dqn", "ewc-true"]
    for g in result.groups:
        assert all(np.isnan(v).all() for v in g.aggregates.values())
        assert np.isnan(g.final_total[0])
        np.testing.assert_allclose(g.game_bands["pong"].mean, [0.2, 0.8])  # curves still drawn
        assert np.isnan(g.game_bands["alien"].mean).all()
    assert len(result.improvement) == 1 and np.isnan(result.improvement[0][2])
    assert any("no normalised score for alien" in n for n in result.notes)
    summary = json.loads(result.summary_path.read_text(), parse_constant=_no_nan)
    assert summary["groups"][0]["aggregates"]["IQM"]["point"] is None
    assert summary["bootstrap"]["poi_reps"] == 20
    assert "n/a" in format_summary(result)


def _nan_total(csv_line: str) -> str:
    cols = csv_line.split(",")
    cols[SUMMARY_COLUMNS.index("total_clipped")] = "nan"
    return ",".join(cols)


# --- pure statistics -----------------------------------------------------------------------

# Columns: games A, B, C. Visits: A, B, C, A; evaluation 1 is halfway through visit 1 (B).
CORA_SCORES = np.array(
    [[0.8, 0.1, -0.1], [0.6, 0.5, 0.0], [0.5, 0.9, 0.2], [0.3, 0.4, 1.0], [0.9, 0.2, 0.6]]
)
CORA_VISIT = np.array([0, 1, 1, 2, 3])
CORA_VISIT_GAME = ["A", "B", "C", "A"]


def test_forgetting_hand_computed() -> None:
    mean, final = st.forgetting(CORA_SCORES, CORA_VISIT, CORA_VISIT_GAME, ["A", "B", "C"])
    # A: best 0.8 after visit 0, then 0.6, 0.5, 0.3 while B and C train; retrained at the end.
    # B: best 0.9 by the end of visit 1; 0.4 and 0.2 later. C: best 1.0, then 0.6.
    np.testing.assert_allclose(mean, [(0.2 + 0.3 + 0.5) / 3, (0.5 + 0.7) / 2, 0.4])
    np.testing.assert_allclose(final, [0.0, 0.7, 0.4])


def test_forward_transfer_hand_computed() -> None:
    mean, last = st.forward_transfer(CORA_SCORES, CORA_VISIT, CORA_VISIT_GAME, ["A", "B", "C"])
    np.testing.assert_allclose(mean, [np.nan, 0.1, (-0.1 + 0.0 + 0.2) / 3])
    np.testing.assert_allclose(last, [np.nan, 0.1, 0.2])


@pytest.fixture
def global_numpy_restored():
    """rliable draws from numpy's global generator; these tests seed it and put it back."""
    saved = np.random.get_state()  # noqa: NPY002
    yield
    np.random.set_state(saved)  # noqa: NPY002


def _rliable(scores, func, reps: int, rng_seed: int, size: float = 0.95):
    """rliable's own point estimate and interval, its global generator seeded as compare_stats
    seeds it: with the first draw of ``np.random.default_rng(rng_seed)``."""
    from rliable import library

    np.random.seed(int(np.random.default_rng(rng_seed).integers(2**32)))  # noqa: NPY002
    point, interval = library.get_interval_estimates(
        {"x": scores}, func, reps=reps, confidence_interval_size=size
    )
    return np.atleast_1d(point["x"]), interval["x"]


def _rliable_aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_median(scores),
            metrics.aggregate_optimality_gap(scores, gamma=1.0),
        ]
    )


@pytest.mark.parametrize("size", [0.95, 0.8])
def test_aggregate_intervals_are_rliables(size, global_numpy_restored) -> None:
    scores = np.random.default_rng(0).uniform(-0.3, 1.6, size=(5, 4))  # runs x games
    point, low, high = st.stratified_bootstrap_ci(
        scores, st.aggregate_scores, 300, np.random.default_rng(7), size=size
    )
    want_point, want_interval = _rliable(scores, _rliable_aggregates, 300, 7, size)
    np.testing.assert_allclose(point, want_point, rtol=1e-12)
    np.testing.assert_allclose(np.stack([low, high]), want_interval, rtol=1e-12)
    assert (low < point).all() and (point < high).all()


def test_improvement_and_curve_intervals_are_rliables(global_numpy_restored) -> None:
    from rliable import metrics

    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, size=(4, 3)), rng.uniform(-0.2, 0.8, size=(3, 3))
    p, low, high = st.probability_of_improvement_ci(x, y, 60, np.random.default_rng(2))
    want_point, want_interval = _rliable(
        [x, y], lambda a, b: np.array([metrics.probability_of_improvement(a, b)]), 60, 2
    )
    assert p == pytest.approx(want_point[0], rel=1e-12)
    np.testing.assert_allclose([low, high], want_interval[:, 0], rtol=1e-12)
    # A curve band resamples whole runs: one stratum of (runs, 1, T).
    curves = rng.uniform(0, 3, size=(5, 6))
    mean, low, high = st.bootstrap_mean_over_runs(curves, 200, np.random.default_rng(3))
    want_point, want_interval = _rliable(
        curves[:, None, :], lambda s: s[:, 0, :].mean(axis=0), 200, 3
    )
    np.testing.assert_allclose(mean, want_point, rtol=1e-12)
    np.testing.assert_allclose(np.stack([low, high]), want_interval, rtol=1e-12)


def test_stratified_bootstrap_resamples_within_games() -> None:
    rng = np.random.default_rng(0)
    same_runs = np.tile([0.1, 0.5, 0.9], (4, 1))  # every run identical: no spread to resample
    point, low, high = st.stratified_bootstrap_ci(same_runs, st.aggregate_scores, 100, rng)
    np.testing.assert_allclose(low, point)
    np.testing.assert_allclose(high, point)
    # Game columns keep their own values: a column of constants stays constant in every sample.
    scores = np.column_stack([np.zeros(5), np.arange(5.0)])
    _, low, high = st.stratified_bootstrap_ci(
        scores, lambda s: np.array([s[:, 0].max(), s[:, 1].mean()]), 500, rng
    )
    assert low[0] == high[0] == 0.0 and 0.5 < low[1] < 2.0 < high[1] < 3.5


def test_probability_of_improvement_ci() -> None:
    x = np.array([[0.5, 0.6], [0.7, 0.8]])
    p, low, high = st.probability_of_improvement_ci(x, x - 0.5, 100, np.random.default_rng(0))
    assert p == low == high == 1.0
    p, low, high = st.probability_of_improvement_ci(x, x, 100, np.random.default_rng(0))
    assert p == 0.5 and low < 0.5 < high
    # Three runs of X against two of Y (rliable allows unequal counts): X wins 5 of 6 pairs on
    # game 0 (0.2 < 0.3 is the loss) and all 6 on game 1.
    x3 = np.array([[0.2, 1.0], [0.6, 1.0], [0.9, 1.0]])
    y2 = np.array([[0.1, 0.0], [0.3, 0.0]])
    p, low, high = st.probability_of_improvement_ci(x3, y2, 200, np.random.default_rng(1))
    assert p == pytest.approx((5 / 6 + 1) / 2) and low < p <= high == 1.0
    with pytest.raises(ValueError, match="different numbers of games"):
        st.probability_of_improvement_ci(x3, y2[:, :1], 10, np.random.default_rng(1))
    nan_x = x3.copy()
    nan_x[0, 0] = np.nan
    assert all(np.isnan(st.probability_of_improvement_ci(nan_x, y2, 10, np.random.default_rng())))


def test_bootstrap_mean_over_runs_and_curves() -> None:
    rng = np.random.default_rng(0)
    mean, low, high = st.bootstrap_mean_over_runs(np.array([1.0, 2.0, 3.0]), 300, rng)
    assert mean == 2.0 and 1.0 <= low < 2.0 < high <= 3.0
    mean, low, high = st.bootstrap_mean_over_runs(np.array([4.0]), 300, rng)
    assert mean == 4.0 and np.isnan(low) and np.isnan(high)
    grid, values, interp = st.align_curves([([1, 2], [0, 1]), ([1, 2], [2, 3])])
    assert not interp and grid.tolist() == [1, 2] and values.tolist() == [[0, 1], [2, 3]]
    grid, values, interp = st.align_curves([([0, 2, 4], [0, 2, 4]), ([1, 3, 5], [1, 1, 1])])
    assert interp and grid.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(values, [[1, 2, 3, 4], [1, 1, 1, 1]])


def test_config_grouping_ignores_bookkeeping() -> None:
    assert is_ignored("seed") and is_ignored("schedule.seed") and is_ignored("torch_threads")
    assert is_ignored("env.num_threads") and is_ignored("log_every") and not is_ignored("ewc.lam")
    assert not is_ignored("agent.target_update") and not is_ignored("save_replay")
    configs = [
        {"variant": "ewc-true", "seed": 0, "env": {"num_threads": 1}, "ewc": {"lam": 400}},
        {"variant": "ewc-true", "seed": 1, "env": {"num_threads": 2}, "ewc": {"lam": 400}},
        {"variant": "ewc-true", "seed": 0, "env": {"num_threads": 3}, "ewc": {"lam": 100}},
        {"variant": "dqn", "seed": 0, "env": {"num_threads": 4}, "ewc": {"lam": 1}},
        {"variant": "dqn", "seed": 1, "env": {"num_threads": 5}, "ewc": {"lam": 1}, "x": [1, 2]},
    ]
    labels = [label for label, _ in group_labels(configs)]
    assert labels == [
        "ewc-true [ewc.lam=400]",
        "ewc-true [ewc.lam=400]",
        "ewc-true [ewc.lam=100]",
        "dqn [x=<unset>]",
        "dqn [x=[1, 2]]",
    ]


def test_settings_a_run_does_not_use_do_not_split_its_group() -> None:
    """Task inference's settings differ between true-label runs (and the per-task parameter
    sets allocated between any runs), EWC's between runs without consolidation: the same
    experiment. Between inferred-label runs, task inference's settings do split."""

    def run(variant: str, labels: str, consolidation: str, **fields: dict) -> dict:
        return {
            "variant": variant,
            "task_labels": labels,
            "consolidation": consolidation,
            "network": {"max_tasks": 20},
            "fmn": {"max_tasks": 20},
            "ewc": {"lam": 400},
            **fields,
        }

    configs = [
        run("ewc-true", "true", "ewc"),
        run("ewc-true", "true", "ewc", network={"max_tasks": 64}, fmn={"max_tasks": 64}),
        run("no-ewc", "true", "none"),
        run("no-ewc", "true", "none", ewc={"lam": 40}, fmn={"max_tasks": 64}),
        run("ewc-inferred", "inferred", "ewc"),
        run("ewc-inferred", "inferred", "ewc", network={"max_tasks": 64}, fmn={"max_tasks": 64}),
    ]
    labels = [label for label, _ in group_labels(configs)]
    assert labels[:4] == ["ewc-true", "ewc-true", "no-ewc", "no-ewc"]
    assert labels[4:] == ["ewc-inferred [fmn.max_tasks=20]", "ewc-inferred [fmn.max_tasks=64]"]


def test_cli_args_and_error_exit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import tyro

    args = tyro.cli(CompareArgs, args=["r1", "r2", "--reps", "10"])
    assert args.runs == (Path("r1"), Path("r2")) and args.reps == 10 and args.out is None
    assert main(CompareArgs(runs=(tmp_path,))) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: error: ") and "not a run folder" in err
    assert err.count("\n") == 1


def _no_nan(name: str) -> None:
    raise ValueError(f"summary.json holds {name}")


def test_adjusted_rand_index() -> None:
    assert ri.adjusted_rand_index(["a", "b", "c"], [5, 6, 7]) == 1.0  # relabelled, same partition
    assert ri.adjusted_rand_index(["a", "a", "b", "b"], [1, 1, 2, 2]) == 1.0
    assert ri.adjusted_rand_index(["a", "b", "c", "d"], [0, 0, 0, 0]) == 0.0
    # Contingency [[1, 1, 0], [0, 2, 0], [1, 0, 2]]: 2 agreeing pairs, 5 pairs in each labeling,
    # 21 pairs in all: (2 - 5 * 5 / 21) / (5 - 5 * 5 / 21) = 17 / 80 (scikit-learn agrees).
    a, b = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 2, 0]
    assert ri.adjusted_rand_index(a, b) == pytest.approx(17 / 80)
    assert ri.adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0)
    assert ri.adjusted_rand_index(["a"], [3]) == 1.0


def test_adjusted_rand_index_is_scikit_learns() -> None:
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    for n, k in [(2, 2), (10, 3), (200, 4), (1000, 12)]:
        a, b = rng.integers(0, k, n).tolist(), rng.integers(0, k, n).tolist()
        assert ri.adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
        assert ri.adjusted_rand_index(a, a) == adjusted_rand_score(a, a) == 1.0


@pytest.mark.parametrize(
    "ids", [[0, 1, 1], [0, 1, 2], [0, 0, 0], [0, 2, 3, 4, 2], [1, 1, 2, 2, 3], [0, 1, 0, 1, 2]]
)
def test_partition_ari_is_the_ari_of_equally_weighted_games(ids) -> None:
    games = [f"game{i}" for i in range(len(ids))]
    # One item per game: the plain ARI is 0 for any shared id; replicating every game's item
    # m times approaches the partition ARI as m grows.
    m = 4000
    replicated = ri.adjusted_rand_index(np.repeat(games, m).tolist(), np.repeat(ids, m).tolist())
    assert ri.partition_ari(games, ids) == pytest.approx(replicated, abs=1e-3)
    assert ri.partition_ari(games, [9 - i for i in ids]) == ri.partition_ari(games, ids)


def test_partition_ari_values() -> None:
    assert ri.partition_ari(["A", "B", "C"], [0, 1, 1]) == pytest.approx(4 / 7)
    assert ri.partition_ari(["A", "B", "C"], [0, 1, 2]) == 1.0
    assert ri.partition_ari(["A", "B", "C"], [7, 7, 7]) == 0.0
    assert ri.adjusted_rand_index(["A", "B", "C"], [0, 1, 1]) == 0.0  # the degenerate plain ARI


def test_a_config_from_before_a_field_existed_groups_with_current_ones(tmp_path: Path) -> None:
    from ewc_dqn.config import PRESETS
    from ewc_dqn.run_builder import run_config_dict
    from ewc_dqn.run_folder import load_run

    current = run_config_dict(PRESETS["minatar"]["minatar"])
    older = json.loads(json.dumps(current))
    del older["schedule"]["budget_frames"]  # written before the field was added
    records = []
    for name, cfg in (("old", older), ("new", current)):
        (tmp_path / name).mkdir()
        write_json_atomic(tmp_path / name / CONFIG_FILE, cfg)
        records.append(load_run(tmp_path / name))
    assert records[0].config["schedule"]["budget_frames"] == 0
    assert [label for label, _ in group_labels([r.config for r in records])] == ["ewc-true"] * 2


def test_the_summary_says_what_ewc_did_against_plain_dqn(tmp_path: Path) -> None:
    # Plain DQN learns each visited game to 1 and forgets it at once; EWC keeps 0.8 of it.
    n, g = len(VISITS4), len(GAMES4)
    dqn, ewc = np.zeros((n, g)), np.zeros((n, g))
    for e, game in enumerate(VISITS4):
        j = GAMES4.index(game)
        dqn[e, j] = 1.0
        ewc[e:, j] = np.maximum(ewc[e:, j], 0.8)
        ewc[e, j] = 1.0
    runs = [
        make_run(tmp_path / "dqn", GAMES4, VISITS4, dqn, variant="no-ewc"),
        make_run(tmp_path / "ewc", GAMES4, VISITS4, ewc, variant="ewc-true"),
    ]
    result = compare_runs(runs, reps=REPS)
    base, cons = result.groups[1], result.groups[0]
    assert (base.label, cons.label) == ("no-ewc", "ewc-true")
    assert base.mean_total[0] == pytest.approx(1.0)
    assert cons.mean_total[0] == pytest.approx(np.mean(np.minimum(ewc, 1).sum(axis=1)))
    text = format_summary(result)
    table = text.split("mean forgetting per game")[1].splitlines()
    row = next(line for line in table if line.startswith("ewc-true "))
    assert row.split()[1:] == [f"{v:.2f}" for v in st.mean_over_runs(cons.forgetting)] + [
        f"{cons.forgetting_total[0]:.2f}"
    ]
    ratio = cons.mean_total[0] / base.mean_total[0]
    assert (
        f"Averaged over the run, ewc-true scored {cons.mean_total[0]:.2f} of 4 against 1.00 for "
        f"no-ewc ({ratio:.1f} times), and forgot {cons.forgetting_total[0]:.2f} per game against "
        f"{base.forgetting_total[0]:.2f}."
    ) in text
    assert cons.forgetting_total[0] < base.forgetting_total[0]


def test_configs_from_before_consolidation_group_with_their_method(tmp_path: Path) -> None:
    """no_ewc and ewc.mode of earlier config.json files are read as the consolidation they
    meant, so old and new runs of one method are one group and old no-EWC and EWC runs stay
    apart."""
    from dataclasses import replace

    from ewc_dqn.config import PRESETS, upgrade_config_dict
    from ewc_dqn.errors import UserError
    from ewc_dqn.run_builder import run_config_dict
    from ewc_dqn.run_folder import load_run

    base = PRESETS["minatar"]["minatar"]
    cases = {  # name: (this version's config, how an earlier version wrote it)
        "ewc": ("ewc", {"no_ewc": False}, "separate"),
        "online": ("online-ewc", {"no_ewc": False}, "online"),
        "none": ("none", {"no_ewc": True}, "separate"),
        "none-online": ("none", {"no_ewc": True}, "online"),
        "no-flag": ("ewc", {}, "separate"),
    }
    configs = []
    for name, (consolidation, top, mode) in cases.items():
        current = run_config_dict(replace(base, consolidation=consolidation))  # type: ignore[arg-type]
        older = {k: v for k, v in json.loads(json.dumps(current)).items() if k != "consolidation"}
        older.update(top)
        older["ewc"]["mode"] = mode
        assert upgrade_config_dict(older) == {**current, "variant": older["variant"]}, name
        for when, cfg in (("old", older), ("new", current)):
            (tmp_path / f"{name}-{when}").mkdir()
            write_json_atomic(tmp_path / f"{name}-{when}" / CONFIG_FILE, cfg)
            configs.append(load_run(tmp_path / f"{name}-{when}").config)
    labels = [label for label, _ in group_labels(configs)]
    want = ["ewc-true"] * 2 + ["online-ewc-true"] * 2 + ["no-ewc"] * 4 + ["ewc-true"] * 2
    assert labels == want
    assert all("no_ewc" not in c and "mode" not in c["ewc"] for c in configs)
    with pytest.raises(UserError, match="both consolidation and the no_ewc"):
        upgrade_config_dict({"consolidation": "l2", "no_ewc": True})
    with pytest.raises(UserError, match="must be a bool and 'separate' or 'online'"):
        upgrade_config_dict({"ewc": {"mode": "offline"}})
