"""The random-patterns experiment: its theory and a reduced-size run (N = 200, 300 repeats)."""

from __future__ import annotations

import csv

import numpy as np

from ewc_dqn.experiments.random_patterns import (
    Config,
    birth_weights,
    learning_rates,
    main,
    noise_variance,
    signal,
    tracked_births,
)


def test_ewc_keeps_the_power_law_and_more_memories_than_gradient_descent(tmp_path):
    n = 200
    summary = main(
        Config(synapses=n, patterns=10 * n, repeats=300, checkpoints=40, tracked=60, out=tmp_path)
    )
    # Seeds 0-5 at this size: EWC slope -0.49 to -0.57 (analytic -0.52), gradient descent's
    # early slopes -0.51 to -0.53; eta = 1/N leaves the power law at 1.0-1.7 N, eta = 1/(2N)
    # later; capacities about 0.9 N, 1.4 N and 2.2 N.
    assert -0.6 < summary["ewc_slope"] < -0.42
    for name in ("gd_first", "gd_capacity"):
        assert abs(summary[f"{name}_slope"] + 0.5) < 0.06
    assert 0.5 * n < summary["gd_first_departure"] < 2 * n
    assert summary["gd_capacity_departure"] > summary["gd_first_departure"]
    for name in ("gd_first", "gd_capacity"):
        assert summary["ewc_capacity"] > 1.3 * summary[f"{name}_capacity"]
    for name in ("snr_first_pattern.png", "retained_fraction.png"):
        assert (tmp_path / name).stat().st_size > 0
    with open(tmp_path / "random_patterns.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["learner"] for r in rows} == {"gd_first", "gd_capacity", "ewc"}
    first = next(r for r in rows if r["learner"] == "ewc" and r["patterns"] == "1")
    # After one pattern every learner has w = y x / N exactly: SNR sqrt(N).
    assert abs(float(first["snr_first_sim"]) - np.sqrt(n)) < 1e-3 * np.sqrt(n)


def test_ewc_rate_is_the_exact_minimiser_of_the_ewc_objective():
    rng = np.random.default_rng(0)
    n, earlier = 16, 5
    w_star = rng.normal(size=n)
    x = rng.choice([-1.0, 1.0], size=n)
    y = 1.0
    fisher = np.full(n, float(earlier))  # five earlier patterns, Fisher diagonal x_i^2 = 1 each
    # argmin (1/2)(y - w.x)^2 + (1/2) sum_i F_i (w_i - w*_i)^2: (x x^T + diag F) w = y x + F w*
    exact = np.linalg.solve(np.outer(x, x) + np.diag(fisher), y * x + fisher * w_star)
    eta = learning_rates(n, earlier + 1)["ewc"][earlier]
    assert np.allclose(w_star + eta * (y - w_star @ x) * x, exact)


def test_moment_recursions_match_closed_forms():
    n, t = 50, 400
    eta = 1.0 / n
    a = 1 - 2 * eta + n * eta**2
    closed = n * eta**2 * (1 - a ** np.arange(1, t + 1)) / (1 - a)
    assert np.allclose(noise_variance(np.full(t, eta), n), closed)
    # EWC: every pattern stored so far has the same signal N / (N + t - 1).
    rates = learning_rates(n, t)["ewc"]
    assert np.allclose(signal(rates, n, t), n / (n + t - 1))


def test_tracked_births_stand_for_every_pattern_once():
    births = tracked_births(1000, 20)
    assert births[0] == 1 and births[-1] == 1000 and np.all(np.diff(births) > 0)
    for t in (1, 7, 333, 1000):
        assert birth_weights(births, t).sum() == t
