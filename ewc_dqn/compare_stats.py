"""Pure statistics for comparing continual-learning runs: aggregates, bootstraps, CORA metrics.

Every function here takes arrays and returns arrays; nothing reads files or draws plots.

Shapes: ``scores_rg`` is (num_runs, num_games) of human-normalised scores; ``scores_eg`` is
(num_evaluations, num_games) for one run, rows in evaluation order.

Every confidence interval is rliable's (Agarwal et al. 2021): ``rliable.library
.get_interval_estimates``, a stratified bootstrap (runs resampled with replacement *within each
game*) with percentile intervals. The aggregates (IQM, mean, median, optimality gap) and the
probability of improvement are ``rliable.metrics``. A curve band is the same bootstrap over a
(num_runs, 1, T) array: one stratum, so whole runs are resampled, as rliable's sample-efficiency
curves do.

Seeding: rliable 1.2 draws its resampling indices from numpy's *global* legacy generator
(``np.random.choice`` in ``StratifiedBootstrap.update_indices``) and ignores ``random_state``.
So each function takes a ``np.random.Generator``, draws a seed from it, seeds the global
generator for the one call and restores its previous state afterwards (``_seeded_global_numpy``):
results are reproducible and nothing outside sees the global state change.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
from rliable import library, metrics

CLIP = 1.0  # the paper clips each game's normalised score at 1 (human level)
AGGREGATE_NAMES = ("IQM", "Mean", "Median", "Optimality gap")


class Band(NamedTuple):
    """A curve averaged over runs with its 95% bootstrap band (NaN band with one run)."""

    frames: np.ndarray  # (T,) emulator frames
    mean: np.ndarray  # (T,)
    low: np.ndarray  # (T,)
    high: np.ndarray  # (T,)
    num_runs: int
    interpolated: bool  # True when the runs were put on a common grid by interpolation


def curve_band(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], reps: int, rng: np.random.Generator
) -> Band:
    """Align per-run ``(frames, values)`` curves and bootstrap their mean over runs."""
    grid, values_rt, interpolated = align_curves(curves)
    mean, low, high = bootstrap_mean_over_runs(values_rt, reps, rng)
    return Band(grid, mean, low, high, len(curves), interpolated)


def aggregate_scores(scores_rg: np.ndarray) -> np.ndarray:
    """rliable's four aggregates of (num_runs, num_games) scores: IQM, mean, median, opt. gap.

    Mean and median are over games of the per-game mean over runs; the IQM pools every
    (run, game) score; the optimality gap is ``1 - mean(min(score, 1))``. A NaN score (a game
    without a reference score) makes all four NaN: an aggregate covers every game or none.
    """
    if np.isnan(scores_rg).any():
        return np.full(len(AGGREGATE_NAMES), np.nan)
    return np.array(
        [
            metrics.aggregate_iqm(scores_rg),
            metrics.aggregate_mean(scores_rg),
            metrics.aggregate_median(scores_rg),
            metrics.aggregate_optimality_gap(scores_rg, gamma=1.0),
        ]
    )


def stratified_bootstrap_ci(
    scores_rg: np.ndarray,
    func: Callable[[np.ndarray], np.ndarray],
    reps: int,
    rng: np.random.Generator,
    size: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and rliable's stratified-bootstrap percentile CI of ``func``.

    Returns ``(point, low, high)``, each shaped like ``func``'s 1-D output. Scores holding a
    NaN are not resampled: ``func``'s value on them and NaN intervals.
    """
    scores_rg = _check_2d(scores_rg)
    if np.isnan(scores_rg).any():
        point = np.asarray(func(scores_rg), dtype=float)
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    point, interval = _interval_estimates(scores_rg, func, reps, rng, size)
    return point, interval[0], interval[1]


