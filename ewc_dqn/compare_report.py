"""The comparison's Markdown report: tables, the exact definitions used, links to the figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ewc_dqn import compare_stats as st
from ewc_dqn.compare_data import CompareResult
from ewc_dqn.compare_stats import CLIP

FORGETTING_DEFINITION = """\
**Forgetting** (after CORA, Powers et al. 2022, extended to games that recur). Let s_g(e) be
game g's normalised score (clipped at 1) at evaluation e. For an evaluation e taken after at
least one visit to g has ended, let B_g(e) be the best s_g over all evaluations up to and
including the end-of-visit evaluation of the latest visit to g that ended by e ("the best score
reached up to the end of a visit"). *Mean* forgetting is the mean of B_g(e) - s_g(e) over every
such e taken while another game was being trained; *final* forgetting is B_g(e) - s_g(e) at the
run's last evaluation. Positive = forgot; a game never left (or never trained) has none ("n/a").
The group value averages runs; "all games" first averages the games of a run, then runs."""

TRANSFER_DEFINITION = """\
**Forward transfer** (zero-shot, after CORA). A normalised score is already "score minus the
random baseline" in units of the human-random gap, so the zero-shot transfer to game g is s_g(e)
(clipped at 1) at the evaluations e taken before g's first visit began: *mean* over those
evaluations, and *last*, the one just before g is first trained. The first game of a schedule
has none ("n/a"). Positive = the games trained so far help g; negative = they leave the agent
worse than random on g."""


def write_report(result: CompareResult) -> None:
    """Write ``report.md`` into ``result.out_dir``, linking the PNGs drawn there."""
    games = list(result.games)
    groups = result.groups
    fig = result.figures
    lines = [
        "# Comparison of continual-learning runs",
        "",
        f"{sum(len(g.runs) for g in groups)} runs in {len(groups)} groups over {len(games)} games:"
        f" {', '.join(games)}. Scores are normalised, (score - random) / (reference - random), "
        "with the human score as reference on Atari and a single-task DQN on MinAtar "
        "(envs/scores.py): 0 = random, 1 = reference. Confidence intervals are rliable's 95% "
        "stratified-bootstrap "
        f"percentile intervals ({result.reps} replicates, {result.poi_reps} for the probability "
        f"of improvement; seed {result.seed}).",
        "",
        "## Runs",
        "",
        _table(
            [
                "group",
                "variant",
                "runs",
                "seeds",
                "finished",
                "frames at last evaluation",
                "distinguishing config",
            ],
            [
                [
                    g.label,
                    g.variant,
                    str(len(g.runs)),
                    ", ".join(map(str, g.seeds)),
                    f"{sum(g.finished)}/{len(g.finished)}",
                    ", ".join(f"{f:,.0f}" for f in sorted(set(g.final_frames))),
                    ", ".join(f"`{k}={v}`" for k, v in g.config.items()) or "-",
                ]
                for g in groups
            ],
        ),
        "",
        "## Total score during training (the paper's Fig. 4B)",
        "",
        f"![total score]({fig['total']})",
        "",
        "Total of the per-game normalised scores, each clipped at 1 (`total_clipped` in "
        f"eval_summary.csv; {len(games)} = the reference level on every game), mean over a "
        "group's runs "
        "with a 95% bootstrap band over runs (no band for one run). Runs of a group evaluated at "
        "the same frames are averaged as they are; otherwise each run is linearly interpolated "
        "onto the union of their evaluation frames, restricted to the span every run covers.",
        "",
        "Total clipped score at the end and averaged over the run's evaluations (the final "
        "point is one evaluation after the last visit; the average weighs the whole curve):",
        "",
        _table(
            ["group", "final total [95% CI]", "total averaged over the run [95% CI]"],
            [[g.label, _ci(g.final_total), _ci(g.mean_total)] for g in groups],
        ),
        "",
        "## Final scores (rliable aggregates)",
        "",
        f"![final aggregates]({fig['aggregates']})",
        "",
        "Over the (run, game) matrix of final normalised scores **clipped at 1** (the paper's "
        "metric): IQM (mean of the middle 50% of all run-game scores), mean and median over games"
        " of the mean over runs, and optimality gap (1 - mean of min(score, 1); lower is better)."
        " Intervals: stratified bootstrap (runs resampled within each game), as rliable defines "
        "it.",
        "",
        _table(
            ["group", *result.groups[0].aggregates],
            [[g.label, *(_ci(v) for v in g.aggregates.values())] for g in groups],
        ),
        "",
    ]
    if result.improvement:
        lines += [
            "### Probability of improvement",
            "",
            f"![probability of improvement]({fig['improvement']})",
            "",
            "P(X > Y): the probability that a run of X beats a run of Y on a game (Mann-Whitney U"
            " / (n_X n_Y)), averaged over games; 0.5 = no difference. Intervals resample the runs"
            " of X and Y independently within each game.",
            "",
            _table(
                ["X", "Y", "P(X > Y) [95% CI]"],
                [[x, y, _ci((p, lo, hi))] for x, y, p, lo, hi in result.improvement],
            ),
            "",
        ]
    lines += [
        "## Per-game scores (the paper's Fig. S3)",
        "",
        f"![per-game scores]({fig['per_game']})",
        "",
        "Unclipped normalised score per game; grey spans mark the game's training visits (drawn "
        "when all runs share one schedule); dashed black lines are single-task baselines (final "
        "score of single-game runs, mean over seeds) when given.",
        "",
        "Final normalised score per game (unclipped, mean over runs):",
        "",
        _game_table(games, groups, lambda g: g.final_scores, result.baselines),
        "",
        "## Forgetting and forward transfer",
        "",
        f"![forgetting and transfer]({fig['forgetting_transfer']})",
        "",
        FORGETTING_DEFINITION,
        "",
        "Mean forgetting over later evaluations:",
        "",
        _game_table(games, groups, lambda g: g.forgetting, total=lambda g: g.forgetting_total),
        "",
        "Forgetting at the last evaluation:",
        "",
        _game_table(games, groups, lambda g: g.forgetting_final),
        "",
        TRANSFER_DEFINITION,
        "",
        "Mean zero-shot score before the first visit:",
        "",
        _game_table(games, groups, lambda g: g.transfer, total=lambda g: g.transfer_total),
        "",
        "Zero-shot score just before the first visit:",
        "",
        _game_table(games, groups, lambda g: g.transfer_last),
        "",
        "## Task inference",
        "",
        "Label ARI: adjusted Rand index between the task labels the agent used during training "
        "and the true ones (`label_ari` in eval_summary.csv; 1.0 by construction with true "
        "labels). Evaluation ARI: between the games and the task ids the agent used for them at "
        "its last evaluation, each game weighted equally (a game is counted under the id it used "
        "most; 1.0 = every game got its own task; games sharing an id lower it). Tasks: tasks "
        "created by the last evaluation.",
        "",
        _table(
            [
                "group",
                "label ARI at the end [95% CI]",
                "label ARI, mean over evaluations",
                "evaluation ARI",
                "tasks",
            ],
            [
                [
                    g.label,
                    _ci(g.label_ari_final),
                    _f(g.label_ari_mean),
                    _f(g.eval_label_ari),
                    _f(g.num_tasks, 1),
                ]
                for g in groups
            ],
        ),
        "",
    ]
    if result.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in result.notes), ""]
    result.report_path.write_text("\n".join(lines))


def _game_table(games, groups, values, baselines=None, total=None) -> str:
    header = ["group", *games] + (["all games [95% CI]"] if total else [])
    rows = []
    for g in groups:
        a = np.asarray(values(g), dtype=float)
        cols = [_f(np.nanmean(c)) if np.isfinite(c).any() else "n/a" for c in a.T]
        rows.append([g.label, *cols] + ([_ci(total(g))] if total else []))
    if baselines:
        rows.append(
            ["single-task baseline", *(_f(baselines[x]) if x in baselines else "-" for x in games)]
        )
    return _table(header, rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _f(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _ci(t: tuple[float, float, float]) -> str:
    point, low, high = t
    if not np.isfinite(point):
        return "n/a"
    if not np.isfinite(low):
        return f"{_f(point)} (CI needs 2+ runs)"
    return f"{_f(point)} [{_f(low)}, {_f(high)}]"


def summary_dict(result: CompareResult) -> dict[str, Any]:
    """All the comparison's numbers as plain data (written to summary.json)."""

    def per_game(a: np.ndarray) -> dict[str, float]:
        return dict(zip(result.games, st.mean_over_runs(a).tolist(), strict=True))

    def band(b: st.Band) -> dict[str, Any]:
        return {
            "frames": b.frames,
            "mean": b.mean,
            "low": b.low,
            "high": b.high,
            "interpolated": b.interpolated,
        }

    def ci(t: tuple[float, float, float]) -> dict[str, float]:
        return {"mean": t[0], "low": t[1], "high": t[2]}

    return {
        "games": list(result.games),
        "score": (
            "normalised, (score - random) / (reference - random), reference = human (Atari) or "
            "single-task DQN (MinAtar); final scores, aggregates, "
            f"forgetting and transfer clip each game at {CLIP:g}, curves per game do not"
        ),
        "bootstrap": {
            "reps": result.reps,
            "poi_reps": result.poi_reps,
            "seed": result.seed,
            "interval": 0.95,
        },
        "groups": [
            {
                "label": g.label,
                "variant": g.variant,
                "config": g.config,
                "runs": [
                    {
                        "path": p,
                        "seed": s,
                        "finished": f,
                        "final_frames": fr,
                        "final_normalised": dict(zip(result.games, sc.tolist(), strict=True)),
                    }
                    for p, s, f, fr, sc in zip(
                        g.runs, g.seeds, g.finished, g.final_frames, g.final_scores, strict=True
                    )
                ],
                "final_total_clipped": ci(g.final_total),
                "mean_total_clipped": ci(g.mean_total),
                "aggregates": {
                    name: {"point": p, "low": lo, "high": hi}
                    for name, (p, lo, hi) in g.aggregates.items()
                },
                "forgetting": {
                    "mean_over_games": ci(g.forgetting_total),
                    "per_game_mean": per_game(g.forgetting),
                    "per_game_final": per_game(g.forgetting_final),
                },
                "transfer": {
                    "mean_over_games": ci(g.transfer_total),
                    "per_game_mean": per_game(g.transfer),
                    "per_game_last": per_game(g.transfer_last),
                },
                "task_inference": {
                    "label_ari_final": ci(g.label_ari_final),
                    "label_ari_mean": g.label_ari_mean,
                    "eval_label_ari": g.eval_label_ari,
                    "num_tasks": g.num_tasks,
                },
                "total_curve": band(g.total_band),
                "game_curves": {game: band(b) for game, b in g.game_bands.items()},
            }
            for g in result.groups
        ],
        "probability_of_improvement": [
            {"x": x, "y": y, "p": p, "low": lo, "high": hi}
            for x, y, p, lo, hi in result.improvement
        ],
        "baselines": result.baselines,
        "notes": result.notes,
        "figures": result.figures,
    }


def format_summary(result: CompareResult) -> str:
    """A short plain-text table per group for the terminal."""
    header = (
        "group",
        "runs",
        "final total [95% CI]",
        "run-average total [95% CI]",
        "IQM [95% CI]",
        "forgetting",
        "transfer",
        "ARI",
    )
    rows = [
        (
            g.label,
            str(len(g.runs)),
            _fmt_ci(g.final_total),
            _fmt_ci(g.mean_total),
            _fmt_ci(g.aggregates["IQM"]),
            _f(g.forgetting_total[0]),
            _f(g.transfer_total[0]),
            _f(g.label_ari_final[0]),
        )
        for g in result.groups
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"{sum(len(g.runs) for g in result.groups)} runs in {len(result.groups)} groups, "
        f"{len(result.games)} games (final scores clipped at {CLIP:g}; {result.reps} bootstrap "
        "reps)"
    ]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    for x, y, p, lo, hi in result.improvement:
        lines.append(f"P({x} > {y}) = {_fmt_ci((p, lo, hi))}")
    lines += [
        "",
        "mean forgetting per game (best score so far minus later scores; lower is better):",
    ]
    short = [g.split("/")[-1] for g in result.games]
    table = [("group", *short, "mean")] + [
        (g.label, *(_f(v) for v in st.mean_over_runs(g.forgetting)), _f(g.forgetting_total[0]))
        for g in result.groups
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    said = headline(result)
    if said:
        lines += ["", said]
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"report: {result.report_path}")
    return "\n".join(lines)


BASELINE_VARIANTS = ("no-ewc", "none")
"""Variants without consolidation: the reference a headline compares the others with."""


def headline(result: CompareResult) -> str:
    """One sentence per consolidating group against the plain-DQN group: run-averaged total and
    mean forgetting (empty when the comparison has no plain-DQN group or nothing else)."""
    base = next((g for g in result.groups if g.variant in BASELINE_VARIANTS), None)
    if base is None:
        return ""
    n = len(result.games)
    said = []
    for g in result.groups:
        if g is base:
            continue
        ratio = g.mean_total[0] / base.mean_total[0] if base.mean_total[0] > 0 else math.nan
        times = f" ({ratio:.1f} times)" if math.isfinite(ratio) else ""
        said.append(
            f"Averaged over the run, {g.label} scored {g.mean_total[0]:.2f} of {n} against "
            f"{base.mean_total[0]:.2f} for {base.label}{times}, and forgot "
            f"{g.forgetting_total[0]:.2f} per game against {base.forgetting_total[0]:.2f}."
        )
    return "\n".join(said)


def _fmt_ci(t: tuple[float, float, float]) -> str:
    point, low, high = t
    if not np.isfinite(low):
        return f"{_f(point)} [no CI]" if np.isfinite(point) else "n/a"
    return f"{_f(point)} [{_f(low)}, {_f(high)}]"


def jsonable(obj: Any) -> Any:
    """numpy to plain Python, NaN and infinities to null (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
