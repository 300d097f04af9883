"""Checkpoints: exact round trips, atomic writes (a save killed mid-write included), no code
execution, clear errors; the chunk store (each chunk written once, garbage collection, damaged
chunks) and the format before it."""

import json
import os
import pickle
import select
import signal
import time

import numpy as np
import pytest
import torch

from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.checkpoint import (
    CheckpointError,
    chunks_of,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_newest_checkpoint,
    referenced_chunks,
    save_checkpoint,
)
from ewc_dqn.chunk_store import CHUNK_DIR, Chunks, content_digest, stored_digests
from ewc_dqn.networks import NetworkConfig, QNetwork
from ewc_dqn.replay import FrameReplay
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


def test_tensors_and_arrays_that_share_memory_round_trip(tmp_path):
    w = torch.arange(12.0).reshape(3, 4)
    state = {"w": w, "row": w[1], "col": w[:, 2], "t": w.t(), "view": w.numpy()[1:], "tail": w[2:]}
    save_checkpoint(tmp_path, 1, state)
    _, back = load_checkpoint(tmp_path)
    for name, value in state.items():
        assert torch.equal(torch.as_tensor(back[name]), torch.as_tensor(value)), name


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
    replay, rng = _replay(), np.random.default_rng(0)
    _play(replay, replay.slots_per_env + 5, rng)
    frames = {1: replay.state_dict()["frames"].copy()}
    state = {**_agent_state(), "replay": replay.state_dict(chunked=True)}
    t0 = time.perf_counter()
    save_checkpoint(tmp_path, 1, state)
    seconds = time.perf_counter() - t0
    newest, cut_short = 1, 0
    delays = np.random.default_rng(0).uniform(0.0, seconds, size=6)
    for delay in delays:
        step = newest + 1
        _play(replay, 40, rng)  # a segment: a few chunks are new
        frames[step] = replay.state_dict()["frames"].copy()
        marker = torch.full((1000,), float(step))
        state = {**state, "marker": marker, "step": step, "replay": replay.state_dict(chunked=True)}
        cut_short += _save_and_kill(tmp_path, step, state, delay)
        # No step folder is ever half-written or lacks a chunk: each one on disk loads, whole.
        for folder in (tmp_path / "checkpoints").glob("step_*"):
            found, loaded = load_checkpoint(folder)
            np.testing.assert_array_equal(loaded["replay"]["frames"], frames[found])
        found, loaded = load_checkpoint(tmp_path)
        assert found in (newest, step)
        assert loaded["step"] == found and torch.equal(loaded["marker"], torch.full((1000,), found))
        for name, weight in state["agent"]["online"].items():
            assert torch.equal(loaded["agent"]["online"][name], weight), name
        newest = found
    assert cut_short >= 3, f"only {cut_short} of {len(delays)} kills landed inside a save"
    # The next save that completes removes what the killed ones left behind.
    save_checkpoint(tmp_path, newest + 1, {**state, "step": newest + 1})
    _assert_tidy(tmp_path)


# --- the chunk store ------------------------------------------------------------------------


def _replay(capacity: int = 4000, num_envs: int = 2) -> FrameReplay:
    """An empty replay of 16x16 frames (chunks of ``slots / 8`` slots per copy)."""
    return FrameReplay(capacity, num_envs, (1, 16, 16), 4, 0.99, np.random.default_rng(0))


def _play(replay: FrameReplay, steps: int, rng: np.random.Generator) -> None:
    """``steps`` vector steps of random frames, one long episode per copy."""
    n = replay.num_envs
    no = np.zeros(n, dtype=bool)
    for _ in range(steps):
        first = np.full(n, replay.state_dict()["count"] == 0)
        frame = rng.integers(0, 256, (n, *replay.frame_shape), dtype=np.uint8)
        replay.add(frame, rng.integers(0, 18, n), rng.standard_normal(n), no, no, first)


def _chunk_files(run) -> dict[str, int]:
    """The chunk store's files: name -> inode (a file written again gets a new one)."""
    store = run / "checkpoints" / CHUNK_DIR
    return {p.name: p.stat().st_ino for p in store.iterdir()} if store.is_dir() else {}


