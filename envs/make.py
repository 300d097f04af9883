"""Build the environment for a game by name, whichever suite it belongs to."""

from __future__ import annotations

from envs.atari import AtariEnv
from envs.games import GameSpec, resolve_game
from envs.minatar_env import MinAtarEnv
from envs.vector import EnvConfig, VectorEnv


def make_env(game: str | GameSpec, config: EnvConfig, seed: int) -> VectorEnv:
    """N copies of ``game`` (a name as accepted by ``resolve_game``, or a spec).

    Unknown names raise ``UnknownGameError`` (a ValueError with a one-line message).
    """
    spec = resolve_game(game) if isinstance(game, str) else game
    if spec.suite == "minatar":
        return MinAtarEnv(spec, config, seed)
    return AtariEnv(spec, config, seed)
