"""The Double DQN agent on a tiny network: one update against a step written out by hand,
acting, the target network, the paper's defaults and state round trips."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.networks import NetworkConfig, QNetwork
from ewc_dqn.transition import Transition

NUM_ACTIONS = 3


def tiny_agent(seed: int = 0, **overrides) -> DQNAgent:
    torch.manual_seed(seed)
    net = QNetwork((2, 5, 5), NUM_ACTIONS, NetworkConfig(arch="minatar", max_tasks=2), 1.0)
    config = replace(AgentConfig(batch_size=8, learning_starts=8), **overrides)
    agent = DQNAgent(net, config, torch.device("cpu"))
    with torch.no_grad():  # a target network that differs from the online one
        for p in agent.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return agent


def batch(seed: int = 0, size: int = 8) -> Transition:
    gen = torch.Generator().manual_seed(seed)
    return Transition(
        torch.randint(0, 2, (size, 2, 5, 5), dtype=torch.uint8, generator=gen),
        torch.randint(0, NUM_ACTIONS, (size,), generator=gen),
        torch.randn(size, generator=gen) * 3,  # large enough for both branches of the Huber loss
        torch.where(torch.arange(size) % 3 == 0, 0.0, 0.99),  # every third one terminal
        torch.randint(0, 2, (size, 2, 5, 5), dtype=torch.uint8, generator=gen),
    )


def by_hand(agent: DQNAgent, b: Transition, task: int, penalty=None) -> tuple[dict, dict]:
    """The update written out: Double DQN targets, the Huber loss (plus the penalty), the global
    gradient norm clip and one step of centred RMSprop, on copies of the agent's networks.
    Returns (parameters after the step, the losses)."""
    cfg = agent.config
    online, target = copy.deepcopy(agent.online), copy.deepcopy(agent.target)
    opt = torch.optim.RMSprop(
        online.parameters(),
        lr=cfg.lr,
        alpha=cfg.rmsprop_decay,
        eps=cfg.rmsprop_eps,
        centered=cfg.rmsprop_centered,
        momentum=0.0,
    )
    opt.load_state_dict(copy.deepcopy(agent.optimizer.state_dict()))  # its statistics so far
    rows = torch.arange(b.obs.shape[0])
    with torch.no_grad():
        picked = online(b.next_obs, task).argmax(1)  # the online network picks ...
        value = target(b.next_obs, task)[rows, picked]  # ... the target network values
        y = b.reward + b.discount * value
    q = online(b.obs, task)
    err = q[rows, b.action] - y
    delta = cfg.huber_delta
    huber = torch.where(err.abs() <= delta, 0.5 * err**2, delta * (err.abs() - 0.5 * delta))
    loss = huber.mean()
    extra = penalty(online) if penalty is not None else torch.zeros(())
    (loss + extra).backward()
    norm = math.sqrt(
        sum(p.grad.pow(2).sum().item() for p in online.parameters() if p.grad is not None)
    )
    clip = cfg.max_grad_norm > 0  # <= 0 turns the clip off
    if clip and norm > cfg.max_grad_norm:
        for p in online.parameters():
            if p.grad is not None:
                p.grad.mul_(cfg.max_grad_norm / (norm + 1e-6))
    opt.step()
    params = {n: p.detach().clone() for n, p in online.named_parameters()}
    stats = {
        "losses/td_loss": loss.item(),
        "losses/ewc_penalty": extra.item(),
        "losses/q_mean": q.mean().item(),
        "losses/abs_td": err.abs().mean().item(),
        "losses/grad_norm": norm,  # reported (and watched for divergence) with the clip off too
    }
    return params, stats


def assert_params(agent: DQNAgent, want: dict) -> None:
    for n, p in agent.online.named_parameters():
        torch.testing.assert_close(p.detach(), want[n], rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("max_grad_norm", [50.0, 0.05, 0.0])  # the clip idle, active, off
def test_update_is_one_rmsprop_step_on_the_double_dqn_huber_loss(max_grad_norm):
    agent = tiny_agent(max_grad_norm=max_grad_norm)
    for k in range(3):  # the optimiser's statistics build up over steps
        b = batch(seed=k)
        want, want_stats = by_hand(agent, b, task=1)
        stats = agent.update(b, task_id=1)
        assert_params(agent, want)
        for name, value in want_stats.items():
            assert stats[name] == pytest.approx(value, rel=1e-4, abs=1e-7), name
    assert agent.updates == 3
    assert want_stats["losses/grad_norm"] > max_grad_norm or max_grad_norm != 0.05


def test_the_update_moves_only_the_online_network():
    agent = tiny_agent()
    target = {n: p.clone() for n, p in agent.target.state_dict().items()}
    online = {n: p.clone() for n, p in agent.online.state_dict().items()}
    agent.update(batch(), task_id=0)
    for n, p in agent.target.state_dict().items():
        assert torch.equal(p, target[n]), n
    moved = [n for n, p in agent.online.state_dict().items() if not torch.equal(p, online[n])]
    assert "fc.linear.weight" in moved and "head.task.task_biases.0" in moved
    agent.sync_target()
    for n, p in agent.target.state_dict().items():
        assert torch.equal(p, agent.online.state_dict()[n]), n


def test_nature_dqn_target_when_double_dqn_is_off():
    agent = tiny_agent(double_dqn=False)
    b = batch()
    rows = torch.arange(8)
    with torch.no_grad():
        y = b.reward + b.discount * agent.target(b.next_obs, 0).max(1).values
        err = agent.online(b.obs, 0)[rows, b.action] - y
    double = tiny_agent().update(b, task_id=0)["losses/abs_td"]
    stats = agent.update(b, task_id=0)
    assert stats["losses/abs_td"] == pytest.approx(err.abs().mean().item(), rel=1e-5)
    assert stats["losses/abs_td"] != pytest.approx(double, rel=1e-3)


def test_the_penalty_joins_the_loss_for_the_acting_task():
    agent = tiny_agent()
    asked = []

    def penalty(task_id: int) -> torch.Tensor:
        asked.append(task_id)
        return 0.7 * sum(p.pow(2).sum() for p in agent.online.parameters())

    want, want_stats = by_hand(
        agent, batch(), 1, penalty=lambda net: 0.7 * sum(p.pow(2).sum() for p in net.parameters())
    )
    stats = agent.update(batch(), task_id=1, penalty=penalty)
    assert asked == [1]
    assert stats["losses/ewc_penalty"] == pytest.approx(want_stats["losses/ewc_penalty"], rel=1e-6)
    assert want_stats["losses/ewc_penalty"] > 0
    assert_params(agent, want)


def test_act_is_greedy_at_epsilon_zero_and_uniform_at_one():
    agent = tiny_agent()
    obs = batch(seed=5, size=64).obs.numpy()
    greedy = agent.online(torch.as_tensor(obs), 1).argmax(1).numpy()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(agent.act(obs, 1, 0.0, rng), greedy)
    assert agent.act(obs, 1, 0.0, rng).dtype == np.int64
    many = np.concatenate([agent.act(obs, 1, 1.0, rng) for _ in range(50)])  # 3,200 actions
    counts = np.bincount(many, minlength=NUM_ACTIONS)
    assert counts.min() > 0.9 * len(many) / NUM_ACTIONS  # uniform: ~1,067 each, sd ~27
    # At epsilon 0.5 about half the actions are random (a third of those match greedy anyway).
    half = np.concatenate([agent.act(obs, 1, 0.5, rng) for _ in range(50)])
    agree = (half == np.tile(greedy, 50)).mean()
    assert agree == pytest.approx(0.5 + 0.5 / NUM_ACTIONS, abs=0.04)


def test_defaults_are_the_papers():
    # Kirkpatrick et al. 2017, Table S2 (docs: shared PAPER.md, "The agent").
    cfg = AgentConfig()
    assert (cfg.gamma, cfg.lr, cfg.rmsprop_decay) == (0.99, 2.5e-4, 0.95)
    assert (cfg.batch_size, cfg.train_every, cfg.target_update) == (32, 4, 7_500)
    assert (cfg.learning_starts, cfg.eps_decay_start, cfg.eps_decay_end) == (
        50_000,
        50_000,
        1_050_000,
    )
    assert (cfg.eps_start, cfg.eps_end, cfg.huber_delta, cfg.max_grad_norm) == (
        1.0,
        0.01,
        1.0,
        50.0,
    )
    assert cfg.double_dqn and cfg.clip_rewards and cfg.optimizer == "rmsprop"
    # Where the paper is silent: Dopamine's DQN values (centred RMSprop, its epsilons).
    assert (cfg.rmsprop_eps, cfg.rmsprop_centered, cfg.adam_eps) == (1e-5, True, 1.5e-4)
    opt = tiny_agent().optimizer
    assert isinstance(opt, torch.optim.RMSprop)
    group = opt.param_groups[0]
    assert (group["lr"], group["alpha"], group["momentum"]) == (2.5e-4, 0.95, 0.0)
    assert (group["eps"], group["centered"]) == (cfg.rmsprop_eps, cfg.rmsprop_centered)


def test_state_round_trip_continues_identically():
    a, b = tiny_agent(seed=0), tiny_agent(seed=1)
    a.update(batch(seed=0), task_id=0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.updates == 1
    for agent in (a, b):
        agent.update(batch(seed=1), task_id=0)
    for (n, p), q in zip(
        a.online.state_dict().items(), b.online.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), n
    for n, p in a.target.state_dict().items():
        assert torch.equal(p, b.target.state_dict()[n]), n


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(gamma=-0.01), r"gamma must be in \[0, 1\]"),
        (dict(gamma=1.01), r"gamma must be in \[0, 1\]"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(batch_size=0, learning_starts=0), "batch_size must be >= 1"),
        (dict(train_every=0), "train_every must be >= 1"),
        (dict(target_update=0), "target_update must be >= 1"),
        (dict(batch_size=32, learning_starts=31), "learning_starts must be at least batch_size"),
        (dict(eps_decay_start=10, eps_decay_end=9), "eps_decay_end must be >= eps_decay_start"),
        (dict(optimizer="sgd"), "unknown optimizer 'sgd'"),
    ],
)
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_agent(**overrides)


def test_config_edges_are_accepted():
    for overrides in (
        dict(gamma=0.0, batch_size=1, learning_starts=1, train_every=1, target_update=1),
        dict(gamma=1.0, eps_decay_start=5, eps_decay_end=5, optimizer="adam"),
    ):
        tiny_agent(**overrides).update(batch(), task_id=0)
