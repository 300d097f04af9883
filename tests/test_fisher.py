"""Fisher estimators against their analytic values on a linear Q-function, and Fisher overlap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ewc_dqn import fisher
from ewc_dqn.fisher import fisher_diagonal, fisher_overlap, layer_of
from ewc_dqn.networks import (
    TASK_PARAM_PATTERN,
    NetworkConfig,
    QNetwork,
    TaskConv2d,
    TaskLinear,
)
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


# --- the batched path against the torch.func path ----------------------------------------------

ATARI_SHAPE = (4, 84, 84)


def _q_network(arch: str, seed: int) -> QNetwork:
    """A network whose per-task gains and biases differ from 1 and 0 and from task to task, so
    that a Fisher which dropped a gain, or read another task's, would differ."""
    torch.manual_seed(seed)
    minatar = arch == "minatar"
    net = QNetwork(
        (6, 10, 10) if minatar else ATARI_SHAPE,
        5,
        NetworkConfig(arch=arch, max_tasks=3),  # type: ignore[arg-type]
        input_scale=1.0 if minatar else 1.0 / 255.0,
    )
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".task_gains." in name:
                p.uniform_(0.3, 2.0)
            elif ".task_biases." in name:
                p.uniform_(-0.3, 0.3)
    return net


def _q_batches(net: QNetwork, num: int, size: int, seed: int) -> list[Transition]:
    gen = torch.Generator().manual_seed(seed)
    high = 2 if net.input_scale == 1.0 else 256
    out = []
    for _ in range(num):
        obs, next_obs = torch.randint(
            0, high, (2, size, *net.in_shape), dtype=torch.uint8, generator=gen
        )
        out.append(
            Transition(
                obs,
                torch.randint(0, net.num_actions, (size,), generator=gen),
                torch.randn(size, generator=gen),
                torch.where(torch.rand(size, generator=gen) < 0.2, 0.0, 0.99),
                next_obs,
            )
        )
    return out


def _no_batched_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fisher._BatchedSquares, "build", classmethod(lambda cls, *a, **k: None))


def _no_vmap(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the torch.func path ran")

    monkeypatch.setattr(fisher, "vmap", refuse)


def _both_paths(monkeypatch, net, bs, task_id, estimator, names, target=None, **kw):
    """The Fisher by the batched path (torch.func refused) and by the torch.func path."""
    with monkeypatch.context() as m:
        _no_vmap(m)
        batched = fisher_diagonal(net, bs, task_id, estimator, target, names, **kw)
    with monkeypatch.context() as m:
        _no_batched_path(m)
        reference = fisher_diagonal(net, bs, task_id, estimator, target, names, **kw)
    assert not any(mod._forward_hooks for mod in net.modules())  # the hooks are gone again
    return batched, reference


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for n in want:
        assert got[n].shape == want[n].shape and got[n].dtype == want[n].dtype
        # atol relative to the tensor's scale: entries that cancel to ~0 carry rounding only
        atol = 1e-6 * float(want[n].abs().max()) + 1e-30
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=atol, msg=n)


SUBSET = [  # one of each kind, and the gains and biases of the task and of another one
    "convs.0.conv.weight",
    "fc.linear.bias",
    "head.linear.weight",
    "convs.0.task.task_gains.2",
    "fc.task.task_biases.2",
    "head.task.task_gains.0",
]


@pytest.mark.parametrize("estimator", ["q_value", "td"])
@pytest.mark.parametrize("names", ["all", "shared", "subset"])
@pytest.mark.parametrize("task_id", [0, 2])
def test_batched_fisher_equals_torch_func_on_the_minatar_network(
    monkeypatch, estimator, names, task_id
):
    net, target = _q_network("minatar", 0), _q_network("minatar", 1)
    bs = _q_batches(net, 3, 7, seed=task_id)
    param_names = {"all": None, "shared": net.shared_parameter_names(), "subset": SUBSET}[names]
    got, want = _both_paths(monkeypatch, net, bs, task_id, estimator, param_names, target)
    _assert_same(got, want)
    if names != "shared":  # the task's own gains and biases are read, the others are zero
        for name in SUBSET[3:]:
            assert (got[name].sum() > 0) == name.endswith(f".{task_id}"), name


@pytest.mark.parametrize("arch", ["nature", "paper"])
@pytest.mark.parametrize("estimator", ["q_value", "td"])
def test_batched_fisher_equals_torch_func_on_the_atari_networks(monkeypatch, arch, estimator):
    net = _q_network(arch, 0)
    bs = _q_batches(net, 2, 3, seed=3)
    names = None if estimator == "q_value" else net.shared_parameter_names()
    got, want = _both_paths(monkeypatch, net, bs, 1, estimator, names, target=net)
    _assert_same(got, want)


def test_batched_fisher_chunks_and_frozen_parameters(monkeypatch):
    net = _q_network("minatar", 0)
    bs = _q_batches(net, 2, 9, seed=4)
    _, want = _both_paths(monkeypatch, net, bs, 1, "q_value", None)
    with monkeypatch.context() as m:
        _no_vmap(m)
        m.setattr(fisher, "BATCHED_BYTES", 1)  # one sample per chunk
        _assert_same(fisher_diagonal(net, bs, 1), want)
        net.requires_grad_(False)  # named parameters that do not require grad count too
        _assert_same(fisher_diagonal(net, bs, 1, param_names=list(want)), want)
        # The parameters were not touched, nor their gradients.
        assert all(p.grad is None and not p.requires_grad for p in net.parameters())


