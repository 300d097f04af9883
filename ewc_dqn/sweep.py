"""Train every (variant, seed) combination of a preset, then compare them.

    ewc-dqn sweep --preset minatar --variants no-ewc,ewc-true,ewc-inferred \\
        --seeds 0-4 --out runs/sweep [--address ray://head:10001] [--agent.lr 1e-4 ...]
    ewc-dqn sweep --preset minatar --variants l2-true,rehearsal-true,online-ewc-true ...

Each combination is one run in its own folder, ``<out>/<variant>/seed<k>``, trained as one Ray
task (``pip install ewc-dqn[ray]``) with ``--cpus-per-run`` CPUs and ``--gpus-per-run`` GPUs.
Without ``--address`` Ray starts on this machine; with one it joins that cluster, whose nodes
then need ewc-dqn installed and ``<out>`` on a filesystem they share with this machine. Without
Ray (or with ``--no-ray``) the runs go one after another in this process.

Rerunning the same command skips finished runs (those with final.json), resumes unfinished ones
from their latest checkpoint (a run folder whose config differs from the command's is reported
as failed, never overwritten) and starts the rest. At the end every run with evaluations is
compared (ewc_dqn.compare) into ``<out>/comparison``. Exit status: 0 when every run finished, 1
when one failed (a run folder in use by another process counts as failed), 2 for bad arguments,
3 when stopped (Ctrl-C, SIGTERM) with unfinished runs to resume by rerunning the command.

Every run of a sweep trains on one schedule, built from the preset's ``schedule.seed``, so the
variants and seeds are compared on the same games in the same order; ``--seeds`` sets each run's
``seed`` (agent, environments, replay).
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import tyro
from tqdm import tqdm

from envs.schedule import Schedule
from ewc_dqn.cli_config import consolidation_flags, default_config, with_games
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.compare import compare_runs
from ewc_dqn.compare_data import CompareError
from ewc_dqn.compare_report import format_summary
from ewc_dqn.config import Consolidation, TrainConfig
from ewc_dqn.errors import EXIT_STOPPED, UserError
from ewc_dqn.run_builder import make_schedule, start_run
from ewc_dqn.run_folder import CONFIG_FILE, FINAL_FILE, load_run
from ewc_dqn.run_plots import write_run_plots
from ewc_dqn.threads import torch_threads


class Variant(NamedTuple):
    """The config fields that make a method: the consolidation, the task labels, rehearsal."""

    consolidation: Consolidation
    task_labels: Literal["true", "inferred"]
    rehearsal: bool


REHEARSAL_FRACTION = 0.25
"""The share of every minibatch the rehearsal variants draw from the other tasks (unless
``--rehearsal.fraction`` says otherwise): 8 of a minibatch of 32. A visit is short (a MinAtar
visit of 100k frames is 25k updates) and the current task must still learn its game within it,
so it keeps three quarters of every minibatch; once the other 4 MinAtar games have replays,
the 8 rehearsed transitions still replay about 2 of each per update (50k per visit). Half and
half (CLEAR's mix of new and replayed experience, Rolnick et al. 2019) would halve the current
task's data per update; ``--rehearsal.fraction 0.5`` runs it."""

VARIANTS: dict[str, Variant] = {
    "no-ewc": Variant("none", "true", False),
    "ewc-true": Variant("ewc", "true", False),
    "ewc-inferred": Variant("ewc", "inferred", False),
    "online-ewc-true": Variant("online-ewc", "true", False),
    "online-ewc-inferred": Variant("online-ewc", "inferred", False),
    "l2-true": Variant("l2", "true", False),
    "l2-inferred": Variant("l2", "inferred", False),
    "rehearsal-true": Variant("none", "true", True),
    "rehearsal-inferred": Variant("none", "inferred", True),
}
"""Variant name (TrainConfig.variant, the run folders' and compare tables' name) -> its
settings."""

VARIANT_ALIASES = {"none": "no-ewc"}
"""Other names ``--variants`` accepts -> the variant's name."""

SET_BY_SWEEP = ("--seed", "--no-ewc", "--task-labels", "--consolidation", "--suite")
"""Config flags the sweep sets itself (from --seeds, --variants and --games)."""


@dataclass(frozen=True)
class SweepArgs:
    """Train every (variant, seed) combination of a preset as Ray tasks, then compare them."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    preset: str | None = None
    """Named preset: smoke, minatar-quick, minatar, atari-short, atari (default: atari for Atari
    games, minatar for MinAtar games)."""
    variants: str = "no-ewc,ewc-true,ewc-inferred"
    """Comma-separated variants: no-ewc (or none), ewc-true, ewc-inferred, online-ewc-true,
    online-ewc-inferred, l2-true, l2-inferred, rehearsal-true, rehearsal-inferred (no
    consolidation, a quarter of every minibatch from the other tasks' replays, or
    --rehearsal.fraction; the other variants never rehearse)."""
    seeds: str = "0-4"
    """Run seeds: a range '0-4' (both ends included), a list '0,2,5', or both '0-2,7'."""
    out: Path = Path("runs/sweep")
    """Root folder: run folders <out>/<variant>/seed<k>, the comparison in <out>/comparison."""
    address: str | None = None
    """Address of a running Ray cluster to join (None: start Ray on this machine)."""
    cpus_per_run: float = 1.0
    """CPUs Ray reserves for each run (Ray also caps each run's threads at this)."""
    gpus_per_run: float | None = None
    """GPUs Ray reserves for each run (None: 1/runs_per_gpu when the cluster has GPUs, else 0)."""
    runs_per_gpu: int = 4
    """Runs sharing one GPU when gpus_per_run is None (a DQN run rarely fills a GPU)."""
    device: str = "auto"
    """auto (CUDA for runs given a GPU, else CPU), cpu, cuda or cuda:N."""
    games: str | None = None
    """Comma-separated games of the schedule (default: drawn from the preset's pool)."""
    no_ray: bool = False
    """Run the combinations one after another in this process, even where Ray is installed."""
    reps: int = 2000
    """Bootstrap replicates of the final comparison's confidence intervals."""
    poi_reps: int = 1000
    """Bootstrap replicates of the final comparison's probabilities of improvement."""


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: what ``train_run`` needs, picklable for Ray."""

    variant: str
    seed: int
    config: TrainConfig
    schedule: Schedule
    run_dir: Path
    device: str

    @property
    def name(self) -> str:
        return f"{self.variant} seed {self.seed}"


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended: finished, failed (message: the one-line reason) or stopped."""

    name: str
    run_dir: Path
    status: Literal["finished", "failed", "stopped"]
    message: str


def sweep_main(argv: list[str] | None = None, prog: str = "ewc-dqn sweep") -> int:
    """``ewc-dqn sweep ...``: parse, plan, train, compare; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    with exit_on_user_errors():
        fixed = sorted({a.split("=")[0] for a in argv} & set(SET_BY_SWEEP))
        if fixed:
            raise UserError(
                f"a sweep sets {', '.join(fixed)} itself from --variants, --seeds and --games"
            )
        consolidation_flags(argv)  # --ewc.mode: replaced by the variants' consolidation
        default = SweepArgs(config=default_config(argv))
        args = tyro.cli(
            SweepArgs,
            default=default,
            args=argv,
            prog=prog,
            config=(tyro.conf.FlagCreatePairsOff,),
        )
        specs = plan_runs(args)
    return run_sweep(args, specs)


def parse_variants(text: str) -> list[str]:
    """'none,ewc-true' -> ['no-ewc', 'ewc-true'] (aliases become the variant's name); one-line
    UserError for unknown names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS and n not in VARIANT_ALIASES]
    if unknown or not names:
        known = ", ".join(VARIANTS)
        raise UserError(f"unknown variant(s) {', '.join(unknown) or repr(text)}; variants: {known}")
    names = [VARIANT_ALIASES.get(n, n) for n in names]
    if len(set(names)) != len(names):
        raise UserError(f"a variant appears twice in {text!r}")
    return names


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]; '0-1,7' -> [0, 1, 7]."""
    seeds: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            raise UserError(
                f"bad seeds {text!r}: use a range like 0-4 or a list like 0,2,5"
            ) from None
        if lo < 0 or hi < lo:
            raise UserError(f"bad seed range {part.strip()!r} in {text!r}: need 0 <= first <= last")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise UserError(f"a seed appears twice in {text!r}")
    return seeds


def variant_config(base: TrainConfig, variant: str) -> TrainConfig:
    """``base`` with the fields of ``variant`` set (see VARIANTS): a rehearsal variant keeps
    ``base``'s rehearsal fraction when it has one (else ``REHEARSAL_FRACTION``), the others
    have none."""
    v = VARIANTS[variant]
    fraction = (base.rehearsal.fraction or REHEARSAL_FRACTION) if v.rehearsal else 0.0
    config = replace(
        base,
        consolidation=v.consolidation,
        task_labels=v.task_labels,
        rehearsal=replace(base.rehearsal, fraction=fraction),
    )
    assert config.variant == variant, (config.variant, variant)
    return config


def plan_runs(args: SweepArgs) -> list[RunSpec]:
    """Every (variant, seed) run of the sweep, sharing one schedule, seed by seed (every
    variant's seed 0, then every variant's seed 1, ...: a sweep cut short holds comparable
    groups); UserError on bad input."""
    variants, seeds = parse_variants(args.variants), parse_seeds(args.seeds)
    if args.cpus_per_run <= 0 or (args.gpus_per_run or 0) < 0 or args.runs_per_gpu < 1:
        raise UserError("cpus_per_run must be > 0, gpus_per_run >= 0 and runs_per_gpu >= 1")
    base = args.config if args.games is None else with_games(args.config, args.games)
    schedule = make_schedule(base)
    specs = []
    for seed in seeds:
        for variant in variants:
            config = replace(variant_config(base, variant), seed=seed)
            config.validate()
            config.check_schedule(schedule)
            run_dir = args.out / variant / f"seed{seed}"
            specs.append(RunSpec(variant, seed, config, schedule, run_dir, args.device))
    return specs


def train_run(spec: RunSpec) -> RunOutcome:
    """Train one run to its end: a new run, or the run already in its folder resumed (its config
    must equal ``spec.config``). Every error becomes a failed outcome with a one-line reason;
    a bug (not a UserError) prints its traceback as well."""
    try:
        resume = (spec.run_dir / CONFIG_FILE).exists()
        trainer = start_run(
            spec.config,
            spec.schedule,
            spec.run_dir,
            spec.device,
            resume=resume,
            show_progress=False,
        )
        try:
            with torch_threads(spec.config.torch_threads):  # restored for the next run
                finished = trainer.train()
        finally:
            trainer.close()
        if not finished:
            return RunOutcome(spec.name, spec.run_dir, "stopped", "stopped before its end")
        write_run_plots(spec.run_dir)
        return RunOutcome(spec.name, spec.run_dir, "finished", "resumed" if resume else "new")
    except UserError as err:  # a sweep reports a run it cannot train and goes on with the others
        return RunOutcome(spec.name, spec.run_dir, "failed", one_line(err))
    except Exception as err:  # a bug: its traceback too, then on with the other runs
        traceback.print_exc()
        return RunOutcome(spec.name, spec.run_dir, "failed", one_line(err))


def run_sweep(args: SweepArgs, specs: list[RunSpec]) -> int:
    """Train the unfinished runs of ``specs`` (with Ray or one after another), then compare."""
    print(specs[0].schedule.describe())
    todo = [s for s in specs if not (s.run_dir / FINAL_FILE).exists()]
    resuming = sum((s.run_dir / CONFIG_FILE).exists() for s in todo)
    print(
        f"{len(specs)} runs in {args.out}: {len(specs) - len(todo)} finished already (skipped), "
        f"{resuming} to resume, {len(todo) - resuming} new"
    )
    outcomes: list[RunOutcome] = []
    try:
        if todo:
            ray = None if args.no_ray else _import_ray()
            if ray is None:
                why = (
                    "--no-ray" if args.no_ray else "Ray is not installed (pip install ewc-dqn[ray])"
                )
                print(f"{why}; running the {len(todo)} runs one after another")
                _run_sequentially(todo, outcomes)
            else:
                _run_on_ray(ray, args, todo, outcomes)
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume the unfinished runs in {args.out}")
        return EXIT_STOPPED
    stopped = any(o.status == "stopped" for o in outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    compared = _compare(args, specs)
    if failed:
        print(f"{len(failed)} of {len(specs)} runs failed:")
        for o in failed:
            print(f"  {o.name} ({o.run_dir}): {o.message}")
    if stopped:
        print(f"stopped; rerun the same command to resume the unfinished runs in {args.out}")
        return EXIT_STOPPED
    return 1 if failed or not compared else 0


def _import_ray():
    try:
        import ray
    except ImportError:
        return None
    return ray


def _run_sequentially(todo: list[RunSpec], outcomes: list[RunOutcome]) -> None:
    with tqdm(total=len(todo), unit="run", dynamic_ncols=True) as bar:
        for spec in todo:
            bar.set_postfix_str(spec.name)
            outcomes.append(train_run(spec))
            _report(outcomes[-1], bar)
            if outcomes[-1].status == "stopped":  # Ctrl-C reached the trainer: stop the sweep
                return


def _run_on_ray(ray, args: SweepArgs, todo: list[RunSpec], outcomes: list[RunOutcome]) -> None:
    if args.address is None:
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            ignore_reinit_error=True,
        )
    else:
        ray.init(address=args.address, include_dashboard=False, ignore_reinit_error=True)
    try:
        gpus = args.gpus_per_run
        if gpus is None:
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            gpus = 1.0 / args.runs_per_gpu if has_gpu else 0.0
        print(f"Ray: {args.address or 'local'}; {args.cpus_per_run:g} CPU and {gpus:g} GPU per run")
        if gpus == 0:  # a run given no GPU must not pick one up through "auto"
            todo = [replace(s, device="cpu") if s.device == "auto" else s for s in todo]
        task = ray.remote(train_run).options(num_cpus=args.cpus_per_run, num_gpus=gpus)
        pending = {task.remote(spec): spec for spec in todo}
        with tqdm(total=len(todo), unit="run", dynamic_ncols=True) as bar:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # the worker died (killed, out of memory, ...)
                    outcome = RunOutcome(spec.name, spec.run_dir, "failed", one_line(err))
                outcomes.append(outcome)
                _report(outcome, bar)
    finally:
        ray.shutdown()


def _report(outcome: RunOutcome, bar: tqdm) -> None:
    detail = f": {outcome.message}" if outcome.status == "failed" else f" ({outcome.message})"
    tqdm.write(f"{outcome.name}: {outcome.status}{detail} [{outcome.run_dir}]")
    bar.update(1)


def _compare(args: SweepArgs, specs: list[RunSpec]) -> bool:
    """Compare every run with evaluations into <out>/comparison; False when that failed."""
    dirs = [s.run_dir for s in specs if _has_evaluations(s.run_dir)]
    if not dirs:
        print("no run has evaluations yet: nothing to compare")
        return False
    try:
        result = compare_runs(dirs, args.out / "comparison", reps=args.reps, poi_reps=args.poi_reps)
    except CompareError as err:
        print(f"comparison failed: {err}", file=sys.stderr)
        return False
    print(format_summary(result))
    return True


def _has_evaluations(run_dir: Path) -> bool:
    return (run_dir / CONFIG_FILE).is_file() and not load_run(run_dir).summary.empty


def one_line(err: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message. Ray's task
    errors are unwrapped to the exception the task raised."""
    cause = getattr(err, "cause", None)
    err = cause if isinstance(cause, BaseException) else err
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
