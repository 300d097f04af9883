"""Bad input is one line on stderr and exit status 2, with nothing half-made on disk: run folders
that cannot be made, resumes that do not fit, a full disk, impossible settings. A bug is not bad
input: it keeps its traceback (tests/test_crash_resume.py runs one)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import evaluate
import train_agent
from envs.games import UnknownGameError
from ewc_dqn import checkpoint
from ewc_dqn.checkpoint import (
    CheckpointError,
    chunks_of,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ewc_dqn.chunk_store import CHUNK_DIR
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.compare import CompareError
from ewc_dqn.config import TrainConfig, preset
from ewc_dqn.errors import UserError
from ewc_dqn.run_builder import RunError, build_trainer, make_schedule, resolve_device
from ewc_dqn.run_lock import LOCK_FILE
from ewc_dqn.sweep import sweep_main

ROOT = Path(__file__).resolve().parents[1]
GAMES = "MinAtar/Breakout,MinAtar/Freeway"
RUN = ["--preset", "smoke", "--games", GAMES, "--quiet", "--schedule.visit-frames", "300"]


def _main_error(main, argv: list[str], capsys) -> str:
    """The one line a command line printed for bad input (exit status 2, nothing on stdout)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, (out, err)
    return err


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the lock (which names its last holder), with contents."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> Path:
    """A run stopped at its checkpoint of step 400, to resume or evaluate."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    assert train_agent.main([*RUN, "--run-dir", str(run), "--stop-after-steps", "400"]) == 3
    return run


@pytest.fixture
def run(stopped, tmp_path) -> Path:
    """A copy of the stopped run for one test to damage."""
    copy = tmp_path / "run"
    shutil.copytree(stopped, copy)
    return copy


# --- what counts as bad input ---------------------------------------------------------------


def test_only_user_errors_become_one_line(capsys):
    with pytest.raises(SystemExit) as exit_, exit_on_user_errors():
        raise UserError("a bad\n   flag")
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: a bad flag\n"
    with pytest.raises(ValueError, match="an internal check"), exit_on_user_errors():
        raise ValueError("an internal check")  # a bug: its traceback is kept
    for error in (RunError, CheckpointError, CompareError, UnknownGameError):
        assert issubclass(error, UserError)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network.max-tasks", "1"], "has 2 games, each its own task with true labels"),
        (["--stop-after-steps", "-1"], "--stop-after-steps must be a positive number"),
        (["--stop-after-steps", "0"], "--stop-after-steps must be a positive number"),
        (["--consolidation", "l3"], "unknown --consolidation 'l3'; expected one of ewc, online-"),
        (["--consolidation=EWC"], "unknown --consolidation 'EWC'; expected one of ewc, online-"),
        (["--ewc.mode", "online"], "--ewc.mode was replaced by --consolidation: use --consol"),
        (["--ewc.mode=separate"], "--ewc.mode was replaced by --consolidation: use --consol"),
        (["--no-ewc", "--consolidation", "l2"], "--no-ewc is --consolidation none; give one"),
        (["--ewc.l2-lam", "-1"], "ewc l2_lam must be finite and >= 0, got -1.0"),
        (["--ewc.l2-lam", "inf"], "ewc l2_lam must be finite and >= 0, got inf"),
        (["--rehearsal.fraction", "1"], "rehearsal.fraction must be in [0, 1), got 1.0"),
        (["--rehearsal.fraction", "-0.5"], "rehearsal.fraction must be in [0, 1), got -0.5"),
        (["--rehearsal.fraction", "0.01"], "rounds to no rehearsed transition; use more than"),
        (["--rehearsal.fraction", "0.99"], "rounds to the whole minibatch, leaving none of"),
        # two windows of the suite's frames: 32 agent steps is enough on Atari, not on MinAtar
        (
            ["--task-labels", "inferred", "--fmn.episode-switch-steps", "32"],
            "episode_switch_steps must be 0 (off) or >= 64 agent steps on MinAtar frames",
        ),
    ],
)
def test_impossible_settings_are_refused(args, message, tmp_path, capsys):
    err = _main_error(train_agent.main, [*RUN, *args, "--run-dir", str(tmp_path / "r")], capsys)
    assert message in err
    assert not (tmp_path / "r").exists()


def test_rehearsal_needs_another_game(tmp_path, capsys):
    argv = ["--preset", "smoke", "--game", "MinAtar/Breakout", "--steps", "400"]
    argv += ["--rehearsal.fraction", "0.25", "--run-dir", str(tmp_path / "r")]
    err = _main_error(train_agent.main, argv, capsys)
    assert "rehearsal needs a schedule of two games or more" in err
    assert not (tmp_path / "r").exists()


def test_no_ewc_is_consolidation_none(tmp_path):
    configs = {}
    for name, flags in {"no-ewc": ["--no-ewc"], "none": ["--consolidation", "none"]}.items():
        run = tmp_path / name
        argv = [*RUN, *flags, "--run-dir", str(run), "--stop-after-steps", "300"]
        assert train_agent.main(argv) == 3
        configs[name] = json.loads((run / "config.json").read_text())
        assert "ewc" not in load_checkpoint(run)[1]  # no consolidation state at all
    assert configs["no-ewc"] == configs["none"]
    assert configs["none"]["consolidation"] == "none" and configs["none"]["variant"] == "no-ewc"


@pytest.mark.parametrize(
    ("legacy", "refusal"),
    [
        ({"no_ewc": False, "mode": "separate"}, None),  # = ewc: the run's own consolidation
        ({"mode": "separate"}, None),
        ({"no_ewc": True, "mode": "separate"}, "and this run is --consolidation none"),
        ({"no_ewc": False, "mode": "online"}, "this consolidator is 'online-ewc'"),
    ],
)
def test_a_run_folder_from_before_consolidation_resumes_as_it_was(legacy, refusal, run, capsys):
    """config.json of earlier versions has no_ewc and ewc.mode, not consolidation. The stopped
    run is EWC: written the old way it resumes; read as no-EWC or online EWC its checkpoint does
    not fit (so each old value is read as what it meant)."""
    config = json.loads((run / "config.json").read_text())
    del config["consolidation"]
    config["ewc"]["mode"] = legacy["mode"]
    if "no_ewc" in legacy:
        config["no_ewc"] = legacy["no_ewc"]
    (run / "config.json").write_text(json.dumps(config))
    if refusal is None:
        assert train_agent.main(["--resume", str(run), "--quiet"]) == 0
        assert load_checkpoint(run)[1]["loop"]["step"] == 1200
    else:
        err = _main_error(train_agent.main, ["--resume", str(run), "--quiet"], capsys)
        assert "does not fit this run" in err and refusal in err


def test_a_sweep_refuses_too_few_task_parameter_sets(tmp_path, capsys):
    argv = [*RUN[:4], "--network.max-tasks", "1", "--out", str(tmp_path / "sweep")]
    assert "raise --network.max-tasks to 2" in _main_error(sweep_main, argv, capsys)
    assert not (tmp_path / "sweep").exists()


# --- run folders that cannot be made ------------------------------------------------------


def test_a_run_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("mine")
    err = _main_error(train_agent.main, [*RUN, "--run-dir", str(tmp_path / "taken")], capsys)
    assert "is a file, not a folder" in err
    err = _main_error(train_agent.main, [*RUN, "--run-dir", str(tmp_path / "taken/r")], capsys)
    assert "is a file, not a folder" in err
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("parent/" + "n" * 300 + "/run", "a folder name is longer than the filesystem's 255"),
        ("parent/" + "/".join(["d" * 200] * 21), "its path is too long"),
    ],
)
def test_a_run_folder_path_too_long_leaves_nothing_behind(tail, message, tmp_path, capsys):
    argv = [*RUN, "--run-dir", str(tmp_path / tail)]
    for _ in range(2):  # the same command again gets the same answer
        assert message in _main_error(train_agent.main, argv, capsys)
        assert list(tmp_path.iterdir()) == []


def _read_only(folder: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``python argv`` with ``folder`` read-only to it: a read-only bind mount in a mount
    namespace of its own (also for root, whom permissions do not stop), else chmod."""
    command = [sys.executable, *argv]
    env = {**os.environ, "EWC_DQN_DEBUG": ""}
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"]).returncode == 0:
        script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", script, str(folder), *command]
    elif os.geteuid() != 0:
        folder.chmod(0o555)
    else:
        pytest.skip("needs unshare (a mount namespace) or a user other than root")
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    finally:
        folder.chmod(0o755)