def probability_of_improvement_ci(
    x_rg: np.ndarray,
    y_rg: np.ndarray,
    reps: int,
    rng: np.random.Generator,
    size: float = 0.95,
) -> tuple[float, float, float]:
    """P(X > Y) averaged over games (``rliable.metrics.probability_of_improvement``) with
    rliable's CI: the runs of X and of Y are resampled independently, within each game.

    rliable computes each replicate with one Mann-Whitney U test per game (about 1 ms each), so
    this costs about reps x games ms; ``compare`` uses fewer replicates here (its ``poi_reps``).
    NaN scores give NaN.
    """
    x_rg, y_rg = _check_2d(x_rg), _check_2d(y_rg)
    if x_rg.shape[1] != y_rg.shape[1]:
        raise ValueError(f"different numbers of games: {x_rg.shape[1]} vs {y_rg.shape[1]}")
    if np.isnan(x_rg).any() or np.isnan(y_rg).any():
        return np.nan, np.nan, np.nan
    point, interval = _interval_estimates([x_rg, y_rg], _poi, reps, rng, size)
    return float(point[0]), float(interval[0, 0]), float(interval[1, 0])


def bootstrap_mean_over_runs(
    values_r: np.ndarray, reps: int, rng: np.random.Generator, size: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and its percentile CI from resampling whole runs (rliable).

    ``values_r`` is (num_runs,) or (num_runs, T) (a curve per run); NaNs are ignored in the means.
    With one run the interval is NaN: one run says nothing about run-to-run spread.
    """
    values = np.asarray(values_r, dtype=float)
    squeeze = values.ndim == 1
    values = values[:, None] if squeeze else values
    mean = _nanmean_over_runs(values[:, None, :])
    if len(values) < 2:
        low = high = np.full_like(mean, np.nan)
    else:
        _, (low, high) = _interval_estimates(
            values[:, None, :], _nanmean_over_runs, reps, rng, size
        )
    if squeeze:
        return mean[0], low[0], high[0]
    return mean, low, high


def _interval_estimates(
    scores: np.ndarray | list[np.ndarray],
    func: Callable[..., np.ndarray],
    reps: int,
    rng: np.random.Generator,
    size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``rliable.library.get_interval_estimates`` for one score array (or one list of arrays,
    resampled independently): ``(point (K,), interval (2, K))``, seeded from ``rng``."""
    seed = int(rng.integers(2**32))
    with _seeded_global_numpy(seed), warnings.catch_warnings():
        # All-NaN columns of a curve give NaN means, as they should.
        warnings.simplefilter("ignore", RuntimeWarning)
        point, interval = library.get_interval_estimates(
            {"x": scores}, func, reps=reps, confidence_interval_size=size
        )
    return np.atleast_1d(np.asarray(point["x"], dtype=float)), np.asarray(interval["x"], float)


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global legacy generator (which rliable draws from) and restore it after."""
    saved = np.random.get_state()  # noqa: NPY002 (rliable draws from it)
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def _poi(x_rg: np.ndarray, y_rg: np.ndarray) -> np.ndarray:
    return np.array([metrics.probability_of_improvement(x_rg, y_rg)])


def _nanmean_over_runs(values_r1t: np.ndarray) -> np.ndarray:
    """(num_runs, 1, T) -> (T,) mean over runs, NaN-aware (the curve-band statistic)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values_r1t[:, 0, :], axis=0)


