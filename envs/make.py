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
