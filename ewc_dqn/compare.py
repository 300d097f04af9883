"""Compare finished (or running) training runs: ``ewc-dqn compare RUN_DIR... [--out DIR]``.

``compare_runs`` reads run folders and groups them (ewc_dqn.compare_data), computes each group's
statistics (here, with ewc_dqn.compare_stats), and writes PNG plots (ewc_dqn.compare_plots),
``report.md`` and ``summary.json`` (ewc_dqn.compare_report) into the output folder;
``compare_report.format_summary`` gives the short terminal table. The command line is
ewc_dqn.cli_compare.

Scores are human-normalised, (score - random) / (human - random). Final scores, aggregates,
forgetting and transfer clip each game's score at 1, as the paper's total does; per-game curves
show unclipped scores.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ewc_dqn import compare_stats as st
from ewc_dqn.compare_data import (
    CompareError,
    CompareResult,
    GroupResult,
    RunData,
    group_labels,
    load_baselines,
    load_run_data,
)
from ewc_dqn.compare_plots import draw_comparison
from ewc_dqn.compare_report import jsonable, summary_dict, write_report
from ewc_dqn.provenance import compare_warnings
from ewc_dqn.run_folder import write_json_atomic

CLIP = st.CLIP


def compare_runs(
    run_dirs: list[Path] | tuple[Path, ...],
    out_dir: Path | None = None,
    baselines: tuple[Path, ...] | list[Path] = (),
    reps: int = 2000,
    seed: int = 0,
    poi_reps: int = 1000,
) -> CompareResult:
    """Compare run folders and write plots, report.md and summary.json into ``out_dir``.

    ``reps`` bootstrap replicates for every interval but the probability of improvement's
    (``poi_reps``). A game without a normalised score (NaN: no reference score measured for it
    yet) leaves the aggregates, totals and probabilities of improvement n/a, with a note.
    """
    paths = list(dict.fromkeys(Path(p).resolve() for p in run_dirs))
    if not paths:
        raise CompareError("no run folders given")
    runs = [load_run_data(p) for p in paths]
    games = runs[0].games
    for run in runs[1:]:
        if run.games != games:
            only_first = sorted(set(games) - set(run.games))
            only_other = sorted(set(run.games) - set(games))
            raise CompareError(
                f"cannot compare runs over different games: {runs[0].record.path} and "
                f"{run.record.path} differ (only in the first: {', '.join(only_first) or '-'}; "
                f"only in the second: {', '.join(only_other) or '-'})"
            )
    base, notes = load_baselines(tuple(baselines), games)
    notes.extend(compare_warnings(paths))
    unscored = [g for j, g in enumerate(games) if any(np.isnan(r.scores_eg[-1, j]) for r in runs)]
    if unscored:
        notes.append(
            f"no normalised score for {', '.join(unscored)} (no reference score measured; for "
            "MinAtar run python bench/measure_minatar_reference.py --dqn): aggregates, totals "
            "and probabilities of improvement are n/a"
        )
    out = Path(out_dir) if out_dir is not None else paths[0].parent / "comparison"
    out.mkdir(parents=True, exist_ok=True)

    labels = group_labels([r.record.config for r in runs])
    members: dict[str, list[int]] = {}
    for i, (label, _) in enumerate(labels):
        members.setdefault(label, []).append(i)
    groups = [
        _group_result(label, [runs[i] for i in idx], labels[idx[0]][1], reps, seed, notes)
        for label, idx in sorted(members.items())
    ]
    for g in groups:
        if len(set(g.seeds)) < len(g.seeds):
            notes.append(f"{g.label}: several runs share a seed ({g.seeds}); copies of one run?")
    improvement = _improvement(groups, poi_reps, seed, notes)
    for run in runs:
        if not run.record.finished:
            notes.append(
                f"{run.record.path} has not finished (no final.json): its last evaluation is used"
            )
    result = CompareResult(
        out,
        games,
        groups,
        improvement,
        base,
        _train_spans(runs),
        reps,
        seed,
        notes,
        poi_reps=poi_reps,
    )
    draw_comparison(result)
    write_report(result)
    write_json_atomic(result.summary_path, jsonable(summary_dict(result)))
    return result


def _group_result(
    label: str, runs: list[RunData], config: dict, reps: int, seed: int, notes: list[str]
) -> GroupResult:
    games = runs[0].games
    final = np.stack([r.scores_eg[-1] for r in runs])
    clipped = np.minimum(final, CLIP)
    if len(runs) >= 2:
        point, low, high = st.stratified_bootstrap_ci(
            clipped, st.aggregate_scores, reps, _rng(seed, "aggregates", label)
        )
    else:
        point = st.aggregate_scores(clipped)
        low = high = np.full_like(point, np.nan)
        notes.append(
            f"{label}: one run, so point estimates only; confidence intervals need more seeds"
        )
    cora = [
        (
            *st.forgetting(np.minimum(r.scores_eg, CLIP), r.visit_e, r.visit_game, games),
            *st.forward_transfer(np.minimum(r.scores_eg, CLIP), r.visit_e, r.visit_game, games),
        )
        for r in runs
    ]
    forget, forget_final, transfer, transfer_last = (np.stack(a) for a in zip(*cora, strict=True))
    total_band = st.curve_band(
        [(r.total_frames, r.total_clipped) for r in runs], reps, _rng(seed, "total", label)
    )
    if total_band.interpolated:
        notes.append(f"{label}: runs were evaluated at different frames; curves are interpolated")
    game_bands = {
        g: st.curve_band(
            [(r.frames_e, r.scores_eg[:, j]) for r in runs], reps, _rng(seed, "game", label, g)
        )
        for j, g in enumerate(games)
    }
    return GroupResult(
        label=label,
        variant=runs[0].record.variant,
        config=config,
        runs=[str(r.record.path) for r in runs],
        seeds=[r.record.seed for r in runs],
        finished=[r.record.finished for r in runs],
        final_frames=[float(r.frames_e[-1]) for r in runs],
        final_scores=final,
        final_total=_ci([r.total_clipped[-1] for r in runs], reps, seed, "final_total", label),
        mean_total=_ci([np.mean(r.total_clipped) for r in runs], reps, seed, "mean_total", label),
        aggregates={
            n: (float(p), float(lo), float(hi))
            for n, p, lo, hi in zip(st.AGGREGATE_NAMES, point, low, high, strict=True)
        },
        forgetting=forget,
        forgetting_final=forget_final,
        transfer=transfer,
        transfer_last=transfer_last,
        forgetting_total=_ci(st.mean_over_games(forget), reps, seed, "forgetting", label),
        transfer_total=_ci(st.mean_over_games(transfer), reps, seed, "transfer", label),
        label_ari_final=_ci([r.label_ari[-1] for r in runs], reps, seed, "ari", label),
        label_ari_mean=float(np.mean([np.nanmean(r.label_ari) for r in runs])),
        eval_label_ari=float(np.mean([r.eval_label_ari for r in runs])),
        num_tasks=float(np.mean([r.num_tasks for r in runs])),
        total_band=total_band,
        game_bands=game_bands,
    )


def _improvement(groups: list[GroupResult], reps: int, seed: int, notes: list[str]) -> list:
    """P(X > Y) for every pair of groups, X being the one with the higher mean final score.

    (P(Y > X) is 1 - P(X > Y), so one direction per pair says it all.)
    """
    pairs = []
    for i, first in enumerate(groups):
        for second in groups[i + 1 :]:
            x, y = sorted((first, second), key=lambda g: -g.aggregates["Mean"][0])
            xs, ys = np.minimum(x.final_scores, CLIP), np.minimum(y.final_scores, CLIP)
            if np.isnan(xs).any() or np.isnan(ys).any():
                pairs.append((x.label, y.label, np.nan, np.nan, np.nan))
            elif len(xs) >= 2 and len(ys) >= 2:
                rng = _rng(seed, "improvement", x.label, y.label)
                pairs.append(
                    (x.label, y.label, *st.probability_of_improvement_ci(xs, ys, reps, rng))
                )
            else:
                pairs.append(
                    (
                        x.label,
                        y.label,
                        float(st.metrics.probability_of_improvement(xs, ys)),
                        np.nan,
                        np.nan,
                    )
                )
    if len(groups) < 2:
        notes.append("one group only: no probability of improvement")
    return pairs


def _train_spans(runs: list[RunData]) -> dict[str, list[tuple[float, float]]] | None:
    """When every run shares one schedule, the frame spans in which each game was trained.

    Visit v spans from the end-of-visit evaluation of visit v-1 (0 for the first) to its own.
    """
    first = runs[0]
    ends = st.end_of_visit_evals(first.visit_e)
    frames = {v: float(first.frames_e[e]) for v, e in ends.items()}
    for run in runs[1:]:
        other = {v: float(run.frames_e[e]) for v, e in st.end_of_visit_evals(run.visit_e).items()}
        if run.visit_game != first.visit_game or other != frames:
            return None
    spans: dict[str, list[tuple[float, float]]] = {}
    for v in sorted(frames):
        spans.setdefault(first.visit_game[v], []).append((frames.get(v - 1, 0.0), frames[v]))
    return spans


def _ci(values: Any, reps: int, seed: int, *keys: str) -> tuple[float, float, float]:
    mean, low, high = st.bootstrap_mean_over_runs(
        np.asarray(values, dtype=float), reps, _rng(seed, *keys)
    )
    return float(mean), float(low), float(high)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, statistic, group): results do not depend on computation order."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])
