"""The weight-perturbation experiment: noise shapes, the noisy network, a tiny real run."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import train_agent
from ewc_dqn.checkpoint import CheckpointError, latest_checkpoint
from ewc_dqn.experiments.perturbation import Config, NoisyQ, Point, halfway_size, main, noise_std
from ewc_dqn.networks import NetworkConfig, QNetwork


def test_noise_shapes_have_unit_expected_norm_and_their_supports():
    fisher = torch.tensor([0.0, 0.0, 1e-6, 1.0, 4.0, 10.0])
    everywhere = torch.ones(6, dtype=torch.bool)
    iso = noise_std(fisher, "isotropic", everywhere, 1.0, 0.3)
    inv = noise_std(fisher, "inverse_fisher", everywhere, 1.0, 0.3)
    null = noise_std(fisher, "null_space", everywhere, 1.0, 0.3)
    for std in (iso, inv, null):
        assert std.square().sum().item() == pytest.approx(1.0)
    assert torch.allclose(iso, torch.full((6,), 6**-0.5))
    assert torch.all(inv[1:] <= inv[:-1])  # less noise where F is larger
    lam = fisher.mean()  # damping 1: lambda = mean F
    assert (inv[5] / inv[0]).item() == pytest.approx((lam / (10 + lam)).sqrt().item(), rel=1e-5)
    # the 0.3 quantile is 3e-7: the two F = 0 weights and nothing else
    assert torch.equal(null > 0, torch.tensor([True, True, False, False, False, False]))
    live = fisher > 0
    assert torch.all(noise_std(fisher, "isotropic", live, 1.0, 0.3)[:2] == 0)


def test_halfway_size_interpolates_in_log_size():
    points = [Point("none", 0.0, [4.0, 4.0])]
    points += [Point("isotropic", s, [m]) for s, m in ((0.1, 4.0), (1.0, 3.0), (10.0, 0.5))]
    # halfway from 4 to random play 0.5 is 2.25, crossed 30% of the way from 1 to 10 in log
    assert halfway_size(points, "isotropic", 0.5) == pytest.approx(10**0.3)
    assert halfway_size(points, "isotropic", -4.0) is None  # the midpoint, 0, is never reached


def test_noisy_network_draws_fresh_noise_on_shared_weights_only():
    torch.manual_seed(0)
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    names = net.shared_parameter_names()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    size = sum(dict(net.named_parameters())[n].numel() for n in names)
    noisy = NoisyQ(net, names, torch.full((size,), 0.05), torch.Generator().manual_seed(1))
    obs = torch.rand(3, 10, 10, 10)
    with torch.no_grad():
        q0, q1, q2 = net(obs, 0), noisy(obs, 0), noisy(obs, 0)
    assert not torch.allclose(q0, q1) and not torch.allclose(q1, q2)
    for n, p in net.named_parameters():  # the network itself never moves
        assert torch.equal(p, before[n])
    assert all(".task_" not in n for n in names)
    zero = NoisyQ(net, names, torch.zeros(size), torch.Generator())
    with torch.no_grad():
        assert torch.allclose(zero(obs, 1), net(obs, 1))


@pytest.mark.slow
def test_perturbation_of_a_tiny_real_run(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--preset", "smoke", "--game", "MinAtar/Breakout", "--steps", "400", "--quiet"]
    assert train_agent.main([*args, "--run-dir", str(run)]) == 0
    out = tmp_path / "perturbation"
    points = main(Config(checkpoint=run, out=out, episodes=2, num_sizes=2, min_size=0.1))
    assert [(p.shape, p.size) for p in points][:2] == [("none", 0.0), ("isotropic", 0.1)]
    assert len(points) == 1 + 3 * 2 and all(len(p.returns) == 2 for p in points)
    with open(out / "perturbation.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["shape"] for r in rows} == {"none", "isotropic", "inverse_fisher", "null_space"}
    assert all(float(r["ci95_low"]) <= float(r["mean"]) <= float(r["ci95_high"]) for r in rows)
    assert (out / "perturbation.png").stat().st_size > 0
    printed = capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert f"{config['ewc']['fisher_estimator']} estimator" in printed

    # Without its replay a checkpoint has no Fisher: one clear error.
    state = latest_checkpoint(run) / "state.json"
    doc = json.loads(state.read_text())
    doc["state"]["__dict__"]["replays"] = {"__dict__": {}}
    state.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="no replay for task 0"):
        main(Config(checkpoint=run, out=None, episodes=1, num_sizes=1))
