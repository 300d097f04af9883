"""Random patterns: EWC keeps a power-law memory where gradient descent forgets exponentially.

The memory-theory check of Kirkpatrick et al. 2017 (main text Fig. 2, SI Fig. S2). A linear
network of N synapses, w in R^N starting at 0, learns to map random patterns x_t in {-1, +1}^N
to random outcomes y_t in {-1, +1}, one pattern at a time (t = 1, 2, ...), each drawn
independently and uniformly. Its response to a pattern is h = w . x.

Learners (one update per pattern; the same pattern sequence for every learner):

- ``gd_first``, ``gd_capacity``: plain gradient descent on (1/2) (y - w . x)^2 with a constant
  rate, w <- w + eta (y - h) x: at eta = 1/N (EWC's rate at the first pattern; this step also
  learns the pattern exactly, h -> y, like training each new pattern to convergence) and at
  eta = 1/(2N) (EWC's rate once N patterns, the network's capacity, are stored; SI Fig. S2);
- ``ewc``: the exact minimiser of (1/2) (y - w . x)^2 + (1/2) sum_i F_i (w_i - w*_i)^2 with w*
  the weights before the pattern and F the sum of the earlier patterns' Fisher diagonals
  (lambda = 1, the Bayesian value; a unit-variance Gaussian likelihood has the Fisher diagonal
  x_i^2 = 1 per pattern). F_i = t - 1 for every synapse, so the minimiser is a gradient step
  with rate eta_t = 1 / (N + t - 1): EWC is gradient descent whose rate falls as 1/t.

SNR of pattern s after t patterns: the mean of y_s h_s over repeats divided by the standard
deviation of the response to an unlearnt random pattern, sqrt(E |w_t|^2). A memory is retained
while its SNR exceeds ``threshold``. The analytic curves are the exact recursions of those two
moments (derivation in docs/ewc.md):

    signal_s(t) = eta_s N prod_{u=s+1..t} (1 - eta_u)
    E|w_t|^2    = (1 - 2 eta_t + N eta_t^2) E|w_{t-1}|^2 + N eta_t^2,     E|w_0|^2 = 0

Outputs: the SNR of the first pattern against t (simulated points, analytic lines, the
sqrt(N/t) power law) and the fraction of the t stored patterns that are retained, as PNGs, and
``random_patterns.csv``; printed: the fitted log-log slope of EWC's SNR, each gradient-descent
rate's early slope and the point where it leaves the power law, and the largest number of
memories each learner holds at once (its capacity).

    python -m ewc_dqn.experiments.random_patterns --out runs/random_patterns
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from matplotlib.figure import Figure

from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.errors import UserError

LEARNERS = ("gd_first", "gd_capacity", "ewc")
LABELS = {
    "gd_first": "gradient descent, eta = 1/N (EWC's rate at pattern 1)",
    "gd_capacity": "gradient descent, eta = 1/(2N) (EWC's rate at capacity)",
    "ewc": "EWC",
}
COLOURS = {"gd_first": "tab:blue", "gd_capacity": "tab:cyan", "ewc": "tab:red"}
DEPARTURE_FACTOR = 0.5
"""Gradient descent has left the power law once its SNR is below this share of the power law
fitted to its early points."""


@dataclass(frozen=True)
class Config:
    """Random binary patterns learnt one at a time by a linear network."""

    synapses: int = 1000
    """N: weights of the linear network (the paper: 1,000). A multiple of 8."""
    patterns: int = 10000
    """Patterns learnt in sequence (default 10 N)."""
    repeats: int = 500
    """Independent networks (pattern sequences) the SNRs are averaged over."""
    threshold: float = 0.5
    """SNR above which a memory counts as retained."""
    checkpoints: int = 60
    """Numbers of patterns, log-spaced from 1 to ``patterns``, at which the SNRs are measured."""
    tracked: int = 120
    """Patterns whose recall is measured for the retained fraction: as many log-spaced and as
    many evenly spaced birth times; each stands for the patterns born nearest to it."""
    seed: int = 0
    """Seed of the patterns and outcomes."""
    out: Path | None = Path("runs/random_patterns")
    """Folder for the PNGs and the CSV (None: print only)."""


def learning_rates(synapses: int, patterns: int) -> dict[str, np.ndarray]:
    """The rate each learner applies to pattern t = 1..patterns, shape (patterns,)."""
    t = np.arange(1, patterns + 1, dtype=np.float64)
    return {
        "gd_first": np.full(patterns, 1.0 / synapses),
        "gd_capacity": np.full(patterns, 1.0 / (2 * synapses)),
        "ewc": 1.0 / (synapses + t - 1.0),
    }


def noise_variance(rates: np.ndarray, synapses: int) -> np.ndarray:
    """E|w_t|^2 after t = 1..len(rates) patterns: the variance of the response to an
    unlearnt pattern (exact recursion of the second moment)."""
    out = np.empty(len(rates))
    e = 0.0
    for i, eta in enumerate(rates):
        e = (1.0 - 2.0 * eta + synapses * eta * eta) * e + synapses * eta * eta
        out[i] = e
    return out


def signal(rates: np.ndarray, synapses: int, t: int) -> np.ndarray:
    """E[y_s h_s] after t patterns for every birth s = 1..t, shape (t,)."""
    log_keep = np.concatenate([[0.0], np.cumsum(np.log1p(-rates[1:t]))])
    return rates[:t] * synapses * np.exp(log_keep[t - 1] - log_keep)


def theory(cfg: Config, checkpoints: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Analytic SNR of the first pattern and retained fraction at each checkpoint."""
    out = {}
    for name, rates in learning_rates(cfg.synapses, cfg.patterns).items():
        noise = np.sqrt(noise_variance(rates, cfg.synapses))
        first, retained = [], []
        for t in checkpoints:
            snr = signal(rates, cfg.synapses, int(t)) / noise[t - 1]
            first.append(snr[0])
            retained.append(np.mean(snr > cfg.threshold))
        out[name] = {"snr_first": np.array(first), "retained": np.array(retained)}
    return out


