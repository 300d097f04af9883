"""Tests of ``train_agent.py sweep`` (ewc_dqn.sweep): a real 2x2 sweep on a local Ray, the
sequential path without Ray, resume and skip, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from ewc_dqn.config import preset
from ewc_dqn.run_folder import CONFIG_FILE, FINAL_FILE, SCHEDULE_FILE
from ewc_dqn.sweep import (
    REHEARSAL_FRACTION,
    VARIANTS,
    SweepArgs,
    parse_seeds,
    parse_variants,
    plan_runs,
    sweep_main,
    variant_config,
)

ROOT = Path(__file__).resolve().parents[1]
GAMES = "MinAtar/Breakout,MinAtar/Freeway"
# The smoke preset cut to one 300-frame visit per game: a run takes seconds on a CPU.
TINY = [
    "--preset", "smoke", "--games", GAMES,
    "--schedule.visits-per-game", "1", "--schedule.visit-frames", "300",
    "--eval.frames", "100", "--agent.learning-starts", "64", "--checkpoint-every", "300",
    "--reps", "50", "--poi-reps", "20",
]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Ray starts its workers at a raised nice level, so on a machine busy with other jobs a
    # 30 s sweep was seen to take over 300 s; the limit only guards against a hang.
    return subprocess.run(
        [sys.executable, str(ROOT / "train_agent.py"), "sweep", *args],
        capture_output=True, text=True, timeout=1200, cwd=ROOT, env=env,
    )  # fmt: skip


@pytest.mark.slow  # about 40 s on 2 CPU cores, mostly Ray's start and each worker's imports
def test_two_by_two_sweep_on_local_ray_then_rerun_skips(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    args = [*TINY, "--variants", "no-ewc,ewc-true", "--seeds", "0-1", "--out", str(tmp_path)]
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Ray: local; 1 CPU and 0 GPU per run" in first.stdout
    runs = [tmp_path / v / f"seed{k}" for v in ("no-ewc", "ewc-true") for k in (0, 1)]
    schedules = set()
    for run in runs:
        assert (run / FINAL_FILE).is_file() and (run / "total_score.png").is_file()
        config = json.loads((run / CONFIG_FILE).read_text())
        assert config["variant"] == run.parent.name and config["seed"] == int(run.name[-1])
        assert config["agent"]["learning_starts"] == 64  # the override reached every run
        schedules.add((run / SCHEDULE_FILE).read_text())
    assert len(schedules) == 1  # one schedule for every variant and seed
    for name in ("no-ewc seed 0: finished (new)", "ewc-true seed 1: finished (new)"):
        assert name in first.stdout
    assert (tmp_path / "comparison" / "report.md").is_file()
    summary = json.loads((tmp_path / "comparison" / "summary.json").read_text())
    assert sorted(g["label"] for g in summary["groups"]) == ["ewc-true", "no-ewc"]
    assert all(len(g["runs"]) == 2 for g in summary["groups"])

    finals = {run: (run / FINAL_FILE).stat().st_mtime_ns for run in runs}
    again = run_cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 finished already (skipped), 0 to resume, 0 new" in again.stdout
    assert "Ray:" not in again.stdout  # nothing to train: Ray is not even started
    assert {run: (run / FINAL_FILE).stat().st_mtime_ns for run in runs} == finals
    assert "report:" in again.stdout  # the comparison is redone


@pytest.mark.slow  # about a minute on 2 CPU cores
def test_the_baseline_variants_on_local_ray(tmp_path: Path) -> None:
    """The L2 and rehearsal variants, one seed each, through a real local Ray: each trains
    what its name says and is its own group of the comparison."""
    pytest.importorskip("ray")
    variants = ["l2-true", "l2-inferred", "rehearsal-true", "rehearsal-inferred"]
    args = [*TINY, "--variants", ",".join(variants), "--seeds", "0", "--out", str(tmp_path)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    for variant in variants:
        run = tmp_path / variant / "seed0"
        assert (run / FINAL_FILE).is_file(), variant
        config = json.loads((run / CONFIG_FILE).read_text())
        assert config["variant"] == variant
        assert config["task_labels"] == variant.rsplit("-", 1)[1]
        rehearsal = variant.startswith("rehearsal")
        assert config["consolidation"] == ("none" if rehearsal else "l2")
        assert config["rehearsal"]["fraction"] == (REHEARSAL_FRACTION if rehearsal else 0.0)
        tags = set(pd.read_csv(run / "train.csv")["tag"])
        assert ("rehearsal/share" in tags) == rehearsal, variant
        assert ("l2/consolidated_task" in tags) == (not rehearsal), variant
        assert not any(t.startswith("ewc/") for t in tags), variant
    summary = json.loads((tmp_path / "comparison" / "summary.json").read_text())
    assert sorted(g["label"] for g in summary["groups"]) == sorted(variants)


def test_without_ray_runs_one_after_another_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    args = [*TINY, "--variants", "ewc-inferred", "--seeds", "3", "--out", str(tmp_path)]
    assert sweep_main(args) == 0
    out = capsys.readouterr().out
    assert (
        "Ray is not installed (pip install ewc-dqn[ray]); running the 1 runs one after another"
        in out
    )
    run = tmp_path / "ewc-inferred" / "seed3"
    assert (run / FINAL_FILE).is_file() and (tmp_path / "comparison" / "report.md").is_file()

    # An unfinished run is resumed with the same config; a different config is a failed run.
    (run / FINAL_FILE).unlink()
    assert sweep_main([*args, "--no-ray"]) == 0
    out = capsys.readouterr().out
    assert "--no-ray; running the 1 runs one after another" in out
    assert "0 finished already (skipped), 1 to resume, 0 new" in out
    assert "ewc-inferred seed 3: finished (resumed)" in out and (run / FINAL_FILE).is_file()
    (run / FINAL_FILE).unlink()
    assert sweep_main([*args, "--no-ray", "--agent.lr", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "ewc-inferred seed 3: failed: RunError: " in out
    assert "holds a run with another configuration; not resuming it" in out
    assert not (run / FINAL_FILE).exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--variants", "no-ewc,ewc-fancy"], "unknown variant(s) ewc-fancy; variants: no-ewc,"),
        (["--seeds", "4-2"], "bad seed range '4-2'"),
        (["--seeds", "a-b"], "bad seeds 'a-b'"),
        (["--preset", "huge"], "unknown preset 'huge'; presets: "),
        (["--games", "Pong,MinAtar/Breakout"], "mixes"),
        (["--seed=3", "--no-ewc"], "a sweep sets --no-ewc, --seed itself from --variants"),
        (["--consolidation", "l2"], "a sweep sets --consolidation itself from --variants"),
        (["--ewc.mode", "online"], "--ewc.mode was replaced by --consolidation"),
        (["--variants", "rehearsal-true", "--rehearsal.fraction", "2"], "must be in [0, 1)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        sweep_main([*flags, "--out", str(tmp_path / "sweep")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "sweep").exists()


def test_parse_seeds_and_variants() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,2,5") == [0, 2, 5]
    assert parse_seeds("0-1, 7") == [0, 1, 7]
    with pytest.raises(ValueError, match="appears twice"):
        parse_seeds("0-2,2")
    with pytest.raises(ValueError, match="bad seeds"):
        parse_seeds("")
    assert parse_variants("ewc-true, no-ewc") == ["ewc-true", "no-ewc"]
    assert parse_variants("none,l2-true") == ["no-ewc", "l2-true"]  # none: no-ewc's other name
    with pytest.raises(ValueError, match="appears twice"):
        parse_variants("ewc-true,ewc-true")
    with pytest.raises(ValueError, match="appears twice"):
        parse_variants("none,no-ewc")


def test_every_variant_has_its_own_name() -> None:
    base = preset("smoke", "minatar")
    configs = {v: variant_config(base, v) for v in VARIANTS}
    assert len({c.variant for c in configs.values()}) == len(VARIANTS)
    assert len({c.describe_method() for c in configs.values()}) == len(VARIANTS)
    # A rehearsal sweep at another fraction keeps it; the other variants never rehearse.
    half = replace(base, rehearsal=replace(base.rehearsal, fraction=0.5))
    assert variant_config(half, "rehearsal-true").rehearsal.fraction == 0.5
    assert variant_config(half, "l2-true").rehearsal.fraction == 0.0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_config_sets_the_variant(variant: str) -> None:
    base = preset("smoke", "minatar")
    config = variant_config(base, variant)
    assert config.variant == variant
    assert config.task_labels == ("inferred" if variant.endswith("inferred") else "true")
    method = variant.rsplit("-", 1)[0] if variant != "no-ewc" else "none"
    want = "none" if method == "rehearsal" else method
    assert config.consolidation == want
    assert config.rehearsal.fraction == (REHEARSAL_FRACTION if method == "rehearsal" else 0.0)
    assert config.agent == base.agent and config.schedule == base.schedule


def test_runs_are_planned_seed_by_seed(tmp_path):
    """A sweep cut short holds every variant's first seeds, not one variant's every seed."""
    args = SweepArgs(
        config=preset("smoke", "minatar"), variants="no-ewc,ewc-true", seeds="0-1", out=tmp_path
    )
    assert [(s.variant, s.seed) for s in plan_runs(args)] == [
        ("no-ewc", 0),
        ("ewc-true", 0),
        ("no-ewc", 1),
        ("ewc-true", 1),
    ]
