"""Tests of FrameReplay against the stacks the environment shows the agent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

from ewc_dqn.replay import FrameReplay
from ewc_dqn.transition import Transition

GAMMA = 0.9


class NaiveReplay:
    """Reference: stores the full obs/next_obs stacks of every transition, as the agent saw them.

    It keeps the stacks the way ale-py's vector env builds them (zeros, then the reset frame, then
    one frame pushed per step) and decides sampleability from whole-episode bookkeeping: a
    transition can be sampled while every frame its stacks show is among the last ``slots``
    entries of its copy.
    """

    def __init__(self, num_envs: int, slots: int, frame_shape: tuple, stack: int) -> None:
        c, h, w = frame_shape
        self.channels = c
        self.slots = slots
        self.stack = stack
        self.count = 0
        self.stacks = np.zeros((num_envs, stack * c, h, w), dtype=np.uint8)
        self.episode_start = [0] * num_envs
        # Per copy, per entry: None for an episode's first frame, else (start, transition tuple).
        self.entries: list[list] = [[] for _ in range(num_envs)]

    def add(self, frame, action, reward, terminated, truncated, is_first) -> None:
        c = self.channels
        for i, entries in enumerate(self.entries):
            previous = self.stacks[i].copy()
            self.stacks[i, :-c] = 0 if is_first[i] else self.stacks[i, c:]
            self.stacks[i, -c:] = frame[i]
            if is_first[i]:
                self.episode_start[i] = self.count
                entries.append(None)
                continue
            discount = np.float32(0.0 if terminated[i] else GAMMA)
            transition = (
                previous,
                int(action[i]),
                np.float32(reward[i]),
                discount,
                self.stacks[i].copy(),
            )
            entries.append((self.episode_start[i], transition))
        self.count += 1

    def sampleable(self) -> list[tuple]:
        """Every transition that should be sampleable, by copy then oldest first."""
        oldest = max(0, self.count - self.slots)
        out = []
        for entries in self.entries:
            for t in range(oldest, self.count):
                if entries[t] is None:
                    continue
                start, transition = entries[t]
                first_frame_needed = max(start, t - self.stack)
                if first_frame_needed >= oldest:
                    out.append(transition)
        return out


def as_tuples(batch: Transition) -> list[tuple]:
    """One (obs, action, reward, discount, next_obs) numpy tuple per batch row."""
    return [
        (
            batch.obs[b].numpy(),
            int(batch.action[b]),
            np.float32(batch.reward[b]),
            np.float32(batch.discount[b]),
            batch.next_obs[b].numpy(),
        )
        for b in range(batch.obs.shape[0])
    ]


def key(transition: tuple) -> tuple:
    obs, action, reward, discount, next_obs = transition
    return (obs.tobytes(), action, float(reward), float(discount), next_obs.tobytes())


def same(a: tuple, b: tuple) -> bool:
    return key(a) == key(b)


def vector_steps(episodes, steps, frame_shape, rng):
    """Yield ``steps`` vector steps; copy i plays ``episodes[i]`` (cycled) of (length, end).

    ``end`` is 'terminated', 'truncated' or 'reset' (a new episode starts with no end flag, as
    when the loop resets its envs). First entries carry random junk that must be ignored.
    """
    num_envs = len(episodes)
    plans = [[] for _ in range(num_envs)]  # per copy: upcoming (is_first, terminated, truncated)
    cursor = [0] * num_envs
    for _ in range(steps):
        flags = []
        for i in range(num_envs):
            if not plans[i]:
                length, end = episodes[i][cursor[i] % len(episodes[i])]
                cursor[i] += 1
                plans[i] = [(True, False, False)] + [(False, False, False)] * length
                plans[i][-1] = (False, end == "terminated", end == "truncated")
            flags.append(plans[i].pop(0))
        is_first, terminated, truncated = (np.array(f) for f in zip(*flags, strict=True))
        frame = rng.integers(1, 256, size=(num_envs, *frame_shape), dtype=np.uint8)
        action = rng.integers(0, 18, size=num_envs)
        reward = rng.standard_normal(num_envs).astype(np.float32)
        junk = is_first & (rng.random(num_envs) < 0.5)
        yield frame, action, reward, terminated | junk, truncated, is_first


def fill(replay, *others, episodes, steps, seed=0):
    rng = np.random.default_rng(seed)
    for step in vector_steps(episodes, steps, replay.frame_shape, rng):
        replay.add(*step)
        for other in others:
            other.add(*step)


def make(capacity=40, num_envs=2, frame_shape=(1, 2, 3), stack=4, seed=0):
    return FrameReplay(capacity, num_envs, frame_shape, stack, GAMMA, np.random.default_rng(seed))


def all_transitions(replay: FrameReplay) -> list[tuple]:
    env, slot = replay.sampleable_indices()
    if env.size == 0:
        return []
    return as_tuples(replay.gather(env, slot))


# ------------------------------------------------------------------------------- property test


@settings(max_examples=150, deadline=None)
@given(
    num_envs=st.integers(1, 3),
    slots=st.integers(6, 14),
    stack=st.integers(1, 4),
    episodes=st.lists(
        st.lists(
            st.tuples(st.integers(1, 9), st.sampled_from(["terminated", "truncated", "reset"])),
            min_size=1,
            max_size=4,
        ),
        min_size=3,
        max_size=3,
    ),
    steps=st.integers(1, 60),
    seed=st.integers(0, 2**16),
)
def test_matches_naive_reference(num_envs, slots, stack, episodes, steps, seed):
    # slots >= stack + 2 is the smallest stream the replay accepts; 60 steps wrap it up to 10x.
    slots = max(slots, stack + 2)
    frame_shape = (2, 2, 3)
    replay = FrameReplay(
        slots * num_envs, num_envs, frame_shape, stack, GAMMA, np.random.default_rng(seed)
    )
    naive = NaiveReplay(num_envs, slots, frame_shape, stack)
    rng = np.random.default_rng(seed)
    for t, step in enumerate(vector_steps(episodes[:num_envs], steps, frame_shape, rng)):
        replay.add(*step)
        naive.add(*step)
        if t % 7 == 0 or t == steps - 1:
            replay.check_valid()
            expected = naive.sampleable()
            got = all_transitions(replay)
            assert len(replay) == len(expected)
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                assert same(g, e)
    if expected:
        allowed = {key(e) for e in expected}
        assert all(key(s) in allowed for s in as_tuples(replay.sample(64)))


# ---------------------------------------------------------------------------------- unit tests


def single_env_replay(stack=4, capacity=20):
    """A one-copy replay fed frames whose every pixel is the entry number (0-based, +1)."""
    return FrameReplay(capacity, 1, (1, 1, 1), stack, GAMMA, np.random.default_rng(0))


def add_scalar(replay, value, action=0, reward=0.0, terminated=False, truncated=False, first=False):
    replay.add(
        np.full((1, 1, 1, 1), value, dtype=np.uint8),
        np.array([action]),
        np.array([reward], dtype=np.float32),
        np.array([terminated]),
        np.array([truncated]),
        np.array([first]),
    )


def stacks(replay) -> list[tuple[list[int], list[int]]]:
    batch = replay.gather(*replay.sampleable_indices())
    obs = batch.obs.flatten(1).tolist()
    next_obs = batch.next_obs.flatten(1).tolist()
    return list(zip(obs, next_obs, strict=True))


def test_stacks_are_zero_padded_at_episode_start():
    replay = single_env_replay()
    add_scalar(replay, 1, first=True)
    for v in (2, 3, 4, 5):
        add_scalar(replay, v)
    assert stacks(replay) == [
        ([0, 0, 0, 1], [0, 0, 1, 2]),
        ([0, 0, 1, 2], [0, 1, 2, 3]),
        ([0, 1, 2, 3], [1, 2, 3, 4]),
        ([1, 2, 3, 4], [2, 3, 4, 5]),
    ]


def test_stacks_never_cross_episodes():
    replay = single_env_replay()
    add_scalar(replay, 1, first=True)
    add_scalar(replay, 2)
    add_scalar(replay, 3, terminated=True)
    add_scalar(replay, 7, first=True)
    add_scalar(replay, 8)
    add_scalar(replay, 9, first=True)  # a reset without an end flag also starts a new episode
    add_scalar(replay, 10)
    assert stacks(replay) == [
        ([0, 0, 0, 1], [0, 0, 1, 2]),
        ([0, 0, 1, 2], [0, 1, 2, 3]),
        ([0, 0, 0, 7], [0, 0, 7, 8]),
        ([0, 0, 0, 9], [0, 0, 9, 10]),
    ]
    assert len(replay) == 4


def test_termination_zeroes_discount_but_truncation_bootstraps():
    replay = single_env_replay(stack=2)
    add_scalar(replay, 1, first=True)
    add_scalar(replay, 2, action=3, reward=1.5)
    add_scalar(replay, 3, action=4, reward=-1.0, terminated=True)
    add_scalar(replay, 4, first=True)
    add_scalar(replay, 5, action=5, reward=0.25, truncated=True)
    batch = replay.gather(*replay.sampleable_indices())
    assert batch.discount.tolist() == pytest.approx([GAMMA, 0.0, GAMMA])
    assert batch.action.tolist() == [3, 4, 5]
    assert batch.reward.tolist() == [1.5, -1.0, 0.25]
    # The truncated transition's next_obs is the real last frame.
    assert batch.next_obs[2].flatten().tolist() == [4, 5]


def test_wraparound_drops_transitions_whose_stack_lost_a_frame():
    stack, slots = 3, 8
    replay = single_env_replay(stack=stack, capacity=slots)
    add_scalar(replay, 1, first=True)
    for v in range(2, 13):  # 12 entries in an 8-entry stream: entries 1..4 are gone
        add_scalar(replay, v)
    # Held entries 5..12 (values); entry with value v needs values v-3..v.
    assert len(replay) == slots - stack
    assert [nxt for _, nxt in stacks(replay)] == [[v - 2, v - 1, v] for v in range(8, 13)]


def test_episode_starting_at_oldest_entry_stays_sampleable_after_wrap():
    replay = single_env_replay(stack=4, capacity=6)
    add_scalar(replay, 1, first=True)
    add_scalar(replay, 2, terminated=True)
    add_scalar(replay, 3, first=True)
    for v in range(4, 9):
        add_scalar(replay, v)
    # Stream holds values 3..8; 3 is the episode's first frame, so all five steps are intact.
    assert len(replay) == 5
    assert stacks(replay)[0] == ([0, 0, 0, 3], [0, 0, 3, 4])


def test_len_counts_only_transitions():
    replay = make()
    assert len(replay) == 0
    fill(replay, episodes=[[(3, "terminated")], [(5, "truncated")]], steps=1)
    assert len(replay) == 0
    fill(replay, episodes=[[(3, "terminated")], [(5, "truncated")]], steps=4)
    assert len(replay) == 2 * 3  # the second fill starts new episodes: 3 steps each copy
    with pytest.raises(ValueError, match="sampleable"):
        make().sample(4)


def test_sample_types_and_shapes():
    replay = make(capacity=64, num_envs=2, frame_shape=(1, 84, 84), stack=4)
    fill(replay, episodes=[[(10, "terminated")], [(7, "truncated")]], steps=30)
    batch = replay.sample(32)
    assert isinstance(batch, Transition)
    assert batch.obs.shape == batch.next_obs.shape == (32, 4, 84, 84)
    assert batch.obs.dtype == batch.next_obs.dtype == torch.uint8
    assert batch.action.dtype == torch.int64 and batch.action.shape == (32,)
    assert batch.reward.dtype == batch.discount.dtype == torch.float32
    assert all(t.device.type == "cpu" for t in batch)
    assert all(t.is_contiguous() for t in (batch.action, batch.reward, batch.discount))
    # One gather of stack + 1 frames per transition: obs and next_obs are views of one array.
    frame = 84 * 84
    assert batch.obs.stride() == batch.next_obs.stride() == (5 * frame, frame, 84, 1)
    assert batch.next_obs.data_ptr() - batch.obs.data_ptr() == frame
    # Both stacks of a transition come from one episode, zero padding included.
    assert torch.equal(batch.obs[:, 1:], batch.next_obs[:, :-1])


def test_minatar_planes_stack_one_accepts_bool_frames():
    replay = FrameReplay(50, 1, (10, 10, 10), 1, GAMMA, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    frames = rng.random((6, 1, 10, 10, 10)) < 0.2
    for t in range(6):
        replay.add(frames[t], [1], [0.0], [False], [False], [t == 0])
    batch = replay.gather(*replay.sampleable_indices())
    assert batch.obs.shape == (5, 10, 10, 10)
    np.testing.assert_array_equal(batch.obs.numpy(), frames[:-1, 0])
    np.testing.assert_array_equal(batch.next_obs.numpy(), frames[1:, 0])


def test_sample_is_uniform_over_sampleable_transitions():
    replay = make(capacity=24, num_envs=2, stack=2, seed=3)
    # Many first entries and a wrapped stream: a third or so of the held entries are rejected.
    fill(replay, episodes=[[(2, "terminated"), (4, "reset")], [(3, "truncated")]], steps=40)
    env, slot = replay.sampleable_indices()
    index_of = {(e, s): i for i, (e, s) in enumerate(zip(env.tolist(), slot.tolist(), strict=True))}
    assert len(index_of) == len(replay) > 5
    by_content = {key(t): i for i, t in enumerate(all_transitions(replay))}
    assert len(by_content) == len(index_of)  # random frames make every transition distinct
    counts = np.zeros(len(index_of))
    draws = 0
    while draws < 30_000:
        for t in as_tuples(replay.sample(500)):
            counts[by_content[key(t)]] += 1
        draws += 500
    expected = draws / len(counts)
    # Binomial std is about sqrt(expected) ~ 40; 15% is more than 5 std away.
    assert np.all(np.abs(counts - expected) < 0.15 * expected), counts


def test_state_round_trip_gives_identical_samples(tmp_path):
    episodes = [[(5, "terminated"), (2, "reset")], [(9, "truncated")], [(4, "terminated")]]
    for steps in (7, 45):  # partly filled and wrapped
        replay = make(capacity=30, num_envs=3, stack=3, seed=11)
        fill(replay, episodes=episodes, steps=steps)
        state = replay.state_dict()
        arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        save_file(arrays, tmp_path / "replay.safetensors")
        (tmp_path / "replay.json").write_text(json.dumps(scalars))
        assert arrays["frames"].shape[1] == min(steps, 10)  # only the filled part is saved

        restored = make(capacity=30, num_envs=3, stack=3, seed=11)
        restored.load_state_dict(
            {
                **json.loads((tmp_path / "replay.json").read_text()),
                **load_file(tmp_path / "replay.safetensors"),
            }
        )
        restored.check_valid()
        assert len(restored) == len(replay)
        for a, b in zip(replay.sample(16), restored.sample(16), strict=True):
            assert torch.equal(a, b)
        # Both keep going identically after the restore.
        fill(replay, restored, episodes=episodes, steps=13, seed=5)
        for a, b in zip(replay.sample(16), restored.sample(16), strict=True):
            assert torch.equal(a, b)


def test_load_rejects_mismatched_or_corrupt_state():
    replay = make(capacity=30, num_envs=3, stack=3)
    fill(replay, episodes=[[(4, "terminated")]] * 3, steps=12)
    state = replay.state_dict()
    with pytest.raises(ValueError, match="stack=3"):
        make(capacity=30, num_envs=3, stack=2).load_state_dict(state)
    with pytest.raises(ValueError, match="lacks"):
        make(capacity=30, num_envs=3, stack=3).load_state_dict({"count": 1})
    with pytest.raises(ValueError, match="'reward'"):
        make(capacity=30, num_envs=3, stack=3).load_state_dict(
            {**state, "reward": state["reward"].astype(np.float64)}
        )
    with pytest.raises(ValueError, match="'frames'"):
        make(capacity=30, num_envs=3, stack=3).load_state_dict({**state, "count": 5})
    broken_age = state["age"].copy()
    broken_age[0, 3] = 0 if broken_age[0, 3] else 1
    target = make(capacity=30, num_envs=3, stack=3)
    with pytest.raises(ValueError):
        target.load_state_dict({**state, "age": broken_age})
    assert len(target) == 0
    # Left empty: its next step must open every copy's stream again.
    frame, action, reward = np.zeros((3, 1, 2, 3), np.uint8), np.zeros(3, int), np.zeros(3)
    no = np.zeros(3, dtype=bool)
    with pytest.raises(ValueError, match="first step of every copy must be is_first"):
        target.add(frame, action, reward, no, no, no)
    target.add(frame, action, reward, no, no, ~no)
    target.check_valid()


def test_add_rejects_bad_input():
    replay = make(num_envs=2, frame_shape=(1, 2, 3))
    frame = np.zeros((2, 1, 2, 3), dtype=np.uint8)
    ok = dict(action=[0, 1], reward=[0.0, 0.0], terminated=[False, False], truncated=[False] * 2)
    with pytest.raises(ValueError, match="is_first"):
        replay.add(frame, **ok, is_first=[True, False])
    with pytest.raises(ValueError, match="shape"):
        replay.add(frame[:1], **ok, is_first=[True, True])
    with pytest.raises(ValueError, match="uint8"):
        replay.add(frame.astype(np.float32), **ok, is_first=[True, True])
    with pytest.raises(ValueError, match="shape"):
        replay.add(frame, **{**ok, "action": [0]}, is_first=[True, True])
    replay.add(frame, **ok, is_first=[True, True])
    with pytest.raises(ValueError, match="255"):
        replay.add(frame, **{**ok, "action": [0, 300]}, is_first=[False, False])
    with pytest.raises(ValueError, match="finite"):
        replay.add(frame, **{**ok, "reward": [np.nan, 0.0]}, is_first=[False, False])
    ended = {**ok, "terminated": [False, True], "truncated": [True, False]}
    replay.add(frame, **ended, is_first=[False, False])
    with pytest.raises(ValueError, match=r"copies \[0, 1\]"):
        replay.add(frame, **ok, is_first=[False, False])
    assert len(replay) == 2  # rejected steps were not stored
    replay.check_valid()


def test_constructor_rejects_too_small_capacity():
    with pytest.raises(ValueError, match="stack \\+ 2"):
        make(capacity=10, num_envs=2, stack=4)


def test_check_valid_catches_corruption():
    replay = make()
    fill(replay, episodes=[[(3, "terminated")], [(4, "truncated")]], steps=9)
    replay.check_valid()
    replay._flags[0, 4] = 1  # entry 4 of copy 0 is an episode's first frame: no end flag
    with pytest.raises(ValueError):
        replay.check_valid()


def test_memory_per_transition_at_atari_size():
    replay = FrameReplay(50_000, 8, (1, 84, 84), 4, 0.99, np.random.default_rng(0))
    assert replay.bytes_per_transition() < 7_200
    assert replay.nbytes() == 50_000 * (84 * 84 + 4) + 50_000 * 3 + 84 * 84


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_envs=0), "num_envs must be >= 1"),
        (dict(stack=0), r"stack must be in \[1, 255\]"),
        (dict(stack=256, capacity=600), r"stack must be in \[1, 255\]"),
        (dict(frame_shape=(2, 3)), r"frame_shape must be \(C, H, W\)"),
        (dict(frame_shape=(1, 0, 3)), r"frame_shape must be \(C, H, W\)"),
        (dict(gamma=-0.01), r"gamma must be in \[0, 1\]"),
        (dict(gamma=1.01), r"gamma must be in \[0, 1\]"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    args = dict(capacity=40, num_envs=2, frame_shape=(1, 2, 3), stack=4, gamma=GAMMA)
    with pytest.raises(ValueError, match=message):
        FrameReplay(**{**args, **kwargs}, rng=np.random.default_rng(0))


def test_constructor_accepts_the_edges():
    for stack, capacity, gamma in ((1, 3, 0.0), (255, 257, 1.0)):
        replay = FrameReplay(capacity, 1, (1, 1, 1), stack, gamma, np.random.default_rng(0))
        assert replay.stack == stack and replay.gamma == gamma


def test_sample_and_gather_refuse_bad_requests():
    replay = single_env_replay()
    add_scalar(replay, 1, first=True)
    add_scalar(replay, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        replay.sample(0)
    assert replay.sample(1).obs.shape == (1, 4, 1, 1)
    with pytest.raises(ValueError, match="not sampleable"):
        replay.gather(np.array([0]), np.array([0]))  # an episode's first frame
    with pytest.raises(ValueError, match="action must be integers"):
        replay.add(
            *[np.zeros((1, 1, 1, 1), np.uint8), np.array([0.5]), np.zeros(1)] + [[False]] * 3
        )


def _six_entries(capacity: int = 20) -> FrameReplay:
    """Entries 0..5 of one copy: first, 2, 3 (terminated), first, 5, 6."""
    replay = single_env_replay(stack=4, capacity=capacity)
    for value, kwargs in zip(
        range(1, 7),
        [dict(first=True), {}, dict(terminated=True), dict(first=True), {}, {}],
        strict=True,
    ):
        add_scalar(replay, value, action=value % 3 if not kwargs.get("first") else 0, **kwargs)
    return replay


def _corrupt(name: str, index, value):
    def apply(replay: FrameReplay) -> None:
        if name == "count":
            replay._count = value
        elif name == "zero_row":
            replay._frames_flat[replay._zero_row] = value
        else:
            getattr(replay, f"_{name}")[index] = value

    return apply


@pytest.mark.parametrize(
    ("capacity", "corrupt", "message"),
    [
        (20, _corrupt("count", None, -1), "negative entry count"),
        (20, _corrupt("zero_row", None, 1), "zero frame used for padding"),
        (20, _corrupt("flags", (0, 1), 4), "bits other than"),
        (20, _corrupt("age", (0, 1), 5), "at most stack"),
        (20, _corrupt("flags", (0, 3), 1), "first entry carries an end flag or an action"),
        (20, _corrupt("action", (0, 3), 2), "first entry carries an end flag or an action"),
        (20, _corrupt("reward", (0, 3), 1.0), "first entry carries a reward"),
        (20, _corrupt("age", (0, 0), 1), "must start with a first entry"),
        (6, _corrupt("age", (0, 0), 1), "must start with a first entry"),  # full, not wrapped
        (20, _corrupt("flags", (0, 4), 2), "after an episode end is not a first entry"),
        (20, _corrupt("age", (0, 5), 3), "do not count up by one"),
        (20, _corrupt("reward", (0, 4), np.inf), "non-finite reward"),
    ],
)
def test_check_valid_names_each_broken_invariant(capacity, corrupt, message):
    replay = _six_entries(capacity)
    replay.check_valid()
    corrupt(replay)
    with pytest.raises(ValueError, match=message):
        replay.check_valid()


def test_load_accepts_an_empty_replay_and_refuses_a_negative_count():
    empty = make().state_dict()
    restored = make()
    restored.load_state_dict(empty)
    assert len(restored) == 0
    with pytest.raises(ValueError, match="negative count"):
        make().load_state_dict({**empty, "count": -1})


# --- checkpoint chunks --------------------------------------------------------------------


def test_chunked_frames_are_the_frames_and_only_written_chunks_are_hashed_again(monkeypatch):
    """``state_dict(chunked=True)``: the chunks join to the frames, every digest is the digest of
    its chunk's contents, and after a segment the digests computed again are exactly those of
    the chunks the segment wrote into (partly filled, wrapped, across laps)."""
    from ewc_dqn import chunk_store
    from ewc_dqn.chunk_store import content_digest

    hashed: list[int] = []

    def counting(part: np.ndarray) -> str:
        hashed.append(1)
        return content_digest(part)

    monkeypatch.setattr(chunk_store, "content_digest", counting)
    replay = make(capacity=200, num_envs=2, frame_shape=(1, 3, 3), stack=2, seed=3)
    slots, size = replay.slots_per_env, replay.chunk_slots
    assert size == -(-slots // 8)
    rng = np.random.default_rng(0)
    steps = vector_steps(
        [[(7, "terminated"), (3, "reset")], [(11, "truncated")]], 10_000, (1, 3, 3), rng
    )
    count = 0
    for segment in (0, 5, 1, 30, 64, 100, 2, 13, 13, 250, 0, 99):
        for _ in range(segment):
            replay.add(*next(steps))
        written = {(count + i) % slots // size for i in range(min(segment, slots))}
        count += segment
        hashed.clear()
        chunks = replay.state_dict(chunked=True)["frames"]
        if count == segment:  # the first state: every chunk is new
            written = set(range(-(-min(count, slots) // size)))
        assert len(hashed) == len(written) * replay.num_envs, (count, segment)
        np.testing.assert_array_equal(chunks.joined(), replay.state_dict()["frames"])
        assert chunks.shape == (2, min(count, slots), 1, 3, 3)
        for part, digest in zip(chunks.parts, chunks.digests, strict=True):
            assert digest == content_digest(part)
            assert part.shape[0] <= size


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "arrays"])
def test_a_state_loads_and_its_digests_start_afresh(chunked):
    """Loading replaces the digests of the frames held before: by those of the chunks loaded,
    or by none (computed at the next save) when the state holds plain arrays."""
    episodes = [[(5, "terminated")], [(9, "truncated")]]
    replay = make(capacity=60, num_envs=2, stack=3, seed=1)
    fill(replay, episodes=episodes, steps=47)
    restored = make(capacity=60, num_envs=2, stack=3, seed=1)
    fill(restored, episodes=episodes, steps=47, seed=9)  # as many entries, other frames
    restored.state_dict(chunked=True)  # their digests, cached
    restored.load_state_dict(replay.state_dict(chunked=chunked))
    for a, b in zip(replay.sample(16), restored.sample(16), strict=True):
        assert torch.equal(a, b)
    mine, theirs = replay.state_dict(chunked=True), restored.state_dict(chunked=True)
    assert mine["frames"].digests == theirs["frames"].digests