def _assert_tidy(run) -> None:
    """No temporary file or folder of a save, and no chunk that no checkpoint refers to."""
    hidden = [p for p in (run / "checkpoints").rglob("*") if p.name.startswith(".")]
    assert hidden == []
    assert stored_digests(run / "checkpoints" / CHUNK_DIR) == referenced_chunks(run)


def test_a_checkpoint_writes_only_the_chunks_written_since_the_last(tmp_path):
    replay, rng = _replay(), np.random.default_rng(1)
    _play(replay, replay.slots_per_env + 100, rng)  # full, wrapped
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True)})
    first = _chunk_files(tmp_path)
    per_copy = -(-replay.slots_per_env // replay.chunk_slots)
    assert len(first) == per_copy * replay.num_envs
    before = replay.state_dict()["frames"].copy()
    segment = replay.slots_per_env // 20  # 5% of the buffer: in one or two chunks of each copy
    _play(replay, segment, rng)
    save_checkpoint(tmp_path, 2, {"replay": replay.state_dict(chunked=True)})
    second = _chunk_files(tmp_path)
    new = set(second) - set(first)
    start = (replay.slots_per_env + 100) % replay.slots_per_env
    touched = {(start + i) // replay.chunk_slots for i in range(segment)}
    assert len(new) == len(touched) * replay.num_envs
    # The others were neither written again nor replaced: the same files.
    assert all(second[name] == inode for name, inode in first.items())
    chunk_bytes = replay.chunk_slots * 16 * 16
    assert sum((tmp_path / "checkpoints" / CHUNK_DIR / n).stat().st_size for n in new) <= (
        len(touched) * replay.num_envs * chunk_bytes
    )
    assert len(new) / len(first) <= 0.25
    _, one = load_checkpoint(tmp_path / "checkpoints" / "step_000000000001")
    _, two = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(one["replay"]["frames"], before)
    np.testing.assert_array_equal(two["replay"]["frames"], replay.state_dict()["frames"])


def test_garbage_collection_keeps_every_chunk_a_kept_checkpoint_refers_to(tmp_path):
    replay, rng = _replay(capacity=800), np.random.default_rng(2)
    frames = {}
    for step, segment in enumerate((500, 30, 170, 1, 400, 60), start=1):
        _play(replay, segment, rng)
        frames[step] = replay.state_dict()["frames"].copy()
        save_checkpoint(tmp_path, step, {"replay": replay.state_dict(chunked=True)}, keep=2)
        kept = list_checkpoints(tmp_path)
        assert [int(p.name[5:]) for p in kept] == [max(1, step - 1), step][-len(kept) :]
        for folder in kept:
            found, loaded = load_checkpoint(folder)
            np.testing.assert_array_equal(loaded["replay"]["frames"], frames[found])
        _assert_tidy(tmp_path)  # and nothing else: the older checkpoints' chunks are gone
        assert stored_digests(tmp_path / "checkpoints" / CHUNK_DIR) == set().union(
            *(chunks_of(p) or set() for p in kept)
        )


def test_a_kept_checkpoint_whose_state_cannot_be_read_stops_garbage_collection(tmp_path):
    replay, rng = _replay(capacity=800), np.random.default_rng(3)
    for step in (1, 2):
        _play(replay, 450, rng)
        save_checkpoint(tmp_path, step, {"replay": replay.state_dict(chunked=True)}, keep=3)
    before = set(_chunk_files(tmp_path))
    (tmp_path / "checkpoints" / "step_000000000001" / "state.json").write_text("{")
    _play(replay, 450, rng)
    save_checkpoint(tmp_path, 3, {"replay": replay.state_dict(chunked=True)}, keep=3)
    assert before <= set(_chunk_files(tmp_path))  # its chunks are unknown: none is deleted


@pytest.mark.parametrize("failure", ["oserror", "bug"])
def test_a_failed_save_removes_its_new_chunks_and_leaves_the_others(failure, tmp_path):
    replay, rng = _replay(capacity=800), np.random.default_rng(4)
    _play(replay, 450, rng)
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True)})
    before = _chunk_files(tmp_path)
    _play(replay, 100, rng)

    def fail() -> None:
        assert set(_chunk_files(tmp_path)) > set(before)  # the new chunks are on disk by now
        raise OSError(28, "No space left on device") if failure == "oserror" else ValueError("bug")

    error = CheckpointError if failure == "oserror" else ValueError
    with pytest.raises(error):
        save_checkpoint(
            tmp_path, 2, {"replay": replay.state_dict(chunked=True)}, before_rename=fail
        )
    assert _chunk_files(tmp_path) == before
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000000000001"]
    load_checkpoint(tmp_path)
    _assert_tidy(tmp_path)


