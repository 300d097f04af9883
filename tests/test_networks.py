"""The Q-network: shapes, the paper's sizes and initialisation, per-task parameters."""

import math

import pytest
import torch

from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.networks import TASK_PARAM_PATTERN, NetworkConfig, QNetwork
from ewc_dqn.transition import Transition


def _count(net: QNetwork, shared: bool) -> int:
    return sum(p.numel() for n, p in net.named_parameters() if (".task_" not in n) == shared)


def test_paper_network_shapes_and_size():
    paper = QNetwork((4, 84, 84), 18, NetworkConfig(arch="paper", max_tasks=3))
    nature = QNetwork((4, 84, 84), 18, NetworkConfig(arch="nature", max_tasks=3))
    q = paper(torch.zeros(5, 4, 84, 84, dtype=torch.uint8), task_id=2)
    assert q.shape == (5, 18)
    ratio = _count(paper, True) / _count(nature, True)
    assert 3.5 < ratio < 5.0  # "about 4x the Nature DQN's parameters"
    # per-task: a gain and a bias per unit of every layer: (32 + 64 + 128 + 1024 + 18) * 2 * 3
    assert _count(paper, False) == (32 + 64 + 128 + 1024 + 18) * 2 * 3


def test_minatar_network():
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar"), input_scale=1.0)
    assert net(torch.ones(2, 10, 10, 10, dtype=torch.uint8), 0).shape == (2, 6)


def test_paper_initialisation_is_uniform_within_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    net = QNetwork((4, 84, 84), 18, NetworkConfig(arch="paper", max_tasks=2))
    layers = [conv.conv for conv in net.convs] + [net.fc.linear, net.head.linear]
    fan_ins = (4 * 64, 32 * 16, 64 * 9, 128 * 7 * 7, 1024)
    for layer, fan_in in zip(layers, fan_ins, strict=True):
        bound = 1 / math.sqrt(fan_in)
        for p in (layer.weight, layer.bias):
            assert p.abs().max() <= bound
            if p.numel() >= 1000:
                # U(-b, b): mean 0, standard deviation b / sqrt(3), values reaching the bound.
                assert p.abs().max() > 0.99 * bound
                assert abs(p.mean().item()) < 0.05 * bound
                assert p.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            else:
                assert p.abs().max() > 0.5 * bound and p.std() > 0.3 * bound
    for name, p in net.named_parameters():
        if "task_gains" in name:
            assert torch.all(p == 1)
        if "task_biases" in name:
            assert torch.all(p == 0)


def test_only_the_selected_task_gets_gradients():
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=3), 1.0)
    net(torch.ones(2, 10, 10, 10), task_id=1).sum().backward()
    for name, p in net.named_parameters():
        if ".task_" in name:
            assert (p.grad is not None) == name.endswith(".1"), name
        else:
            assert p.grad is not None


def test_task_pattern_matches_only_task_parameters():
    import re

    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    matched = {n for n, _ in net.named_parameters() if re.search(TASK_PARAM_PATTERN, n)}
    assert matched == {n for n, _ in net.named_parameters() if ".task_" in n}
    assert set(net.shared_parameter_names()).isdisjoint(matched)


def test_bad_task_id_and_tiny_input():
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    with pytest.raises(ValueError, match="task id"):
        net(torch.zeros(1, 10, 10, 10), task_id=2)
    with pytest.raises(ValueError, match="too small"):
        QNetwork((4, 20, 20), 18, NetworkConfig(arch="paper"))


def test_adam_leaves_other_tasks_untouched():
    torch.manual_seed(0)
    net = QNetwork((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    agent = DQNAgent(net, AgentConfig(optimizer="adam", learning_starts=32), torch.device("cpu"))
    batch = Transition(
        torch.randint(0, 2, (8, 10, 10, 10), dtype=torch.uint8),
        torch.randint(0, 6, (8,)),
        torch.ones(8),
        torch.full((8,), 0.99),
        torch.randint(0, 2, (8, 10, 10, 10), dtype=torch.uint8),
    )
    agent.update(batch, task_id=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith(".0")}
    for _ in range(3):
        agent.update(batch, task_id=1)  # Adam momentum of task 0 must not move task 0
    for n, p in net.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
