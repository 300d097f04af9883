"""Replay memory that stores every frame once and rebuilds frame stacks when it samples.

The environment gives one new frame per copy per vector step (see ``envs/vector.py``). Each copy
gets its own circular stream of *entries*; entry ``t`` holds the frame seen after step ``t``, the
action and clipped reward that led to it, whether the episode ended there, and ``age``: how many
entries of the same episode precede it, capped at ``stack`` (0 marks an episode's first frame).

A non-first entry ``t`` is the transition ``(s_{t-1}, a_t, r_t, discount_t, s_t)``, where
``s_t`` stacks the frames of entries ``t - stack + 1 .. t`` oldest first, with zeros in place of
frames from before the episode's first frame (what ale-py's vector env shows the agent). Both
stacks of entry ``t`` therefore need entries ``t - age_t .. t`` and nothing else: it is
sampleable exactly when all of them are still in its stream. Right after the stream wraps, the
oldest entry is never sampleable (it would need the overwritten one before it), nor is any entry
among the next ``stack - 1`` whose stack reaches back past the oldest one: sampling them would
need a frame that is gone, and zero-filling it would show a stack the agent never saw.

Memory per stored step: one frame (7,056 bytes at 84x84), a uint8 action, a float32 reward, a
uint8 age and a uint8 of end flags: 7,063 bytes, against about 28 KB for stable-baselines3's
``ReplayBuffer`` with ``optimize_memory_usage`` and 56 KB without (``bench/bench_replay.py``).

Checkpoints. Each copy's stream is cut into chunks of ``chunk_slots`` slots; a checkpoint stores
each chunk's frames once, by the digest of its contents (``ewc_dqn.chunk_store``), so the
checkpoint after a segment writes only the chunks the buffer wrote into since the one before.
Which chunks those are follows from the entry count alone (entry ``t`` goes to slot
``t % slots``), so a digest is computed again only for a chunk written since it was last computed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ewc_dqn.chunk_store import Chunks, digests_of
from ewc_dqn.transition import Transition

TERMINATED = 1
"""Bit of ``flags``: the episode ended in a terminal state at this entry (discount 0)."""
TRUNCATED = 2
"""Bit of ``flags``: the episode hit its time limit at this entry (still bootstraps)."""

_STATE_ARRAYS = ("frames", "action", "reward", "age", "flags")
CHUNK_BYTES = 16 * 2**20
"""Most frame bytes in one checkpoint chunk (a slot range of one copy)."""
MIN_CHUNKS = 8
"""Fewest chunks per copy, so that a segment shorter than the buffer rewrites only part of it
whatever the buffer's size."""


