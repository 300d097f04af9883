"""Synthetic MinAtar-like frames for the task-inference tests: random plane patterns that stand
for games, boards drawn from them with moving objects, and a game's second board."""

from __future__ import annotations

import numpy as np


def minatar_sources(n: int, seed: int) -> list[np.ndarray]:
    """n random (10, 10, 10) 0/1 plane patterns, each using its own planes."""
    rng = np.random.default_rng(seed)
    sources = []
    for k in range(n):
        base = np.zeros((10, 10, 10), dtype=bool)
        used = rng.choice(10, size=3, replace=False)
        base[used] = rng.random((3, 10, 10)) < 0.15 + 0.1 * k
        sources.append(base)
    return sources


def minatar_draw(source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The source's planes with each row rolled by -1, 0 or 1 cells (objects that move)."""
    shifts = rng.integers(-1, 2, size=(10, 10))
    out = np.empty_like(source)
    for c in range(10):
        for r in range(10):
            out[c, r] = np.roll(source[c, r], shifts[c, r])
    return out.astype(np.uint8)


def second_mode(source: np.ndarray) -> np.ndarray:
    """The source's board with a plane it never uses filled: a screen of the same game that its
    model has not seen (a cleared wall, a new wave)."""
    mode = source.copy()
    unused = int(np.flatnonzero(~source.any(axis=(1, 2)))[0])
    mode[unused] = True
    return mode


def mode_stream(sources: list[np.ndarray], plan: list[tuple[str, int]], seed: int) -> list:
    """Frames of ``plan``: (what, steps) with what 'A' (game 0), 'A2' (its second mode) or 'B'."""
    rng = np.random.default_rng(seed)
    boards = {"A": sources[0], "A2": second_mode(sources[0]), "B": sources[1]}
    return [minatar_draw(boards[what], rng) for what, steps in plan for _ in range(steps)]
