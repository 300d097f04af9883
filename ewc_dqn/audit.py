"""Check, from a run's own files, that every rule of the protocol fired when it should.

    ewc-dqn audit RUN_DIR        (or python -m ewc_dqn.audit RUN_DIR)

The rules (docs/atari-protocol.md), each checked against ``config.json``, ``schedule.json``,
``train.csv``, ``eval.csv`` and ``final.json`` alone, so the audit sees what the run did rather
than what the code meant to do:

- ``learning_start``: a task's updates begin once its own agent steps reach
  ``agent.learning_starts``, never before, and promptly after;
- ``epsilon``: each step's epsilon is the linear schedule of the acting task's own steps;
- ``ewc_active``: from a game's second visit on, the EWC (or L2) term of its task (the task id
  it was trained under most) counts;
- ``consolidation``: every switch away from a task re-estimates its Fisher (re-anchors its L2
  term; unless the task was left within ``consolidation_min_steps`` of its last estimate), and a
  recurring task replaces its term rather than adding one;
- ``target_sync``: the target network was copied once per ``agent.target_update`` agent steps;
- ``evaluation``: every visit is followed by one evaluation of every game of the schedule.

Training scalars are logged every ``log_every`` agent steps; with ``log_every`` at most one
vectorised step (the ``atari-dry`` preset) every step is seen and every switch is checked, with
coarser logs only what the logged rows show. Runs resumed without their replay
(``--no-save-replay``) restart a task's learning start and are not audited for it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ewc_dqn.config import upgrade_config_dict
from ewc_dqn.dqn import linear_epsilon
from ewc_dqn.run_folder import EVAL_CSV, FINAL_FILE, TRAIN_CSV, load_run, read_json

CHECKS = ("learning_start", "epsilon", "ewc_active", "consolidation", "target_sync", "evaluation")


@dataclass
class AuditReport:
    """Violations and the number of events checked, per rule."""

    violations: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CHECKS})
    checked: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKS, 0))

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def describe(self) -> str:
        lines = []
        for name in CHECKS:
            bad = self.violations[name]
            verdict = "ok" if not bad else f"{len(bad)} violation(s)"
            lines.append(f"{name:<16}{self.checked[name]:>8} checked  {verdict}")
            lines.extend(f"    {v}" for v in bad[:5])
            if len(bad) > 5:
                lines.append(f"    ... and {len(bad) - 5} more")
        return "\n".join(lines)


def audit_run(path: Path) -> AuditReport:
    """Audit the run folder ``path`` (finished or not)."""
    path = Path(path)
    run = load_run(path)
    cfg = run.config
    report = AuditReport()
    train = pd.read_csv(path / TRAIN_CSV)
    rows = train.pivot_table(index="step", columns="tag", values="value", aggfunc="last")
    # The training log lines (an evaluation or a consolidation logs at other steps too).
    rows = rows[rows["train/task"].notna()].sort_index()
    n = int(cfg["env"]["num_envs"])
    _check_learning_start(rows, cfg, n, report)
    _check_epsilon(rows, cfg, n, report)
    _check_target_sync(rows, cfg, n, report)
    _check_consolidation(train, rows, cfg, report)
    _check_ewc_active(path, rows, run.schedule, cfg, report)
    _check_evaluation(path, run.schedule, report)
    return report


def _check_learning_start(rows: pd.DataFrame, cfg: dict, n: int, report: AuditReport) -> None:
    start = int(cfg["agent"]["learning_starts"])
    every = int(cfg["agent"]["train_every"])
    steps = rows.index.to_numpy()
    task = rows["train/task"].to_numpy()
    task_steps = rows["train/task_steps"].to_numpy()
    updates = rows["perf/updates"].to_numpy()
    first_update: dict[int, float] = {}
    for i in range(1, len(rows)):
        if steps[i] - steps[i - 1] != n:  # not consecutive vectorised steps
            continue
        report.checked["learning_start"] += 1
        t, did_update = int(task[i]), updates[i] > updates[i - 1]
        if did_update and task_steps[i] < start:
            report.violations["learning_start"].append(
                f"step {steps[i]}: task {t} updated at {task_steps[i]:.0f} of its own steps, "
                f"before its learning start {start}"
            )
        if did_update:
            first_update.setdefault(t, task_steps[i])
    if not report.checked["learning_start"]:
        return  # logged every few steps: which task's steps the updates came in is not known
    for t in np.unique(task).astype(int):
        reached = task_steps[task == t].max() >= start + max(n, every)
        if reached and t not in first_update:
            report.violations["learning_start"].append(
                f"task {t} passed its learning start {start} and never updated"
            )
        elif t in first_update and first_update[t] > start + max(n, every):
            report.violations["learning_start"].append(
                f"task {t} began updating at {first_update[t]:.0f} of its steps, late for {start}"
            )


def _check_epsilon(rows: pd.DataFrame, cfg: dict, n: int, report: AuditReport) -> None:
    a = cfg["agent"]
    for step, row in rows[["train/epsilon", "train/task_steps", "train/task"]].dropna().iterrows():
        # The row is logged after the step: the step acted with the epsilon of its steps before.
        want = linear_epsilon(
            int(row["train/task_steps"]) - n,
            a["eps_start"],
            a["eps_end"],
            a["eps_decay_start"],
            a["eps_decay_end"],
        )
        report.checked["epsilon"] += 1
        if abs(row["train/epsilon"] - want) > 1e-6:
            report.violations["epsilon"].append(
                f"step {step}: task {row['train/task']:.0f} acted at epsilon "
                f"{row['train/epsilon']:.4f}, its own timer gives {want:.4f}"
            )


def _check_target_sync(rows: pd.DataFrame, cfg: dict, n: int, report: AuditReport) -> None:
    period = int(cfg["agent"]["target_update"])
    syncs = rows["perf/target_syncs"].dropna()
    # A sync is due at each vectorised step that crosses a multiple of the period (one sync,
    # however many multiples a step of n agent steps crosses).
    vector_steps = np.arange(n, int(syncs.index.max()) + 1, n) if len(syncs) else np.zeros(0)
    crossed = np.cumsum(vector_steps // period > (vector_steps - n) // period)
    for step, count in syncs.items():
        report.checked["target_sync"] += 1
        due = int(crossed[int(step) // n - 1]) if step >= n else 0
        if int(count) != due:
            report.violations["target_sync"].append(
                f"step {step}: {count:.0f} target syncs, {due} due every {period} agent steps"
            )


def _consolidation(cfg: dict) -> str:
    """The run's consolidation (read from the fields of earlier versions too)."""
    return str(upgrade_config_dict(cfg).get("consolidation", "ewc"))


