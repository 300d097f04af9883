"""Crashes, stops, divergence and damaged checkpoints: real processes killed or stopped at named
stages of the run (``EWC_DQN_FAULT``, ewc_dqn.faults), then resumed; the logs and weights are
compared with a run that was never interrupted."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import train_agent
from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.checkpoint import (
    chunks_of,
    list_checkpoints,
    load_checkpoint,
    referenced_chunks,
    save_checkpoint,
)
from ewc_dqn.chunk_store import CHUNK_DIR, stored_digests
from ewc_dqn.config import preset
from ewc_dqn.networks import NetworkConfig, QNetwork
from ewc_dqn.run_builder import build_trainer, make_schedule, resolve_device
from ewc_dqn.train import DivergenceError
from ewc_dqn.transition import Transition

ROOT = Path(__file__).resolve().parents[1]
# The MinAtar smoke preset with visits of 300 frames: 4 visits, 1,200 agent steps, checkpoints
# every 400 steps and at every visit's end, training scalars every 100 steps.
# Exact resume is a CPU guarantee (on CUDA only with --deterministic): pinned to the CPU.
CPU = ["--device", "cpu"]
RUN = [
    "--preset", "smoke", "--games", "MinAtar/Breakout,MinAtar/Freeway", "--quiet",
    "--schedule.visit-frames", "300", *CPU,
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


def _tidy(run: Path) -> None:
    """No temporary file or folder of a save left, no chunk that no checkpoint refers to."""
    hidden = [p for p in (run / "checkpoints").rglob("*") if p.name.startswith(".")]
    assert hidden == []
    assert stored_digests(run / "checkpoints" / CHUNK_DIR) == referenced_chunks(run)


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
        "renaming@600",  # its chunks and files were on disk, not yet renamed into place
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
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0
    # No evaluation row missing or doubled, no training scalar twice, the same weights.
    summary = (run / "eval_summary.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in summary] == [0, 1, 2, 3]
    _same_as_reference(run, reference)
    _tidy(run)  # what the killed save left is gone


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
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0
    _same_as_reference(run, reference)


@pytest.mark.parametrize("damage", ["truncated", "non-finite", "chunk-missing", "chunk-altered"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    damage, reference, tmp_path, capsys
):
    run = tmp_path / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run), "--stop-after-steps", "800"]) == 3
    older, newest = list_checkpoints(run)
    assert [older.name, newest.name] == ["step_000000000600", "step_000000000800"]
    if damage == "truncated":
        tensors = newest / "tensors.safetensors"
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage.startswith("chunk"):  # a chunk that only the newest checkpoint holds
        only = sorted((chunks_of(newest) or set()) - (chunks_of(older) or set()))
        chunk = run / "checkpoints" / CHUNK_DIR / f"{only[0]}.bin"
        if damage == "chunk-missing":
            chunk.unlink()
        else:
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2] ^= 0xFF
            chunk.write_bytes(bytes(data))
    else:  # written by a version that did not check the weights of a diverged run
        _, state = load_checkpoint(newest)
        next(iter(state["agent"]["online"].values())).fill_(math.nan)
        save_checkpoint(run, 800, state)
    capsys.readouterr()
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipping damaged checkpoint {newest}" in err
    assert "resuming from" in err and "step_000000000600" in err
    assert (run / "checkpoints" / "damaged-step_000000000800").is_dir()  # kept, set aside
    _same_as_reference(run, reference)


def test_a_checkpoint_of_format_1_resumes_exactly(reference, tmp_path):
    """A run checkpointed before the chunk store (format 1: every array in the safetensors
    file, no chunks/ folder) resumes with this version and ends as the uninterrupted run."""
    run = tmp_path / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run), "--stop-after-steps", "800"]) == 3
    step, state = load_checkpoint(run)
    # Format 1 held the EWC terms as tensors and the replays' frames as arrays (chunks load as
    # ``Chunks``; ``np.asarray`` is the array they hold).
    terms = state["ewc"]["tensors"]
    state["ewc"]["tensors"] = {k: torch.from_numpy(np.asarray(v)) for k, v in terms.items()}
    for replay in state["replays"].values():
        replay["frames"] = np.asarray(replay["frames"])
    shutil.rmtree(run / "checkpoints")
    folder = save_checkpoint(run, step, state)  # arrays are written inline
    doc = json.loads((folder / "state.json").read_text())
    assert "__chunks__" not in json.dumps(doc) and not (run / "checkpoints" / CHUNK_DIR).exists()
    doc["format_version"] = 1
    (folder / "state.json").write_text(json.dumps(doc))
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0
    _same_as_reference(run, reference)
    _tidy(run)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run), "--stop-after-steps", "800"]) == 3
    for ckpt in list_checkpoints(run):
        (ckpt / "state.json").write_text("{")
    resumed = _train("--resume", str(run), *CPU)
    assert resumed.returncode == 2
    assert "holds no loadable checkpoint (step_000000000800: " in resumed.stderr
    assert len(resumed.stderr.strip().splitlines()) == 1
    assert len(list_checkpoints(run)) == 2  # nothing renamed or deleted


def test_divergence_stops_the_run_and_never_checkpoints_it(tmp_path):
    run = tmp_path / "run"
    # Learning starts after the first checkpoint (step 100) and diverges at once; the check
    # when the scalars of step 200 are logged finds it.
    args = [*RUN, "--no-ewc", "--agent.lr", "1e6", "--agent.learning-starts", "150"]
    result = _train(*args, "--checkpoint-every", "100", "--run-dir", str(run))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: training diverged between agent steps 100 and 200: the loss")
    assert "became NaN or infinite at update " in line
    assert "the newest checkpoint, step_000000000100, holds finite weights" in line
    assert [p.name for p in list_checkpoints(run)] == ["step_000000000100"]
    assert all(torch.isfinite(w).all() for w in _weights(run).values())
    assert not (run / "final.json").exists()


@pytest.mark.parametrize("max_grad_norm", [50.0, 0.0])  # clipped, or the norm only measured
def test_the_agent_remembers_the_first_non_finite_update(max_grad_norm):
    torch.manual_seed(0)
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    config = AgentConfig(learning_starts=32, max_grad_norm=max_grad_norm)
    agent = DQNAgent(net, config, torch.device("cpu"))

    def batch(reward: float) -> Transition:
        frames = torch.randint(0, 2, (8, 10, 10, 10), dtype=torch.uint8)
        return Transition(frames, torch.zeros(8, dtype=torch.int64), torch.full((8,), reward),
                          torch.full((8,), 0.99), frames)  # fmt: skip

    agent.update(batch(1.0), task_id=0)
    assert agent.divergence() is None and agent.nonfinite_weights() == []
    agent.update(batch(math.nan), task_id=0)  # update 2: NaN loss, NaN gradients, NaN weights
    agent.update(batch(1.0), task_id=0)
    assert agent.divergence() == (2, ["loss", "gradient"])  # the first one, not the last
    assert agent.nonfinite_weights()[0].startswith("online/")


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    trainer = build_trainer(
        preset("smoke", "minatar"),
        make_schedule(preset("smoke", "minatar")),
        tmp_path,
        resolve_device("cpu"),
        show_progress=False,
    )
    trainer.save()
    name, weight = next(iter(trainer.agent.online.named_parameters()))
    with torch.no_grad():
        weight[0] = math.inf
    with pytest.raises(DivergenceError, match=f"weights became NaN or infinite \\(online/{name}"):
        trainer.save()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000000000"]
    trainer.close()


def test_evaluate_refuses_a_checkpoint_with_non_finite_weights(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run), "--stop-after-steps", "400"]) == 3
    _, state = load_checkpoint(run)
    next(iter(state["agent"]["online"].values()))[0] = math.nan
    save_checkpoint(run, 500, state)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        evaluate.main([str(run), "--episodes", "1"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert "step_000000000500 holds non-finite weights" in err and "diverged" in err


def test_a_bug_keeps_its_traceback_and_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    crashed = _train(*RUN, "--run-dir", str(run), fault="logged@500:raise")  # as from a bug
    assert crashed.returncode == 1
    assert "Traceback (most recent call last)" in crashed.stderr
    assert "ValueError: deliberate fault at logged, agent step 500" in crashed.stderr
    assert "error: " not in crashed.stderr  # not dressed up as bad input
    assert load_checkpoint(run)[0] == 400 and not (run / "final.json").exists()
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0  # and the lock is free


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("first", "then"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_run_saved_on_one_device_resumes_on_another(first, then, tmp_path):
    run = tmp_path / "run"
    argv = [a for a in RUN if a not in CPU] + ["--device", first, "--run-dir", str(run)]
    assert train_agent.main([*argv, "--stop-after-steps", "400"]) == 3
    assert train_agent.main(["--resume", str(run), "--quiet", "--device", then]) == 0
    assert (run / "final.json").exists()
    assert all(torch.isfinite(w).all() for w in _weights(run).values())