def test_a_run_folder_whose_parent_cannot_be_written(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    result = _read_only(parent, ["train_agent.py", *RUN, "--run-dir", str(parent / "a/run")])
    assert result.returncode == 2, result.stderr
    assert f"cannot make run folder {parent}/a/run: {parent} is not writable" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(parent.iterdir()) == []


# --- resumes that do not fit --------------------------------------------------------------


def _state_json_field(run: Path, field: str, value) -> None:
    ckpt = latest_checkpoint(run)
    doc = json.loads((ckpt / "state.json").read_text())
    doc["state"]["__dict__"]["loop"]["__dict__"][field] = value
    (ckpt / "state.json").write_text(json.dumps(doc))


def _foreign_checkpoint(run: Path, config: TrainConfig) -> None:
    """A newer checkpoint written by a run of another config (suite, network, variant)."""
    (run / "other").mkdir()
    trainer = build_trainer(
        config, make_schedule(config), run / "other", resolve_device("cpu"), show_progress=False
    )
    save_checkpoint(run, 10_000, trainer.state_dict())
    trainer.close()
    shutil.rmtree(run / "other")


MINATAR = preset("smoke", "minatar")
DAMAGE = {
    "state-type": lambda run: _state_json_field(run, "current_task", "zero"),
    "state-list": lambda run: _state_json_field(run, "label_counts", 7),
    "other-suite": lambda run: _foreign_checkpoint(run, preset("smoke", "atari")),
    "other-network": lambda run: _foreign_checkpoint(
        run, replace(MINATAR, network=replace(MINATAR.network, max_tasks=3))
    ),
    "no-ewc-into-ewc": lambda run: _foreign_checkpoint(run, replace(MINATAR, consolidation="none")),
    "l2-into-ewc": lambda run: _foreign_checkpoint(run, replace(MINATAR, consolidation="l2")),
}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("state-type", "loop.current_task must be int or null, got 'zero'"),
        ("state-list", "loop.label_counts must be list, got 7"),
        ("other-suite", "(ewc-true, minatar, network minatar): Error(s) in loading state_dict"),
        ("other-network", "Missing key(s) in state_dict"),
        ("no-ewc-into-ewc", "no consolidation terms (a --consolidation none run's) and this "),
        ("l2-into-ewc", "EWC state was saved in mode 'separate' with metric 'uniform'"),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_refused(damage, message, run, capsys):
    DAMAGE[damage](run)
    before = _files(run)
    err = _main_error(train_agent.main, ["--resume", str(run), "--quiet"], capsys)
    assert "does not fit this run" in err and message in err
    assert _files(run) == before  # no log cut, no TensorBoard file, nothing renamed


def test_missing_chunks_are_one_line_for_resume_and_no_matter_to_evaluate(run, capsys):
    checkpoints = list_checkpoints(run)
    assert chunks_of(checkpoints[-1])  # the replays' frames are chunks
    shutil.rmtree(run / "checkpoints" / CHUNK_DIR)  # every checkpoint damaged: an error
    before = _files(run)
    err = _main_error(train_agent.main, ["--resume", str(run), "--quiet"], capsys)
    assert f"{run} holds no loadable checkpoint (" in err
    for folder in checkpoints:
        assert f"{folder.name}: checkpoint {folder} is damaged: chunk " in err
    assert _files(run) == before  # nothing renamed or deleted
    # Evaluation reads the network and the task inference only, never a replay's frames or
    # an EWC term (gigabytes at Atari scale), so their chunks are not needed to score it.
    assert evaluate.main([str(checkpoints[-1]), "--episodes", "1"]) in (0, None)
    assert "total" in capsys.readouterr().out


def test_a_config_value_of_the_wrong_type_is_refused_on_resume(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["agent"]["lr"] = "fast"
    (run / "config.json").write_text(json.dumps(config))
    before = _files(run)
    err = _main_error(train_agent.main, ["--resume", str(run)], capsys)
    assert "holds an unreadable run config: config field agent.lr must be a float" in err
    assert _files(run) == before


def test_a_resume_takes_a_thread_count_for_its_process_and_no_other_setting(run, capsys):
    config = (run / "config.json").read_text()
    err = _main_error(train_agent.main, ["--resume", str(run), "--agent.lr", "0.1"], capsys)
    assert err.strip() == "error: --resume takes the run's saved config; drop --agent.lr"
    before = torch.get_num_threads()
    try:
        argv = ["--resume", str(run), "--torch-threads", "2", "--stop-after-steps", "500"]
        assert train_agent.main([*argv, "--quiet"]) == 3
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert (run / "config.json").read_text() == config  # the run's own setting is kept


# --- a full disk --------------------------------------------------------------------------


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_older_ones(run, monkeypatch, capsys):
    write = checkpoint._write_synced

    def full_disk(path: Path, data: bytes) -> None:
        if "step_000000000600" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write(path, data)

    monkeypatch.setattr(checkpoint, "_write_synced", full_disk)
    err = _main_error(train_agent.main, ["--resume", str(run), "--quiet"], capsys)
    assert "step_000000000600: No space left on device; the checkpoints written before" in err
    assert [p.name for p in list_checkpoints(run)] == ["step_000000000300", "step_000000000400"]
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    assert train_agent.main(["--resume", str(run), "--quiet"]) == 0  # once there is room


def test_a_full_tmpfs_during_a_checkpoint(tmp_path):
    if not (shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"]).returncode == 0):
        pytest.skip("needs unshare to mount a tmpfs in a mount namespace of its own")
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    # 9 MB hold two checkpoints of this run but not the third beside them.
    script = (
        'disk="$0" kept="$1"; shift; mount -t tmpfs -o size=9m tmpfs "$disk" && "$@"; '
        'code=$?; cp -a "$disk/run" "$kept"; exit $code'
    )
    train = [sys.executable, "train_agent.py", *RUN, "--run-dir", str(disk / "run")]
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(disk), str(kept), *train],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "EWC_DQN_DEBUG": ""},
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: cannot write checkpoint ") and "No space left on device" in line
    assert len(list_checkpoints(kept)) == 2  # the two before it, complete and loadable
    assert [p.name for p in (kept / "checkpoints").iterdir() if p.name.startswith(".")] == []
    resumed = subprocess.run(
        [sys.executable, "train_agent.py", "--resume", str(kept), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr


# --- evaluate.py --json -------------------------------------------------------------------


def test_evaluate_checks_its_json_file_before_evaluating(stopped, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    err = _main_error(
        evaluate.main, [str(stopped), "--json", str(tmp_path / "a-file/scores.json")], capsys
    )
    assert "is a file, not a folder" in err
    err = _main_error(evaluate.main, [str(stopped), "--json", str(tmp_path)], capsys)
    assert "is a folder, not a file" in err
    out = tmp_path / "out"
    out.mkdir()
    result = _read_only(out, ["evaluate.py", str(stopped), "--json", str(out / "s.json")])
    assert result.returncode == 2 and result.stdout == ""  # refused before any score
    assert f"cannot write in the folder of --json {out}: {out} is not writable" in result.stderr