def _namespace(cfg: dict) -> str | None:
    """The prefix of the run's consolidation scalars: 'ewc' (EWC, online EWC), 'l2', or None for
    a run without consolidation."""
    kind = _consolidation(cfg)
    return None if kind == "none" else "l2" if kind == "l2" else "ewc"


def _check_consolidation(
    train: pd.DataFrame, rows: pd.DataFrame, cfg: dict, report: AuditReport
) -> None:
    ns = _namespace(cfg)
    if ns is None:
        return
    guard = int(cfg["consolidation_min_steps"])
    n = int(cfg["env"]["num_envs"])
    events = train[train["tag"] == f"{ns}/consolidated_task"]
    done = {(int(s), int(v)) for s, v in zip(events["step"], events["value"], strict=True)}
    # Ids that task inference merged away (and may give to a new task): the loop dropped their
    # terms and step counts, logged at the switch where it learnt of it.
    gone = train[train["tag"] == "tasks/forgotten_task"]
    forgotten: dict[int, set[int]] = {}
    for s, v in zip(gone["step"], gone["value"], strict=True):
        forgotten.setdefault(int(s), set()).add(int(v))
    steps = rows.index.to_numpy()
    task = rows["train/task"].to_numpy()
    task_steps = rows["train/task_steps"].to_numpy()
    last_estimate: dict[int, float] = {}
    steps_of: dict[int, float] = {}
    forgotten_steps = sorted(forgotten)
    for i in range(len(rows)):
        t = int(task[i])
        while forgotten_steps and forgotten_steps[0] <= steps[i]:
            for k in forgotten[forgotten_steps.pop(0)]:
                last_estimate.pop(k, None)
                steps_of.pop(k, None)
        if (
            i > 0
            and steps[i] - steps[i - 1] == n
            and int(task[i - 1]) != t
            and int(task[i - 1]) in steps_of
        ):
            left = int(task[i - 1])
            trained = steps_of[left] - last_estimate.get(left, 0.0)
            if left not in last_estimate or trained >= guard:
                report.checked["consolidation"] += 1
                if (int(steps[i - 1]), left) not in done:
                    report.violations["consolidation"].append(
                        f"step {steps[i - 1]}: left task {left} without re-estimating its Fisher"
                    )
                last_estimate[left] = steps_of[left]
        steps_of[t] = task_steps[i]
    tasks_with_terms: set[int] = set()
    events_in_order = sorted(
        [(s, 1, t) for s, t in done] + [(s, 0, k) for s, ks in forgotten.items() for k in ks]
    )
    for step, consolidated, t in events_in_order:
        if not consolidated:
            tasks_with_terms.discard(t)
            continue
        tasks_with_terms.add(t)
        stored = train[(train["step"] == step) & (train["tag"] == f"{ns}/stored_terms")]
        if _consolidation(cfg) != "online-ewc" and len(stored):
            if int(stored["value"].iloc[-1]) != len(tasks_with_terms):
                report.violations["consolidation"].append(
                    f"step {step}: {int(stored['value'].iloc[-1])} stored terms for "
                    f"{len(tasks_with_terms)} consolidated tasks (a recurring task must replace "
                    "its term)"
                )


