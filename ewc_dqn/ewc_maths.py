"""The maths of elastic weight consolidation as pure functions of tensors.

Kirkpatrick et al. 2017: the penalty of task k is (lam/2) sum_i F_k,i (theta_i - theta*_k,i)^2.
The sum of such quadratics is one quadratic,

    sum_k F_k (theta - theta*_k)^2 = A (theta - m)^2 + c,
    A = sum_k F_k,  m = sum_k F_k theta*_k / A,  c = sum_k F_k (theta*_k - m)^2,

built by ``merge_quadratics`` (a pairwise update after Chan et al. 1979 that never subtracts two
large numbers, so it is as accurate in float32 as the naive sum) and evaluated by
``ewc_penalty`` or, fused for speed, ``quadratic_penalty``. Online EWC (Schwarz et al. 2018)
keeps one running Fisher, ``online_fisher_update``. ``ewc_dqn.ewc.EWCConsolidator`` holds the
terms of a run and calls these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch

Tensors = Mapping[str, torch.Tensor]


class Quadratic(NamedTuple):
    """sum_i fisher_i (theta_i - mean_i)^2 + const, the merged form of several EWC terms.

    ``fisher`` and ``mean`` map parameter names to tensors shaped like the parameters; ``const``
    is the sum over elements of the part that does not depend on theta (a Python float).
    """

    fisher: dict[str, torch.Tensor]
    mean: dict[str, torch.Tensor]
    const: float


def merge_quadratics(total: Quadratic | None, fisher: Tensors, anchor: Tensors) -> Quadratic:
    """Add the term F (theta - anchor)^2 to ``total`` (None: no terms yet); returns a new one.

    With A' = A + F and delta = anchor - m: m' = m + (F / A') delta and
    c' = c + sum (A F / A') delta^2. Where A' = 0 (no information) m' keeps the old value.
    """
    if total is None:
        return Quadratic(
            {n: f.detach().clone() for n, f in fisher.items()},
            {n: a.detach().clone() for n, a in anchor.items()},
            0.0,
        )
    new_fisher, new_mean, const = {}, {}, total.const
    for n, a_old in total.fisher.items():
        f, m = fisher[n], total.mean[n]
        a_new = a_old + f
        weight = f / a_new.clamp_min(torch.finfo(a_new.dtype).tiny)  # 0 where a_new == 0
        delta = anchor[n] - m
        new_fisher[n] = a_new
        new_mean[n] = m + weight * delta
        const += (a_old * weight * delta.square()).sum(dtype=torch.float64).item()
    return Quadratic(new_fisher, new_mean, const)


def ewc_penalty(
    params: Tensors, fisher: Tensors, anchor: Tensors, lam: float, const: float = 0.0
) -> torch.Tensor:
    """(lam/2) (sum over names and elements of F (theta - anchor)^2 + const), a scalar tensor.

    The gradient with respect to each parameter is lam F (theta - anchor).
    """
    total: torch.Tensor | None = None
    for n, f in fisher.items():
        d = params[n] - anchor[n]
        term = (f * d * d).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("ewc_penalty: no parameters")
    return 0.5 * lam * (total + const)


def quadratic_penalty(
    params: Sequence[torch.Tensor],
    sqrt_fisher: Sequence[torch.Tensor],
    mean: Sequence[torch.Tensor],
    lam: float,
    const: float = 0.0,
) -> torch.Tensor:
    """``ewc_penalty`` with F = sqrt_fisher^2, fused for speed (lists in the same order).

    (lam/2) (sum ||sqrt(F) (theta - mean)||^2 + const): a forward pass of three multi-tensor
    operations and a backward pass of two, with one allocation the size of the parameters,
    instead of the dozen elementwise passes autograd records for F (theta - m)^2. The gradient
    lam F (theta - mean) is lam sqrt(F) u with u = sqrt(F) (theta - mean) kept from the forward
    pass (and overwritten by the backward pass, so backward runs once per call).
    """
    if not (len(params) == len(sqrt_fisher) == len(mean)) or not params:
        raise ValueError("quadratic_penalty: params, sqrt_fisher and mean must be equally long")
    return _QuadraticPenalty.apply(lam, const, list(sqrt_fisher), list(mean), *params)


class _QuadraticPenalty(torch.autograd.Function):
    @staticmethod
    def forward(ctx, lam, const, sqrt_fisher, mean, *params):  # type: ignore[override]
        u = torch._foreach_sub(list(params), mean)
        torch._foreach_mul_(u, sqrt_fisher)
        squares = torch.stack(torch._foreach_norm(u)).square().sum()
        ctx.lam, ctx.sqrt_fisher, ctx.u = lam, sqrt_fisher, u
        return 0.5 * lam * (squares + const)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if ctx.u is None:
            raise RuntimeError("backward through an EWC penalty twice; call penalty() again")
        # The gradients overwrite u in place: one allocation per penalty instead of two.
        grads, ctx.u = ctx.u, None
        torch._foreach_mul_(grads, ctx.sqrt_fisher)
        torch._foreach_mul_(grads, grad_out * ctx.lam)
        return (None, None, None, None, *grads)


def online_fisher_update(
    running: Tensors | None, fisher_new: Tensors, gamma: float
) -> dict[str, torch.Tensor]:
    """Online EWC's running Fisher: gamma F + F_new (F_new alone when there is none yet)."""
    if running is None:
        return {n: f.detach().clone() for n, f in fisher_new.items()}
    return {n: gamma * running[n] + fisher_new[n] for n in running}
