"""Crashes and stops: real processes killed or stopped at named stages of the run
(``EWC_DQN_FAULT``, ewc_dqn.faults), then resumed; the logs and weights are compared with a run
that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_agent
from ewc_dqn.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# The MinAtar smoke preset with visits of 300 frames: 4 visits, 1,200 agent steps, checkpoints
# every 400 steps and at every visit's end, training scalars every 100 steps.
RUN = [
    "--preset", "smoke", "--games", "MinAtar/Breakout,MinAtar/Freeway", "--quiet",
    "--schedule.visit-frames", "300",
]  # fmt: skip
LOGS = ("eval.csv", "eval_summary.csv")


def _train(*args: str, fault: str = "") -> subprocess.CompletedProcess:
    """train_agent.py in its own process, with ``EWC_DQN_FAULT=fault``."""
    return subprocess.run(
        [sys.executable, "train_agent.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "EWC_DQN_FAULT": fault, "EWC_DQN_DEBUG": ""},
    )


def _train_rows(run: Path) -> list[str]:
    """train.csv without the timing scalars (perf/), which no two runs share."""
    lines = (run / "train.csv").read_text().splitlines()
    return [line for line in lines if ",perf/" not in line]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    _, state = load_checkpoint(run)
    return {f"{net}/{k}": v for net in ("online", "target") for k, v in state["agent"][net].items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The run never interrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run)]) == 0
    return run


def _same_as_reference(run: Path, reference: Path) -> None:
    for name in LOGS:
        assert (run / name).read_text() == (reference / name).read_text(), name
    assert _train_rows(run) == _train_rows(reference)
    mine, theirs = _weights(run), _weights(reference)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert json.loads((run / "final.json").read_text()) == json.loads(
        (reference / "final.json").read_text()
    )


@pytest.mark.parametrize(
    "stage",
    [
        "saving@600",  # the visit's checkpoint was being written: resumes from step 400
        "visit-end-saved@600",  # its checkpoint holds the pending evaluation
        "evaluated@600",  # the evaluation's rows are in the logs, not in a checkpoint
        "evaluation-saved@600",  # the checkpoint after the evaluation is on disk
        "logged@700",  # mid-visit: the next task's Fisher estimate and scalars are logged
    ],
)
def test_a_kill_at_any_stage_of_a_visits_end_resumes_with_exact_logs(stage, reference, tmp_path):
    run = tmp_path / "run"
    killed = _train(*RUN, "--run-dir", str(run), fault=f"{stage}:KILL")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (run / "final.json").exists()
    assert train_agent.main(["--resume", str(run), "--quiet"]) == 0
    # No evaluation row missing or doubled, no training scalar twice, the same weights.
    summary = (run / "eval_summary.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in summary] == [0, 1, 2, 3]
    _same_as_reference(run, reference)


def test_a_stop_during_the_last_checkpoint_leaves_the_run_resumable(reference, tmp_path):
    run = tmp_path / "run"
    # SIGTERM arrives while the checkpoint at the end of the last visit is written.
    stopped = _train(*RUN, "--run-dir", str(run), fault="saving@1200:TERM")
    assert stopped.returncode == 3, stopped.stderr
    assert "received SIGTERM" in stopped.stdout and stopped.stderr == ""
    assert "stopped; continue with: python train_agent.py --resume" in stopped.stdout
    assert not (run / "final.json").exists()  # the last evaluation has not run
    step, state = load_checkpoint(run)
    assert step == 1200 and state["loop"]["pending_eval"] == 3
    assert len((run / "eval_summary.csv").read_text().splitlines()) == 1 + 3
    assert train_agent.main(["--resume", str(run), "--quiet"]) == 0
    _same_as_reference(run, reference)
