"""Checkpoints: exact round trips, atomic writes (a save killed mid-write included), no code
execution, clear errors."""

import os
import select
import signal
import time

import numpy as np
import pytest
import torch

from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from ewc_dqn.networks import NetworkConfig, QNetwork
from ewc_dqn.transition import Transition


def _state():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    return {
        "net": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.float64)},
        "optimizer": opt.state_dict(),  # int keys and tuples inside
        "replay": {"frames": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "count": 7},
        "rng": np.random.default_rng(3).bit_generator.state,  # big ints
        "misc": [1, 2.5, "x", None, True, (1, 2)],
    }


def test_round_trip_is_exact(tmp_path):
    state = _state()
    save_checkpoint(tmp_path, 10, state)
    step, back = load_checkpoint(tmp_path)
    assert step == 10
    assert torch.equal(back["net"]["w"], state["net"]["w"])
    assert back["net"]["b"].dtype == torch.float64
    assert isinstance(back["replay"]["frames"], np.ndarray)
    np.testing.assert_array_equal(back["replay"]["frames"], state["replay"]["frames"])
    assert back["rng"] == state["rng"]
    assert back["misc"] == [1, 2.5, "x", None, True, (1, 2)]
    assert set(back["optimizer"]["state"]) == {0}
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    back["optimizer"]["param_groups"][0]["betas"] = tuple(
        back["optimizer"]["param_groups"][0]["betas"]
    )
    opt.load_state_dict(back["optimizer"])


def test_keeps_newest_and_ignores_incomplete(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"x": torch.tensor([step])}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step_000000000003",
        "step_000000000004",
    ]
    # A crash mid-write leaves a hidden temporary folder or a folder without COMPLETE: ignored.
    (tmp_path / "checkpoints" / ".tmp-step_000000000005-1").mkdir()
    half = tmp_path / "checkpoints" / "step_000000000006"
    half.mkdir()
    (half / "state.json").write_text("{")
    assert latest_checkpoint(tmp_path).name == "step_000000000004"
    assert load_checkpoint(tmp_path)[0] == 4
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(half)


def test_truncated_and_missing_checkpoints_fail_clearly(tmp_path):
    ckpt = save_checkpoint(tmp_path, 5, {"x": torch.ones(1000)})
    data = (ckpt / "tensors.safetensors").read_bytes()
    (ckpt / "tensors.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_checkpoint(empty)


def test_unsupported_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot checkpoint"):
        save_checkpoint(tmp_path, 1, {"f": lambda: 0})
    assert latest_checkpoint(tmp_path) is None


def _agent_state() -> dict:
    """A real agent's state: the paper's network, its target and centred-RMSprop statistics
    after one update (about 100 MB)."""
    torch.manual_seed(0)
    net = QNetwork((4, 84, 84), 18, NetworkConfig(arch="paper", max_tasks=2))
    agent = DQNAgent(net, AgentConfig(batch_size=4, learning_starts=4), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8, generator=gen)
    batch = Transition(
        frames[:4], torch.arange(4), torch.ones(4), torch.full((4,), 0.99), frames[1:]
    )
    agent.update(batch, task_id=1)
    return {"agent": agent.state_dict(), "marker": torch.ones(1000), "step": 1}


def _save_and_kill(run_dir, step: int, state: dict, delay: float) -> bool:
    """Fork a child that saves ``state`` as ``step``, SIGKILL it ``delay`` seconds into the save;
    True when the kill landed before the save returned. (A fork shares the state already built,
    so each kill costs the save alone, not a fresh interpreter.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.write(write_end, b"s")
            save_checkpoint(run_dir, step, state)
            os.write(write_end, b"d")
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    assert ready and os.read(read_end, 1) == b"s", "the saving child did not start"
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    finished = os.read(read_end, 1) == b"d"
    os.close(read_end)
    return not finished


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint_newest(tmp_path):
    state = _agent_state()
    t0 = time.perf_counter()
    save_checkpoint(tmp_path, 1, state)
    seconds = time.perf_counter() - t0
    newest, cut_short = 1, 0
    delays = np.random.default_rng(0).uniform(0.0, seconds, size=6)
    for delay in delays:
        step = newest + 1
        state = {**state, "marker": torch.full((1000,), float(step)), "step": step}
        cut_short += _save_and_kill(tmp_path, step, state, delay)
        # No step folder is ever half-written: each one on disk is complete and loads.
        for folder in (tmp_path / "checkpoints").glob("step_*"):
            load_checkpoint(folder)
        found, loaded = load_checkpoint(tmp_path)
        assert found in (newest, step)
        assert loaded["step"] == found and torch.equal(loaded["marker"], torch.full((1000,), found))
        for name, weight in state["agent"]["online"].items():
            assert torch.equal(loaded["agent"]["online"][name], weight), name
        newest = found
    assert cut_short >= 3, f"only {cut_short} of {len(delays)} kills landed inside a save"
