"""One training process per run folder: the lock refuses a second process at once and is taken
over from a process that was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ewc_dqn.checkpoint import load_checkpoint
from ewc_dqn.run_builder import load_run_config
from ewc_dqn.run_lock import LOCK_FILE, RunInUseError, RunLock
from ewc_dqn.sweep import RunSpec, train_run

ROOT = Path(__file__).resolve().parents[1]
MINATAR = ["--preset", "smoke", "--games", "MinAtar/Breakout,MinAtar/Freeway", "--quiet"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train_agent.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "EWC_DQN_DEBUG": ""},
    )


def test_a_second_lock_of_a_folder_is_refused_until_released(tmp_path):
    lock = RunLock.acquire(tmp_path)
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"]
    # flock locks conflict between open files even within one process, and across processes.
    with pytest.raises(RunInUseError, match=f"in use by process {os.getpid()} on host"):
        RunLock.acquire(tmp_path)
    code = f"from ewc_dqn.run_lock import RunLock; RunLock.acquire({str(tmp_path)!r})"
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert other.returncode == 1 and f"in use by process {os.getpid()}" in other.stderr
    lock.release()
    again = RunLock.acquire(tmp_path)
    again.release()


def test_a_second_process_is_refused_while_a_run_trains_and_a_killed_holder_is_replaced(
    tmp_path,
):
    run = tmp_path / "run"
    # Long visits, so that the first process is still training while the others try.
    long_run = ["--schedule.visit-frames", "30000", "--checkpoint-every", "200"]
    holder = subprocess.Popen(
        [sys.executable, "train_agent.py", *MINATAR, *long_run, "--run-dir", str(run)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints").is_dir() and time.time() < deadline:
            assert holder.poll() is None, "the first run ended early"
            time.sleep(0.2)
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid

        resumed = _cli("--resume", str(run))
        assert resumed.returncode == 2, resumed.stderr
        assert f"is in use by process {holder.pid} on host" in resumed.stderr
        assert len(resumed.stderr.strip().splitlines()) == 1 and resumed.stdout == ""

        # A sweep's task on that folder (the same run config, so it would resume) fails alike.
        config, schedule = load_run_config(run)
        outcome = train_run(RunSpec("ewc-true", 0, config, schedule, run, "cpu"))
        assert outcome.status == "failed"
        assert outcome.message.startswith("RunInUseError: ")
        assert "in use by process" in outcome.message
        assert holder.poll() is None  # neither disturbed the run that holds the folder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead process's lock; its file still names it, and is taken over.
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    resumed = _cli("--resume", str(run), "--quiet", "--stop-after-steps", "1")
    assert resumed.returncode == 3, resumed.stderr
    assert json.loads((run / LOCK_FILE).read_text())["pid"] not in (holder.pid, os.getpid())
    assert load_checkpoint(run)[0] > 0