def _kill_myself() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_save_killed_before_its_rename_is_cleaned_up_by_the_next(tmp_path):
    replay, rng = _replay(capacity=800), np.random.default_rng(5)
    _play(replay, 450, rng)
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True)})
    expected = replay.state_dict()["frames"].copy()
    _play(replay, 100, rng)
    pid = os.fork()
    if pid == 0:  # the child: killed with everything on disk but the rename
        try:
            state = {"replay": replay.state_dict(chunked=True)}
            save_checkpoint(tmp_path, 2, state, before_rename=_kill_myself)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    root = tmp_path / "checkpoints"
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-step_")]  # left behind
    step, loaded = load_checkpoint(tmp_path)
    assert step == 1
    np.testing.assert_array_equal(loaded["replay"]["frames"], expected)
    # A chunk cut short by a kill is a temporary file, never under a chunk's name.
    (root / CHUNK_DIR / f".tmp-{'0' * 32}-99999").write_bytes(b"half a chunk")
    save_checkpoint(tmp_path, 2, {"replay": replay.state_dict(chunked=True)})
    _assert_tidy(tmp_path)
    np.testing.assert_array_equal(
        load_checkpoint(tmp_path)[1]["replay"]["frames"], replay.state_dict()["frames"]
    )


def _damage_a_chunk(run, how: str) -> str:
    """Damage the first chunk of the newest checkpoint; returns its file's name."""
    name = sorted(chunks_of(latest_checkpoint(run)) or [])[0] + ".bin"
    path = run / "checkpoints" / CHUNK_DIR / name
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # altered: the same size, one byte changed
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    return name


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", "is missing"),
        ("truncated", "bytes, expected"),
        ("altered", "does not match its digest"),
    ],
)
def test_a_damaged_chunk_fails_its_checkpoint_in_one_line(how, message, tmp_path):
    replay, rng = _replay(capacity=800), np.random.default_rng(6)
    _play(replay, 450, rng)
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True)})
    name = _damage_a_chunk(tmp_path, how)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    text = str(error.value)
    assert "step_000000000001 is damaged: chunk " in text and name in text and message in text
    assert "\n" not in text
    with pytest.raises(CheckpointError, match="holds no loadable checkpoint"):
        load_newest_checkpoint(tmp_path)


def _chunk_node(run) -> dict:
    doc = json.loads((latest_checkpoint(run) / "state.json").read_text())
    return doc, doc["state"]["__dict__"]["frames"]["__chunks__"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda node: node.update(dtype="object"), "dtype object are not stored"),
        (lambda node: node.update(dtype="no such type"), "no valid dtype"),
        (lambda node: node.update(shape=[10**9, 10**9, 10**9]), "not an array of"),
        (lambda node: node.update(shape="big"), "no valid shape"),
        (
            lambda node: node["parts"][0].__setitem__(0, "../../../etc/passwd"),
            "not the name of a chunk",
        ),
        (lambda node: node["parts"][0].__setitem__(1, [-1, 2]), "no valid shape"),
        (lambda node: node["parts"][0].__setitem__(1, [10**12]), "bytes, expected"),
        (lambda node: node.update(parts={"a": 1}), "not a list"),
        (lambda node: node.pop("parts"), "lacks its dtype, shape or parts"),
    ],
)
def test_an_altered_chunk_description_is_refused_before_reading_anything(edit, message, tmp_path):
    save_checkpoint(tmp_path, 1, {"frames": _replay_chunks()})
    doc, node = _chunk_node(tmp_path)
    edit(node)
    (latest_checkpoint(tmp_path) / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="is damaged: .*" + message.replace("(", r"\(")):
        load_checkpoint(tmp_path)


