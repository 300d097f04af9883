"""The permuted-digits experiment end to end, at a fixed seed and CI size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ewc_dqn.experiments.permuted_digits import (
    Config,
    load_digits_dataset,
    main,
    patch_permutation,
)


def test_ewc_keeps_the_first_task_where_sgd_forgets_it(tmp_path):
    summary = main(Config(num_tasks=3, epochs=10, methods=("sgd", "ewc"), seed=0, out=tmp_path))
    final = summary["final"]
    sgd_first, ewc_first = final["sgd"][-1][0], final["ewc"][-1][0]
    # Measured at this seed: task 1 after three tasks, SGD 0.816, EWC 0.918; both learn each
    # task to about 0.95-0.97 when it is current.
    assert ewc_first >= sgd_first + 0.05
    assert ewc_first >= 0.85
    assert min(final["ewc"][t][t] for t in range(3)) >= 0.85
    # Fig. 3C: a fully permuted task uses other first-layer weights; a patch permutation does not.
    overlap = summary["overlap"]
    assert overlap["small"]["hidden1"] > 0.9
    assert overlap["large"]["hidden1"] < overlap["large"]["output"]
    for name in ("fig3a_curves.png", "fig3b_mean_accuracy.png", "fig3c_overlap.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["final"]["ewc"] == final["ewc"]


def test_patch_permutation_moves_only_the_central_square():
    perm = patch_permutation(16, 4, np.random.default_rng(0))
    moved = np.flatnonzero(perm != np.arange(256))
    rows, cols = moved // 16, moved % 16
    assert len(moved) > 8 and rows.min() >= 6 and rows.max() <= 9 and cols.min() >= 6
    assert sorted(perm) == list(range(256))


def test_digits_are_centred_on_the_canvas():
    data = load_digits_dataset(test_fraction=0.25, seed=0, canvas=12)
    images = data.x_train.reshape(-1, 12, 12)
    assert images[:, :2].abs().sum() == 0 and images[:, :, -2:].abs().sum() == 0
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert len(data.x_train) + len(data.x_test) == 1797
    with pytest.raises(ValueError):
        load_digits_dataset(0.25, 0, canvas=6)