def tracked_births(patterns: int, count: int) -> np.ndarray:
    """Sorted birth times whose recall is measured: log-spaced (early patterns) and evenly
    spaced (late patterns), 1 always included."""
    log = np.geomspace(1, patterns, count).round()
    even = np.linspace(1, patterns, count).round()
    return np.unique(np.concatenate([[1], log, even])).astype(np.int64)


def birth_weights(births: np.ndarray, t: int) -> np.ndarray:
    """How many of the patterns 1..t each tracked birth <= t stands for (nearest birth)."""
    b = births[births <= t].astype(np.float64)
    edges = np.concatenate([[0.5], (b[1:] + b[:-1]) / 2, [t + 0.5]])
    return np.diff(edges)


def simulate(cfg: Config, checkpoints: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every learner on the same ``repeats`` pattern sequences; the simulated SNR of the first
    pattern and retained fraction at each checkpoint."""
    n, r = cfg.synapses, cfg.repeats
    rng = np.random.default_rng(cfg.seed)
    rates = learning_rates(n, cfg.patterns)
    eta = np.stack([rates[name] for name in LEARNERS]).astype(np.float32)  # (L, T)
    w = np.zeros((len(LEARNERS), r, n), dtype=np.float32)
    births = tracked_births(cfg.patterns, cfg.tracked)
    is_tracked = np.zeros(cfg.patterns + 1, dtype=bool)
    is_tracked[births] = True
    kept_x: list[np.ndarray] = []  # packed bits (R, N/8) of each tracked pattern, birth order
    kept_y: list[np.ndarray] = []
    snr_first = np.empty((len(LEARNERS), len(checkpoints)))
    retained = np.empty((len(LEARNERS), len(checkpoints)))
    c = 0
    for t in range(1, cfg.patterns + 1):
        bits = rng.integers(0, 256, (r, n // 8), dtype=np.uint8)
        x = np.unpackbits(bits, axis=1).astype(np.float32) * 2 - 1
        y = rng.integers(0, 2, r).astype(np.float32) * 2 - 1
        h = np.einsum("lrn,rn->lr", w, x)
        w += (eta[:, t - 1, None] * (y - h))[..., None] * x
        if is_tracked[t]:
            kept_x.append(bits)
            kept_y.append(y)
        while c < len(checkpoints) and checkpoints[c] == t:
            snr = _tracked_snr(w, kept_x, kept_y)  # (L, tracked so far)
            snr_first[:, c] = snr[:, 0]
            weights = birth_weights(births, t)
            retained[:, c] = (snr > cfg.threshold) @ weights / t
            c += 1
    return {
        name: {"snr_first": snr_first[i], "retained": retained[i]}
        for i, name in enumerate(LEARNERS)
    }


def _tracked_snr(w: np.ndarray, kept_x: list[np.ndarray], kept_y: list[np.ndarray]) -> np.ndarray:
    """(L, S) SNR of each tracked pattern: mean over repeats of y h, over sqrt(mean |w|^2)."""
    noise = np.sqrt(np.einsum("lrn,lrn->l", w, w, dtype=np.float64) / w.shape[1])
    out = np.empty((w.shape[0], len(kept_x)))
    for lo in range(0, len(kept_x), 16):
        x = np.unpackbits(np.stack(kept_x[lo : lo + 16]), axis=2).astype(np.float32) * 2 - 1
        y = np.stack(kept_y[lo : lo + 16])  # (S, R)
        h = np.einsum("lrn,srn->lsr", w, x)
        out[:, lo : lo + 16] = (h * y).mean(axis=2, dtype=np.float64)
    return out / noise[:, None]


def log_checkpoints(patterns: int, count: int) -> np.ndarray:
    """Distinct integers from 1 to ``patterns``, about evenly spaced in log."""
    return np.unique(np.geomspace(1, patterns, count).round()).astype(np.int64)


def fit_slope(t: np.ndarray, snr: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of log SNR against log t, least squares over positive SNRs."""
    keep = snr > 0
    slope, intercept = np.polyfit(np.log(t[keep]), np.log(snr[keep]), 1)
    return float(slope), float(intercept)


def departure(t: np.ndarray, snr: np.ndarray, synapses: int) -> tuple[float, float | None]:
    """(early slope, departure): the power law fitted to the points with t <= N/10, and the
    first t at which the SNR falls below ``DEPARTURE_FACTOR`` times it (None: never)."""
    early = t <= synapses / 10
    slope, intercept = fit_slope(t[early], snr[early])
    below = snr < DEPARTURE_FACTOR * np.exp(intercept) * t**slope
    return slope, (float(t[np.argmax(below)]) if below.any() else None)


def capacity(t: np.ndarray, retained: np.ndarray) -> float:
    """The largest number of memories retained at once."""
    return float(np.max(t * retained))


def main(cfg: Config) -> dict[str, object]:
    """Simulate, compare with theory, print the summary, write the figures and CSV."""
    if cfg.synapses % 8 or cfg.synapses < 8:
        raise UserError(f"--synapses must be a positive multiple of 8, got {cfg.synapses}")
    if cfg.patterns < 10 or cfg.repeats < 2 or cfg.threshold <= 0:
        raise UserError("--patterns must be >= 10, --repeats >= 2 and --threshold > 0")
    start = time.perf_counter()
    t = log_checkpoints(cfg.patterns, cfg.checkpoints)
    sim = simulate(cfg, t)
    ana = theory(cfg, t)
    n = cfg.synapses
    floor = 2.0 / np.sqrt(cfg.repeats)  # about 2 standard errors of a simulated SNR
    summary: dict[str, object] = {"seconds": 0.0}
    above = sim["ewc"]["snr_first"] > floor
    ewc_slope, _ = fit_slope(t[above], sim["ewc"]["snr_first"][above])
    ewc_theory_slope, _ = fit_slope(t, ana["ewc"]["snr_first"])
    summary["ewc_slope"] = ewc_slope
    print(
        f"random patterns: N = {n} synapses, {cfg.patterns} patterns, {cfg.repeats} repeats, "
        f"seed {cfg.seed}"
    )
    print(
        f"EWC: log-log slope of the first pattern's SNR over t = 1..{cfg.patterns}: "
        f"{ewc_slope:.3f} simulated, {ewc_theory_slope:.3f} analytic (power law: -0.5)"
    )
    for name in ("gd_first", "gd_capacity"):
        slope, leaves = departure(t, sim[name]["snr_first"], n)
        _, leaves_theory = departure(t, ana[name]["snr_first"], n)
        summary[f"{name}_slope"] = slope
        summary[f"{name}_departure"] = leaves
        print(
            f"{LABELS[name]}: early slope {slope:.3f}; leaves the power law (SNR below "
            f"{DEPARTURE_FACTOR:g} x its early fit) at t = {_patterns(leaves, n)} simulated, "
            f"{_patterns(leaves_theory, n)} analytic"
        )
    print(f"memories retained (SNR > {cfg.threshold:g}): most at once | share at t = {t[-1]}")
    for name in LEARNERS:
        cap = capacity(t, sim[name]["retained"])
        summary[f"{name}_capacity"] = cap
        print(
            f"  {name:>11}: {cap:7.0f} ({cap / n:.2f} N; analytic "
            f"{capacity(t, ana[name]['retained']) / n:.2f} N) | {sim[name]['retained'][-1]:.3f}"
        )
    summary["seconds"] = time.perf_counter() - start
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_csv(cfg.out / "random_patterns.csv", t, sim, ana, cfg)
        plot(cfg, t, sim, ana, floor, cfg.out)
        print(f"figures and random_patterns.csv written to {cfg.out}")
    print(f"took {summary['seconds']:.1f} s")
    return summary


def _patterns(t: float | None, synapses: int) -> str:
    return "never" if t is None else f"{t:.0f} ({t / synapses:.2f} N)"


def write_csv(path: Path, t: np.ndarray, sim: dict, ana: dict, cfg: Config) -> None:
    """One row per learner and checkpoint: simulated and analytic SNR and retained share."""
    rates = learning_rates(cfg.synapses, cfg.patterns)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(
            [
                "learner",
                "patterns",
                "learning_rate",
                "snr_first_sim",
                "snr_first_theory",
                "retained_sim",
                "retained_theory",
            ]
        )
        for name in LEARNERS:
            for i, ti in enumerate(t):
                out.writerow(
                    [
                        name,
                        int(ti),
                        f"{rates[name][ti - 1]:.6g}",
                        f"{sim[name]['snr_first'][i]:.6g}",
                        f"{ana[name]['snr_first'][i]:.6g}",
                        f"{sim[name]['retained'][i]:.6g}",
                        f"{ana[name]['retained'][i]:.6g}",
                    ]
                )


def plot(cfg: Config, t: np.ndarray, sim: dict, ana: dict, floor: float, out: Path) -> None:
    """snr_first_pattern.png (Fig. 2 left) and retained_fraction.png (Fig. 2 right)."""
    n = cfg.synapses
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ax.plot(t, np.sqrt(n / t), color="grey", ls=":", label="power law sqrt(N/t)")
    for name in LEARNERS:
        snr = sim[name]["snr_first"]
        keep = snr > floor
        ax.plot(t, ana[name]["snr_first"], color=COLOURS[name], lw=1.2, label=LABELS[name])
        ax.plot(t[keep], snr[keep], "o", ms=3, color=COLOURS[name])
    ax.axhspan(1e-3, floor, color="grey", alpha=0.15, lw=0)
    ax.axvline(n, color="grey", lw=0.5)
    ax.set(xscale="log", yscale="log", ylim=(floor / 2, 2 * np.sqrt(n)))
    ax.set_xlabel("patterns learnt t (vertical line: N)")
    ax.set_ylabel("SNR of the first pattern")
    ax.legend(fontsize=7, loc="lower left")
    _save(
        fig,
        f"Random patterns, N = {n}: points simulated ({cfg.repeats} repeats), lines analytic",
        out / "snr_first_pattern.png",
    )

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    for name in LEARNERS:
        ax.plot(t, ana[name]["retained"], color=COLOURS[name], lw=1.2, label=LABELS[name])
        ax.plot(t, sim[name]["retained"], "o", ms=3, color=COLOURS[name])
    ax.axvline(n, color="grey", lw=0.5)
    ax.set(xscale="log", ylim=(-0.02, 1.02))
    ax.set_xlabel("patterns learnt t (vertical line: N)")
    ax.set_ylabel(f"fraction of the t patterns with SNR > {cfg.threshold:g}")
    ax.legend(fontsize=7, loc="lower left")
    title = "Memories retained (points simulated, lines analytic)"
    _save(fig, title, out / "retained_fraction.png")


def _save(fig, title: str, path: Path) -> None:
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    with exit_on_user_errors():
        main(tyro.cli(Config))