def _replay_chunks():
    replay, rng = _replay(capacity=200), np.random.default_rng(7)
    _play(replay, 150, rng)
    return replay.state_dict(chunked=True)["frames"]


def test_loading_chunks_unpickles_nothing(tmp_path, monkeypatch):
    replay, rng = _replay(capacity=800), np.random.default_rng(8)
    _play(replay, 450, rng)
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True), "x": torch.ones(3)})

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    _, loaded = load_checkpoint(tmp_path)
    np.testing.assert_array_equal(loaded["replay"]["frames"], replay.state_dict()["frames"])


def test_a_format_1_checkpoint_with_its_arrays_inline_still_loads(tmp_path):
    """Format 1, written before the chunk store: every array in tensors.safetensors."""
    replay, rng = _replay(capacity=800), np.random.default_rng(9)
    _play(replay, 450, rng)
    folder = save_checkpoint(tmp_path, 7, {"replay": replay.state_dict(), "w": torch.ones(2)})
    doc = json.loads((folder / "state.json").read_text())
    assert doc["format_version"] == 2 and "__chunks__" not in json.dumps(doc)
    doc["format_version"] = 1
    (folder / "state.json").write_text(json.dumps(doc))
    assert not (tmp_path / "checkpoints" / CHUNK_DIR).exists()
    step, loaded = load_checkpoint(tmp_path)
    assert step == 7 and torch.equal(loaded["w"], torch.ones(2))
    np.testing.assert_array_equal(loaded["replay"]["frames"], replay.state_dict()["frames"])
    doc["format_version"] = 3
    (folder / "state.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unknown format"):
        load_checkpoint(tmp_path)


def test_a_damaged_chunk_is_written_again_not_referred_to_again(tmp_path, monkeypatch, hashed):
    """A resumed run that saves a chunk whose file on disk is damaged writes it again; a chunk
    this process wrote or loaded is not read again at every save."""
    from ewc_dqn import chunk_store

    replay, rng = _replay(capacity=800), np.random.default_rng(10)
    _play(replay, 450, rng)
    state = {"replay": replay.state_dict(chunked=True)}
    save_checkpoint(tmp_path, 1, state)
    hashed.clear()
    save_checkpoint(tmp_path, 2, state)
    assert hashed == []  # every chunk was written by this process
    name = _damage_a_chunk(tmp_path, "altered")
    monkeypatch.setattr(chunk_store, "_vouched", {})  # as in a new process
    save_checkpoint(tmp_path, 3, state)
    assert len(hashed) == len(_chunk_files(tmp_path))  # each chunk on disk checked once
    np.testing.assert_array_equal(
        load_checkpoint(tmp_path)[1]["replay"]["frames"], replay.state_dict()["frames"]
    )
    hashed.clear()
    save_checkpoint(tmp_path, 4, state)
    assert hashed == [] and name in {f"{d}.bin" for d in chunks_of(latest_checkpoint(tmp_path))}


def test_chunks_describe_one_array_or_are_refused():
    """A chunked array's parts, digests and shape must agree; an empty one is zeros of the shape."""
    a, b = np.arange(6, dtype=np.uint8), np.arange(4, dtype=np.uint8)
    chunks = Chunks((2, 5), (a, b), (content_digest(a), content_digest(b)))
    np.testing.assert_array_equal(chunks.joined(), np.concatenate([a, b]).reshape(2, 5))
    assert chunks.dtype == np.uint8
    with pytest.raises(ValueError, match="2 parts but 1 digests"):
        Chunks((2, 5), (a, b), (content_digest(a),))
    with pytest.raises(ValueError, match="share a dtype"):
        Chunks((2, 5), (a, b.astype(np.int16)), (content_digest(a), content_digest(b)))
    with pytest.raises(ValueError, match="do not add up to an array of shape"):
        Chunks((2, 6), (a, b), (content_digest(a), content_digest(b)))
    empty = Chunks((0, 3), (), ())
    assert empty.joined().shape == (0, 3) and empty.dtype == np.uint8


