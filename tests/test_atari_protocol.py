"""The Atari protocol with its real defaults: the learning start is reached, configs that cannot
work are refused, and the whole ten-game protocol, scaled as a whole, fires every rule."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import train_agent
from envs.schedule import build_schedule
from ewc_dqn.audit import audit_run
from ewc_dqn.checkpoint import latest_checkpoint, load_checkpoint
from ewc_dqn.config import ATARI, ATARI_DRY, PRESETS, TrainConfig, scaled
from ewc_dqn.replay import FrameReplay
from ewc_dqn.run_builder import build_trainer, make_schedule, resolve_device, single_game_schedule

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train_agent.py"), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


@pytest.mark.parametrize("name,suite", [(n, s) for n, by in PRESETS.items() for s in by])
def test_every_preset_can_run_its_own_schedule(name, suite):
    config = PRESETS[name][suite]
    config.validate()
    config.check_schedule(build_schedule(config.schedule))
    # The learning start counts agent steps of a task, so any capacity reaches it; the replay
    # filled past its capacity (1x1 frames, the preset's copies and stack) must still give a
    # minibatch, though it holds a few transitions less than its capacity.
    n, stack = config.env.num_envs, config.env.frame_stack
    replay = FrameReplay(
        config.replay.capacity, n, (1, 1, 1), stack, config.agent.gamma, np.random.default_rng(0)
    )
    first = np.ones(n, dtype=bool)
    action, reward = np.zeros(n, np.int64), np.zeros(n)
    replay.add(np.zeros((n, 1, 1, 1), np.uint8), action, reward, ~first, ~first, first)
    for _ in range(config.replay.capacity // n + stack):
        replay.add(np.ones((n, 1, 1, 1), np.uint8), action, reward, ~first, ~first, ~first)
    assert config.agent.batch_size <= len(replay) <= config.replay.capacity
    assert replay.sample(config.agent.batch_size).obs.shape[0] == config.agent.batch_size


@pytest.mark.parametrize("name,suite", [(n, s) for n, by in PRESETS.items() for s in by])
def test_every_preset_makes_updates_at_its_own_ratios(name, suite, tmp_path):
    """Each preset scaled as a whole until its learning start is about 128 agent steps: its
    network (the preset's own), replay, copies and update period make updates from the start
    on, one per ``train_every`` agent steps (within the first visit: ``atari-dry``'s visits are
    already short)."""
    config = PRESETS[name][suite]
    small = scaled(config, min(1.0, 128 / config.agent.learning_starts))
    agent, n = small.agent, small.env.num_envs
    first_visit = small.schedule.visit_frames // small.frames_per_step
    stop = min(-(-(agent.learning_starts + 16 * agent.train_every) // n) * n, first_visit)
    small = replace(small, checkpoint_every=stop, save_replay=False, torch_threads=1)
    trainer = build_trainer(
        small, make_schedule(small), tmp_path, resolve_device("cpu"), show_progress=False
    )
    trainer.train(stop_after_steps=stop)
    trainer.close()
    assert trainer.step == stop and trainer.counters.steps[0] == stop
    # Updates from the first vectorised step at which the task's steps reach the start.
    opened = -(-agent.learning_starts // n) * n
    want = (stop - opened + n) // agent.train_every
    assert abs(trainer.agent.updates - want) <= 1, (trainer.agent.updates, want)


@pytest.mark.slow
def test_default_atari_preset_updates_once_its_learning_start_has_passed(tmp_path):
    """`--game Pong` with the atari preset's own learning start (50,000 agent steps) and replay
    (50,000 transitions, which a full buffer never quite holds): updates begin exactly at the
    start. Only the checkpoint period is set, to stop the run there."""
    start = ATARI.agent.learning_starts
    assert start == ATARI.replay.capacity == 50_000
    stop = start + 400
    run = tmp_path / "pong"
    proc = _cli(
        "--game",
        "Pong",
        "--steps",
        str(ATARI.agent.eps_decay_end),
        "--checkpoint-every",
        str(stop),
        "--stop-after-steps",
        str(stop),
        "--log-every",
        "10000",
        "--torch-threads",
        "1",
        "--run-dir",
        str(run),
        "--quiet",
    )
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode != 1, out
    _, state = load_checkpoint(latest_checkpoint(run), device="cpu")
    assert state["loop"]["step"] == stop
    # One update per 4 agent steps from the step at which the task's steps reach the start.
    assert state["agent"]["updates"] == (stop - start) // ATARI.agent.train_every + 1
    train = pd.read_csv(run / "train.csv")
    updates = train[train["tag"] == "perf/updates"].set_index("step")["value"]
    assert updates[start - 10_000] == 0 and updates[start] == 1


def _refused(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        train_agent.main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_configs_that_cannot_work_are_refused_before_anything_is_written(tmp_path, capsys):
    run = tmp_path / "never"
    pong = ("--game", "Pong", "--run-dir", str(run))
    err = _refused(capsys, *pong, "--steps", "40000")
    assert "agent.learning_starts" in err and "Pong" in err
    err = _refused(capsys, *pong, "--steps", "1000000")
    assert "agent.eps_decay_end" in err
    err = _refused(capsys, *pong, "--steps", "2000000", "--checkpoint-every", "3000000")
    assert "checkpoint_every" in err
    err = _refused(capsys, "--preset", "smoke", "--ewc.start-frames", "3000", "--run-dir", str(run))
    assert "ewc.start_frames" in err
    err = _refused(
        capsys,
        "--preset",
        "smoke",
        "--task-labels",
        "inferred",
        "--fmn.window",
        "64",
        "--fmn.episode-switch-steps",  # the preset's free span is two windows of 4
        "0",
        "--run-dir",
        str(run),
    )
    assert "fmn.window" in err
    minatar_inferred = ("--games", "MinAtar/Breakout,MinAtar/Freeway", "--task-labels", "inferred")
    for flag, value in (
        # MinAtar's window spans its own observation period, not Atari's.
        ("--fmn.minatar-update-period", "200"),
        # A game visited for less than a new task's probation could be merged into the one
        # before: 75 observations x 8 steps are the smoke preset's 600-step visit.
        ("--fmn.minatar-merge-observations", "75"),
    ):
        err = _refused(
            capsys, "--preset", "smoke", *minatar_inferred, flag, value, "--run-dir", str(run)
        )
        assert flag[2:].replace("-", "_") in err
    err = _refused(
        capsys,
        *("--preset", "smoke", "--task-labels", "inferred", "--run-dir", str(run)),
        *("--fmn.atari-merge-observations", "100000"),
    )
    assert "fmn.atari_merge_observations" in err
    assert not run.exists()


def test_refusals_name_the_game_that_falls_short():
    config = replace(ATARI, checkpoint_every=1)
    long = single_game_schedule("Pong", 5_000_000)
    config.check_schedule(long)
    with pytest.raises(ValueError, match="Breakout"):
        config.check_schedule(single_game_schedule("Breakout", 4 * 1_000_000))


def test_scaling_keeps_the_protocols_order_and_refuses_nonsense():
    dry = ATARI_DRY
    # The EWC delay stays one visit and the learning start stays a minibatch or more.
    assert dry.ewc.start_frames == dry.schedule.visit_frames
    assert dry.agent.learning_starts >= dry.agent.batch_size
    assert dry.agent.eps_decay_start <= dry.agent.eps_decay_end
    assert dry.schedule.visit_frames % (dry.env.num_envs * dry.env.frame_skip) == 0
    assert dry.network == ATARI.network and dry.env.frame_stack == 4 and dry.env.frame_skip == 4
    assert dry.agent.batch_size == ATARI.agent.batch_size
    assert dry.agent.train_every == ATARI.agent.train_every
    assert scaled(ATARI, 1.0) is ATARI
    for bad in (0.0, -1.0, 2.0, float("nan")):
        with pytest.raises(ValueError, match="scale"):
            scaled(ATARI, bad)


def test_scale_flag_scales_the_preset_and_keeps_explicit_overrides(tmp_path):
    from ewc_dqn.cli_config import default_config

    config = default_config(["--preset", "atari", "--scale", "2.5e-5"])
    assert config == ATARI_DRY
    assert isinstance(config, TrainConfig)


@pytest.mark.slow
def test_dry_run_of_the_atari_protocol_fires_every_rule(tmp_path):
    """The atari preset scaled as a whole: ten games, three visits each, paper network, full
    preprocessing, with true and with inferred labels side by side. The audit reads only the
    runs' own files."""
    runs = {labels: tmp_path / labels for labels in ("true", "inferred")}
    procs = {
        labels: _cli(
            "--preset",
            "atari-dry",
            "--task-labels",
            labels,
            "--torch-threads",
            "1",
            "--run-dir",
            str(run),
            "--quiet",
        )
        for labels, run in runs.items()
    }
    for proc in procs.values():
        out, _ = proc.communicate(timeout=1500)
        assert proc.returncode == 0, out[-3000:]
    for labels, run in runs.items():
        report = audit_run(run)
        assert report.ok, f"{labels} labels:\n{report.describe()}"
        checked = report.checked
        assert checked["evaluation"] == 30
        # Every switch between the 30 visits (inferred labels: the switches between the tasks
        # forget-me-not made, fewer where it put two games in one task).
        assert checked["consolidation"] >= (29 if labels == "true" else 20)
        # Every pair of consecutive vectorised steps (3,720 agent steps of 4 copies).
        assert checked["learning_start"] == 3720 // 4 - 1
        assert checked["ewc_active"] > 0
        ev = pd.read_csv(run / "eval.csv")
        assert ev["complete"].all() and len(ev) == 300
