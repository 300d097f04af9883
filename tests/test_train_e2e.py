"""End to end: the real CLIs on real ROMs and real MinAtar with the smoke presets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import evaluate
import train_agent
from envs.schedule import Schedule
from envs.scores import reference_scores
from ewc_dqn import cli
from ewc_dqn.audit import audit_run
from ewc_dqn.checkpoint import latest_checkpoint, load_checkpoint
from ewc_dqn.run_folder import EVAL_CSV, SUMMARY_CSV, load_run
from ewc_dqn.run_plots import training_return_figure, training_returns

ROOT = Path(__file__).resolve().parents[1]
# Exact resume is a CPU guarantee (on CUDA only with --deterministic): pinned to the CPU, so the
# identity tests hold on a machine with a GPU too.
CPU = ["--device", "cpu"]
MINATAR = ["--preset", "smoke", "--games", "MinAtar/Breakout,MinAtar/Freeway", "--quiet", *CPU]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    _, state = load_checkpoint(run_dir)
    return {
        **{f"online/{k}": v for k, v in state["agent"]["online"].items()},
        **{f"target/{k}": v for k, v in state["agent"]["target"].items()},
    }


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _assert_totals_follow_eval_csv(run: Path) -> None:
    """eval_summary.csv's total_clipped is, at every evaluation, the sum over games of
    min(normalised, 1) from eval.csv, and each normalised score is (raw - random) /
    (reference - random) of its raw score."""
    ev, summary = pd.read_csv(run / EVAL_CSV), pd.read_csv(run / SUMMARY_CSV)
    assert np.isfinite(ev["normalised"]).all() and len(summary) > 0
    for game, rows in ev.groupby("game"):
        random, reference = reference_scores(game)
        want = (rows["raw_mean"] - random) / (reference - random)
        np.testing.assert_allclose(rows["normalised"], want, rtol=1e-12)
    clipped = ev.assign(clipped=np.minimum(ev["normalised"], 1.0))
    totals = clipped.groupby("eval_index")["clipped"].sum()
    np.testing.assert_allclose(summary["total_clipped"], totals[summary["eval_index"]], rtol=1e-12)


def test_atari_smoke_run_and_evaluate(tmp_path, capsys):
    run = tmp_path / "atari"
    assert train_agent.main(["--preset", "smoke", "--run-dir", str(run), "--quiet"]) == 0
    record = load_run(run)
    assert record.finished
    assert set(record.eval["game"]) == {"Pong", "Breakout"}
    assert len(record.summary) == 4  # one evaluation per visit
    _assert_totals_follow_eval_csv(run)
    assert (run / "total_score.png").exists() and (run / "per_game.png").exists()
    assert any((run / "tb").iterdir())
    config = json.loads((run / "config.json").read_text())
    assert config["variant"] == "ewc-true" and config["agent"]["gamma"] == 0.99
    out = tmp_path / "scores.json"
    assert evaluate.main([str(run), "--episodes", "1", "--frames", "400", "--json", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert set(scores["games"]) == {"Pong", "Breakout"}
    assert "no-op" in scores["protocol"]
    clipped = [min(g["normalised"], 1.0) for g in scores["games"].values()]
    assert scores["total_clipped"] == pytest.approx(sum(clipped), rel=1e-12)
    assert "total normalised score" in capsys.readouterr().out


def test_single_game_minatar_run_learns_nothing_broken(tmp_path):
    run = tmp_path / "one"
    code = train_agent.main(
        [
            "--preset",
            "smoke",
            "--game",
            "MinAtar/Breakout",
            "--steps",
            "1200",
            "--run-dir",
            str(run),
            "--quiet",
        ]
    )
    assert code == 0
    record = load_run(run)
    assert list(record.summary["game"]) == ["MinAtar/Breakout"]
    _, state = load_checkpoint(run)
    assert state["loop"]["step"] == 1200
    assert state["agent"]["updates"] > 0


def test_schedule_flags_from_the_command_line(tmp_path):
    # --games is combined with schedule flags that need explicit games; the budget sets visits.
    run = tmp_path / "run"
    argv = [*MINATAR, "--schedule.order", "given", "--schedule.visits-per-game", "3"]
    argv += ["--schedule.budget-frames", "1800", "--run-dir", str(run)]
    assert train_agent.main(argv) == 0
    schedule = Schedule.from_json((run / "schedule.json").read_text())
    assert [v.game for v in schedule.visits] == ["MinAtar/Breakout", "MinAtar/Freeway"] * 3
    assert {v.frames for v in schedule.visits} == {300}
    assert load_checkpoint(run)[1]["loop"]["step"] == 1800


def test_resume_gives_identical_weights(tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_agent.main([*MINATAR, "--run-dir", str(full)]) == 0
    # Stop at the checkpoint at 800 agent steps, then resume for the rest.
    code = train_agent.main([*MINATAR, "--run-dir", str(split), "--stop-after-steps", "800"])
    assert code == 3
    assert load_checkpoint(split)[0] == 800
    assert train_agent.main(["--resume", str(split), "--quiet", *CPU]) == 0
    _same_weights(full, split)
    assert load_run(full).summary.equals(load_run(split).summary)
    _assert_totals_follow_eval_csv(full)


@pytest.mark.parametrize(
    ("games", "visits", "flags", "variant"),
    [
        # L2: both games anchored by step 800 (at 300 and 600), Breakout's term replaced at 900.
        ("MinAtar/Breakout,MinAtar/Freeway", 2, ["--consolidation", "l2"], "l2-true"),
        # Rehearsal: Freeway (300-600) rehearses Breakout, Asterix (600-900) splits its share
        # between the two at random, before and after the stop.
        (
            "MinAtar/Breakout,MinAtar/Freeway,MinAtar/Asterix",
            1,
            ["--consolidation", "none", "--rehearsal.fraction", "0.25"],
            "rehearsal-true",
        ),
    ],
)
def test_l2_and_rehearsal_resume_gives_identical_weights(games, visits, flags, variant, tmp_path):
    """The baselines resume exactly: a run in one go, and one stopped at its checkpoint of agent
    step 800 and resumed for the rest, end with the same weights and scores."""
    full, split = tmp_path / "full", tmp_path / "split"
    args = ["--preset", "smoke", "--games", games, "--quiet", "--schedule.visit-frames", "300"]
    args += ["--schedule.visits-per-game", str(visits), "--consolidation-min-steps", "0", *flags]
    args += ["--log-every", "1"]  # every step logged: the audit sees every switch
    assert train_agent.main([*args, "--run-dir", str(full)]) == 0
    assert train_agent.main([*args, "--run-dir", str(split), "--stop-after-steps", "800"]) == 3
    assert load_checkpoint(split)[0] == 800
    assert train_agent.main(["--resume", str(split), "--quiet"]) == 0
    _same_weights(full, split)
    assert load_run(full).summary.equals(load_run(split).summary)
    # The logs say which method ran, and it kept the protocol's rules.
    assert json.loads((full / "config.json").read_text())["variant"] == variant
    report = audit_run(full)
    assert report.ok, report.describe()
    assert report.checked["consolidation"] == (3 if variant == "l2-true" else 0)
    assert (report.checked["ewc_active"] > 0) == (variant == "l2-true")
    log = pd.read_csv(full / "train.csv")
    assert not any(t.startswith("ewc/") for t in log["tag"])
    share = log[log["tag"] == "rehearsal/share"].set_index("step")["value"]
    if variant == "l2-true":  # every switch anchors the game left: 300, 600, 900
        events = log[log["tag"] == "l2/consolidated_task"]
        assert list(events["step"]) == [300, 600, 900] and list(events["value"]) == [0, 1, 0]
        penalty = log[log["tag"] == "losses/l2_penalty"].set_index("step")["value"]
        # Freeway's first update still has the weights of Breakout's anchor; then they move.
        assert penalty.loc[403] == 0 and len(penalty.loc[404:]) > 100
        assert (penalty.loc[404:] > 0).all()
        assert share.empty
    else:  # Breakout's updates (to step 300) have no other game; then a quarter of each batch
        assert len(share.loc[:400]) > 10 and (share.loc[:400] == 0).all()
        assert len(share.loc[701:]) > 10 and (share.loc[401:] == 0.25).all()


@pytest.mark.parametrize(
    "run", ["minatar-study/ewc-true/seed1", "minatar-study-before-id-reuse/ewc-inferred/seed0"]
)
def test_audit_reads_a_study_run_logged_every_few_thousand_steps(run):
    """A study's runs log every 5,000 steps, and evaluations and consolidations log between
    those lines: the audit checks what such logs can show and reports nothing false (the logs
    of results/, real runs of the ``minatar`` preset)."""
    report = audit_run(ROOT / "results" / run)
    assert report.ok, report.describe()
    assert report.checked["learning_start"] == 0 and report.checked["evaluation"] == 15
    assert report.checked["epsilon"] > 0 and report.checked["ewc_active"] > 0


def test_kill_9_between_checkpoints_resumes_exactly(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [*MINATAR, "--checkpoint-every", "200"]
    assert train_agent.main([*args, "--run-dir", str(full)]) == 0
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train_agent.py"), *args, "--run-dir", str(killed)], cwd=ROOT
    )
    deadline = time.time() + 120
    while latest_checkpoint(killed) is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest_checkpoint(killed) is not None
    assert not (killed / "final.json").exists()
    assert train_agent.main(["--resume", str(killed), "--quiet", *CPU]) == 0
    _same_weights(full, killed)
    assert load_run(full).summary.equals(load_run(killed).summary)


def test_sigterm_saves_a_checkpoint_and_resumes(tmp_path):
    run = tmp_path / "term"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train_agent.py"),
            *MINATAR,
            "--run-dir",
            str(run),
            "--checkpoint-every",
            "2400",  # the whole run: the checkpoint comes from the signal
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "train.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "--resume" in out and "Traceback" not in out
    step, _ = load_checkpoint(run)
    assert step > 0
    assert train_agent.main(["--resume", str(run), "--quiet", *CPU]) == 0
    assert load_run(run).finished


@pytest.fixture
def refused(capsys, monkeypatch):
    """Run an entry point's ``main(argv)`` in this process on input it must refuse: returns
    (exit status, stdout, stderr)."""
    monkeypatch.delenv("EWC_DQN_DEBUG", raising=False)

    def run(main, *argv: str) -> tuple[object, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    return run


def _one_line_error(err: str, message: str) -> None:
    assert message in err
    assert err.startswith("error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_the_script_refuses_bad_input_in_one_line(tmp_path):
    # The real script path once: the in-process tests below cover each message.
    result = subprocess.run(
        [sys.executable, "train_agent.py", "--game", "Pongg", "--run-dir", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EWC_DQN_DEBUG": ""},
    )
    assert result.returncode == 2
    _one_line_error(result.stderr, "did you mean 'Pong'")
    assert result.stdout == "" and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--game", "Pongg"], "did you mean 'Pong'"),
        (["--preset", "smokey"], "unknown preset"),
        (["--preset", "smoke", "--games", "Pong"], "at least 2 games"),
        (["--preset", "smoke", "--games", "Pong,Pongo"], "unknown game"),
        (["--preset", "minatar", "--game", "Pong"], "preset 'minatar' is for"),
        (["--preset", "smoke", "--game", "Pong", "--steps", "0"], "must be positive"),
        (["--preset", "smoke", "--game", "Pong", "--steps", "101"], "not a multiple of the 2"),
        (["--preset", "smoke", "--schedule.visit-frames", "804"], "not a whole number of steps"),
        (["--preset", "minatar", "--schedule.budget-frames", "1000001"], "try 999,990 or"),
        (["--preset", "smoke", "--ewc.lam", "-1"], "lam must be finite"),
        (["--preset", "smoke", "--ewc.exclude", "("], "not a regular expression"),
        (["--preset", "smoke", "--fmn.window", "0"], "window must be in"),
        (["--preset", "smoke", "--agent.lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_input_gives_one_line_errors(args, message, tmp_path, refused):
    code, out, err = refused(train_agent.main, *args, "--run-dir", str(tmp_path / "run"))
    assert code == 2
    _one_line_error(err, message)
    assert out == ""  # refused before the schedule is printed
    assert not (tmp_path / "run").exists()  # nothing written for a config that cannot run


def test_resume_of_a_folder_that_is_not_a_run(refused):
    code, _, err = refused(train_agent.main, "--resume", "/nonexistent/run")
    assert code == 2
    _one_line_error(err, "not a run folder")


def test_bad_flag_value_is_rejected_without_traceback(tmp_path, refused):
    # The flag parser's own usage message, not ours: exit status 2 and no traceback.
    run = str(tmp_path / "run")
    code, _, err = refused(
        train_agent.main, "--preset", "smoke", "--agent.lr", "fast", "--run-dir", run
    )
    assert code == 2 and "Traceback" not in err and "--agent.lr" in err
    assert not (tmp_path / "run").exists()


def test_existing_run_and_damaged_checkpoints_are_protected(tmp_path, refused):
    run = tmp_path / "run"
    assert (
        train_agent.main([*MINATAR, "--run-dir", str(run), "--schedule.visit-frames", "300"]) == 0
    )
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    code, _, err = refused(train_agent.main, *MINATAR, "--run-dir", str(run))
    assert code == 2
    _one_line_error(err, "already holds a run")
    code, _, err = refused(train_agent.main, "--resume", str(run), "--agent.lr", "0.1")
    assert code == 2
    _one_line_error(err, "saved config")
    assert before == {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    # A truncated newest checkpoint: evaluation names it and exits 2.
    ckpt = latest_checkpoint(run)
    tensors = ckpt / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    code, _, err = refused(evaluate.main, str(run))
    assert code == 2
    _one_line_error(err, "unreadable")
    code, _, err = refused(evaluate.main, str(tmp_path / "missing"))
    assert code == 2
    _one_line_error(err, "no such file")


def test_device_auto_is_cpu_here_and_cuda_is_refused_without_gpu(tmp_path):
    from ewc_dqn.run_builder import RunError, resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RunError, match="no CUDA"):
            resolve_device("cuda")


def test_replay_survives_resume(tmp_path):
    run = tmp_path / "r"
    train_agent.main([*MINATAR, "--run-dir", str(run), "--stop-after-steps", "400"])
    _, state = load_checkpoint(run)
    counts = [int(r["count"]) for r in state["replays"].values()]
    assert counts and all(c > 0 for c in counts)
    frames = next(iter(state["replays"].values()))["frames"]  # Chunks, as they were stored
    assert isinstance(np.asarray(frames), np.ndarray) and np.asarray(frames).shape[1] > 0


def test_evaluate_checkpoint_is_reproducible_and_labels_inferred(tmp_path):
    run = tmp_path / "run"
    args = [*MINATAR, "--run-dir", str(run), "--task-labels", "inferred"]
    assert train_agent.main([*args, "--schedule.visit-frames", "300"]) == 0
    # final.json: the label confusion table (steps per game and FMN task) covers every step.
    final = json.loads((run / "final.json").read_text())
    table = final["training_steps_by_task"]
    assert set(table) == {"MinAtar/Breakout", "MinAtar/Freeway"}
    assert sum(sum(row.values()) for row in table.values()) == final["step"] == 1200
    assert {int(task) for row in table.values() for task in row} == set(range(final["num_tasks"]))
    outs = []
    for name in ("a", "b", "c"):
        out = tmp_path / f"{name}.json"
        seed = "1" if name == "c" else "0"
        cli = ["checkpoint", str(run), "--episodes", "3", "--seed", seed, "--json", str(out)]
        assert evaluate.main(cli) == 0
        outs.append(json.loads(out.read_text()))
    assert outs[0]["games"] == outs[1]["games"]  # same seed, same numbers
    assert outs[0]["task_labels"] == "inferred"
    assert {g["task_id"] for g in outs[0]["games"].values()} <= set(range(20))
    returns = [[g["returns"] for g in o["games"].values()] for o in (outs[0], outs[2])]
    assert returns[0] != returns[1]  # another seed plays other episodes


def test_a_finished_run_plots_itstraining_returns_one_line_per_visit(tmp_path):
    """training_return.png: one panel per game, one line per visit of the game (nothing is
    learnt between visits, so no line may join two), drawn from train.csv's per-game returns."""
    run = tmp_path / "plots"
    games = ["--games", "MinAtar/Breakout,MinAtar/Asterix"]  # episodes shorter than a visit
    flags = ["--schedule.visits-per-game", "2", "--schedule.visit-frames", "800"]
    assert train_agent.main([*MINATAR, *games, *flags, "--run-dir", str(run)]) == 0
    assert (run / "training_return.png").exists()
    record = load_run(run)
    games = list(dict.fromkeys(record.eval["game"]))
    training = training_returns(run, games)
    assert set(training) == set(games)
    fig = training_return_figure(training, record.schedule, games, per_life=False)
    for ax, game in zip(fig.axes, training, strict=True):
        lines = ax.get_lines()
        assert len(lines) == sum(v["game"] == game for v in record.schedule) == 2
        plotted = np.concatenate([line.get_ydata() for line in lines])
        np.testing.assert_array_equal(plotted, training[game]["value"].to_numpy())


def test_an_exported_run_compares_like_the_run_and_keeps_no_checkpoint(tmp_path, capsys):
    """``ewc-dqn export`` keeps what compare reads: the comparison of the exported logs is the
    comparison of the run folder itself, number for number, without any checkpoint."""
    run = tmp_path / "runs" / "one"
    assert train_agent.main([*MINATAR, "--run-dir", str(run)]) == 0
    out = tmp_path / "results"
    assert cli.main(["export", str(run), "--out", str(out)]) == 0
    exported = out / "ewc-true" / "seed0"
    assert f"-> {exported} (finished)" in capsys.readouterr().out
    assert latest_checkpoint(run) is not None and latest_checkpoint(exported) is None
    assert not (exported / "tb").exists()
    summaries = []
    for folder, name in ((run, "a"), (exported, "b")):
        evaluate.main(["compare", str(folder), "--out", str(tmp_path / name), "--reps", "50"])
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        summaries.append(json.dumps(summary["groups"], sort_keys=True).replace(str(folder), "RUN"))
    assert summaries[0] == summaries[1]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", str(tmp_path / "nothing"), "--out", str(out)])
    assert exit_.value.code == 2
    assert "not run folders" in capsys.readouterr().err