def _check_ewc_active(
    path: Path, rows: pd.DataFrame, visits: list[dict], cfg: dict, report: AuditReport
) -> None:
    ns = _namespace(cfg)
    if ns is None or not (path / FINAL_FILE).exists():
        return
    table = read_json(path / FINAL_FILE)["training_steps_by_task"]
    # Labels are task ids, with '.<generation>' for an id given to a later task ('3.2').
    task_of = {game: int(max(used, key=used.get).split(".")[0]) for game, used in table.items()}
    seen: set[str] = set()
    frames = rows["train/frames"].to_numpy()
    for visit in visits:
        game = visit["game"]
        if game in seen:
            t = task_of[game]
            tag = f"{ns}/task{t}/active"
            start, end = visit["start_frame"], visit["start_frame"] + visit["frames"]
            inside = (frames > start) & (frames <= end)
            if tag not in rows:
                report.violations["ewc_active"].append(f"{game}: task {t} has no {ns} record")
                continue
            active = rows[tag].to_numpy()[inside]
            report.checked["ewc_active"] += int(inside.sum())
            if (active != 1).any():
                report.violations["ewc_active"].append(
                    f"{game}, visit {visit['index']}: the term of task {t} is inactive in "
                    f"{int((active != 1).sum())} of {int(inside.sum())} logged steps"
                )
        seen.add(game)


def _check_evaluation(path: Path, visits: list[dict], report: AuditReport) -> None:
    ev = pd.read_csv(path / EVAL_CSV) if (path / EVAL_CSV).exists() else pd.DataFrame()
    games = sorted({v["game"] for v in visits})
    finished = (path / FINAL_FILE).exists()
    for visit in visits:
        end = visit["start_frame"] + visit["frames"]
        rows = ev[ev["visit"] == visit["index"]] if len(ev) else ev
        report.checked["evaluation"] += 1
        if not len(rows):
            if finished:
                report.violations["evaluation"].append(f"visit {visit['index']}: no evaluation")
            continue
        if sorted(rows["game"]) != games or rows["eval_index"].nunique() != 1:
            report.violations["evaluation"].append(
                f"visit {visit['index']}: evaluated {sorted(rows['game'])} in "
                f"{rows['eval_index'].nunique()} evaluation(s), expected one of {games}"
            )
        elif (rows["frames"] != end).any():
            report.violations["evaluation"].append(
                f"visit {visit['index']}: evaluated at frame {rows['frames'].iloc[0]}, "
                f"the visit ends at {end}"
            )


def main(argv: list[str] | None = None, prog: str = "ewc-dqn audit") -> int:
    """Audit the one run folder in ``argv``; 0 when every rule held, 1 when one did not."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(f"usage: {prog} RUN_DIR\n\n{__doc__}")
        return 0
    if len(argv) != 1:
        print(f"usage: {prog} RUN_DIR", file=sys.stderr)
        return 2
    report = audit_run(Path(argv[0]))
    print(report.describe())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(prog="python -m ewc_dqn.audit"))
