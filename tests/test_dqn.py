"""The pure maths of Double DQN against hand-computed values."""

import pytest
import torch

from ewc_dqn.dqn import double_dqn_targets, dqn_targets, linear_epsilon, td_loss


def test_double_dqn_targets_hand_computed():
    reward = torch.tensor([1.0, -1.0, 0.5])
    discount = torch.tensor([0.99, 0.0, 0.99])  # second: terminal; third: truncated (bootstraps)
    q_next_online = torch.tensor([[1.0, 3.0], [5.0, 0.0], [0.0, -1.0]])
    q_next_target = torch.tensor([[10.0, 20.0], [7.0, 8.0], [4.0, 100.0]])
    y = double_dqn_targets(reward, discount, q_next_online, q_next_target)
    # online argmax: 1, 0, 0 -> target values 20, 7 (ignored, terminal), 4
    assert torch.allclose(y, torch.tensor([1.0 + 0.99 * 20.0, -1.0, 0.5 + 0.99 * 4.0]))


def test_double_differs_from_max_target():
    reward, discount = torch.zeros(1), torch.ones(1)
    online, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 9.0]])
    assert double_dqn_targets(reward, discount, online, target).item() == 0.0
    assert dqn_targets(reward, discount, target).item() == 9.0


def test_truncation_bootstraps_termination_does_not():
    q = torch.tensor([[2.0, 2.0]])
    truncated = double_dqn_targets(torch.zeros(1), torch.full((1,), 0.99), q, q)
    terminated = double_dqn_targets(torch.zeros(1), torch.zeros(1), q, q)
    assert truncated.item() == pytest.approx(1.98)
    assert terminated.item() == 0.0


def test_targets_have_no_gradient():
    q = torch.ones(2, 3, requires_grad=True)
    y = double_dqn_targets(torch.zeros(2), torch.ones(2), q, q * 2)
    assert not y.requires_grad


def test_td_loss_huber_and_squared():
    q = torch.tensor([[0.0, 3.0], [1.0, 0.0]], requires_grad=True)
    action = torch.tensor([1, 0])
    target = torch.tensor([0.0, 1.5])
    loss, td = td_loss(q, action, target, huber_delta=1.0)
    # td = [3, -0.5]; huber = [3 - 0.5, 0.125] -> mean 1.3125
    assert torch.allclose(td, torch.tensor([3.0, -0.5]))
    assert loss.item() == pytest.approx(1.3125)
    loss.backward()
    assert torch.allclose(q.grad, torch.tensor([[0.0, 0.5], [-0.25, 0.0]]))  # clipped at 1 / B
    sq, _ = td_loss(q.detach(), action, target, huber_delta=0.0)
    assert sq.item() == pytest.approx(0.5 * (9 + 0.25) / 2)
    default, _ = td_loss(q.detach(), action, target)  # the paper's clip at 1 by default
    assert default.item() == pytest.approx(1.3125)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="shapes"):
        td_loss(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), torch.zeros(4))
    with pytest.raises(ValueError):
        double_dqn_targets(torch.zeros(2), torch.zeros(3), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="Q-value shapes"):
        dqn_targets(torch.zeros(2), torch.zeros(2), torch.zeros(3, 2))


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 1.0), (50, 1.0), (550, 0.505), (1050, 0.01), (10**7, 0.01)]
)
def test_linear_epsilon(step, expected):
    assert linear_epsilon(step, 1.0, 0.01, 50, 1050) == pytest.approx(expected)
