"""Compare finished (or running) training runs: ``evaluate.py compare RUN_DIR... [--out DIR]``.

``compare_runs`` reads run folders (see ewc_dqn.run_folder), groups them by variant and by any other
configuration difference, and writes PNG plots, ``report.md`` and ``summary.json`` into the output
folder; ``format_summary`` gives the short terminal table. Statistics live in
ewc_dqn.compare_stats, figures in ewc_dqn.compare_plots, the Markdown in ewc_dqn.compare_report.

Scores are human-normalised, (score - random) / (human - random). Final scores, aggregates,
forgetting and transfer clip each game's score at 1, as the paper's total does; per-game curves
show unclipped scores.
"""

from __future__ import annotations

import fnmatch
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from ewc_dqn import compare_plots
from ewc_dqn import compare_stats as st
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.compare_report import format_summary, jsonable, summary_dict, write_report
from ewc_dqn.errors import EXIT_BAD_INPUT, UserError
from ewc_dqn.provenance import compare_warnings
from ewc_dqn.rand_index import partition_ari
from ewc_dqn.run_folder import SCHEDULE_FILE, RunRecord, load_run, write_json_atomic

CLIP = st.CLIP

# Config fields that never make two runs different experiments: seeds (any field whose name
# contains "seed"), paths, devices and logging. Matched against the last part of a dotted name.
IGNORED_CONFIG_KEYS = (
    "*seed*",
    "variant",
    "run_dir",
    "out_dir",
    "output_dir",
    "log_dir",
    "checkpoint_dir",
    "device",
    "run_name",
    "exp_name",
    "resume",
    "num_threads",
    "torch_threads",
    "checkpoint_every*",
    "keep_checkpoints",
    "log_every*",
    "tensorboard",
    "progress",
    "verbose",
    "git_commit",
    "hostname",
    "created_at",
    "track",
    "wandb*",
)


class CompareError(UserError):
    """The given folders cannot be compared (not runs, different games, no evaluations...)."""


@dataclass
class CompareArgs:
    """Compare training runs: score curves, final aggregates, forgetting, transfer, task labels."""

    runs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Run folders (each made by train_agent.py), any mix of variants and seeds."""
    out: Path | None = None
    """Folder for the PNGs, report.md and summary.json; None: <first run's parent>/comparison."""
    baselines: tuple[Path, ...] = ()
    """Single-game run folders; their final normalised scores are drawn as per-game baselines."""
    reps: int = 2000
    """Bootstrap replicates for every confidence interval except the probability of improvement."""
    poi_reps: int = 1000
    """Bootstrap replicates for the probability of improvement (rliable computes each one with a
    Mann-Whitney test per game: about reps x games ms per pair of groups)."""
    seed: int = 0
    """Seed of the bootstrap resampling."""


@dataclass
class RunData:
    """One run's evaluations as arrays, in evaluation order."""

    record: RunRecord
    games: tuple[str, ...]
    frames_e: np.ndarray  # (E,) frames trained at each evaluation
    visit_e: np.ndarray  # (E,) schedule visit at each evaluation
    scores_eg: np.ndarray  # (E, G) normalised scores, unclipped
    total_frames: np.ndarray  # (S,) eval_summary frames
    total_clipped: np.ndarray  # (S,) eval_summary total clipped score
    visit_game: list[str]  # game trained in each schedule visit
    label_ari: np.ndarray  # (S,) eval_summary label ARI
    num_tasks: float  # tasks created by the last evaluation
    eval_label_ari: float  # ARI between games and the task ids used for them at the last evaluation


@dataclass
class GroupResult:
    """The numbers for one group of runs (one variant and configuration, several seeds)."""

    label: str
    variant: str
    config: dict[str, Any]  # the fields that set this group apart from others of its variant
    runs: list[str]
    seeds: list[int]
    finished: list[bool]
    final_frames: list[float]
    final_scores: np.ndarray  # (R, G) final normalised scores, unclipped
    final_total: tuple[float, float, float]  # total clipped score: mean, CI low, CI high
    aggregates: dict[str, tuple[float, float, float]]  # rliable aggregates of clipped scores
    forgetting: np.ndarray  # (R, G) mean forgetting over later evaluations
    forgetting_final: np.ndarray  # (R, G) forgetting at the last evaluation
    transfer: np.ndarray  # (R, G) mean zero-shot score before the first visit
    transfer_last: np.ndarray  # (R, G) zero-shot score just before the first visit
    forgetting_total: tuple[float, float, float]  # per-run mean over games, then over runs
    transfer_total: tuple[float, float, float]
    label_ari_final: tuple[float, float, float]
    label_ari_mean: float  # over runs of the mean over evaluations
    eval_label_ari: float
    num_tasks: float
    total_band: st.Band
    game_bands: dict[str, st.Band]