def align_curves(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Put per-run curves ``(frames, values)`` on one frame grid: ``(grid, values_rt, interp)``.

    When every run was evaluated at the same frames those frames are the grid and no value is
    changed (``interp`` False). Otherwise the grid is the union of all evaluation frames inside
    the range every run covers (from the latest first evaluation to the earliest last one, so
    nothing is extrapolated) and each run is linearly interpolated onto it (``interp`` True).
    """
    if not curves:
        raise ValueError("no curves to align")
    frames = [np.asarray(f, dtype=float) for f, _ in curves]
    values = [np.asarray(v, dtype=float) for _, v in curves]
    if all(len(f) == len(frames[0]) and np.array_equal(f, frames[0]) for f in frames):
        return frames[0], np.stack(values), False
    lo = max(f.min() for f in frames)
    hi = min(f.max() for f in frames)
    grid = np.unique(np.concatenate(frames))
    grid = grid[(grid >= lo) & (grid <= hi)]
    if len(grid) == 0:
        raise ValueError("the runs' evaluation frames do not overlap")
    return (
        grid,
        np.stack([np.interp(grid, f, v) for f, v in zip(frames, values, strict=True)]),
        True,
    )


def end_of_visit_evals(visit_e: np.ndarray) -> dict[int, int]:
    """Map each schedule visit to the row of its last evaluation (the end-of-visit one)."""
    visit_e = np.asarray(visit_e)
    return {int(v): int(np.flatnonzero(visit_e == v)[-1]) for v in np.unique(visit_e)}


def forgetting(
    scores_eg: np.ndarray, visit_e: np.ndarray, visit_game: Sequence[str], games: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """CORA forgetting per game (Powers et al. 2022), adapted to recurring visits.

    For game g and evaluation e, let B_g(e) be the best score of g over evaluations 0..k, where k
    is the end-of-visit evaluation of the latest visit to g that ended at or before e. Then

    - ``mean``: the mean of B_g(e) - s_g(e) over every evaluation e with a defined B_g(e) taken
      while another game was being trained (evaluations during g's own visits are excluded: g is
      learning then, not being forgotten);
    - ``final``: B_g(E-1) - s_g(E-1) at the last evaluation E-1.

    Positive means forgotten. NaN for a game never trained (or never left). ``visit_e`` holds
    each evaluation's schedule visit; ``visit_game[v]`` is the game trained in visit v.
    """
    scores_eg = _check_2d(scores_eg)
    visit_e = np.asarray(visit_e, dtype=int)
    ends = end_of_visit_evals(visit_e)
    trained = np.array([visit_game[v] for v in visit_e])
    mean = np.full(len(games), np.nan)
    final = np.full(len(games), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN scores (no reference): NaN drops
        _forgetting_into(mean, final, scores_eg, ends, trained, visit_game, games)
    return mean, final


def _forgetting_into(mean, final, scores_eg, ends, trained, visit_game, games) -> None:
    for j, game in enumerate(games):
        game_ends = sorted(e for v, e in ends.items() if visit_game[v] == game)
        drops = []
        for e in range(len(scores_eg)):
            done = [k for k in game_ends if k <= e]
            if not done:
                continue
            drop = np.nanmax(scores_eg[: done[-1] + 1, j]) - scores_eg[e, j]
            if trained[e] != game:
                drops.append(drop)
            if e == len(scores_eg) - 1:
                final[j] = drop
        if drops:
            mean[j] = float(np.mean(drops))


def forward_transfer(
    scores_eg: np.ndarray, visit_e: np.ndarray, visit_game: Sequence[str], games: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot forward transfer per game: the normalised score before g is first trained.

    A normalised score is already "score minus the random baseline" in units of the human-random
    gap. Over the evaluations whose visit precedes g's first visit, returns ``(mean, last)``:
    their mean, and the score at the last of them (just before g's training starts). NaN for a
    game trained first or never trained.
    """
    scores_eg = _check_2d(scores_eg)
    visit_e = np.asarray(visit_e, dtype=int)
    mean = np.full(len(games), np.nan)
    last = np.full(len(games), np.nan)
    for j, game in enumerate(games):
        visits = [v for v, g in enumerate(visit_game) if g == game]
        before = visit_e < visits[0] if visits else np.ones(len(visit_e), dtype=bool)
        if visits and before.any():
            mean[j] = float(np.mean(scores_eg[before, j]))
            last[j] = float(scores_eg[np.flatnonzero(before)[-1], j])
    return mean, last


def _check_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"expected a non-empty 2-D array, got shape {a.shape}")
    return a


def mean_over_games(a: np.ndarray) -> np.ndarray:
    """Per-run mean over games, ignoring games where the metric is undefined (NaN)."""
    return np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in a])


def mean_over_runs(a: np.ndarray) -> np.ndarray:
    """Per-game mean over runs, ignoring runs where the metric is undefined (NaN)."""
    return np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in np.asarray(a).T])
