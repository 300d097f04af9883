"""Pure maths of forget-me-not task inference: Dirichlet-categorical pixel models and the HMM.

A task's model of one frame is a product over P pixels of categorical distributions over L
quantised levels, each with a symmetric Dirichlet(beta) prior. After counting n_pl frames with
level l at pixel p (N frames in all), the predictive probability of a frame x is

    p(x) = prod_p (n_p,x_p + beta) / (N + L * beta),

and the sequential (Bayesian-updated) marginal likelihood of F more frames whose level counts are
m_pl is the Dirichlet-multinomial

    p(x_1..x_F) = prod_p [prod_l (n_pl + beta)^(m_pl)] / (N + L * beta)^(F),

with a^(m) = a (a + 1) ... (a + m - 1) the rising factorial. Only pairs (p, l) with m_pl > 0
contribute, so a window costs one term per distinct (pixel, level) it shows.

Pooled background and shrinkage (the MinAtar model, ``effective_counts``): every model's prior
adds to its counts ``kappa`` times its own mean over the feature's group and ``c`` frames of the
pooled level distribution of the group (all tasks' counts together), so the pseudo-counts are

    e_s[p, l] = n_s[p, l] + kappa * mean_{q in g(p)} n_s[q, l] + c * m[g(p), l],
    E_s = (1 + kappa) N_s + c,

and the predictive and window formulas above hold with (e, E) in place of (n, N). The hold-out
has no counts: it predicts the pooled background m, with c frames' weight, and learns from there.

Everything here is a function of arrays; the stateful owner is ``ewc_dqn.fmn.ForgetMeNot``.
"""

from __future__ import annotations

import math

import numpy as np

FACTORS_PER_LOG = 32
"""Factors multiplied together before one log is taken: a product of 32 factors in
[1e-4, 1e9] (count + concentration) stays inside float64's range (1e-128 to 1e288)."""