def _digests_are_of_their_parts(chunks: Chunks) -> bool:
    return list(chunks.digests) == [content_digest(p) for p in chunks.parts]


def test_a_replay_loaded_from_chunks_hashes_only_what_it_writes_afterwards(
    tmp_path, monkeypatch, hashed
):
    """A resumed run's first save does not hash its replays again: the digests the load has just
    checked are kept, and only the chunks written into since are hashed (and right)."""
    from ewc_dqn import chunk_store

    replay, rng = _replay(), np.random.default_rng(12)
    _play(replay, replay.slots_per_env + 100, rng)  # full, wrapped: write counts past one lap
    save_checkpoint(tmp_path, 1, {"replay": replay.state_dict(chunked=True)})
    monkeypatch.setattr(chunk_store, "_vouched", {})  # a new process
    resumed = _replay()
    resumed.load_state_dict(load_checkpoint(tmp_path)[1]["replay"])
    hashed.clear()
    assert _digests_are_of_their_parts(resumed.state_dict(chunked=True)["frames"])
    assert hashed == []
    segment = replay.slots_per_env // 20
    _play(resumed, segment, rng)
    hashed.clear()
    after = resumed.state_dict(chunked=True)["frames"]
    start = (replay.slots_per_env + 100) % replay.slots_per_env
    touched = {(start + i) // replay.chunk_slots for i in range(segment)}
    assert len(hashed) == len(touched) * replay.num_envs
    assert _digests_are_of_their_parts(after)


def test_frames_loaded_in_other_chunks_are_hashed_at_the_next_save(hashed):
    """Digests of chunks that are not this buffer's own (another chunk size) are not taken."""
    replay, rng = _replay(), np.random.default_rng(13)
    _play(replay, 700, rng)
    state = replay.state_dict()
    frames = state["frames"]
    halves = (frames[:, :350].reshape(-1), frames[:, 350:].reshape(-1))  # not the replay's chunks
    whole = np.concatenate(halves).reshape(frames.shape)
    state["frames"] = Chunks(frames.shape, halves, tuple(content_digest(h) for h in halves))
    np.testing.assert_array_equal(np.asarray(state["frames"]), whole)
    other = _replay()
    other.load_state_dict(state)
    hashed.clear()
    chunks = other.state_dict(chunked=True)["frames"]
    assert len(hashed) == len(chunks.parts) and _digests_are_of_their_parts(chunks)


@pytest.mark.parametrize("kind", ["ewc", "online-ewc", "l2"])
def test_ewc_terms_loaded_from_chunks_are_not_hashed_again(kind, tmp_path, hashed):
    """The terms of a resumed consolidator keep their checked digests until a term changes."""
    from ewc_dqn.ewc import EWCConfig, EWCConsolidator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    ewc = EWCConsolidator(model, EWCConfig(lam=2.0, start_frames=1), kind)

    def consolidate(consolidator: EWCConsolidator, task: int, scale: float) -> None:
        consolidator.add_frames(task, 3)
        fisher = {n: torch.full_like(p, scale) for n, p in model.named_parameters()}
        consolidator.consolidate(task, fisher)

    consolidate(ewc, 0, 1.0)
    consolidate(ewc, 1, 2.0)
    save_checkpoint(tmp_path, 1, {"ewc": ewc.state_dict(chunked=True)})
    resumed = EWCConsolidator(model, EWCConfig(lam=2.0, start_frames=1), kind)
    resumed.load_state_dict(load_checkpoint(tmp_path)[1]["ewc"])
    assert torch.equal(resumed.penalty(), ewc.penalty())
    hashed.clear()
    terms = resumed.state_dict(chunked=True)["tensors"]
    assert hashed == [] and all(_digests_are_of_their_parts(c) for c in terms.values())
    consolidate(resumed, 1, 3.0)  # task 1's term (or the online one) is replaced
    hashed.clear()
    terms = resumed.state_dict(chunked=True)["tensors"]
    assert 0 < len(hashed) < len(terms) or kind == "online-ewc"
    assert len(hashed) > 0 and all(_digests_are_of_their_parts(c) for c in terms.values())
