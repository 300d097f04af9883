"""Checkpoints: exact round trips, atomic writes, no code execution, clear errors."""

import numpy as np
import pytest
import torch

from ewc_dqn.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


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
