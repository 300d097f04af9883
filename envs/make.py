"""Build the environment for a game by name, whichever suite it belongs to."""

from __future__ import annotations

from envs import atari, minatar_env
from envs.atari import AtariEnv
from envs.games import GameSpec, Suite, resolve_game
from envs.minatar_env import MinAtarEnv
from envs.vector import EnvConfig, VectorEnv


def frame_spec(suite: Suite) -> tuple[tuple[int, int, int], int]:
    """(one frame's shape (C, H, W), number of actions) of every game of a suite: the same for
    all its games, which is what lets one network serve them all."""
    if suite == "minatar":
        grid = minatar_env.GRID
        return (minatar_env.NUM_CHANNELS, grid, grid), minatar_env.NUM_ACTIONS
    return (1, atari.OBS_SIZE, atari.OBS_SIZE), atari.NUM_ACTIONS


def make_env(game: str | GameSpec, config: EnvConfig, seed: int) -> VectorEnv:
    """N copies of ``game`` (a name as accepted by ``resolve_game``, or a spec).

    Unknown names raise ``UnknownGameError`` (a ValueError with a one-line message).
    """
    spec = resolve_game(game) if isinstance(game, str) else game
    if spec.suite == "minatar":
        return MinAtarEnv(spec, config, seed)
    return AtariEnv(spec, config, seed)


class EnvCache:
    """Environments kept open between uses, one per game and config.

    Starting ALE costs about a second per game, and a continual run starts one for every
    training segment and every game of every evaluation. A reset with a seed plays exactly as a
    new environment made with that seed (``tests/test_envs.py``), so handing out a kept one and
    resetting it changes no result.
    """

    def __init__(self) -> None:
        self._envs: dict[tuple[str, EnvConfig], VectorEnv] = {}

    def get(self, game: GameSpec, config: EnvConfig) -> VectorEnv:
        """The kept environment of ``game`` under ``config`` (made on first use); reset it with
        a seed before use."""
        key = (game.name, config)
        if key not in self._envs:
            self._envs[key] = make_env(game, config, seed=0)
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()
