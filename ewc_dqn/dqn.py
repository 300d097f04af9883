"""The maths of Double DQN as pure functions: targets, loss, exploration schedule.

Everything here takes tensors (or numbers) and returns tensors (or numbers); nothing reaches
into an agent. Shapes are checked at the boundaries so a wrong batch fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

QFunction = Callable[[torch.Tensor], torch.Tensor]
"""Maps observations (B, C, H, W) to Q-values (B, A)."""


def double_dqn_targets(
    reward: torch.Tensor,
    discount: torch.Tensor,
    q_next_online: torch.Tensor,
    q_next_target: torch.Tensor,
) -> torch.Tensor:
    """Double DQN targets y = r + discount * Q_target(s', argmax_a Q_online(s', a)).

    van Hasselt et al. 2016: the online network picks the action, the target network values it.
    ``discount`` is gamma for a bootstrapped transition (time-limit truncations included) and 0
    for a terminal one. Shapes: reward, discount (B,); q_next_* (B, A). Returns (B,), no grad.
    """
    _check_batch(reward, discount, q_next_online, q_next_target)
    with torch.no_grad():
        a_star = q_next_online.argmax(dim=1, keepdim=True)
        v_next = q_next_target.gather(1, a_star).squeeze(1)
        return reward + discount * v_next


def dqn_targets(
    reward: torch.Tensor, discount: torch.Tensor, q_next_target: torch.Tensor
) -> torch.Tensor:
    """Plain DQN targets y = r + discount * max_a Q_target(s', a), for comparison."""
    _check_batch(reward, discount, q_next_target, q_next_target)
    with torch.no_grad():
        return reward + discount * q_next_target.max(dim=1).values


def td_loss(
    q: torch.Tensor, action: torch.Tensor, target: torch.Tensor, huber_delta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean Huber loss of Q(s, a) against ``target``; returns (loss, td_errors (B,)).

    A Huber loss with delta 1 is the DQN practice of clipping the TD error's gradient to [-1, 1]
    ("gradients from Q-learning clipped to 1" in the paper). ``huber_delta <= 0`` gives plain
    squared error (0.5 * td^2).
    """
    if q.ndim != 2 or action.shape != (q.shape[0],) or target.shape != (q.shape[0],):
        raise ValueError(
            f"td_loss shapes: q {tuple(q.shape)}, action {tuple(action.shape)}, "
            f"target {tuple(target.shape)}"
        )
    q_a = q.gather(1, action.long().unsqueeze(1)).squeeze(1)
    td = q_a - target
    if huber_delta > 0:
        loss = F.huber_loss(q_a, target, delta=huber_delta, reduction="mean")
    else:
        loss = 0.5 * td.pow(2).mean()
    return loss, td.detach()


def linear_epsilon(step: int, start: float, end: float, decay_start: int, decay_end: int) -> float:
    """Linearly decayed exploration rate: ``start`` until ``decay_start``, ``end`` after
    ``decay_end`` (both in agent steps of the task whose epsilon this is)."""
    if step <= decay_start:
        return start
    if step >= decay_end:
        return end
    frac = (step - decay_start) / max(1, decay_end - decay_start)
    return start + frac * (end - start)


def _check_batch(
    reward: torch.Tensor, discount: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor
) -> None:
    b = reward.shape[0]
    if reward.shape != (b,) or discount.shape != (b,):
        raise ValueError(f"reward {tuple(reward.shape)} and discount must both be ({b},)")
    if q1.ndim != 2 or q1.shape[0] != b or q1.shape != q2.shape:
        raise ValueError(f"Q-value shapes {tuple(q1.shape)}, {tuple(q2.shape)} vs batch {b}")
