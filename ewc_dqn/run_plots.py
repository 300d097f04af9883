"""Plots of one run: the paper's Fig. 4B (total normalised score vs frames), per-game evaluation
curves and per-game training returns.

Comparisons of several runs (confidence bands, aggregate statistics) live in ewc_dqn.compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ewc_dqn.run_folder import TRAIN_CSV, load_run


def write_run_plots(run_dir: Path) -> list[Path]:
    """Write ``total_score.png``, ``per_game.png`` and ``training_return.png`` into the run
    folder; return their paths."""
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
    training = training_returns(Path(run_dir), games)
    if training:
        out.append(Path(run_dir) / "training_return.png")
        fig = training_return_figure(training, run.schedule, games, _life_loss(run.config))
        fig.savefig(out[-1], dpi=110)
    return out


def _life_loss(config: Mapping) -> bool:
    """Whether the run's training episodes end at a lost life (the returns are then per life)."""
    env = config.get("env", {})
    return bool(env.get("terminal_on_life_loss", False)) if isinstance(env, Mapping) else False


def training_returns(run_dir: Path, games: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per game, the logged mean training return (``train/<game>/episode_return``) by frames."""
    path = run_dir / TRAIN_CSV
    if not path.exists() or path.stat().st_size == 0:
        return {}
    log = pd.read_csv(path)
    out = {}
    for game in games:
        rows = log[log["tag"] == f"train/{game}/episode_return"]
        if not rows.empty:
            out[game] = rows
    return out


def training_return_figure(
    training: Mapping[str, pd.DataFrame],
    visits: Sequence[Mapping],
    games: Sequence[str],
    per_life: bool,
) -> Figure:
    """One panel per game: its logged training return over each of its visits (one line per
    visit), the visits shaded."""
    fig = Figure(figsize=(7, 1.8 * len(training) + 0.4))
    axes = fig.subplots(len(training), 1, sharex=True, squeeze=False)
    for ax, (game, rows) in zip(axes[:, 0], training.items(), strict=True):
        for v in (v for v in visits if v["game"] == game):  # one line per visit
            start = float(v["start_frame"])
            inside = rows[(rows["frames"] > start) & (rows["frames"] <= start + v["frames"])]
            if not inside.empty:
                ax.plot(inside["frames"], inside["value"], lw=1, color="C0")
        _shade_visits(ax, visits, list(games), only=game)
        ax.set_ylabel(game.replace("MinAtar/", ""), fontsize=8)
    axes[-1, 0].set_xlabel("training frames")
    unit = "per life (a lost life ends a training episode)" if per_life else "per episode"
    fig.suptitle(f"raw training return {unit}, mean of each log period", fontsize=9)
    fig.tight_layout()
    return fig


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
