"""Plots of one run: the paper's Fig. 4B (total normalised score vs frames) and per-game curves.

Comparisons of several runs (confidence bands, aggregate statistics) live in ewc_dqn.compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ewc_dqn.run_folder import load_run


def write_run_plots(run_dir: Path) -> list[Path]:
    """Write ``total_score.png`` and ``per_game.png`` into the run folder; return their paths."""
    run = load_run(Path(run_dir))
    if run.summary.empty:
        return []
    out = []
    games = list(dict.fromkeys(run.eval["game"]))
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(run.summary["frames"], run.summary["total_clipped"], marker="o", label=run.variant)
    _shade_visits(ax, run.schedule, games)
    ax.set_xlabel("training frames")
    ax.set_ylabel("total normalised score (clipped at 1 per game)")
    ax.set_ylim(bottom=min(0.0, float(run.summary["total_clipped"].min())), top=len(games))
    ax.set_title(f"{run.variant}, seed {run.seed}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    out.append(Path(run_dir) / "total_score.png")
    fig.savefig(out[-1], dpi=110)

    fig = Figure(figsize=(7, 1.8 * len(games)))
    axes = fig.subplots(len(games), 1, sharex=True, squeeze=False)
    for ax, game in zip(axes[:, 0], games, strict=True):
        rows = run.eval[run.eval["game"] == game]
        ax.plot(rows["frames"], rows["normalised"], marker=".")
        _shade_visits(ax, run.schedule, [game], only=game)
        ax.axhline(1.0, color="grey", lw=0.6, ls="--")
        ax.set_ylabel(game.replace("MinAtar/", ""), fontsize=8)
    axes[-1, 0].set_xlabel("training frames")
    fig.suptitle("normalised score per game (shaded: training on that game)")
    fig.tight_layout()
    out.append(Path(run_dir) / "per_game.png")
    fig.savefig(out[-1], dpi=110)
    return out


def _shade_visits(ax, visits, games, only: str | None = None) -> None:
    spans: dict[str, list[tuple[float, float]]] = {}
    for v in visits:
        if only is None or v["game"] == only:
            start = float(v["start_frame"])
            spans.setdefault(v["game"], []).append((start, start + v["frames"]))
    shade_training(ax, spans, games, label=only is None)


def shade_training(
    ax: Axes,
    spans: Mapping[str, Sequence[tuple[float, float]]],
    games: Sequence[str],
    label: bool = True,
) -> None:
    """Shade each game's training spans (frames) in the game's colour and, with ``label``, write
    the game's name at the top of each span, so a reader can tell which game each band is."""
    colours = matplotlib.colormaps["tab10"]
    for game, game_spans in spans.items():
        colour = colours((games.index(game) if game in games else 0) % 10)
        for start, end in game_spans:
            ax.axvspan(start, end, color=colour, alpha=0.12, lw=0)
            if label:
                ax.text(
                    (start + end) / 2,
                    0.98,
                    game.split("/")[-1],
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="top",
                    fontsize=7,
                    color=colour,
                )
