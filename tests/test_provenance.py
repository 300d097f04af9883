"""provenance.json: written at run creation, checked on resume, compared by evaluate.py compare."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch
from ale_py import roms

import train_agent
from ewc_dqn.compare import compare_runs
from ewc_dqn.config import preset
from ewc_dqn.provenance import (
    PROVENANCE_FILE,
    ProvenanceError,
    differences,
    git_state,
    read_provenance,
)
from ewc_dqn.run_builder import make_schedule, start_run

ROOT = Path(__file__).resolve().parents[1]


def _new_atari_run(run: Path) -> None:
    config = preset("smoke", "atari")
    start_run(config, make_schedule(config), run, device="cpu", show_progress=False)


def test_a_new_run_records_versions_roms_commit_and_device(tmp_path):
    run = tmp_path / "run"
    _new_atari_run(run)
    record = read_provenance(run)
    assert record is not None
    assert set(record["packages"]) == {
        "torch",
        "numpy",
        "ale-py",
        "gymnasium",
        "minatar",
        "ewc-dqn",
    }
    assert all(record["packages"][p] for p in ("torch", "numpy", "ale-py", "ewc-dqn"))
    for game, rom_id in (("Pong", "pong"), ("Breakout", "breakout")):
        assert (
            record["roms"][game] == hashlib.md5(roms.get_rom_path(rom_id).read_bytes()).hexdigest()
        )
    assert record["device"] == "cpu" and record["torch_threads"] >= 1
    # the kernels' instruction set: runs on CPUs that differ in it differ in their floats
    assert record["cpu"]["capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpu"]["model"]
    if (ROOT / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert record["git"]["commit"] == head and isinstance(record["git"]["dirty"], bool)


def test_no_git_checkout_is_recorded_as_null(tmp_path):
    assert git_state(tmp_path) is None
    assert git_state(tmp_path / "missing") is None


def test_resume_refuses_a_run_made_with_other_roms(tmp_path, capsys):
    run = tmp_path / "run"
    _new_atari_run(run)
    start_run(None, None, run, device="cpu", resume=True, show_progress=False)  # same ROMs: fine
    path = run / PROVENANCE_FILE
    record = json.loads(path.read_text())
    record["roms"]["Breakout"] = "0" * 32
    path.write_text(json.dumps(record))
    with pytest.raises(ProvenanceError, match="Breakout"):
        start_run(None, None, run, device="cpu", resume=True, show_progress=False)
    with pytest.raises(SystemExit) as exc:
        train_agent.main(["--resume", str(run), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "other ROMs" in err and "\n" not in err


def test_differences_name_the_runs_and_ignore_unplayed_games():
    a = {"python": "3.11.7", "packages": {"torch": "2.13.0"}, "roms": {"Pong": "x"}}
    b = {"python": "3.11.7", "packages": {"torch": "2.12.0"}, "roms": {"Pong": "x", "Boxing": "y"}}
    assert differences({"a": a, "b": b}) == ["torch: 2.13.0 in a; 2.12.0 in b"]
    assert differences({"a": a, "a2": a}) == []


def test_differences_include_the_device_and_the_cpu_instruction_set():
    base = {"python": "3.11.7", "packages": {"torch": "2.13.0"}, "roms": {}}
    avx512 = {**base, "device": "cpu", "cpu": {"model": "EPYC", "capability": "AVX512"}}
    avx2 = {**base, "device": "cpu", "cpu": {"model": "Xeon", "capability": "AVX2"}}
    assert differences({"a": avx512, "b": avx2}) == ["cpu instruction set: AVX512 in a; AVX2 in b"]
    # Another CPU model with the same kernels is no clash, nor is a record made before the
    # CPU was kept.
    assert (
        differences({"a": avx512, "b": {**avx512, "cpu": {"model": "X", "capability": "AVX512"}}})
        == []
    )
    assert differences({"a": avx512, "old": base}) == []
    card0 = {**avx512, "device": "cuda:0 (NVIDIA H200)"}
    card1 = {**avx512, "device": "cuda:1 (NVIDIA H200)"}
    assert differences({"a": card0, "b": card1}) == []
    assert differences({"a": card0, "b": avx512}) == ["device: NVIDIA H200 in a; cpu in b"]
    unnamed = [{**avx512, "device": d} for d in ("cuda:0", "cuda:1")]  # no card name recorded
    assert differences(dict(zip("ab", unnamed, strict=True))) == []


@pytest.mark.slow
def test_compare_warns_about_runs_made_with_other_versions(tmp_path):
    runs = [tmp_path / "seed0", tmp_path / "seed1"]
    for seed, run in enumerate(runs):
        args = ["--preset", "smoke", "--game", "MinAtar/Breakout", "--steps", "200"]
        args += ["--checkpoint-every", "200"]
        assert train_agent.main([*args, "--seed", str(seed), "--run-dir", str(run), "--quiet"]) == 0
    same = compare_runs(runs, tmp_path / "same", reps=20, poi_reps=20)
    assert not any("different" in n for n in same.notes)
    path = runs[1] / PROVENANCE_FILE
    record = json.loads(path.read_text())
    record["packages"]["gymnasium"] = "0.29.1"
    path.write_text(json.dumps(record))
    result = compare_runs(runs, tmp_path / "differ", reps=20, poi_reps=20)
    warning = [n for n in result.notes if n.startswith("warning: runs made with different")]
    assert len(warning) == 1 and "gymnasium" in warning[0] and "0.29.1" in warning[0]
    assert warning[0] in (tmp_path / "differ" / "report.md").read_text()