def log_rising_factorial(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Sum over axis 0 of log(start (start + 1) ... (start + length - 1)).

    start:  (Q, S) float64 > 0, one row per (pixel, level) pair, one column per model
    length: (Q,) non-negative integers, the rising factorial's number of factors per row
    Returns (S,) float64. Logs dominate the cost, so factors are multiplied together, within a
    row and then across rows, up to ``FACTORS_PER_LOG`` per product, and one log is taken per
    product.
    """
    if start.ndim != 2 or length.shape != (start.shape[0],):
        raise ValueError(f"start {start.shape} and length {length.shape} do not match")
    # Rows sorted by decreasing length, so the rows still multiplying at step j are a prefix.
    start = np.asarray(start, dtype=np.float64)
    if np.any(length[1:] > length[:-1]):
        order = np.argsort(-length, kind="stable")
        start, length = start[order], length[order]
    active = np.bincount(length, minlength=1)[::-1].cumsum()[::-1]  # active[j] = #(length >= j)
    total = np.zeros(start.shape[1])
    longest = active.shape[0] - 1
    scratch = np.empty_like(start[: active[min(1, longest)]])
    for group in range(0, longest, FACTORS_PER_LOG):
        factors = min(FACTORS_PER_LOG, longest - group)
        rows = active[group + 1]
        product = np.add(start[:rows], group)
        for j in range(group + 1, group + factors):
            r = active[j + 1]
            product[:r] *= np.add(start[:r], j, out=scratch[:r])
        while rows > 1 and 2 * factors <= FACTORS_PER_LOG:  # fold the last rows onto the first
            half = rows // 2
            product[:half] *= product[rows - half : rows]
            rows -= half
            factors *= 2
        total += np.log(product[:rows]).sum(axis=0)
    return total


def dirichlet_log_likelihood(
    counts_at_pairs: np.ndarray,
    pair_frames: np.ndarray,
    totals: np.ndarray,
    num_frames: int,
    num_pixels: int,
    concentration: float,
    levels: int,
) -> np.ndarray:
    """Sequential marginal log-likelihood of a block of frames under S Dirichlet-categorical
    pixel models (each model updated by Bayesian counting after every frame of the block).

    counts_at_pairs: (Q, S) committed counts n_s[p, l] at the Q distinct (pixel, level) pairs
                     the block shows
    pair_frames:     (Q,) frames of the block showing each pair (sums to num_frames * P)
    totals:          (S,) frames N_s each model has counted
    num_frames:      F, frames in the block
    Returns (S,) float64 log p_s(block) in nats.
    """
    start = counts_at_pairs.astype(np.float64)
    start += concentration
    numerator = log_rising_factorial(start, pair_frames)
    steps = np.arange(num_frames)[:, None]
    denominator = np.log(totals[None, :] + levels * concentration + steps).sum(axis=0)
    return numerator - num_pixels * denominator


def frame_log_likelihood(
    log_table_at_frame: np.ndarray, totals: np.ndarray, concentration: float, levels: int
) -> np.ndarray:
    """Predictive log-likelihood of one frame under S committed models.

    log_table_at_frame: (P, S) float32 log(n_s[p, x_p] + beta) for the frame's level at each pixel
    totals:             (S,) frames N_s each model has counted
    Returns (S,) float64 nats.
    """
    num_pixels = log_table_at_frame.shape[0]
    # a product with ones: a summation along axis 0 several times faster than ndarray.sum here
    ones = np.ones(num_pixels, dtype=log_table_at_frame.dtype)
    summed = (ones @ log_table_at_frame).astype(np.float64)
    return summed - num_pixels * np.log(totals + levels * concentration)


def effective_counts(
    counts: np.ndarray,
    totals: np.ndarray,
    groups: np.ndarray,
    valid: np.ndarray,
    shrinkage: float,
    pool_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-counts of S models with a task's own group mean and the pooled background in
    their prior (module docstring).

    counts:      (P, L, S) frames n_s[p, l] with level l at feature p (a hold-out column is 0)
    totals:      (S,) frames N_s each model has counted
    groups:      (G + 1,) feature index where each group starts, P at the end
    valid:       (P, L) bool, the levels a feature can take (the background of a group with no
                 counts yet is uniform over them)
    shrinkage:   kappa >= 0, weight of the model's own mean over the group
    pool_weight: c >= 0, frames' worth of the pooled background
    Returns (P, L, S) float64 pseudo-counts e and (S,) float64 totals E.
    """
    p, levels, _ = counts.shape
    if groups[0] != 0 or groups[-1] != p or valid.shape != (p, levels):
        raise ValueError(f"groups {groups} or valid {valid.shape} do not fit counts {counts.shape}")
    sizes = np.diff(groups)
    summed = np.add.reduceat(counts.astype(np.float64), groups[:-1], axis=0)  # (G, L, S)
    out = counts.astype(np.float64)
    if shrinkage:
        out += shrinkage * np.repeat(summed / sizes[:, None, None], sizes, axis=0)
    if pool_weight:
        pooled = summed.sum(axis=2)  # (G, L)
        norm = pooled.sum(axis=1, keepdims=True)
        uniform = valid[groups[:-1]] / valid[groups[:-1]].sum(axis=1, keepdims=True)
        background = np.where(norm > 0, pooled / np.maximum(norm, 1e-300), uniform)
        out += pool_weight * np.repeat(background, sizes, axis=0)[:, :, None]
    return out, (1.0 + shrinkage) * np.asarray(totals, dtype=np.float64) + pool_weight


def switch_rate(observation: int, scale: float) -> float:
    """The HMM's switch probability alpha_t = scale / t at the t-th model observation (t >= 1),
    capped at 1/2 so the first few steps do not force a switch."""
    if observation < 1:
        raise ValueError(f"observation index starts at 1, got {observation}")
    return min(0.5, scale / observation)


def filter_step(log_posterior: np.ndarray, log_likelihood: np.ndarray, alpha: float) -> np.ndarray:
    """One forward step of the task HMM, in log space.

    With probability 1 - alpha the task stays, with probability alpha it is redrawn uniformly
    over the S states (tasks and the hold-out); then the frame's log-likelihoods are added and the
    result normalised. Shapes (S,) float64; states with log posterior -inf are allowed.
    """
    prior = np.exp(log_posterior - log_posterior.max())
    prior *= (1.0 - alpha) / prior.sum()
    prior += alpha / log_posterior.shape[0]
    joint = np.log(prior)
    joint += log_likelihood
    top = joint.max()
    joint -= top + math.log(np.exp(joint - top).sum())
    return joint


def best_two_segments(
    prefix: np.ndarray, suffix: np.ndarray, holdout: int
) -> tuple[float, int, int, int]:
    """The best explanation of a window by two different models with one switch inside it.

    prefix: (M, W-1) log-likelihood of frames [0, s) under each model, column s - 1
    suffix: (M, W-1) log-likelihood of frames [s, W) under each model, each scored afresh
    holdout: row of the untrained model; it may explain the second segment (a new task starting
             inside the window) but not the first (it cannot be older than the window).
    Returns (score, first, second, s), score -inf when no such pair exists.
    """
    m, splits = prefix.shape
    if suffix.shape != (m, splits):
        raise ValueError(f"prefix {prefix.shape} and suffix {suffix.shape} differ")
    if splits == 0 or m < 2:
        return -math.inf, 0, 0, 0
    score = prefix[:, None, :] + suffix[None, :, :]  # [first, second, s - 1]
    score[np.arange(m), np.arange(m), :] = -np.inf
    score[holdout, :, :] = -np.inf
    first, second, s = np.unravel_index(int(np.argmax(score)), score.shape)
    return float(score[first, second, s]), int(first), int(second), int(s) + 1
