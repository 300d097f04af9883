"""Atari 2600 games through ale-py, preprocessed as in Kirkpatrick et al. 2017 (Table S2).

The chain, in order (each step's owner in brackets):

1. ALE v5 ROM shipped with ale-py, the full 18-action set in every game, sticky actions off by
   default (0.25 for Machado et al. 2018), episodes capped at 108,000 frames (truncation) [ale-py]
2. up to 30 no-op actions after each reset; no FIRE on reset unless asked [ale-py]
3. each agent action repeated for 4 frames, the last two max-pooled, rewards summed [ale-py]
4. greyscale (ALE's luminance palette) [ale-py]
5. 210x160 -> 84x84: bilinear by default as the paper says, done here with OpenCV; or ale-py's
   own INTER_AREA resize when ``resize="area"`` [here / ale-py]
6. last 4 frames stacked, zeros before the episode's first frame [envs.vector.FrameStacker]

Rewards are reported raw; the learner clips them to [-1, 1]. The default backend is ale-py's
multi-threaded C++ ``AtariVectorEnv`` running N copies of one game; ``backend="gymnasium"``
runs gymnasium's ALE env with its ``AtariPreprocessing`` wrapper in a ``SyncVectorEnv`` instead,
with steps 5 and 6 shared.
"""

from __future__ import annotations

import os

import ale_py
import cv2
import gymnasium as gym
import numpy as np
from ale_py.vector_env import AtariVectorEnv
from gymnasium.wrappers import AtariPreprocessing

from envs.games import GameSpec
from envs.vector import EnvConfig, EnvStep, FrameStacker
from ewc_dqn.errors import UserError

NUM_ACTIONS = 18
RAW_SHAPE = (210, 160)
OBS_SIZE = 84


class AtariEnv:
    """N copies of one Atari game behind the package's ``VectorEnv`` interface."""

    def __init__(self, game: GameSpec, config: EnvConfig, seed: int) -> None:
        if game.suite != "atari":
            raise ValueError(f"{game.name} is not an Atari game")
        config.validate()
        self.game = game.name
        self.config = config
        self.num_envs = config.num_envs
        self.num_actions = NUM_ACTIONS
        self.frame_shape = (1, OBS_SIZE, OBS_SIZE)
        self.frames_per_step = config.frame_skip
        self._seed = seed
        self._native_resize = config.resize == "area" and config.backend == "vector"
        self._source = _make_source(game, config, seed, self._native_resize)
        self._stacker = FrameStacker(self.num_envs, self.frame_shape, config.frame_stack)
        self._done = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start every copy afresh; ``seed`` (default: the constructor's) seeds copy i with
        seed + i. Returns observations (N, stack, 84, 84) uint8."""
        seed = self._seed if seed is None else seed
        raw, _ = self._source.reset(seed=int(seed))  # both backends seed copy i with seed + i
        self._done[:] = False
        return self._stacker.reset(self._frames(raw))

    def step(self, actions: np.ndarray) -> EnvStep:
        """Act in every copy; ``actions`` (N,) integers in [0, 18)."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {actions.shape}")
        raw, reward, terminated, truncated, _ = self._source.step(actions.astype(np.int64))
        is_first = self._done.copy()  # next-step autoreset: this obs starts a new episode
        self._done = np.logical_or(terminated, truncated) & ~is_first
        return self._stacker.step(
            self._frames(raw),
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            is_first,
            self.frames_per_step,
        )

    def close(self) -> None:
        self._source.close()

    def _frames(self, raw: np.ndarray) -> np.ndarray:
        """(N, 1, H, W) or (N, H, W) greyscale -> (N, 1, 84, 84) uint8."""
        raw = np.asarray(raw)
        if raw.ndim == 4:
            raw = raw[:, -1]
        if self._native_resize:
            return raw[:, None]
        out = np.empty((raw.shape[0], 1, OBS_SIZE, OBS_SIZE), dtype=np.uint8)
        for i, frame in enumerate(raw):  # N is small; cv2 releases the GIL
            out[i, 0] = cv2.resize(frame, (OBS_SIZE, OBS_SIZE), interpolation=cv2.INTER_LINEAR)
        return out


def _make_source(game: GameSpec, config: EnvConfig, seed: int, native_resize: bool):
    """The raw max-pooled greyscale frame source, with next-step autoreset."""
    if config.backend == "vector":
        h, w = (OBS_SIZE, OBS_SIZE) if native_resize else RAW_SHAPE
        return AtariVectorEnv(
            game=game.env_id,
            num_envs=config.num_envs,
            num_threads=config.num_threads or min(config.num_envs, os.cpu_count() or 1),
            max_num_frames_per_episode=config.max_episode_frames,
            repeat_action_probability=config.repeat_action_probability,
            full_action_space=True,
            autoreset_mode="NextStep",
            img_height=h,
            img_width=w,
            grayscale=True,
            stack_num=1,
            frameskip=config.frame_skip,
            maxpool=True,
            noop_max=config.noop_max,
            episodic_life=False,
            # A termination signal at each lost life, the game going on: stable-baselines3's
            # EpisodicLifeEnv (episodic_life=True would restart the game at every life).
            life_loss_info=config.terminal_on_life_loss,
            reward_clipping=False,
            use_fire_reset=config.fire_reset,
        )
    return gym.vector.SyncVectorEnv(
        [lambda: _gymnasium_env(game, config) for _ in range(config.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )


def _gymnasium_env(game: GameSpec, config: EnvConfig) -> gym.Env:
    gym.register_envs(ale_py)
    env = gym.make(
        f"ALE/{game.name}-v5",
        frameskip=1,
        repeat_action_probability=config.repeat_action_probability,
        full_action_space=True,
        max_num_frames_per_episode=config.max_episode_frames,
    )
    if config.fire_reset or config.terminal_on_life_loss:
        raise UserError(
            "fire_reset and terminal_on_life_loss are only available with backend='vector'"
        )
    # screen_size = raw size: AtariPreprocessing skips its own resize, so both backends share the
    # bilinear resize and the stacking done here.
    return AtariPreprocessing(
        env,
        noop_max=config.noop_max,
        frame_skip=config.frame_skip,
        screen_size=(RAW_SHAPE[1], RAW_SHAPE[0]),
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )
