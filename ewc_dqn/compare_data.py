"""The runs of a comparison: loading run folders into arrays, grouping them by variant and by
the configuration fields that set them apart, and the result types the statistics fill in.

The fields that never make two runs different experiments (replicate seeds, thread counts, the
checkpoint and log cadence) come from ``TrainConfig`` itself (``config.not_a_variant_fields``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ewc_dqn import compare_stats as st
from ewc_dqn.config import not_a_variant_fields, unused_field_prefixes
from ewc_dqn.errors import UserError
from ewc_dqn.rand_index import partition_ari
from ewc_dqn.run_folder import SCHEDULE_FILE, RunRecord, load_run

IGNORED_CONFIG_KEYS = frozenset({"variant", *not_a_variant_fields()})
"""Dotted config names that do not tell experiments apart: ``variant`` (the group itself) and
every TrainConfig field marked as not a variant."""


class CompareError(UserError):
    """The given folders cannot be compared (not runs, different games, no evaluations...)."""


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
    mean_total: tuple[float, float, float]  # total clipped score averaged over a run's evaluations
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
    return name in IGNORED_CONFIG_KEYS


def group_labels(configs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Give each config its group: ``(label, distinguishing fields)``, one per config.

    Runs are grouped by ``variant`` and by every non-ignored field whose value differs among
    runs of that variant, leaving out the fields a run does not use (``unused_field_prefixes``:
    task inference's settings with true labels, EWC's without consolidation); such fields
    appear in the label: ``ewc-true [ewc.lam=100]``.
    """
    flats = [
        {
            k: v
            for k, v in flatten_config(c).items()
            if not is_ignored(k) and not k.startswith(unused_field_prefixes(c))
        }
        for c in configs
    ]
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


def _eval_label_ari(games: list[str], task_ids: Any) -> float:
    ids = np.asarray(task_ids, dtype=float)
    if np.isnan(ids).any():
        return float("nan")
    return partition_ari(games, ids.astype(int).tolist())


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else _key(value)
    return text if len(text) <= 40 else text[:37] + "..."