class FrameReplay:
    """Uniform replay over ``num_envs`` circular streams of single frames.

    ``capacity`` counts stored vector-step entries over all copies (``ceil(capacity / num_envs)``
    per copy), as in Dopamine's and dqn_zoo's replays: an episode's first frame uses an entry
    without being a transition, so ``len(self)`` stays a little below ``capacity`` once full.
    Sampling draws from ``rng`` only.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: tuple[int, int, int],
        stack: int,
        gamma: float,
        rng: np.random.Generator,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if not 1 <= stack <= 255:
            raise ValueError(f"stack must be in [1, 255] (ages are uint8), got {stack}")
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (C, H, W), all positive, got {frame_shape}")
        slots = -(-capacity // num_envs)
        if slots < stack + 2:
            raise ValueError(
                f"capacity {capacity} gives {slots} entries per copy for {num_envs} copies; "
                f"need at least stack + 2 = {stack + 2} so a full stream holds a transition"
            )
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.capacity = capacity
        self.num_envs = num_envs
        self.frame_shape = tuple(int(x) for x in frame_shape)
        self.stack = stack
        self.gamma = float(gamma)
        self.slots_per_env = slots
        frame_bytes = math.prod(self.frame_shape)
        self.chunk_slots = max(1, min(CHUNK_BYTES // frame_bytes, -(-slots // MIN_CHUNKS)))
        """Slots of one copy per checkpoint chunk."""
        self._rng = rng
        # One extra all-zero frame at the end: masked stack positions gather from it, so a whole
        # batch of stacks is one np.take with no per-frame masking afterwards.
        self._frames_flat = np.zeros((num_envs * slots + 1, *self.frame_shape), dtype=np.uint8)
        self._zero_row = num_envs * slots
        self._frames = self._frames_flat[:-1].reshape(num_envs, slots, *self.frame_shape)
        self._action = np.zeros((num_envs, slots), dtype=np.uint8)
        self._reward = np.zeros((num_envs, slots), dtype=np.float32)
        self._age = np.zeros((num_envs, slots), dtype=np.uint8)
        self._flags = np.zeros((num_envs, slots), dtype=np.uint8)
        self._count = 0  # entries ever added per copy (vector steps); entry t lives in t % slots
        # Positions back from an entry, oldest first: window column i holds entry t - stack + i.
        self._back = np.arange(stack, -1, -1, dtype=np.int64)
        # (copy, first slot of a chunk) -> (entries written into the chunk, its digest then).
        self._digests: dict[tuple[int, int], tuple[int, str]] = {}

    # ----------------------------------------------------------------------------------- adding

    def add(
        self,
        frame: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        is_first: np.ndarray,
    ) -> None:
        """Store one vector step: ``frame`` (N, C, H, W) uint8 and (N,) action, reward, flags.

        Where ``is_first`` is set the frame starts a new episode and the other values are
        ignored. The first step of every copy, and the step after any termination or truncation,
        must be ``is_first``.
        """
        n = self.num_envs
        frame = np.asarray(frame)
        if frame.shape != (n, *self.frame_shape):
            raise ValueError(f"frame must have shape {(n, *self.frame_shape)}, got {frame.shape}")
        if not np.can_cast(frame.dtype, np.uint8, casting="safe"):
            raise ValueError(f"frame must be uint8 (or bool), got {frame.dtype}")
        is_first = self._vector(is_first, "is_first", np.bool_)
        playing = ~is_first
        # Values at first entries mean nothing: store zeros there so check_valid can see them.
        action = self._vector(action, "action", None)
        if action.dtype.kind not in "iu" and playing.any():
            raise ValueError(f"action must be integers, got {action.dtype}")
        action = np.where(playing, action, 0)
        action_u8 = action.astype(np.uint8)
        if (action_u8 != action).any():
            raise ValueError("actions must be in [0, 255] (stored as uint8)")
        reward = np.where(playing, self._vector(reward, "reward", np.float32), np.float32(0.0))
        if not np.isfinite(reward).all():
            raise ValueError("reward must be finite")
        flags = (
            self._vector(terminated, "terminated", np.bool_) * np.uint8(TERMINATED)
            | self._vector(truncated, "truncated", np.bool_) * np.uint8(TRUNCATED)
        ) * playing

        slot = self._count % self.slots_per_env
        if self._count == 0:
            if not is_first.all():
                raise ValueError("the first step of every copy must be is_first (after a reset)")
            age = np.zeros(n, dtype=np.uint8)
        else:
            prev = (self._count - 1) % self.slots_per_env
            unstarted = (self._flags[:, prev] != 0) & playing
            if unstarted.any():
                copies = np.flatnonzero(unstarted).tolist()
                raise ValueError(f"copies {copies} continue after an episode end without is_first")
            age = (np.minimum(self._age[:, prev], self.stack - 1) + 1) * playing

        self._frames[:, slot] = frame
        self._action[:, slot] = action_u8
        self._reward[:, slot] = reward
        self._age[:, slot] = age
        self._flags[:, slot] = flags
        self._count += 1

    def _vector(self, x: Any, name: str, dtype: type | None) -> np.ndarray:
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        if x.shape != (self.num_envs,):
            raise ValueError(f"{name} must have shape ({self.num_envs},), got {x.shape}")
        return x

    # --------------------------------------------------------------------------------- sampling

    @property
    def _held(self) -> int:
        """Filled entries per copy."""
        return min(self._count, self.slots_per_env)

    @property
    def _oldest_slot(self) -> int:
        """Slot of each copy's oldest held entry."""
        return self._count % self.slots_per_env if self._count > self.slots_per_env else 0

    def _sampleable(self, env: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Whether entries (env, slot), all held, are transitions whose frames are all held."""
        age = self._age[env, slot]
        position = (slot - self._oldest_slot) % self.slots_per_env  # 0 = oldest held
        return (age > 0) & (position >= age)

    def __len__(self) -> int:
        """Number of transitions ``sample`` can draw from now."""
        held = self._held
        if held == 0:
            return 0
        transitions = int(np.count_nonzero(self._age[:, :held]))
        # Only the first `stack` entries after the oldest can reach back past it.
        position = np.arange(min(self.stack, held))
        slots = (self._oldest_slot + position) % self.slots_per_env
        age = self._age[:, slots]
        return transitions - int(np.count_nonzero((age > 0) & (position < age)))

    def sampleable_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(env, slot)`` int64 arrays of every transition ``sample`` can draw.

        Ordered by copy, then oldest first; ``gather`` turns them into a batch.
        """
        held = self._held
        slots = (self._oldest_slot + np.arange(held)) % self.slots_per_env
        env = np.repeat(np.arange(self.num_envs), held)
        slot = np.tile(slots, self.num_envs)
        keep = self._sampleable(env, slot)
        return env[keep], slot[keep]

    def sample(self, batch_size: int) -> Transition:
        """``batch_size`` transitions drawn uniformly with replacement, as CPU tensors.

        Candidates are drawn uniformly over held entries and the unsampleable ones (episode
        first frames, the oldest few entries of a wrapped stream) are redrawn, so accepted draws
        are uniform over sampleable transitions.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        available = len(self)
        if available == 0:
            raise ValueError("cannot sample: the replay holds no sampleable transition yet")
        held = self._held
        total = self.num_envs * held
        env = np.empty(0, dtype=np.int64)
        slot = np.empty(0, dtype=np.int64)
        while env.size < batch_size:
            missing = batch_size - env.size
            # Oversample by the rejection rate so one round almost always suffices.
            draws = math.ceil(missing * total / available) + 4
            flat = self._rng.integers(0, total, size=draws)
            candidate_env, position = np.divmod(flat, held)
            candidate_slot = (self._oldest_slot + position) % self.slots_per_env
            keep = self._sampleable(candidate_env, candidate_slot)
            env = np.concatenate([env, candidate_env[keep]])
            slot = np.concatenate([slot, candidate_slot[keep]])
        return self._gather(env[:batch_size], slot[:batch_size])

    def gather(self, env: np.ndarray, slot: np.ndarray) -> Transition:
        """The transitions at entries ``(env, slot)`` (from ``sampleable_indices``), as tensors.

        obs/next_obs are (B, stack * C, H, W) uint8, zero where a stack reaches before the
        episode's first frame: two views of one (B, stack + 1, C, H, W) array, not contiguous
        when stack > 1.
        """
        env = np.asarray(env, dtype=np.int64)
        slot = np.asarray(slot, dtype=np.int64)
        if not self._sampleable(env, slot).all():
            raise ValueError("gather was asked for entries that are not sampleable transitions")
        return self._gather(env, slot)

    def _gather(self, env: np.ndarray, slot: np.ndarray) -> Transition:
        """``gather`` of entries known to be sampleable (``sample`` drew only those)."""
        batch = env.shape[0]
        age = self._age[env, slot]
        window_slot = (slot[:, None] - self._back) % self.slots_per_env  # (B, stack + 1)
        window = np.where(
            self._back <= age[:, None],
            env[:, None] * self.slots_per_env + window_slot,
            self._zero_row,
        )
        # One gather of the stack + 1 frames of each window: obs and next_obs share stack - 1 of
        # them, so they are two views of it (for Atari's stack 4, 5 frames copied instead of 8).
        c, h, w = self.frame_shape
        frames = np.take(self._frames_flat, window.ravel(), axis=0).reshape(
            batch, self.stack + 1, c, h, w
        )
        obs = frames[:, :-1].reshape(batch, self.stack * c, h, w)
        next_obs = frames[:, 1:].reshape(batch, self.stack * c, h, w)
        terminated = (self._flags[env, slot] & TERMINATED) != 0
        discount = np.where(terminated, 0.0, self.gamma).astype(np.float32)
        return Transition(
            obs=torch.from_numpy(obs),
            action=torch.from_numpy(self._action[env, slot].astype(np.int64)),
            reward=torch.from_numpy(self._reward[env, slot]),
            discount=torch.from_numpy(discount),
            next_obs=torch.from_numpy(next_obs),
        )

    # ----------------------------------------------------------------------- size and checking

    def nbytes(self) -> int:
        """Bytes of storage allocated (whether or not filled yet)."""
        arrays = (self._frames_flat, self._action, self._reward, self._age, self._flags)
        return sum(a.nbytes for a in arrays)

    def bytes_per_transition(self) -> float:
        """Allocated bytes divided by ``capacity``."""
        return self.nbytes() / self.capacity

    def check_valid(self) -> None:
        """Raise ValueError if the stored streams break an invariant ``add`` maintains."""
        if self._count < 0:
            raise ValueError(f"negative entry count {self._count}")
        if self._frames_flat[self._zero_row].any():
            raise ValueError("the zero frame used for padding is not zero")
        if (self._flags & ~np.uint8(TERMINATED | TRUNCATED)).any():
            raise ValueError("flags hold bits other than terminated/truncated")
        if (self._age > self.stack).any():
            raise ValueError(f"ages must be at most stack = {self.stack}")
        held = self._held
        if held == 0:
            return
        order = (self._oldest_slot + np.arange(held)) % self.slots_per_env  # oldest first
        age = self._age[:, order]
        flags = self._flags[:, order]
        first = age == 0
        if (flags[first] != 0).any() or (self._action[:, order][first] != 0).any():
            raise ValueError("an episode's first entry carries an end flag or an action")
        if (self._reward[:, order][first] != 0).any():
            raise ValueError("an episode's first entry carries a reward")
        if self._count <= self.slots_per_env and not first[:, 0].all():
            raise ValueError("a stream that has not wrapped must start with a first entry")
        if (~first[:, 1:] & (flags[:, :-1] != 0)).any():
            raise ValueError("an entry after an episode end is not a first entry")
        expected = np.minimum(age[:, :-1].astype(np.int64) + 1, self.stack)
        if (~first[:, 1:] & (age[:, 1:] != expected)).any():
            raise ValueError("ages do not count up by one within an episode")
        if not np.isfinite(self._reward).all():
            raise ValueError("non-finite reward stored")

    # -------------------------------------------------------------------------------- state

    def state_dict(self, chunked: bool = False) -> dict[str, Any]:
        """Config scalars and the filled part of each array (numpy; no RNG, no pickle).

        Arrays are (num_envs, filled, ...) in slot order; where the buffer is full they share
        memory with it (as ``torch.nn.Module.state_dict`` does), so save before the next ``add``.
        ``chunked``: the frames as ``Chunks`` of ``chunk_slots`` slots of one copy each (views of
        the buffer), with their digests, for a checkpoint.
        """
        held = self._held
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "num_envs": self.num_envs,
            "frame_shape": list(self.frame_shape),
            "stack": self.stack,
            "gamma": self.gamma,
            "count": self._count,
        }
        for name in _STATE_ARRAYS:
            if name == "frames" and chunked:
                state[name] = self._frame_chunks()
            else:
                state[name] = np.ascontiguousarray(getattr(self, f"_{name}")[:, :held])
        return state

    def _chunk_layout(self) -> list[tuple[int, int, int, int]]:
        """``(copy, first slot, stop slot, entries written into it)`` of each checkpoint chunk of
        the held frames, copy by copy, oldest slot first: the parts of ``state_dict(chunked=True)``
        are ``frames[copy, first:stop]``. The write count names a chunk's contents: a chunk whose
        count has not moved since its digest was computed still has that digest."""
        held, slots, size = self._held, self.slots_per_env, self.chunk_slots
        laps, partial = divmod(self._count, slots)
        layout = []
        for env in range(self.num_envs):
            for start in range(0, held, size):
                stop = min(start + size, slots)
                writes = laps * (stop - start) + min(max(partial - start, 0), stop - start)
                layout.append((env, start, min(stop, held), writes))
        return layout

    def _frame_chunks(self) -> Chunks:
        """The held frames as chunks, copy by copy, oldest slot first; digests are computed for
        the chunks written into since their last one."""
        layout = self._chunk_layout()
        stale = [
            (i, (env, start), writes)
            for i, (env, start, _, writes) in enumerate(layout)
            if self._digests.get((env, start), (None,))[0] != writes
        ]
        parts = tuple(self._frames[env, start:stop] for env, start, stop, _ in layout)
        fresh = digests_of([parts[i] for i, _, _ in stale])
        for (_, key, writes), digest in zip(stale, fresh, strict=True):
            self._digests[key] = (writes, digest)
        shape = (self.num_envs, self._held, *self.frame_shape)
        digests = tuple(self._digests[(env, start)][1] for env, start, _, _ in layout)
        return Chunks(shape, parts, digests)

    def _adopt_digests(self, frames: Chunks) -> None:
        """Keep the digests of frames just loaded from chunks (checked by the read) where the
        chunks are this buffer's own, so the next save does not hash them again."""
        layout = self._chunk_layout()
        shapes = [(stop - start, *self.frame_shape) for _, start, stop, _ in layout]
        if [tuple(p.shape) for p in frames.parts] != shapes:
            return  # chunked otherwise (another chunk size): hashed at the next save
        for (env, start, _, writes), digest in zip(layout, frames.digests, strict=True):
            self._digests[(env, start)] = (writes, digest)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from ``state_dict`` output of a buffer with the same configuration (frames as
        an array or as ``Chunks``).

        Raises ValueError on a mismatched configuration or malformed arrays (the buffer is then
        unchanged) or on arrays that break an invariant (the buffer is then left empty).
        """
        missing = {"capacity", "num_envs", "frame_shape", "stack", "gamma", "count"}
        missing = (missing | set(_STATE_ARRAYS)) - set(state)
        if missing:
            raise ValueError(f"replay state lacks {sorted(missing)}")
        config = {
            "capacity": (self.capacity, int(state["capacity"])),
            "num_envs": (self.num_envs, int(state["num_envs"])),
            "frame_shape": (self.frame_shape, tuple(int(x) for x in state["frame_shape"])),
            "stack": (self.stack, int(state["stack"])),
            "gamma": (self.gamma, float(state["gamma"])),
        }
        for key, (ours, theirs) in config.items():
            if ours != theirs:
                raise ValueError(f"replay state has {key}={theirs}, this buffer has {ours}")
        count = int(state["count"])
        if count < 0:
            raise ValueError(f"replay state has a negative count {count}")
        held = min(count, self.slots_per_env)
        chunks = state["frames"] if isinstance(state["frames"], Chunks) else None
        if chunks is not None:
            state = {**state, "frames": chunks.joined()}
        for name in _STATE_ARRAYS:
            ours = getattr(self, f"_{name}")
            theirs = np.asarray(state[name])
            want = (self.num_envs, held, *ours.shape[2:])
            if theirs.shape != want or theirs.dtype != ours.dtype:
                raise ValueError(
                    f"replay state {name!r} is {theirs.dtype}{list(theirs.shape)}, "
                    f"expected {ours.dtype}{list(want)}"
                )
        self._digests.clear()
        for name in _STATE_ARRAYS:
            ours = getattr(self, f"_{name}")
            ours[:, :held] = state[name]
            ours[:, held:] = 0
        self._count = count
        try:
            self.check_valid()
        except ValueError:
            self._count = 0
            raise
        if chunks is not None:
            self._adopt_digests(chunks)