def test_batched_fisher_is_the_path_a_q_network_takes_and_others_fall_back(monkeypatch):
    calls = _counting_vmap(monkeypatch)
    net = _q_network("minatar", 0)
    bs = _q_batches(net, 2, 5, seed=5)
    fisher_diagonal(net, bs, 1, "q_value")
    fisher_diagonal(net, bs, 1, "td", target_model=net)
    assert calls == []
    fisher_diagonal(net, bs, 1, "softmax")
    assert calls
    calls.clear()
    fisher_diagonal(LinearQ(0), batches(2, 4, seed=6), 0, "q_value")  # a module it does not know
    assert calls
    calls.clear()
    handle = net.fc.linear.register_forward_hook(lambda mod, args, out: out * 2)  # a hook
    try:
        fisher_diagonal(net, bs, 1, "q_value")
    finally:
        handle.remove()
    assert calls


def _counting_vmap(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real_vmap = fisher.vmap

    def counting_vmap(*args, **kwargs):
        calls.append(1)
        return real_vmap(*args, **kwargs)

    monkeypatch.setattr(fisher, "vmap", counting_vmap)
    return calls


@pytest.mark.parametrize("how", ["registered twice", "shared weight", "called twice"])
def test_batched_fisher_falls_back_when_a_layer_runs_twice(monkeypatch, how):
    # One convolution applied twice in a row: its per-sample gradient is the sum of two terms,
    # which the closed form, per call, would not square together.
    net = QNetwork((16, 12, 12), 4, NetworkConfig(arch="minatar", max_tasks=2), input_scale=1.0)
    conv = net.convs[0]
    if how == "registered twice":  # seen before any forward: its parameters appear twice
        net.convs.append(conv)
    elif how == "shared weight":  # two layers, one kernel: seen before any forward
        net.convs.append(TaskConv2d(16, 16, 3, 1, max_tasks=2))
        net.convs[1].conv.weight = conv.conv.weight
    else:  # seen in the forward only

        def twice(x: torch.Tensor, task_id: int) -> torch.Tensor:
            return TaskConv2d.forward(conv, TaskConv2d.forward(conv, x, task_id), task_id)

        conv.forward = twice
    net.fc = TaskLinear(16 * 8 * 8, 128, max_tasks=2)
    bs = _q_batches(net, 2, 4, seed=7)
    with monkeypatch.context() as m:
        calls = _counting_vmap(m)
        got = fisher_diagonal(net, bs, 1)
    assert len(calls) == 2  # every batch by torch.func (16 samples a chunk)
    assert not any(mod._forward_hooks for mod in net.modules())
    with monkeypatch.context() as m:
        _no_batched_path(m)
        _assert_same(got, fisher_diagonal(net, bs, 1))


@pytest.mark.parametrize(
    "how, batched",
    [
        ("forward hook", False),
        ("padding 'same'", False),
        ("grouped convolution", False),
        ("reflect padding", False),
        ("zero padding 1", True),  # unfolded with its padding: the closed form holds
    ],
)
def test_batched_fisher_takes_only_the_layers_its_closed_forms_hold_for(monkeypatch, how, batched):
    """A hook that changes a layer's output, string padding, groups or a non-zero padding mode
    would make the closed forms give another Fisher, so the model goes to torch.func; either way
    the estimate is torch.func's."""
    net = _q_network("minatar", 0)
    if how == "forward hook":
        net.fc.register_forward_hook(lambda module, args, out: 2.0 * out)
    else:
        old = net.convs[0].conv
        cin, cout, side = old.in_channels, old.out_channels, 10
        kwargs: dict = {
            "padding 'same'": {"padding": "same"},
            "grouped convolution": {"groups": cin},
            "reflect padding": {"padding": 1, "padding_mode": "reflect"},
            "zero padding 1": {"padding": 1},
        }[how]
        if how == "grouped convolution":
            cout, side = cin, 8
        net.convs[0].conv = nn.Conv2d(cin, cout, 3, **kwargs)
        net.convs[0].task = type(net.convs[0].task)(cout, 3, spatial=True)
        net.fc = TaskLinear(cout * side * side, 128, max_tasks=3)
    bs = _q_batches(net, 2, 4, seed=9)
    with monkeypatch.context() as m:
        calls = _counting_vmap(m)
        got = fisher_diagonal(net, bs, 1)
    assert (calls == []) == batched
    with monkeypatch.context() as m:
        _no_batched_path(m)
        _assert_same(got, fisher_diagonal(net, bs, 1))


def test_batched_fisher_falls_back_in_the_middle_of_a_batch(monkeypatch):
    net = _q_network("minatar", 0)
    bs = _q_batches(net, 2, 4, seed=8)
    _, want = _both_paths(monkeypatch, net, bs, 1, "td", None, target=net)
    conv, forwards = net.convs[0], []

    def late_second_call(x: torch.Tensor, task_id: int) -> torch.Tensor:
        forwards.append(x.shape[0])
        y = TaskConv2d.forward(conv, x, task_id)
        if len(forwards) > 5:  # an unused second call, from the third sample's chunk on
            TaskConv2d.forward(conv, x, task_id)
        return y

    conv.forward = late_second_call
    with monkeypatch.context() as m:
        m.setattr(fisher, "BATCHED_BYTES", 1)  # one sample per chunk
        calls = _counting_vmap(m)
        got = fisher_diagonal(net, bs, 1, "td", net)
    # The targets of batch 0 (2 forwards), the probe, samples 0 and 1 batched, then torch.func
    # from sample 2 on (its chunk of 16 takes the rest of batch 0), and batch 1 by torch.func.
    assert forwards[:6] == [4, 4, 1, 1, 1, 1] and len(calls) == 2
    _assert_same(got, want)
