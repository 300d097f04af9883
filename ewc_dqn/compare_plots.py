"""The comparison's figures, written as PNG files.

Each function takes already-computed numbers (see ewc_dqn.compare_stats) and writes one PNG.
Figures are built as ``matplotlib.figure.Figure`` objects, which render with the Agg canvas and
never touch pyplot's global state or backend: no display is needed, and importing this module
does not change the backend of a notebook or script that imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ewc_dqn import compare_stats as st
from ewc_dqn.compare_data import CompareResult
from ewc_dqn.compare_stats import AGGREGATE_NAMES, CLIP, Band
from ewc_dqn.run_plots import shade_training


def _colours(labels: Sequence[str]) -> dict[str, object]:
    cmap = matplotlib.colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _frames_axis(ax: Axes, max_ticks: int = 8) -> None:
    """Frames as 50M, 100M, ...: Atari runs reach hundreds of millions."""
    ax.xaxis.set_major_locator(ticker.MaxNLocator(max_ticks))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))


def _draw_band(ax: Axes, band: Band, colour: object, label: str) -> None:
    ax.plot(band.frames, band.mean, color=colour, label=f"{label} (n={band.num_runs})", lw=1.8)
    if np.isfinite(band.low).any():
        ax.fill_between(band.frames, band.low, band.high, color=colour, alpha=0.2, lw=0)


def plot_total_curves(
    path: Path,
    bands: Mapping[str, Band],
    num_games: int,
    baseline_total: float | None,
    train_spans: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> None:
    """Total clipped normalised score vs frames per group, 95% bootstrap bands (Fig. 4B); when
    all runs share one schedule, each visit shaded and named after its game."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    if train_spans:
        shade_training(ax, train_spans, sorted(train_spans))
    colours = _colours(list(bands))
    for label, band in bands.items():
        _draw_band(ax, band, colours[label], label)
    ax.axhline(num_games, color="grey", ls=":", lw=1, label=f"reference level on all {num_games}")
    if baseline_total is not None:
        ax.axhline(baseline_total, color="black", ls="--", lw=1, label="single-task DQNs (sum)")
    ax.set_xlabel("frames trained")
    _frames_axis(ax)
    ax.set_ylabel("total normalised score (each game clipped at 1)")
    ax.set_title("Total score during continual training (mean over runs, 95% bootstrap CI)")
    # Beside the axes: inside, it would hide the names of the visits along the top.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_per_game(
    path: Path,
    games: Sequence[str],
    bands: Mapping[str, Mapping[str, Band]],
    train_spans: Mapping[str, Sequence[tuple[float, float]]] | None,
    baselines: Mapping[str, float],
) -> None:
    """One panel per game: normalised score vs frames per group (Fig. S3).

    Grey spans mark when the game was trained (drawn only when all runs share one schedule);
    a dashed black line is the single-task baseline's final score, when one was given.
    """
    cols = min(5, len(games))
    rows = math.ceil(len(games) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = _colours(list(bands))
    for ax, game in zip(axes.flat, games, strict=False):
        for start, end in (train_spans or {}).get(game, ()):
            ax.axvspan(start, end, color="grey", alpha=0.15, lw=0)
        for label, per_game in bands.items():
            _draw_band(ax, per_game[game], colours[label], label)
        if game in baselines:
            ax.axhline(baselines[game], color="black", ls="--", lw=1, label="single-task DQN")
        ax.axhline(1.0, color="grey", ls=":", lw=0.8)
        ax.set_title(game, fontsize=10)
        ax.tick_params(labelsize=7)
        _frames_axis(ax, max_ticks=4)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(games) :]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(4, len(names)), fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("normalised score", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("frames trained", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)


def plot_aggregates(
    path: Path, aggregates: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """rliable-style interval plot: one panel per aggregate, one row per group."""
    labels = list(aggregates)
    colours = _colours(labels)
    fig = Figure(figsize=(3.2 * len(AGGREGATE_NAMES), 1.6 + 0.45 * len(labels)))
    axes = fig.subplots(1, len(AGGREGATE_NAMES), squeeze=False)
    for k, (ax, name) in enumerate(zip(axes[0], AGGREGATE_NAMES, strict=True)):
        for i, label in enumerate(labels):
            point, low, high = aggregates[label]
            y = len(labels) - 1 - i
            if np.isfinite(low[k]):
                ax.barh(
                    y, high[k] - low[k], left=low[k], height=0.6, color=colours[label], alpha=0.6
                )
            ax.plot([point[k]], [y], "|", color="black", ms=14)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels[::-1] if k == 0 else [], fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel("final normalised score (clipped at 1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_probability_of_improvement(
    path: Path, pairs: Sequence[tuple[str, str, float, float, float]]
) -> None:
    """P(X > Y) with its 95% interval, one row per pair ``(x, y, point, low, high)``."""
    fig = Figure(figsize=(7, 1.4 + 0.45 * len(pairs)))
    ax = fig.subplots()
    for i, (_x, _y, point, low, high) in enumerate(pairs):
        row = len(pairs) - 1 - i
        if np.isfinite(low):
            ax.barh(row, high - low, left=low, height=0.6, color="tab:blue", alpha=0.5)
        ax.plot([point], [row], "|", color="black", ms=14)
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels([f"P({x} > {y})" for x, y, *_ in pairs][::-1], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of improvement (averaged over games)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_forgetting_transfer(
    path: Path,
    games: Sequence[str],
    forgetting: Mapping[str, np.ndarray],
    transfer: Mapping[str, np.ndarray],
) -> None:
    """Grouped bars per game: mean forgetting (top) and zero-shot transfer (bottom) per group."""
    labels = list(forgetting)
    colours = _colours(labels)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(games))
    fig = Figure(figsize=(max(6, 0.9 * len(games) + 2), 6))
    axes = fig.subplots(2, 1, sharex=True)
    for ax, table, title in (
        (axes[0], forgetting, "forgetting: best so far minus later score (higher = forgot more)"),
        (axes[1], transfer, "zero-shot transfer: score before first training (0 = random)"),
    ):
        for i, label in enumerate(labels):
            values = np.nan_to_num(np.asarray(table[label], dtype=float), nan=0.0)
            ax.bar(
                x + (i - (len(labels) - 1) / 2) * width,
                values,
                width,
                color=colours[label],
                label=label,
            )
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(games, rotation=30, ha="right", fontsize=8)
    fig.supylabel("normalised score (clipped at 1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def draw_comparison(result: CompareResult) -> None:
    """Write every figure of ``result`` into its folder and record their names in it."""
    out, groups = result.out_dir, result.groups
    result.figures = {
        "total": "total_score.png",
        "per_game": "per_game_scores.png",
        "aggregates": "final_aggregates.png",
        "forgetting_transfer": "forgetting_transfer.png",
    }
    baseline_total = None
    if set(result.baselines) == set(result.games):
        baseline_total = float(sum(min(v, CLIP) for v in result.baselines.values()))
    plot_total_curves(
        out / result.figures["total"],
        {g.label: g.total_band for g in groups},
        len(result.games),
        baseline_total,
        result.train_spans,
    )
    plot_per_game(
        out / result.figures["per_game"],
        result.games,
        {g.label: g.game_bands for g in groups},
        result.train_spans,
        result.baselines,
    )
    plot_aggregates(
        out / result.figures["aggregates"],
        {g.label: _point_low_high(g.aggregates) for g in groups},
    )
    plot_forgetting_transfer(
        out / result.figures["forgetting_transfer"],
        result.games,
        {g.label: st.mean_over_runs(g.forgetting) for g in groups},
        {g.label: st.mean_over_runs(g.transfer) for g in groups},
    )
    if result.improvement:
        result.figures["improvement"] = "probability_of_improvement.png"
        plot_probability_of_improvement(out / result.figures["improvement"], result.improvement)


def _point_low_high(
    aggregates: dict[str, tuple[float, float, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """{name: (point, low, high)} -> (points, lows, highs), each in AGGREGATE_NAMES order."""
    table = np.array([aggregates[name] for name in st.AGGREGATE_NAMES])
    return table[:, 0], table[:, 1], table[:, 2]
