"""Rehearsal: what a minibatch holds (how many transitions of which task, from which replay), and
that an update on a mixed minibatch learns every transition with its own task's gains and biases
at the mean loss over the whole minibatch."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from ewc_dqn.agent import AgentConfig, DQNAgent
from ewc_dqn.config import TrainConfig
from ewc_dqn.errors import UserError
from ewc_dqn.networks import NetworkConfig, QNetwork
from ewc_dqn.rehearsal import RehearsalConfig, rehearsal_minibatch
from ewc_dqn.replay import FrameReplay
from ewc_dqn.transition import Transition

FRAME = (1, 3, 3)


def marked_replay(task: int, transitions: int, rng: np.random.Generator) -> FrameReplay:
    """A replay of one copy whose every frame is filled with ``task + 1``, so each transition
    drawn from it says where it came from; ``transitions`` sampleable ones (0: a first frame
    only)."""
    replay = FrameReplay(1_000, 1, FRAME, stack=1, gamma=0.99, rng=rng)
    frame = np.full((1, *FRAME), task + 1, dtype=np.uint8)
    yes, no = np.ones(1, dtype=bool), np.zeros(1, dtype=bool)
    replay.add(frame, np.zeros(1, int), np.zeros(1), no, no, yes)
    for _ in range(transitions):
        replay.add(frame, np.ones(1, int), np.ones(1), no, no, no)
    assert len(replay) == transitions
    return replay


def replays_of(sizes: dict[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    return {k: marked_replay(k, n, rng) for k, n in sizes.items()}, rng


def source(batch: Transition) -> np.ndarray:
    """The task each transition of ``batch`` was drawn from (its frames' mark minus one)."""
    obs, nxt = batch.obs.flatten(1), batch.next_obs.flatten(1)
    assert bool((obs == obs[:, :1]).all()) and torch.equal(obs, nxt)  # one replay per sample
    return obs[:, 0].numpy().astype(int) - 1


def test_a_quarter_of_the_batch_comes_from_the_other_tasks_in_proportion_to_their_replays():
    replays, rng = replays_of({0: 50, 1: 100, 2: 20, 3: 300, 4: 1})
    seen = {1: 0, 3: 0}
    for _ in range(2_000):
        batch, runs = rehearsal_minibatch(1, replays, 32, 0.25, rng)
        assert runs is not None and runs[0] == (1, 24)  # the current task first, 32 - 8
        assert sum(n for _, n in runs[1:]) == 8  # round(0.25 * 32) from the others
        others = [k for k, _ in runs[1:]]
        assert others == sorted(set(others)) and 1 not in others  # each other task once, in order
        assert all(n > 0 for _, n in runs)
        # Every transition of a run comes from that run's task's replay.
        want = np.concatenate([np.full(n, k) for k, n in runs])
        np.testing.assert_array_equal(source(batch), want)
        for k, n in runs[1:]:
            seen[k] = seen.get(k, 0) + n
    # Uniform over the pooled 371 transitions of tasks 0, 2, 3 and 4 (one is enough to count).
    total = 2_000 * 8
    for k, size in {0: 50, 2: 20, 3: 300, 4: 1}.items():
        p = size / 371
        assert abs(seen[k] - total * p) < 4.5 * math.sqrt(total * p * (1 - p)), (k, seen)


@pytest.mark.parametrize(
    ("sizes", "fraction"),
    [
        ({0: 40, 1: 0}, 0.5),  # task 1 has a replay but nothing it can sample yet
        ({0: 40}, 0.5),  # no other task at all
        ({0: 40, 1: 40}, 0.0),  # no rehearsal asked for
    ],
)
def test_without_rehearsal_the_batch_and_its_draws_are_the_current_tasks(sizes, fraction):
    replays, rng = replays_of(sizes)
    batch, runs = rehearsal_minibatch(0, replays, 16, fraction, rng)
    assert runs is None and (source(batch) == 0).all()
    # Exactly what a run without rehearsal draws: the same batch, the generator left the same.
    twin = np.random.default_rng(0)
    want = marked_replay(0, 40, twin).sample(16)
    assert torch.equal(batch.action, want.action) and torch.equal(batch.reward, want.reward)
    assert rng.bit_generator.state == twin.bit_generator.state


@pytest.mark.parametrize(
    ("fraction", "message"),
    [
        (1.0, "must be in [0, 1)"),
        (-0.1, "must be in [0, 1)"),
        (float("nan"), "must be in [0, 1)"),
        (0.01, "rounds to no rehearsed transition; use more than 0.0156"),
        (0.99, "rounds to the whole minibatch"),
    ],
)
def test_fractions_that_cannot_work_are_refused(fraction, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(")", r"\)")):
        RehearsalConfig(fraction).validate(32)
    RehearsalConfig(0.0).validate(32)
    assert RehearsalConfig(0.25).rehearsed(32) == 8
    assert RehearsalConfig().fraction == TrainConfig().rehearsal.fraction == 0.0  # off by default
    with pytest.raises(dataclasses.FrozenInstanceError):
        RehearsalConfig().fraction = 0.5  # type: ignore[misc]


def test_a_share_of_one_transition():
    replays, rng = replays_of({0: 30, 1: 30})
    batch, runs = rehearsal_minibatch(0, replays, 8, 0.125, rng)
    assert runs == ((0, 7), (1, 1))
    np.testing.assert_array_equal(source(batch), [0] * 7 + [1])


# --- the update on a mixed minibatch ---------------------------------------------------------

SHAPE, ACTIONS = (2, 5, 5), 3


def mixed_agent() -> DQNAgent:
    """A tiny agent whose four tasks have gains and biases far apart, so a transition learnt
    with another task's would show."""
    torch.manual_seed(0)
    net = QNetwork(SHAPE, ACTIONS, NetworkConfig(arch="minatar", max_tasks=4), 1.0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if ".task_" in n:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    config = AgentConfig(batch_size=8, learning_starts=8, max_grad_norm=0.0)
    agent = DQNAgent(net, config, torch.device("cpu"))
    with torch.no_grad():
        for p in agent.target.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return agent


def a_batch(size: int) -> Transition:
    gen = torch.Generator().manual_seed(2)
    return Transition(
        torch.randint(0, 2, (size, *SHAPE), dtype=torch.uint8, generator=gen),
        torch.randint(0, ACTIONS, (size,), generator=gen),
        torch.randn(size, generator=gen) * 3,
        torch.where(torch.arange(size) % 3 == 0, 0.0, 0.99),
        torch.randint(0, 2, (size, *SHAPE), dtype=torch.uint8, generator=gen),
    )


def per_sample_loss(online, target, batch: Transition, i: int, task: int) -> torch.Tensor:
    """Sample ``i``'s Double DQN Huber loss, computed alone with ``task``'s gains and biases."""
    obs, nxt = batch.obs[i : i + 1], batch.next_obs[i : i + 1]
    with torch.no_grad():
        picked = online(nxt, task).argmax(1)
        y = batch.reward[i] + batch.discount[i] * target(nxt, task)[0, picked[0]]
    q = online(obs, task)[0, batch.action[i]]
    return torch.nn.functional.huber_loss(q, y, delta=1.0)


def test_a_mixed_update_is_the_mean_loss_of_each_sample_with_its_task():
    agent = mixed_agent()
    batch = a_batch(8)
    runs = ((2, 5), (0, 2), (3, 1))  # learning task 2; two transitions of 0, one of 3
    tasks = [k for k, n in runs for _ in range(n)]
    online, target = copy.deepcopy(agent.online), copy.deepcopy(agent.target)
    want = torch.stack([per_sample_loss(online, target, batch, i, t) for i, t in enumerate(tasks)])
    want.mean().backward()

    stats = agent.update(batch, task_id=2, runs=runs)
    assert stats["losses/td_loss"] == pytest.approx(want.mean().item(), rel=1e-5)
    grads = dict(online.named_parameters())
    for n, p in agent.online.named_parameters():
        if grads[n].grad is None:  # task 1's gains and biases: in no sample
            assert p.grad is None and n.endswith(".1"), n
        else:
            torch.testing.assert_close(p.grad, grads[n].grad, rtol=1e-4, atol=1e-7, msg=n)
    # The same loss with every sample taken as the learning task's differs: the test can tell.
    wrong = [per_sample_loss(online, target, batch, i, 2) for i in range(8)]
    assert abs(torch.stack(wrong).mean().item() - want.mean().item()) > 1e-3


def test_a_single_run_is_the_plain_update():
    plain, mixed = mixed_agent(), mixed_agent()
    batch = a_batch(8)
    want = plain.update(batch, task_id=1).as_dict()
    got = mixed.update(batch, task_id=1, runs=((1, 8),)).as_dict()
    assert got == pytest.approx(want, rel=1e-6)
    for (n, p), q in zip(plain.online.named_parameters(), mixed.online.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8, msg=n)


def test_task_runs_must_cover_the_batch():
    net = mixed_agent().online
    obs = torch.zeros(4, *SHAPE)
    with pytest.raises(ValueError, match="do not cover the batch of 4"):
        net(obs, ((0, 2), (1, 1)))
    with pytest.raises(ValueError, match="task id 4 outside"):
        net(obs, ((0, 2), (4, 2)))
