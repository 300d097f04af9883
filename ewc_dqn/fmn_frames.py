"""What forget-me-not models of a frame: the features each task's Dirichlet models count.

A frame becomes P features, each with one of L levels (``FrameCode.encode``). Features are
grouped: the pooled background of the hold-out and a task's shrinkage (``ewc_dqn.fmn_maths``)
share counts within a group. Groups are contiguous runs of features.

- **Atari** (``atari_code``): an (H, W) uint8 greyscale frame is block-averaged by ``downscale``
  (84x84 -> 42x42, OpenCV ``INTER_AREA``: exact block means) and each pixel quantised to
  ``levels`` grey levels (``level = grey * levels // 256``); one group, unused by the Atari model.
- **Atari level planes** (``atari_level_plane_code``, ``FMNConfig.atari_features``): the same
  downscaled, quantised frame as one 0/1 plane per grey level, coded as MinAtar planes are
  (below): where each grey level lies, row by row and column by column, not at every pixel.
- **Atari palette** (``atari_palette_code``, ``FMNConfig.atari_features``): which of the 256
  grey values the (H, W) frame shows on at least ``min_pixels`` pixels: 256 features of 2
  levels, nothing about where.
- **MinAtar** (``minatar_code``): (C, H, W) 0/1 planes become three blocks of counts, each plane
  its own group in each block:
    rows:   set cells of plane c in row r, 0..W      (C * H features)
    cols:   set cells of plane c in column x, 0..H   (C * W features)
    planes: set cells of plane c, in the bins 0 | 1 | 2 | 3-4 | 5-8 | 9-16 | 17-32 | 33+
            (``PLANE_COUNT_BINS``; C features)
  so 210 features with L = 11 levels for the package's (10, 10, 10) planes. Counts along rows
  and columns keep which planes a game uses and where, but not the exact cell of a moving
  object, so the models generalise over positions (docs/fmn.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

PLANE_COUNT_BINS = np.array([1, 2, 3, 5, 9, 17, 33])
"""Lower edges of the plane-count bins 1..7 (bin 0 is an empty plane)."""


@dataclass(frozen=True)
class FrameCode:
    """How frames of one shape become features.

    levels: L, levels per feature (every feature's rows in the count tables span L levels;
            ``valid`` says which a feature can take)
    groups: (G + 1,) start of each group of features and P at the end (contiguous runs)
    valid:  (P, L) bool, the levels each feature can take
    """

    kind: str  # "atari", "atari-planes", "atari-palette" or "minatar"
    levels: int
    groups: np.ndarray
    valid: np.ndarray
    downscale: int = 1
    channel_axis: int = 0
    levels_in_frame: int = 0  # grey levels of an Atari frame coded as level planes
    min_pixels: int = 0  # pixels that make a grey value present (palette)

    @property
    def num_features(self) -> int:
        return int(self.groups[-1])

    def encode(self, frame: np.ndarray, lut: np.ndarray) -> np.ndarray:
        """(P,) uint8 level of every feature of a frame already checked for shape and dtype.
        ``lut`` maps grey values to levels (Atari only)."""
        if self.kind == "minatar":
            return minatar_features(np.moveaxis(frame, self.channel_axis, 0))
        if self.kind == "atari-palette":
            return palette_features(frame, self.min_pixels)
        d = self.downscale
        if d > 1:
            h, w = frame.shape
            frame = cv2.resize(frame, (w // d, h // d), interpolation=cv2.INTER_AREA)
        if self.kind == "atari":
            return np.take(lut, frame.reshape(-1))
        return level_plane_features(np.take(lut, frame), self.levels_in_frame)


def atari_code(shape: tuple[int, ...], downscale: int, levels: int) -> FrameCode:
    """Features of an (H, W) greyscale frame: its downscaled pixels, ``levels`` grey levels."""
    pixels = (shape[0] // downscale) * (shape[1] // downscale)
    return FrameCode(
        kind="atari",
        levels=levels,
        groups=np.array([0, pixels]),
        valid=np.ones((pixels, levels), dtype=bool),
        downscale=downscale,
    )


def atari_level_plane_code(shape: tuple[int, ...], downscale: int, levels: int) -> FrameCode:
    """Features of an (H, W) greyscale frame as ``levels`` planes of its downscaled pixels, one
    per grey level, counted as MinAtar planes are."""
    height, width = shape[0] // downscale, shape[1] // downscale
    planes = minatar_code(levels, height, width, 0)
    return replace(planes, kind="atari-planes", downscale=downscale, levels_in_frame=levels)


def atari_palette_code(min_pixels: int) -> FrameCode:
    """Features of an (H, W) greyscale frame: whether each grey value 0..255 is present."""
    return FrameCode(
        kind="atari-palette",
        levels=2,
        groups=np.array([0, 256]),
        valid=np.ones((256, 2), dtype=bool),
        min_pixels=min_pixels,
    )


def palette_features(frame: np.ndarray, min_pixels: int) -> np.ndarray:
    """(256,) uint8: 1 where grey value v is on at least ``min_pixels`` pixels of ``frame``."""
    return (np.bincount(frame.ravel(), minlength=256) >= min_pixels).view(np.uint8)


def minatar_code(channels: int, height: int, width: int, channel_axis: int) -> FrameCode:
    """Features of (C, H, W) planes: counts per (plane, row), per (plane, column) and per plane."""
    sizes = [height] * channels + [width] * channels + [1] * channels
    groups = np.concatenate([[0], np.cumsum(sizes)])
    levels = max(width + 1, height + 1, len(PLANE_COUNT_BINS) + 1)
    valid = np.zeros((int(groups[-1]), levels), dtype=bool)
    rows, cols = channels * height, channels * width
    valid[:rows, : width + 1] = True
    valid[rows : rows + cols, : height + 1] = True
    valid[rows + cols :, : len(PLANE_COUNT_BINS) + 1] = True
    return FrameCode(
        kind="minatar", levels=levels, groups=groups, valid=valid, channel_axis=channel_axis
    )


def level_plane_features(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """``minatar_features`` of the one-hot planes of an (H, W) map of grey levels, without
    making them: pixels of each level per row and per column, and each level's count bin."""
    height, width = levels.shape
    flat = levels.astype(np.intp)
    rows = np.bincount(
        (flat * height + np.arange(height)[:, None]).ravel(), minlength=num_levels * height
    )
    cols = np.bincount((flat * width + np.arange(width)).ravel(), minlength=num_levels * width)
    totals = rows.reshape(num_levels, height).sum(axis=1)
    bins = np.searchsorted(PLANE_COUNT_BINS, totals, side="right")
    return np.concatenate([rows, cols, bins]).astype(np.uint8)


def minatar_features(planes: np.ndarray) -> np.ndarray:
    """(C * H + C * W + C,) uint8: set cells per (plane, row), per (plane, column), and the
    plane-count bin of each plane, for (C, H, W) 0/1 planes (uint8 or bool)."""
    rows = planes.sum(axis=2, dtype=np.uint16)  # (C, H)
    cols = planes.sum(axis=1, dtype=np.uint16)  # (C, W)
    bins = np.searchsorted(PLANE_COUNT_BINS, rows.sum(axis=1), side="right")
    return np.concatenate([rows.ravel(), cols.ravel(), bins]).astype(np.uint8)
