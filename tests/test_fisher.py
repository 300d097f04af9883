"""Fisher estimators against their analytic values on a linear Q-function, and Fisher overlap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ewc_dqn.fisher import fisher_diagonal, fisher_overlap, layer_of
from ewc_dqn.networks import TASK_PARAM_PATTERN, NetworkConfig, QNetwork
from ewc_dqn.transition import Transition

NUM_IN, NUM_ACTIONS = 5, 3


class LinearQ(nn.Module):
    """Q(s) = W s + b, ignoring the task id: every gradient has a closed form."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.q = nn.Linear(NUM_IN, NUM_ACTIONS)

    def forward(self, obs: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.q(obs.float())


def batches(num: int, size: int, seed: int) -> list[Transition]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        out.append(
            Transition(
                obs=torch.randn(size, NUM_IN, generator=gen),
                action=torch.randint(0, NUM_ACTIONS, (size,), generator=gen),
                reward=3 * torch.randn(size, generator=gen),
                discount=torch.where(torch.rand(size, generator=gen) < 0.2, 0.0, 0.9),
                next_obs=torch.randn(size, NUM_IN, generator=gen),
            )
        )
    return out


def stacked(bs: list[Transition]) -> Transition:
    return Transition(*(torch.cat(parts) for parts in zip(*bs, strict=True)))


def test_q_value_fisher_is_mean_squared_gradient_of_q_sa():
    model = LinearQ(0)
    bs = batches(3, 7, seed=1)
    got = fisher_diagonal(model, bs, task_id=0, estimator="q_value", chunk_size=4)
    b = stacked(bs)
    onehot = F.one_hot(b.action, NUM_ACTIONS).double()  # dQ(s,a)/dW = e_a s^T
    want_w = onehot.T @ b.obs.double().square() / len(b.action)
    torch.testing.assert_close(got["q.weight"].double(), want_w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["q.bias"].double(), onehot.mean(0), rtol=1e-5, atol=1e-7)
    # Not the square of the batch-mean gradient, which is far smaller here.
    assert (want_w - (onehot.T @ b.obs.double() / len(b.action)).square()).abs().max() > 0.1


@pytest.mark.parametrize("huber_delta", [1.0, 0.0])
def test_td_fisher_is_mean_squared_gradient_of_the_td_loss(huber_delta):
    model, target = LinearQ(0), LinearQ(1)
    bs = batches(2, 9, seed=2)
    got = fisher_diagonal(
        model, bs, 0, estimator="td", target_model=target, huber_delta=huber_delta, chunk_size=5
    )
    b = stacked(bs)
    with torch.no_grad():
        a_star = model(b.next_obs, 0).argmax(1)
        y = b.reward + b.discount * target(b.next_obs, 0).gather(1, a_star[:, None])[:, 0]
        td = model(b.obs, 0).gather(1, b.action[:, None])[:, 0] - y
    # d/dQ of Huber(delta=1) is clip(td, -1, 1); of 0.5 td^2 it is td.
    dl = td.clamp(-1.0, 1.0) if huber_delta > 0 else td
    assert (td.abs() > 1).any() and (td.abs() < 1).any()  # both branches of the Huber loss
    onehot = F.one_hot(b.action, NUM_ACTIONS).double()
    weight = onehot * dl.double()[:, None] ** 2
    want_w = weight.T @ b.obs.double().square() / len(td)
    torch.testing.assert_close(got["q.weight"].double(), want_w, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["q.bias"].double(), weight.mean(0), rtol=1e-5, atol=1e-6)


def test_softmax_fisher_is_the_exact_expectation_over_actions():
    model = LinearQ(0)
    bs = batches(2, 6, seed=3)
    temperature = 2.0
    got = fisher_diagonal(
        model, bs, 0, estimator="softmax", softmax_temperature=temperature, chunk_size=7
    )
    b = stacked(bs)
    with torch.no_grad():
        p = F.softmax(model(b.obs, 0) / temperature, dim=1).double()
    # d log pi(a|s) / dW_ij = (1[a=i] - p_i) s_j / T, so sum_a p_a (.)^2 = p_i (1 - p_i) s_j^2 / T^2
    var = p * (1 - p) / temperature**2
    want_w = var.T @ b.obs.double().square() / len(p)
    torch.testing.assert_close(got["q.weight"].double(), want_w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["q.bias"].double(), var.mean(0), rtol=1e-5, atol=1e-7)


def test_sampled_softmax_fisher_is_unbiased_and_seeded():
    model = LinearQ(0)
    bs = batches(1, 4, seed=4)
    exact = fisher_diagonal(model, bs, 0, estimator="softmax", softmax_temperature=2.0)

    def sampled(seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return fisher_diagonal(
            model, bs, 0, "softmax", softmax_samples=4000, generator=gen, chunk_size=4000,
            softmax_temperature=2.0,
        )  # fmt: skip

    first, again = sampled(0), sampled(0)
    for n in exact:
        torch.testing.assert_close(first[n], again[n])
        torch.testing.assert_close(first[n], exact[n], rtol=0.1, atol=1e-3)
    with pytest.raises(ValueError, match="Generator"):
        fisher_diagonal(model, bs, 0, "softmax", softmax_samples=3)
    with pytest.raises(ValueError, match="batch size"):
        bad = bs[0]._replace(action=bs[0].action[:-1])
        fisher_diagonal(model, [bad], 0)


def test_chunk_size_does_not_change_the_estimate():
    net = QNetwork((2, 10, 10), 4, NetworkConfig(arch="minatar", max_tasks=2), input_scale=1.0)
    gen = torch.Generator().manual_seed(0)
    b = Transition(
        obs=torch.randint(0, 2, (6, 2, 10, 10), dtype=torch.uint8, generator=gen),
        action=torch.randint(0, 4, (6,), generator=gen),
        reward=torch.randn(6, generator=gen),
        discount=torch.full((6,), 0.99),
        next_obs=torch.randint(0, 2, (6, 2, 10, 10), dtype=torch.uint8, generator=gen),
    )
    names = net.shared_parameter_names()
    for estimator in ("q_value", "td", "softmax"):
        one = fisher_diagonal(net, [b], 1, estimator, net, names, chunk_size=1)
        all_ = fisher_diagonal(net, [b], 1, estimator, net, names, chunk_size=64)
        assert set(one) == set(names)
        for n in names:
            assert one[n].shape == dict(net.named_parameters())[n].shape
            assert (one[n] >= 0).all() and torch.isfinite(one[n]).all()
            torch.testing.assert_close(one[n], all_[n], rtol=1e-4, atol=1e-9)


def test_task_head_parameters_get_fisher_only_for_their_task():
    net = QNetwork((2, 10, 10), 4, NetworkConfig(arch="minatar", max_tasks=2), input_scale=1.0)
    b = Transition(
        torch.ones(3, 2, 10, 10, dtype=torch.uint8),
        torch.tensor([0, 1, 2]),
        torch.zeros(3),
        torch.zeros(3),
        torch.ones(3, 2, 10, 10, dtype=torch.uint8),
    )
    f = fisher_diagonal(net, [b], task_id=1)
    assert f["head.task.task_biases.1"].sum() > 0
    assert f["head.task.task_biases.0"].sum() == 0


def test_fisher_input_errors():
    model = LinearQ(0)
    bs = batches(1, 3, seed=5)
    with pytest.raises(ValueError, match="target_model"):
        fisher_diagonal(model, bs, 0, estimator="td")
    with pytest.raises(ValueError, match="unknown Fisher estimator"):
        fisher_diagonal(model, bs, 0, estimator="hessian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameters named"):
        fisher_diagonal(model, bs, 0, param_names=["q.weight", "missing"])
    with pytest.raises(ValueError, match="no samples"):
        fisher_diagonal(model, [], 0)
    with pytest.raises(ValueError, match="chunk_size"):
        fisher_diagonal(model, bs, 0, chunk_size=0)
    with pytest.raises(ValueError, match="softmax_temperature"):
        fisher_diagonal(model, bs, 0, estimator="softmax", softmax_temperature=0.0)
    with pytest.raises(ValueError, match="softmax_samples"):
        fisher_diagonal(model, bs, 0, estimator="softmax", softmax_samples=0,
                        generator=torch.Generator())  # fmt: skip
    with pytest.raises(ValueError, match="softmax_samples"):
        fisher_diagonal(model, bs, 0, estimator="softmax", softmax_samples=2)
    # The smallest valid values are accepted.
    fisher_diagonal(model, bs, 0, chunk_size=1)
    fisher_diagonal(model, bs, 0, estimator="softmax", softmax_samples=1,
                    generator=torch.Generator())  # fmt: skip


def test_fisher_overlap_known_values():
    same = {"a.weight": torch.tensor([1.0, 2.0]), "a.bias": torch.tensor([3.0])}
    scaled = {n: 10 * t for n, t in same.items()}
    assert fisher_overlap(same, scaled) == {"a": pytest.approx(1.0)}
    f1 = {"l.weight": torch.tensor([1.0, 0.0])}
    f2 = {"l.weight": torch.tensor([0.0, 5.0])}
    assert fisher_overlap(f1, f2)["l"] == pytest.approx(0.0)
    f3 = {"l.weight": torch.tensor([1.0, 1.0])}
    # 1 - d^2 with d^2 = 1/2 ((1 - sqrt(.5))^2 + (0 - sqrt(.5))^2) = 1 - sqrt(.5)
    assert fisher_overlap(f1, f3)["l"] == pytest.approx(math.sqrt(0.5))
    zero = {"l.weight": torch.zeros(2)}
    assert math.isnan(fisher_overlap(f1, zero)["l"])
    with pytest.raises(ValueError, match=r"different parameter names \['a.bias', 'a.weight', 'l"):
        fisher_overlap(f1, same)
    with pytest.raises(ValueError, match="is \\(2,\\) vs \\(3,\\)"):
        fisher_overlap(f1, {"l.weight": torch.ones(3)})
    for negative in (
        {"l.weight": torch.tensor([1.0, -1.0])},
        {"l.weight": torch.tensor([-1.0, 1.0])},
    ):
        with pytest.raises(ValueError, match="negative"):
            fisher_overlap(f3, negative)
        with pytest.raises(ValueError, match="negative"):
            fisher_overlap(negative, f3)


def test_fisher_overlap_groups_by_layer_and_excludes_task_parameters():
    net = QNetwork((2, 10, 10), 4, NetworkConfig(arch="minatar", max_tasks=2), input_scale=1.0)
    f = {n: torch.rand_like(p) + 0.1 for n, p in net.named_parameters()}
    per_layer = fisher_overlap(f, f, exclude=TASK_PARAM_PATTERN)
    assert list(per_layer) == ["convs.0.conv", "fc.linear", "head.linear"]
    assert all(v == pytest.approx(1.0) for v in per_layer.values())
    assert layer_of("convs.0.conv.weight") == "convs.0.conv"
