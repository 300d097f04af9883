"""The GPU check: the paper's continual loop on one device, in minutes, with the numbers that
decide whether the `atari` preset fits in a working day.

Three runs of the real training loop (``ewc_dqn.run_builder.start_run``, the ``atari-short``
preset: the paper network, 4 environment copies, batch 32, one update per 4 agent steps) on the
schedule Breakout, Pong, Breakout, Pong of ``--visit-steps`` agent steps each, with updates from
``--learning-starts`` agent steps of a task and every EWC term active at once:

1. no EWC, true labels;
2. EWC, true labels;
3. EWC, forget-me-not labels (the paper's full agent).

The timed window is the second half of each run (visits 3 and 4: both replays learning, two task
switches with their Fisher estimates, one end-of-visit checkpoint without the replays);
evaluations are skipped (scoring, not training). The clock reads come from the loop's own log
calls, which read the device's statistics (a host sync), so the times are of work done, not of
kernels launched.

Printed: agent steps/s and updates/s of each run; the per-agent-step cost of the EWC penalty
(run 2 against run 1) and of FMN (run 3 against run 2, and FMN's own host time per call);
``bench_ewc.py`` on the same device (penalty against update); peak device memory; and the
projected training time of the ``atari`` and ``atari-short`` presets at run 3's rate.

    python bench/gpu_check.py                           # on a GPU: a few minutes
    python bench/gpu_check.py --device cpu --threads 1  # reduced sizes, about a minute: in CI
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Literal

import bench_ewc  # the script's folder is on sys.path
import torch
import tyro
from bench_training import Measurement, bench_config, machine_line, run_ours

from envs.schedule import Schedule
from ewc_dqn.config import TrainConfig, preset
from ewc_dqn.run_builder import make_schedule, resolve_device

GAMES = ("Breakout", "Pong")


@dataclass(frozen=True)
class Args:
    """GPU check settings (0: the device's default size)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the learner runs: 'auto' picks CUDA when available."""
    visit_steps: int = 0
    """Agent steps per visit, 4 visits per run (0: 8,000 on CUDA, 64 on the CPU)."""
    learning_starts: int = 0
    """Agent steps of a task before its updates start (0: 2,000 on CUDA, 32 on the CPU)."""
    fisher_batches: int = 0
    """Minibatches of each Fisher estimate (0: the preset's 100 on CUDA, 2 on the CPU, where
    the paper network's per-sample gradients take minutes)."""
    ewc_repeats: int = 0
    """Timed calls per bench_ewc measurement (0: 20 on CUDA, 2 on the CPU)."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""


@dataclass(frozen=True)
class Row:
    name: str
    config: TrainConfig
    m: Measurement


def check_config(
    base: TrainConfig, args: Args, visit: int, ls: int, fisher_batches: int
) -> TrainConfig:
    """``atari-short`` on the two-game schedule, updates from ``ls``, every term active at once."""
    config = bench_config(base, ls, min(ls, visit), args.threads, 4 * visit)
    frames = visit * config.frames_per_step
    return replace(
        config,
        ewc=replace(config.ewc, start_frames=0, fisher_batches=fisher_batches),
        schedule=replace(
            config.schedule,
            games=GAMES,
            num_games=len(GAMES),
            order="given",
            visits_per_game=2,
            visit_frames=frames,
            budget_frames=0,
        ),
    )


def preset_hours(name: str, steps_per_second: float) -> float:
    """Training hours of preset ``name`` (evaluations excluded) at ``steps_per_second``."""
    config = preset(name, "atari")
    steps = make_schedule(config).total_frames // config.frames_per_step
    return steps / steps_per_second / 3600


def main(args: Args) -> list[Row]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    base = preset("atari-short", "atari")
    visit = args.visit_steps or (8_000 if cuda else 64)
    ls = args.learning_starts or (2_000 if cuda else 32)
    fisher = args.fisher_batches or (base.ewc.fisher_batches if cuda else 2)
    base = check_config(base, args, visit, ls, fisher)
    print(machine_line(torch.get_num_threads(), str(device)))
    if cuda:
        print(f"device: {torch.cuda.get_device_name(device)}")
        torch.cuda.reset_peak_memory_stats(device)
    schedule: Schedule = make_schedule(base)
    variants = [
        ("no EWC, true labels", replace(base, consolidation="none")),
        ("EWC, true labels", base),
        ("EWC, FMN labels", replace(base, task_labels="inferred")),
    ]
    rows: list[Row] = []
    for name, config in variants:
        t0 = time.perf_counter()
        m = run_ours(config, schedule, 2 * visit, str(device))
        rows.append(Row(name, config, m))
        print(
            f"{name:<22} {m.steps:>7,} agent steps {m.updates:>6,} updates in {m.seconds:7.1f} s: "
            f"{m.steps_per_second:8.1f} agent steps/s {m.updates_per_second:8.1f} updates/s "
            f"(run {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    base_m, ewc_m, fmn_m = (r.m for r in rows)
    us = 1e6
    penalty_us = (1 / ewc_m.steps_per_second - 1 / base_m.steps_per_second) * us
    fmn_us = (1 / fmn_m.steps_per_second - 1 / ewc_m.steps_per_second) * us
    label_calls = fmn_m.extra.get("label_calls", 0.0)
    label_host = fmn_m.extra.get("label_s", 0.0) / max(label_calls, 1.0) * us
    print(f"EWC penalty: {penalty_us:+.1f} us per agent step (EWC run against no-EWC run)")
    print(
        f"FMN: {fmn_us:+.1f} us per agent step (FMN run against true labels); its own host time "
        f"{label_host:.1f} us per call"
    )
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak device memory: {peak:.2f} GiB (allocated by torch)")
    rate = fmn_m.steps_per_second
    for name in ("atari", "atari-short"):
        print(
            f"projected training time of --preset {name} at {rate:.0f} agent steps/s: "
            f"{preset_hours(name, rate):.1f} h (evaluations excluded)"
        )
    bench_ewc.main(
        bench_ewc.Args(
            device="cuda" if cuda else "cpu",
            repeats=args.ewc_repeats or (20 if cuda else 2),
            warmup=1,
            threads=args.threads,
        )
    )
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