@dataclass
class CompareResult:
    """Everything ``compare_runs`` computed and where it wrote it."""

    out_dir: Path
    games: tuple[str, ...]
    groups: list[GroupResult]
    improvement: list[tuple[str, str, float, float, float]]  # (x, y, P(x > y), low, high)
    baselines: dict[str, float]  # game -> mean final normalised score of single-task runs
    train_spans: dict[str, list[tuple[float, float]]] | None
    reps: int
    seed: int
    notes: list[str] = field(default_factory=list)
    poi_reps: int = 1000
    figures: dict[str, str] = field(default_factory=dict)  # name -> file name inside out_dir

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted names: {"ewc": {"lam": 400}} -> {"ewc.lam": 400}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def is_ignored(name: str) -> bool:
    """True for config fields that do not tell experiments apart (see IGNORED_CONFIG_KEYS)."""
    leaf = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(leaf, pattern) for pattern in IGNORED_CONFIG_KEYS)


def group_labels(configs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Give each config its group: ``(label, distinguishing fields)``, one per config.

    Runs are grouped by ``variant`` and by every non-ignored field whose value differs among
    runs of that variant; such fields appear in the label: ``ewc-true [ewc.lam=100]``.
    """
    flats = [{k: v for k, v in flatten_config(c).items() if not is_ignored(k)} for c in configs]
    variants = [str(c.get("variant", "unknown")) for c in configs]
    out: list[tuple[str, dict[str, Any]]] = []
    for variant, flat in zip(variants, flats, strict=True):
        peers = [f for f, v in zip(flats, variants, strict=True) if v == variant]
        names = sorted({k for f in peers for k in f})
        differing = [k for k in names if len({_key(f.get(k, "<unset>")) for f in peers}) > 1]
        diff = {k: flat.get(k, "<unset>") for k in differing}
        text = ", ".join(f"{k}={_short(v)}" for k, v in diff.items())
        out.append((f"{variant} [{text}]" if text else variant, diff))
    return out


def load_run_data(path: Path) -> RunData:
    """Read a run folder into arrays; CompareError when it is not a run or holds no evaluations."""
    try:
        record = load_run(Path(path))
    except FileNotFoundError as err:
        raise CompareError(str(err)) from None
    ev, summ = record.eval, record.summary
    if len(ev) == 0 or len(summ) == 0:
        raise CompareError(f"{path} has no evaluations yet (empty eval.csv or eval_summary.csv)")
    if record.schedule:
        visit_game = [v["game"] for v in sorted(record.schedule, key=lambda v: v["index"])]
    else:
        by_visit = summ.groupby("visit")["game"].first()
        visit_game = [str(by_visit.get(v, "")) for v in range(int(by_visit.index.max()) + 1)]
    games = tuple(sorted({g for g in visit_game if g}))
    # dropna=False keeps a game whose normalised scores are all NaN (no reference score yet).
    table = ev.pivot_table(
        index="eval_index", columns="game", values="normalised", aggfunc="mean", dropna=False
    )
    missing = [g for g in games if g not in table.columns]
    if missing:
        raise CompareError(f"{path}: eval.csv never scores scheduled game(s) {', '.join(missing)}")
    if int(ev["visit"].max()) >= len(visit_game):
        raise CompareError(f"{path}: eval.csv names visits beyond those in {SCHEDULE_FILE}")
    scores = table[list(games)].to_numpy(dtype=float)
    scored_last = set(ev.loc[ev["eval_index"] == table.index[-1], "game"])
    if not set(games) <= scored_last:
        raise CompareError(f"{path}: the last evaluation does not score every game")
    per_eval = ev.groupby("eval_index")[["frames", "visit"]].first().loc[table.index]
    summ = summ.sort_values("eval_index")
    last = ev[ev["eval_index"] == table.index[-1]].set_index("game")
    return RunData(
        record=record,
        games=games,
        frames_e=per_eval["frames"].to_numpy(dtype=float),
        visit_e=per_eval["visit"].to_numpy(dtype=int),
        scores_eg=scores,
        total_frames=summ["frames"].to_numpy(dtype=float),
        total_clipped=summ["total_clipped"].to_numpy(dtype=float),
        visit_game=visit_game,
        label_ari=summ["label_ari"].to_numpy(dtype=float),
        num_tasks=float(summ["num_tasks"].iloc[-1]),
        eval_label_ari=_eval_label_ari(list(games), last["task_id"].reindex(list(games))),
    )


def load_baselines(paths: tuple[Path, ...], games: tuple[str, ...]) -> tuple[dict, list[str]]:
    """Mean final normalised score per game of single-game runs, and notes on what was skipped."""
    scores: dict[str, list[float]] = {}
    notes = []
    for path in paths:
        run = load_run_data(path)
        if len(run.games) != 1:
            raise CompareError(
                f"baseline {path} trains {len(run.games)} games; a baseline trains one"
            )
        game = run.games[0]
        if game not in games:
            notes.append(f"baseline {path} is for {game}, which these runs do not play: ignored")
            continue
        scores.setdefault(game, []).append(float(run.scores_eg[-1, 0]))
    return {g: float(np.mean(v)) for g, v in sorted(scores.items())}, notes


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
    _draw(result)
    write_report(result)
    write_json_atomic(result.summary_path, jsonable(summary_dict(result)))
    return result


def cli_main(argv: list[str] | None = None, prog: str = "ewc-dqn compare") -> int:
    """``ewc-dqn compare RUN...``: parse ``argv`` (default: the process's arguments), compare."""
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        return main(tyro.cli(CompareArgs, args=argv, prog=prog))
    return EXIT_BAD_INPUT


def main(args: CompareArgs) -> int:
    """The ``ewc-dqn compare`` command: run, print the summary; on bad input, one line, 2."""
    try:
        result = compare_runs(
            args.runs, args.out, args.baselines, args.reps, args.seed, args.poi_reps
        )
    except CompareError as err:
        print(f"compare: error: {err}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0


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


def _draw(result: CompareResult) -> None:
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
    compare_plots.plot_total_curves(
        out / result.figures["total"],
        {g.label: g.total_band for g in groups},
        len(result.games),
        baseline_total,
    )
    compare_plots.plot_per_game(
        out / result.figures["per_game"],
        result.games,
        {g.label: g.game_bands for g in groups},
        result.train_spans,
        result.baselines,
    )
    compare_plots.plot_aggregates(
        out / result.figures["aggregates"],
        {g.label: _point_low_high(g.aggregates) for g in groups},
    )
    compare_plots.plot_forgetting_transfer(
        out / result.figures["forgetting_transfer"],
        result.games,
        {g.label: st.mean_over_runs(g.forgetting) for g in groups},
        {g.label: st.mean_over_runs(g.transfer) for g in groups},
    )
    if result.improvement:
        result.figures["improvement"] = "probability_of_improvement.png"
        compare_plots.plot_probability_of_improvement(
            out / result.figures["improvement"], result.improvement
        )


def _ci(values: Any, reps: int, seed: int, *keys: str) -> tuple[float, float, float]:
    mean, low, high = st.bootstrap_mean_over_runs(
        np.asarray(values, dtype=float), reps, _rng(seed, *keys)
    )
    return float(mean), float(low), float(high)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, statistic, group): results do not depend on computation order."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def _eval_label_ari(games: list[str], task_ids: Any) -> float:
    ids = np.asarray(task_ids, dtype=float)
    if np.isnan(ids).any():
        return float("nan")
    return partition_ari(games, ids.astype(int).tolist())


def _point_low_high(
    aggregates: dict[str, tuple[float, float, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """{name: (point, low, high)} -> (points, lows, highs), each in AGGREGATE_NAMES order."""
    table = np.array([aggregates[name] for name in st.AGGREGATE_NAMES])
    return table[:, 0], table[:, 1], table[:, 2]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else _key(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = [
    "CompareArgs",
    "CompareError",
    "CompareResult",
    "compare_runs",
    "format_summary",
    "main",
    "summary_dict",
]
