"""The adjusted Rand index (Hubert & Arabie 1985) of two labelings, from their contingency table.

One formula for both uses: how well the task ids used in training match the games
(``label_ari``, from per-step counts the training loop keeps instead of a history) and how the
task ids of a run's evaluations group its games (``partition_ari``, in the comparison of runs).
The tests check it against ``sklearn.metrics.adjusted_rand_score``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

PairCount = Callable[[np.ndarray], np.ndarray]
"""Maps item counts to the number of pairs among them."""


def _pairs(x: np.ndarray) -> np.ndarray:
    return x * (x - 1) / 2


def adjusted_rand_from_counts(
    counts: Mapping[tuple[Any, Any], float], pairs: PairCount = _pairs
) -> float:
    """Adjusted Rand index of two labelings given as a contingency table {(label a, label b): n}.

    Same value as ``sklearn.metrics.adjusted_rand_score`` on the expanded label arrays. 1.0 for
    identical partitions (and for partitions with no pairs to compare, as scikit-learn does),
    about 0 for unrelated ones.
    """
    if not counts:
        return 1.0
    n_ij = np.array(list(counts.values()), dtype=np.float64)
    labels_a = sorted({a for a, _ in counts})
    labels_b = sorted({b for _, b in counts})
    a = np.array([sum(c for (t, _), c in counts.items() if t == k) for k in labels_a], np.float64)
    b = np.array([sum(c for (_, u), c in counts.items() if u == k) for k in labels_b], np.float64)
    n = n_ij.sum()

    def total(x: np.ndarray) -> float:
        return float(pairs(x).sum())

    index, sum_a, sum_b = total(n_ij), total(a), total(b)
    every = total(np.array([n]))
    expected = sum_a * sum_b / every if every > 0 else 0.0
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:  # both partitions trivial in the same way
        return 1.0
    return float((index - expected) / (max_index - expected))


def adjusted_rand_index(labels_a: Sequence[object], labels_b: Sequence[object]) -> float:
    """Adjusted Rand index of two labelings of the same items (1 = same partition, ~0 = chance)."""
    return adjusted_rand_from_counts(_contingency(labels_a, labels_b))


def partition_ari(labels_a: Sequence[object], labels_b: Sequence[object]) -> float:
    """Adjusted Rand index of two partitions of a few items, each item standing for an equal,
    large mass (the limit of ``adjusted_rand_index`` with every item repeated m times, m -> inf).

    For labels with one item per class, such as the task id each game used at an evaluation,
    the plain ARI is degenerate: no two items share a game, so it is 0 for any merge at all
    (and 1 only when every id differs). Here a game is a block of equally weighted frames:
    games [A, B, C] with ids [0, 1, 1] score 4/7, with ids [0, 1, 2] score 1.
    """
    # Pair counts of m-fold copies are m^2 n^2 / 2 up to O(m) terms; the m^2 cancels in the ARI.
    return adjusted_rand_from_counts(_contingency(labels_a, labels_b), lambda n: n * n / 2)


def _contingency(
    labels_a: Sequence[object], labels_b: Sequence[object]
) -> Counter[tuple[str, str]]:
    if len(labels_a) != len(labels_b):
        raise ValueError(f"{len(labels_a)} labels vs {len(labels_b)}")
    return Counter(zip(map(str, labels_a), map(str, labels_b), strict=True))
