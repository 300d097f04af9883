"""MinAtar (Young & Tian 2019): five 10x10 miniature Atari games that learn on a CPU.

Behind the same ``VectorEnv`` interface as Atari so one training loop and one network serve
both suites:

- observations are the game's binary planes as uint8 0/1, channels first, **padded with zero
  planes to 10 channels** (Seaquest's count), so every game has the shape (10, 10, 10);
- the action set is MinAtar's full set of 6 actions (no-op, left, up, right, down, fire) in every
  game, the MinAtar analogue of Atari's full 18-action set;
- one agent step is one MinAtar frame (``frames_per_step`` = 1), so the frame cap counts steps;
- sticky actions come from ``EnvConfig.repeat_action_probability`` (MinAtar's own default is 0.1,
  which the MinAtar presets use); there are no no-op starts (MinAtar randomises its own starts).
"""

from __future__ import annotations

import numpy as np
from minatar import Environment

from envs.games import GameSpec
from envs.vector import EnvConfig, EnvStep, FrameStacker
from ewc_dqn.errors import UserError

NUM_ACTIONS = 6
NUM_CHANNELS = 10
GRID = 10


class MinAtarEnv:
    """N copies of one MinAtar game with next-step autoreset."""

    def __init__(self, game: GameSpec, config: EnvConfig, seed: int) -> None:
        if game.suite != "minatar":
            raise ValueError(f"{game.name} is not a MinAtar game")
        config.validate()
        if config.terminal_on_life_loss:
            raise UserError("terminal_on_life_loss is for Atari games; MinAtar games have no lives")
        self.game = game.name
        self.config = config
        self.num_envs = config.num_envs
        self.num_actions = NUM_ACTIONS
        self.frame_shape = (NUM_CHANNELS, GRID, GRID)
        self.frames_per_step = 1
        self._seed = seed
        self._env_id = game.env_id
        self._envs: list[Environment] = []
        self._stacker = FrameStacker(self.num_envs, self.frame_shape, config.frame_stack)
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._frames = np.zeros((self.num_envs, *self.frame_shape), dtype=np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start every copy afresh; ``seed`` reseeds copy i with seed + i. The games are made
        anew (MinAtar keeps state such as the sticky action across its own reset), so a reset
        with a seed plays exactly as a new environment with that seed."""
        seed = self._seed if seed is None else seed
        self._envs = [
            Environment(self._env_id, sticky_action_prob=self.config.repeat_action_probability)
            for _ in range(self.num_envs)
        ]
        for i, env in enumerate(self._envs):
            env.seed(seed + i)  # MinAtar's own RandomState, never numpy's global one
            env.reset()
            self._read(i)
        self._done[:] = False
        return self._stacker.reset(self._frames)

    def step(self, actions: np.ndarray) -> EnvStep:
        """Act in every copy; ``actions`` (N,) integers in [0, 6)."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {actions.shape}")
        n = self.num_envs
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        is_first = self._done.copy()
        cap = self.config.max_episode_frames
        for i, env in enumerate(self._envs):
            if is_first[i]:
                env.reset()
            else:
                r, term = env.act(int(actions[i]))
                reward[i], terminated[i] = r, term
            self._read(i)
        step = self._stacker.step(
            self._frames, reward, terminated, np.zeros(n, dtype=bool), is_first, 1
        )
        truncated = (step.episode_frames >= cap) & ~step.terminated & ~is_first
        self._done = step.terminated | truncated
        return step._replace(truncated=truncated)

    def close(self) -> None:
        self._envs.clear()

    def _read(self, i: int) -> None:
        state = self._envs[i].state()  # (10, 10, C) bool
        c = state.shape[-1]
        self._frames[i, :c] = np.moveaxis(state, -1, 0)
        self._frames[i, c:] = 0
