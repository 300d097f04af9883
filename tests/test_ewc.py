"""EWC consolidator: the merged penalty against the naive float64 sum, replacement, activation,
online mode, state round trips and input checks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ewc_dqn.ewc import EWCConfig, EWCConsolidator
from ewc_dqn.ewc_maths import (
    Tensors,
    ewc_penalty,
    merge_quadratics,
    online_fisher_update,
    quadratic_penalty,
)
from ewc_dqn.networks import NetworkConfig, QNetwork


def ewc_penalty_naive(
    params: Tensors, terms: Sequence[tuple[Tensors, Tensors]], lam: float
) -> torch.Tensor:
    """The reference: the penalty summed term by term over ``terms = [(F_k, anchor_k), ...]``
    (K passes over the parameters), which the merged quadratic must equal."""
    total = ewc_penalty(params, *terms[0], lam=lam)
    for fisher, anchor in terms[1:]:
        total = total + ewc_penalty(params, fisher, anchor, lam=lam)
    return total


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def random_term(model: nn.Module, gen: torch.Generator, spread: float = 1.0):
    """A Fisher spanning eight decades (as real ones do) and an anchor near the parameters."""
    fisher, anchor = {}, {}
    for n, p in model.named_parameters():
        fisher[n] = 10 ** (8 * torch.rand(p.shape, generator=gen) - 6)
        anchor[n] = p.detach() + spread * torch.randn(p.shape, generator=gen)
    return fisher, anchor


def naive64(model: nn.Module, terms, lam: float):
    """Penalty value and gradient summed term by term in float64."""
    value = 0.0
    grads = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    for fisher, anchor in terms:
        for n, p in model.named_parameters():
            d = p.detach().double() - anchor[n].double()
            value += 0.5 * lam * (fisher[n].double() * d * d).sum().item()
            grads[n] += lam * fisher[n].double() * d
    return value, grads


@pytest.mark.parametrize("num_tasks", [1, 10, 50])
def test_penalty_and_gradient_match_float64_naive_sum_with_replacements(num_tasks):
    model = small_net()
    gen = torch.Generator().manual_seed(num_tasks)
    ewc = EWCConsolidator(model, EWCConfig(lam=400.0))
    terms = {}
    for k in range(num_tasks):
        terms[k] = random_term(model, gen)
        ewc.consolidate(k, *terms[k])
        if k % 3 == 2:  # a recurring task replaces its own entry, after the aggregate exists
            ewc.penalty()
            terms[k // 2] = random_term(model, gen)
            ewc.consolidate(k // 2, *terms[k // 2])
        if k % 4 == 1:
            ewc.penalty()
    value = ewc.penalty()
    model.zero_grad()
    value.backward()
    want_value, want_grads = naive64(model, terms.values(), 400.0)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(want_value, rel=2e-6)
    for n, p in model.named_parameters():
        scale = want_grads[n].abs().max().item()
        np.testing.assert_allclose(p.grad.double(), want_grads[n], rtol=1e-4, atol=1e-5 * scale)


def test_penalty_is_stable_when_parameters_sit_on_the_anchors():
    # theta = theta*_k exactly for one task: the merged form must not leave rounding garbage
    # larger than the float32 resolution of the true (small) value.
    model = small_net()
    gen = torch.Generator().manual_seed(3)
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0))
    fisher, _ = random_term(model, gen)
    ewc.consolidate(0, fisher)  # anchored at the current parameters
    value = ewc.penalty()
    assert abs(value.item()) <= 1e-6 * sum(f.sum().item() for f in fisher.values())


def test_replacing_an_entry_removes_exactly_its_old_contribution():
    model = small_net()
    gen = torch.Generator().manual_seed(1)
    a, b, b_new = (random_term(model, gen) for _ in range(3))
    replaced = EWCConsolidator(model, EWCConfig(lam=2.0))
    replaced.consolidate(0, *a)
    replaced.consolidate(1, *b)
    replaced.penalty()
    replaced.consolidate(1, *b_new)
    fresh = EWCConsolidator(model, EWCConfig(lam=2.0))
    fresh.consolidate(0, *a)
    fresh.consolidate(1, *b_new)
    assert replaced.penalty().item() == pytest.approx(fresh.penalty().item(), rel=1e-6)
    assert replaced.stats()["ewc/stored_terms"] == 2
    assert replaced.stats()["ewc/task1/consolidations"] == 2
    want, _ = naive64(model, [a, b_new], 2.0)
    assert replaced.penalty().item() == pytest.approx(want, rel=1e-6)


def test_merge_quadratics_is_the_sum_of_the_terms():
    gen = torch.Generator().manual_seed(0)
    shape = (4, 3)
    theta = {"w": torch.randn(shape, generator=gen, dtype=torch.float64)}
    terms = [
        (
            {"w": torch.rand(shape, generator=gen, dtype=torch.float64)},
            {"w": torch.randn(shape, generator=gen, dtype=torch.float64)},
        )
        for _ in range(5)
    ]
    terms[2][0]["w"][0, 0] = 0.0  # an element with no information in one task
    for f, _ in terms:
        f["w"][1, 1] = 0.0  # and one with none in any task
    total = None
    for fisher, anchor in terms:
        total = merge_quadratics(total, fisher, anchor)
    assert total is not None
    merged = ewc_penalty(theta, total.fisher, total.mean, lam=1.0, const=total.const)
    naive = ewc_penalty_naive(theta, terms, lam=1.0)
    assert merged.item() == pytest.approx(naive.item(), rel=1e-12)
    assert torch.isfinite(total.mean["w"]).all()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 1e3), st.floats(-10.0, 10.0)), min_size=1, max_size=8),
    st.floats(-10.0, 10.0),
)
def test_merge_quadratics_property(terms, theta):
    total = None
    for f, a in terms:
        total = merge_quadratics(
            total,
            {"x": torch.tensor([f], dtype=torch.float64)},
            {"x": torch.tensor([a], dtype=torch.float64)},
        )
    assert total is not None
    params = {"x": torch.tensor([theta], dtype=torch.float64)}
    merged = ewc_penalty(params, total.fisher, total.mean, 2.0, total.const).item()
    naive = sum(f * (theta - a) ** 2 for f, a in terms)
    assert merged == pytest.approx(naive, rel=1e-9, abs=1e-9)


def test_quadratic_penalty_matches_autograd_reference():
    model = small_net()
    gen = torch.Generator().manual_seed(5)
    fisher, anchor = random_term(model, gen)
    params = dict(model.named_parameters())
    names = list(params)
    fast = quadratic_penalty(
        [params[n] for n in names],
        [fisher[n].sqrt() for n in names],
        [anchor[n] for n in names],
        lam=3.0,
        const=0.5,
    )
    (2.0 * fast).backward()
    fast_grads = [params[n].grad.clone() for n in names]
    model.zero_grad()
    ref = ewc_penalty(params, fisher, anchor, lam=3.0, const=0.5)
    (2.0 * ref).backward()
    assert fast.item() == pytest.approx(ref.item(), rel=1e-6)
    for n, g in zip(names, fast_grads, strict=True):
        torch.testing.assert_close(g, params[n].grad)


def test_backward_twice_through_one_penalty_is_refused():
    model = small_net()
    ewc = EWCConsolidator(model)
    ewc.consolidate(0, {n: torch.ones_like(p) for n, p in model.named_parameters()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    value = ewc.penalty()
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        value.backward()


def test_activation_clock_runs_from_each_tasks_first_frame():
    model = small_net()
    gen = torch.Generator().manual_seed(2)
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0, start_frames=100))
    a, b = random_term(model, gen), random_term(model, gen)
    ewc.add_frames(0, 90)
    ewc.add_frames(1, 5)  # task 1 first appears at frame 90; task 0 keeps its clock
    ewc.consolidate(0, *a)
    ewc.consolidate(1, *b)
    assert ewc.penalty().item() == 0.0
    assert ewc.stats()["ewc/active_terms"] == 0
    ewc.add_frames(1, 4)  # frame 99: task 0 is one frame short
    assert not ewc.is_active(0) and ewc.penalty().item() == 0.0
    ewc.add_frames(1, 1)  # frame 100: task 0 active although it trained only 90 frames itself
    assert ewc.is_active(0) and ewc.frames_trained(0) == 90
    assert ewc.frames_since_first(0) == 100 and ewc.frames_since_first(1) == 10
    assert not ewc.is_active(1)
    assert ewc.penalty().item() == pytest.approx(naive64(model, [a], 1.0)[0], rel=1e-6)
    ewc.add_frames(0, 90)  # frame 190: task 1 reaches 100 frames since its first
    assert ewc.is_active(1)
    assert ewc.penalty().item() == pytest.approx(naive64(model, [a, b], 1.0)[0], rel=1e-6)
    assert ewc.stats()["ewc/active_terms"] == 2
    assert not ewc.is_active(7)  # a task never seen has no clock


def test_inference_delay_cannot_hold_a_term_back():
    """With inferred labels the first steps of a game are labelled with the game before; the
    task of the new game then trains a few frames short of a visit. Its term still counts from
    one visit length after its first frame."""
    model = small_net()
    gen = torch.Generator().manual_seed(3)
    visit, delay = 1_000, 12
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0, start_frames=visit))
    ewc.add_frames(0, visit + delay)  # game A's visit and the first frames of game B
    ewc.add_frames(1, visit - delay)  # game B's visit, short by the delay
    term = random_term(model, gen)
    ewc.consolidate(1, *term)
    assert ewc.frames_trained(1) < visit and not ewc.is_active(1)
    ewc.add_frames(2, delay)  # game C's first frames: B's clock reaches one visit
    assert ewc.is_active(1)
    assert ewc.penalty(current_task=2).item() > 0.0


def test_current_task_can_be_left_out():
    model = small_net()
    gen = torch.Generator().manual_seed(4)
    a, b = random_term(model, gen), random_term(model, gen)
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0, include_current_task=False))
    ewc.consolidate(0, *a)
    ewc.consolidate(1, *b)
    assert ewc.penalty(current_task=0).item() == pytest.approx(
        naive64(model, [b], 1.0)[0], rel=1e-6
    )
    assert ewc.penalty(current_task=1).item() == pytest.approx(
        naive64(model, [a], 1.0)[0], rel=1e-6
    )
    assert ewc.penalty().item() == pytest.approx(naive64(model, [a, b], 1.0)[0], rel=1e-6)
    included = EWCConsolidator(model, EWCConfig(lam=1.0))
    included.consolidate(0, *a)
    included.consolidate(1, *b)
    assert included.penalty(current_task=0).item() == pytest.approx(
        naive64(model, [a, b], 1.0)[0], rel=1e-6
    )


def test_online_mode_keeps_one_decayed_fisher_and_the_latest_anchor():
    model = small_net()
    gen = torch.Generator().manual_seed(6)
    gamma = 0.5
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0, online_gamma=gamma), "online-ewc")
    terms = [random_term(model, gen) for _ in range(3)]
    for k, term in enumerate(terms):
        ewc.consolidate(k % 2, *term)  # task 0 recurs: online mode folds it in again
    want_fisher = {
        n: gamma**2 * terms[0][0][n] + gamma * terms[1][0][n] + terms[2][0][n] for n in terms[0][0]
    }
    ((fisher, anchor),) = ewc.task_terms().values()
    for n in want_fisher:
        torch.testing.assert_close(fisher[n], want_fisher[n])
        torch.testing.assert_close(anchor[n], terms[2][1][n])
    want, _ = naive64(model, [(want_fisher, terms[2][1])], 1.0)
    assert ewc.penalty().item() == pytest.approx(want, rel=1e-6)
    assert ewc.stats()["ewc/online_folds"] == 3
    assert online_fisher_update(None, terms[0][0], gamma)["0.weight"] is not terms[0][0]["0.weight"]


def test_online_mode_holds_back_a_term_until_its_task_is_active():
    model = small_net()
    gen = torch.Generator().manual_seed(7)
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0, start_frames=10), "online-ewc")
    ewc.add_frames(0, 4)
    early, late = random_term(model, gen), random_term(model, gen)
    ewc.consolidate(0, *early)
    ewc.consolidate(0, *late)  # replaces the held-back term
    assert ewc.penalty().item() == 0.0 and ewc.stats()["ewc/online_folds"] == 0
    ewc.add_frames(1, 6)  # frame 10: task 0 becomes active and its latest term folds in
    assert ewc.stats()["ewc/online_folds"] == 1
    assert ewc.penalty().item() == pytest.approx(naive64(model, [late], 1.0)[0], rel=1e-6)


def test_online_mode_without_the_current_task_is_rejected():
    with pytest.raises(ValueError, match="online"):
        EWCConfig(include_current_task=False).validate("online-ewc")
    with pytest.raises(ValueError, match="online"):
        EWCConsolidator(small_net(), EWCConfig(include_current_task=False), "online-ewc")
    EWCConsolidator(small_net(), EWCConfig(include_current_task=False), "l2")  # per-task terms


@pytest.mark.parametrize("kind", ["ewc", "online-ewc", "l2"])
def test_state_dict_round_trip_is_exact_and_json_safe(kind, tmp_path):
    from safetensors.torch import load_file, save_file

    model = small_net()
    gen = torch.Generator().manual_seed(8)
    cfg = EWCConfig(lam=7.0, l2_lam=3.0, start_frames=5)
    ewc = EWCConsolidator(model, cfg, kind)
    for k in (2, 0, 1, 0):
        ewc.add_frames(k, 3)
        ewc.consolidate(k, *random_term(model, gen))
        ewc.penalty()
    state = ewc.state_dict()
    tensors = state.pop("tensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "ewc.safetensors"))
    (tmp_path / "ewc.json").write_text(json.dumps(state))

    restored = EWCConsolidator(model, cfg, kind)
    loaded = json.loads((tmp_path / "ewc.json").read_text())
    loaded["tensors"] = load_file(str(tmp_path / "ewc.safetensors"))
    restored.load_state_dict(loaded)
    assert restored.stats() == ewc.stats()
    assert torch.equal(restored.penalty(), ewc.penalty())
    ewc.add_frames(1, 10)
    restored.add_frames(1, 10)
    assert torch.equal(restored.penalty(current_task=1), ewc.penalty(current_task=1))


def test_load_state_dict_rejects_mismatches():
    model = small_net()
    ewc = EWCConsolidator(model)
    ewc.consolidate(0, {n: torch.ones_like(p) for n, p in model.named_parameters()})
    state = ewc.state_dict()
    bad = {**state, "tensors": {**state["tensors"], "task0/fisher/0.weight": torch.ones(2, 2)}}
    with pytest.raises(ValueError, match=r"0\.weight"):
        EWCConsolidator(model).load_state_dict(bad)
    bad = {**state, "tensors": {**state["tensors"], "task0/fisher/9.weight": torch.ones(2)}}
    with pytest.raises(ValueError, match="unexpected tensor"):
        EWCConsolidator(model).load_state_dict(bad)
    with pytest.raises(ValueError, match=r"mode 'separate' with metric 'fisher'.*'online-ewc'"):
        EWCConsolidator(model, kind="online-ewc").load_state_dict(state)
    with pytest.raises(ValueError, match="metric 'fisher', this consolidator is 'l2'"):
        EWCConsolidator(model, kind="l2").load_state_dict(state)
    old = {k: v for k, v in state.items() if k != "metric"}  # from before the L2 baseline
    EWCConsolidator(model).load_state_dict(old)
    with pytest.raises(ValueError, match="metric 'fisher'"):
        EWCConsolidator(model, kind="l2").load_state_dict(old)
    with pytest.raises(ValueError, match="other parameters"):
        EWCConsolidator(small_net(), EWCConfig(exclude=r"bias")).load_state_dict(state)


def test_bad_fisher_input_gets_a_clear_error():
    model = small_net()
    ewc = EWCConsolidator(model)
    good = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"fisher\['0.weight'\] is \(2, 2\)"):
        ewc.consolidate(0, {**good, "0.weight": torch.ones(2, 2)})
    with pytest.raises(ValueError, match=r"does not have.*nope"):
        ewc.consolidate(0, {**good, "nope": torch.ones(1)})
    with pytest.raises(ValueError, match=r"lacks.*2\.bias"):
        ewc.consolidate(0, {n: t for n, t in good.items() if n != "2.bias"})
    with pytest.raises(ValueError, match="finite and >= 0"):
        ewc.consolidate(0, {**good, "2.bias": -torch.ones(3)})
    with pytest.raises(ValueError, match="anchor"):
        ewc.consolidate(0, good, anchor={**good, "2.bias": torch.ones(4)})
    with pytest.raises(ValueError, match="task ids"):
        ewc.consolidate(-1, good)
    with pytest.raises(ValueError, match="frames"):
        ewc.add_frames(0, -5)


def test_per_task_parameters_are_excluded_by_default():
    net = QNetwork((4, 10, 10), 5, NetworkConfig(arch="minatar", max_tasks=3), input_scale=1.0)
    ewc = EWCConsolidator(net)
    assert ewc.param_names == net.shared_parameter_names()
    # A Fisher over every parameter (task heads included) is accepted; the heads are ignored.
    full = {n: torch.ones_like(p) for n, p in net.named_parameters()}
    ewc.consolidate(0, full)
    assert set(ewc.task_terms()[0][0]) == set(net.shared_parameter_names())
    everything = EWCConsolidator(net, EWCConfig(exclude=r"^$"))
    assert len(everything.param_names) == len(list(net.parameters()))


def test_penalty_drives_parameters_back_to_the_anchor():
    model = small_net()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0))
    ewc.consolidate(0, {n: torch.ones_like(p) for n, p in model.named_parameters()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(60):
        opt.zero_grad()
        ewc.penalty().backward()
        opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), anchor[n], atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_consolidator_follows_the_model_to_cuda():
    model = small_net()
    ewc = EWCConsolidator(model, EWCConfig(lam=1.0))
    ewc.consolidate(0, {n: torch.rand_like(p) for n, p in model.named_parameters()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    cpu_value = ewc.penalty().item()
    model.cuda()
    value = ewc.penalty()
    assert value.device.type == "cuda"
    assert value.item() == pytest.approx(cpu_value, rel=1e-5)
    value.backward()
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())


def test_consolidate_from_replay_uses_the_config_and_protects_shared_weights():
    from ewc_dqn.fisher import fisher_diagonal
    from ewc_dqn.transition import Transition

    net = QNetwork((2, 10, 10), 4, NetworkConfig(arch="minatar", max_tasks=2), input_scale=1.0)
    gen = torch.Generator().manual_seed(0)

    def sample(batch_size: int) -> Transition:
        obs = torch.randint(0, 2, (batch_size, 2, 10, 10), dtype=torch.uint8, generator=gen)
        return Transition(
            obs,
            torch.randint(0, 4, (batch_size,), generator=gen),
            torch.randn(batch_size, generator=gen),
            torch.full((batch_size,), 0.99),
            obs.flip(0),
        )

    cfg = EWCConfig(fisher_batches=3, fisher_batch_size=4, fisher_estimator="td")
    ewc = EWCConsolidator(net, cfg)
    fisher = ewc.consolidate_from_replay(1, sample, target_model=net)
    assert set(fisher) == set(net.shared_parameter_names())
    gen.manual_seed(0)
    want = fisher_diagonal(net, [sample(4) for _ in range(3)], 1, "td", net, ewc.param_names)
    for n in fisher:
        torch.testing.assert_close(fisher[n], want[n])
    assert ewc.stats()["ewc/task1/fisher_sum"] == pytest.approx(
        sum(f.sum().item() for f in fisher.values()), rel=1e-6
    )
    assert ewc.penalty(current_task=1).item() == 0.0  # anchored at the current weights


# --- the L2 baseline: the same per-task machinery with a uniform metric -------------------------


def _l2_net() -> QNetwork:
    torch.manual_seed(0)
    return QNetwork((2, 6, 6), 3, NetworkConfig(arch="minatar", max_tasks=3), input_scale=1.0)


def _nudge(net: nn.Module, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Move every parameter (per-task gains and biases too); return the new values."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _l2_reference(net: nn.Module, anchors: list[dict[str, torch.Tensor]], lam: float):
    """sum over anchors of (lam/2) ||theta - anchor||^2 over the shared weights, and its gradient
    lam sum (theta - anchor), in float64."""
    value, grads = 0.0, {}
    for n in net.shared_parameter_names():
        theta = dict(net.named_parameters())[n].detach().double()
        diffs = [theta - a[n].double() for a in anchors]
        value += 0.5 * lam * sum(float((d * d).sum()) for d in diffs)
        grads[n] = lam * sum(diffs)
    return value, grads


def _never(batch_size: int):
    raise AssertionError("the L2 baseline drew from the replay")


def test_l2_penalty_is_uniform_anchored_per_task_and_replaced_on_recurrence():
    net = _l2_net()
    gen = torch.Generator().manual_seed(1)
    ewc = EWCConsolidator(net, EWCConfig(lam=400.0, l2_lam=0.3), "l2")
    assert ewc.lam == 0.3 and not ewc.needs_replay
    anchors = {0: {n: p.detach().clone() for n, p in net.named_parameters()}}
    metric = ewc.consolidate_from_replay(0, _never)
    assert set(metric) == set(net.shared_parameter_names())  # gains and biases excluded
    assert all(bool((m == 1).all()) for m in metric.values())
    anchors[1] = _nudge(net, gen)
    ewc.consolidate_from_replay(1, _never)
    _nudge(net, gen)
    for check in ("two tasks", "task 0 recurs"):
        value = ewc.penalty(current_task=1)
        net.zero_grad()
        value.backward()
        want, want_grads = _l2_reference(net, [anchors[0], anchors[1]], 0.3)
        assert value.item() == pytest.approx(want, rel=1e-5), check
        for n, p in net.named_parameters():
            if n in want_grads:
                torch.testing.assert_close(p.grad.double(), want_grads[n], rtol=1e-4, atol=1e-7)
            else:  # a per-task gain or bias: not protected, no gradient from the penalty
                assert p.grad is None, n
        # Task 0 comes back and is left again: its term moves to the new weights, none is added.
        anchors[0] = {n: p.detach().clone() for n, p in net.named_parameters()}
        ewc.consolidate_from_replay(0, _never)
        _nudge(net, gen)
    stats = ewc.stats()
    assert stats["l2/stored_terms"] == 2 and stats["l2/task0/consolidations"] == 3
    assert not any(k.startswith("ewc/") or "fisher" in k for k in stats), stats


def test_l2_penalty_ignores_the_per_task_gains_and_biases():
    net = _l2_net()
    ewc = EWCConsolidator(net, EWCConfig(l2_lam=2.0), "l2")
    ewc.consolidate_from_replay(0, _never)
    _nudge(net, torch.Generator().manual_seed(2))
    before = ewc.penalty().item()
    with torch.no_grad():
        for n, p in net.named_parameters():
            if ".task_" in n:
                p.mul_(3.0).add_(1.0)
    assert before > 0 and ewc.penalty().item() == before


def test_l2_strength_is_its_own_field():
    net = _l2_net()
    values = {}
    for kind, lam in (("l2", 0.5), ("ewc", 0.5)):
        cfg = EWCConfig(lam=400.0, l2_lam=0.5) if kind == "l2" else EWCConfig(lam=lam)
        ewc = EWCConsolidator(net, cfg, kind)  # type: ignore[arg-type]
        zeros = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
        ewc.consolidate(0, ewc.uniform_metric(), anchor=zeros)
        values[kind] = ewc.penalty().item()
    assert values["l2"] == pytest.approx(values["ewc"], rel=1e-6)  # l2_lam, not lam, scales L2
    with pytest.raises(ValueError, match="l2_lam must be finite and >= 0"):
        EWCConfig(l2_lam=-1.0).validate("l2")


@pytest.mark.parametrize("kind", ["ewc", "online-ewc", "l2"])
def test_chunked_state_goes_through_a_checkpoint_and_hashes_each_term_once(kind, tmp_path, hashed):
    """``state_dict(chunked=True)``: the terms as chunks, each hashed when it is new (a task
    consolidated again, an online fold) and never again while it stays; a checkpoint of it
    restores the same penalty."""
    from ewc_dqn import chunk_store
    from ewc_dqn.checkpoint import load_checkpoint, save_checkpoint

    model = small_net()
    gen = torch.Generator().manual_seed(8)
    cfg = EWCConfig(lam=7.0, l2_lam=3.0, start_frames=0)
    ewc = EWCConsolidator(model, cfg, kind)
    per_term = 2 * len(list(model.parameters()))  # a Fisher and an anchor per parameter
    for step, task in enumerate((2, 0, 1, 0)):
        ewc.add_frames(task, 3)
        ewc.consolidate(task, *random_term(model, gen))
        hashed.clear()
        state = ewc.state_dict(chunked=True)
        assert len(hashed) == per_term  # the new term alone (the online one: replaced)
        assert all(isinstance(v, chunk_store.Chunks) for v in state["tensors"].values())
        save_checkpoint(tmp_path, step, {"ewc": state})
        hashed.clear()
        assert ewc.state_dict(chunked=True)["tensors"].keys() == state["tensors"].keys()
        assert hashed == []
    restored = EWCConsolidator(model, cfg, kind)
    restored.load_state_dict(load_checkpoint(tmp_path)[1]["ewc"])
    assert restored.stats() == ewc.stats()
    assert torch.equal(restored.penalty(), ewc.penalty())
    # A term changed in place (nothing in EWC does it) is hashed again all the same.
    term = next(iter(ewc.state_dict()["tensors"].values()))
    with torch.no_grad():
        term.add_(1.0)
    hashed.clear()
    ewc.state_dict(chunked=True)
    assert len(hashed) == 1
