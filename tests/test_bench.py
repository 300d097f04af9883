"""The benchmark scripts that must not rot: the GPU check runs end to end on the CPU."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import train_agent
from ewc_dqn.run_builder import load_trained_policy

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_the_cpu_and_prints_every_figure():
    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for run in ("no EWC, true labels", "EWC, true labels", "EWC, FMN labels"):
        line = next(line for line in text.splitlines() if line.startswith(run))
        steps = int(line.split("agent steps")[0].split()[-1].replace(",", ""))
        updates = int(line.split("updates in")[0].split()[-1].replace(",", ""))
        assert steps == 128 and updates > 0, line  # the timed half: visits 3 and 4 of 64 steps
    for figure in (
        "EWC penalty:",
        "FMN:",
        "projected training time of --preset atari at",
        "projected training time of --preset atari-short at",
        "penalty+backward, merged, K=10",
    ):
        assert figure in text, figure


def test_the_fisher_bench_runs_and_both_paths_agree():
    out = subprocess.run(
        [
            sys.executable, "bench/bench_ewc.py", "--device", "cpu", "--threads", "1", "--fisher",
            "--fisher-repeats", "1", "--fisher-batches", "2", "--fisher-paper-batches", "1",
            "--warmup", "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()]
    timed = [r for r in rows if len(r) == 6 and r[1] in ("torch.func", "batched")]
    assert [(r[0], r[1]) for r in timed] == [
        ("minatar", "torch.func"),
        ("minatar", "batched"),
        ("paper", "torch.func"),
        ("paper", "batched"),
    ]
    assert all(float(r[5]) < 1e-4 for r in timed)  # max relative difference of the two paths
    assert "MinAtar Fisher per 3,200 samples <= 1 s:" in out.stdout


def test_the_checkpoint_bench_runs_small_and_cleans_up(tmp_path):
    scratch = tmp_path / "bench"
    out = subprocess.run(
        [sys.executable, "bench/bench_checkpoint.py", "--replays", "2", "--capacity", "2000",
         "--between-steps", "4000", "--short-steps", "400", "--dir", str(scratch)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for save in ("first", "steady", "short", "again", "load"):
        for layout in ("chunked", "inline"):
            assert any(line.startswith(f"{save} {layout} ") for line in lines), (save, layout)
    assert any(line.startswith("resumed chunked ") for line in lines)
    assert sum(line.startswith("--preset atari") and "of run time" in line for line in lines) == 2
    added = {
        line.split()[0] + " " + line.split()[1]: float(line.split(" s")[1].split("GB")[0])
        for line in lines
        if line.split()[:1] in (["first"], ["short"])
    }
    assert added["short chunked"] < added["short inline"] / 1.5  # only the new chunks
    assert not scratch.exists()


def _bench_fmn():
    spec = importlib.util.spec_from_file_location("bench_fmn", ROOT / "bench" / "bench_fmn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_fmn"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_fmn_bench_streams_are_played_by_the_policies_given(tmp_path, monkeypatch):
    """``--policy`` plays the stream with the trained agents, in turn along the stream, in the
    single run and with ``--seeds`` alike (a stream said to be a trained agent's must be)."""
    bench = _bench_fmn()
    games = ["MinAtar/Breakout", "MinAtar/Freeway"]
    run = tmp_path / "run"
    flags = ["--preset", "smoke", "--games", ",".join(games), "--quiet", "--device", "cpu"]
    assert train_agent.main([*flags, "--run-dir", str(run)]) == 0
    agent = load_trained_policy(run, torch.device("cpu"))
    random_play = bench.make_stream(games, 4, 60, 0)[0]
    played = bench.make_stream(games, 4, 60, 0, [agent], epsilon=0.0)[0]
    assert not np.array_equal(random_play, played)
    # one agent given twice plays the stream it plays alone; a random half is another stream
    twice = bench.make_stream(games, 4, 60, 0, [agent, agent], epsilon=0.0)[0]
    np.testing.assert_array_equal(twice, played)
    half = bench.make_stream(games, 4, 60, 0, [agent], epsilon=1.0)[0]
    assert not np.array_equal(half, played)
    # two different agents: the first plays the first half of the visits, the second the rest
    still = copy.deepcopy(agent.network)
    with torch.no_grad():
        still.head.linear.weight.zero_()  # Q-values that ignore the frame: one action always
    other = dataclasses.replace(agent, network=still)
    mixed = bench.make_stream(games, 4, 60, 0, [agent, other], epsilon=0.0)[0]
    np.testing.assert_array_equal(mixed[:120], played[:120])
    assert not np.array_equal(mixed[120:], played[120:])
    swapped = bench.make_stream(games, 4, 60, 0, [other, agent], epsilon=0.0)[0]
    assert not np.array_equal(swapped[:120], played[:120])

    seen = []
    real = bench.run_fmn
    monkeypatch.setattr(
        bench, "run_fmn", lambda c, frames, firsts: seen.append(frames) or real(c, frames, firsts)
    )
    args = bench.Args(games=",".join(games), segments=4, segment_steps=60, seeds="0", epsilon=0.0)
    bench.run_seeds(args, games, [agent])
    np.testing.assert_array_equal(seen[0], played)


def test_joining_alternating_ids_joins_only_short_runs_handed_back_and_forth():
    bench = _bench_fmn()
    # ids 1 and 2 alternate in short runs four times; 3 follows in one long run; 4 and 5
    # alternate three times
    stream = np.array([1] * 5 + [2] * 3 + [1] * 4 + [2] * 2 + [1] * 3 + [3] * 50 + [4, 5, 4, 5])
    joined = bench.join_alternating(stream, short=8, handovers=4, mutual=False)
    np.testing.assert_array_equal(joined, np.where(stream == 2, 1, stream))
    assert np.array_equal(bench.join_alternating(stream, 8, 5, False), stream)  # too few
    assert np.array_equal(bench.join_alternating(stream, 4, 4, False), stream)  # runs too long
    both = bench.join_alternating(stream, short=8, handovers=3, mutual=False)
    assert set(np.unique(both)) == {1, 3, 4}
    # 6 alternates with 7 (8 handovers) and with 8 (5); 8 with 9 (9): 6-8 is neither 6's nor
    # 8's most frequent pair, so "mutual" keeps 6-7 and 8-9 apart, and plain joining does not
    hub = np.array([6, 7] * 4 + [6] + [8, 6] * 2 + [8] + [9, 8] * 4 + [9])
    assert set(np.unique(bench.join_alternating(hub, 1, 5, mutual=True))) == {6, 8}
    assert set(np.unique(bench.join_alternating(hub, 1, 5, mutual=False))) == {6}
    # a favourite with a lower id counts too: 12's is 11 (7 handovers against 5 with 13), 13's
    # is 14 (9), so 12-13 stays apart
    chain = np.array([11, 12] * 4 + [13, 12] * 2 + [13] + [14, 13] * 4 + [14])
    assert set(np.unique(bench.join_alternating(chain, 1, 5, mutual=True))) == {11, 13}


def test_the_fmn_bench_joins_alternations_on_seeded_streams_and_refuses_bad_rules(capsys):
    """``--join-alternations`` works with ``--seeds`` (a line per rule after each seed's line,
    naming the games that then share a task), and a malformed rule stops before any play."""
    bench = _bench_fmn()
    games = ["MinAtar/Breakout", "MinAtar/Freeway"]
    args = bench.Args(
        games=",".join(games), segments=4, segment_steps=60, seeds="0,1", join_alternations="8:2"
    )
    bench.run_seeds(args, games)
    lines = capsys.readouterr().out.splitlines()
    seeds = [i for i, line in enumerate(lines) if line.startswith("seed")]
    assert len(seeds) == 2
    for i in seeds:
        assert lines[i + 1].startswith("  alternations joined (8:2): ARI ")
        assert "merged [" in lines[i + 1]
    bench.main(dataclasses.replace(args, seeds=""))  # the single run prints them too
    assert "  alternations joined (8:2): ARI " in capsys.readouterr().out
    assert bench.join_rules("8:2,100:3:mutual") == [(8, 2, False), (100, 3, True)]
    for bad in ("8", "8:x", "8:2:both", "-1:2"):
        with pytest.raises(SystemExit, match="not L:K"):
            bench.join_rules(bad)


def test_the_fmn_bench_passes_every_fmn_setting_it_offers():
    """Each ``Args`` field named as an ``FMNConfig`` field reaches the config the bench runs
    (a flag that is parsed and then dropped would measure the default under another name)."""
    bench = _bench_fmn()
    shared = [
        f for f in dataclasses.fields(bench.Args) if f.name in bench.FMNConfig.__dataclass_fields__
    ]
    assert {f.name for f in shared} >= {"minatar_pool_weight", "minatar_shrinkage", "max_tasks"}
    for field in shared:
        default = getattr(bench.FMNConfig(), field.name)
        if isinstance(default, str):
            other = "level-planes" if default != "level-planes" else "pixels"
        else:
            other = default + (3 if isinstance(default, int) else 0.5)
        config = bench.fmn_config(dataclasses.replace(bench.Args(), **{field.name: other}))
        assert getattr(config, field.name) == other, field.name


def test_the_fmn_bench_times_observe_with_the_caches_emptied(capsys):
    """``--evict-mib`` times observe() with memory written between calls (what the training
    loop's updates do) beside the plain first pass, and refuses the paths it does not time."""
    bench = _bench_fmn()
    games = "MinAtar/Breakout,MinAtar/Freeway"
    bench.main(bench.Args(games=games, segments=2, segment_steps=200, evict_mib=1))
    line = next(x for x in capsys.readouterr().out.splitlines() if "MiB written between calls" in x)
    evicted, plain = (float(v) for v in re.findall(r"(\d+\.\d) ", line + " ")[:2])
    assert evicted > 0 and plain > 0
    for bad in ({"evict_mib": -1}, {"evict_mib": 1, "seeds": "0"}, {"evict_mib": 1, "draws": 1}):
        with pytest.raises(SystemExit, match="--evict-mib"):
            bench.main(bench.Args(games=games, segments=2, segment_steps=200, **bad))


def test_the_fmn_bench_streams_mark_episode_starts_and_reset_visits_on_request(monkeypatch):
    """``make_stream`` marks every frame that starts an episode; with ``reset_visits`` every
    visit starts one (as in training), without it a revisit goes on with the game's episode.
    ``--reset-visits`` and the marks reach the FMN run."""
    bench = _bench_fmn()
    games = ["MinAtar/Breakout", "MinAtar/Freeway"]
    kept = bench.make_stream(games, 4, 60, 0)
    reset = bench.make_stream(games, 4, 60, 0, reset_visits=True)
    assert reset.episode_starts[reset.starts].all()
    assert not kept.episode_starts[kept.starts[2:]].all()  # Freeway's episodes outlast a visit
    for stream in (kept, reset):
        assert stream.episode_starts.shape == (240,) and stream.episode_starts[0]
        breakout = stream.episode_starts[stream.labels == 0]
        assert breakout[1:].any()  # random Breakout loses its ball within a visit
    np.testing.assert_array_equal(kept.frames[:120], reset.frames[:120])  # first visits alike
    assert not np.array_equal(kept.frames[120:], reset.frames[120:])

    seen = []
    real = bench.run_fmn
    monkeypatch.setattr(
        bench, "run_fmn", lambda c, frames, firsts: seen.append(firsts) or real(c, frames, firsts)
    )
    args = bench.Args(games=",".join(games), segments=4, segment_steps=60, seeds="0")
    bench.run_seeds(dataclasses.replace(args, reset_visits=True), games)
    np.testing.assert_array_equal(seen[0], reset.episode_starts)


def test_the_fmn_bench_measures_evaluation_labels_frame_by_frame(capsys):
    """The evaluation labels are ``infer`` on each ``eval_every``-th frame of the observed
    stream, each frame on its own (not the training labels ``observe`` gave): their ARI, and the
    least share of a game's frames given its main training task; the seeded runs print both."""
    bench = _bench_fmn()
    games = ["MinAtar/Breakout", "MinAtar/Freeway"]
    stream = bench.make_stream(games, 4, 1500, 0, reset_visits=True)
    frames, labels = stream.frames, stream.labels
    predicted, _, fmn = bench.run_fmn(bench.FMNConfig(), frames, stream.episode_starts)
    inferred = np.array([fmn.infer(frame) for frame in frames])
    ari, share = bench.eval_labels(fmn, frames, labels, predicted, 1)
    assert ari == adjusted_rand_score(labels, inferred) >= 0.95 and share >= 0.95
    third = adjusted_rand_score(labels[::3], inferred[::3])
    assert bench.eval_labels(fmn, frames, labels, predicted, 3)[0] == third
    # an FMN that has seen one game only gives every frame that game's task: the other game's
    # frames are not in their main task (training labels that tell the games apart)
    first = labels == labels[0]
    _, _, one = bench.run_fmn(bench.FMNConfig(), frames[first], stream.episode_starts[first])
    assert bench.eval_labels(one, frames, labels, predicted, 1) == (0.0, 0.0)
    # ... which is right for the frames picked when they are all of that game (visits 1 and 3)
    assert bench.eval_labels(one, frames, labels, predicted, 3000) == (1.0, 1.0)
    args = bench.Args(games=",".join(games), segments=2, segment_steps=300, seeds="0", eval_every=5)
    bench.run_seeds(args, games)
    assert re.search(r"eval ARI \d\.\d{3} \(share \d\.\d\d\)", capsys.readouterr().out)
    with pytest.raises(SystemExit, match="--eval-every"):
        bench.main(dataclasses.replace(args, eval_every=0))
