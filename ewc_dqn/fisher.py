"""Diagonal Fisher information of a Q-network from replayed transitions, and Fisher overlap.

EWC needs, for every protected parameter theta_i, an estimate of F_i = E[g_i^2] where g is the
gradient of a per-sample log-likelihood (Kirkpatrick et al. 2017). The expectation is over
*samples*: squaring the gradient of a minibatch mean would give (E[g])^2, which vanishes at a
minimum and is not a Fisher. So every estimator here takes per-sample gradients with
``torch.func`` (``functional_call`` + ``vmap`` + ``grad``), a chunk of samples at a time so that
memory stays at ``chunk_size`` copies of the parameters whatever the batch size.

The paper does not say which likelihood it differentiated. Three are offered (``Estimator``):

``"q_value"`` (default)
    Q(s, a) read as the mean of a unit-variance Gaussian over the return of the taken action:
    F = E[(grad Q(s, a))^2]. This is the exact Fisher of that model (the score's expectation is
    taken over the model's own output noise, which integrates to 1), and the Gauss-Newton
    curvature of the squared TD loss. It does not depend on how well the targets are fit.
``"td"``
    The empirical Fisher of the TD loss, E[(grad l(Q(s, a), y))^2], with Double DQN targets y
    from ``target_model`` (what avalanche-rl does). With a Huber loss of delta 1 this is
    E[clip(delta_td)^2 (grad Q)^2]: the squared TD errors weight the samples, so a task that is
    learnt well (small TD errors) gets a *small* Fisher, which is the opposite of what EWC wants
    (Kunstner et al. 2019 discuss this failure of the empirical Fisher).
``"softmax"``
    The Fisher of a Boltzmann policy pi(a|s) = softmax(Q(s, .) / temperature):
    F = E_s sum_a pi(a|s) (grad log pi(a|s))^2. By default the expectation over actions is exact
    (no randomness; A gradients per state, so A times the cost of the others: about 80 s per
    batch of 32 for the paper network on 2 CPU cores). With ``softmax_samples=n`` it draws n
    actions per state from pi with the ``generator`` passed in instead (unbiased, n gradients per
    state). On a classifier (logits in place of Q) the exact form is the standard "true Fisher"
    of EWC's supervised experiments, which is how ``ewc_dqn.experiments.permuted_digits`` uses
    it.

Every estimator returns the mean over all samples of all batches.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from ewc_dqn.dqn import double_dqn_targets, td_loss
from ewc_dqn.transition import Transition

Estimator = Literal["q_value", "td", "softmax"]
ESTIMATORS: tuple[Estimator, ...] = ("q_value", "td", "softmax")

DEFAULT_CHUNK_SIZE = 16
"""Samples whose gradients are held at once: 16 copies of the paper network are about 420 MB."""


def fisher_diagonal(
    model: nn.Module,
    batches: Iterable[Transition],
    task_id: int,
    estimator: Estimator = "q_value",
    target_model: nn.Module | None = None,
    param_names: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    huber_delta: float = 1.0,
    softmax_temperature: float = 1.0,
    softmax_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of ``model(obs, task_id)`` estimated from per-sample gradients.

    Args:
        model: maps (obs (B, ...), task_id) to Q-values (B, A); called as it is (train/eval mode
            untouched) with its current parameters.
        batches: minibatches of one task (paper: 100 of 32 from that task's replay buffer).
        task_id: the task whose head (gains and biases) the forward pass uses.
        estimator: "q_value", "td" or "softmax"; see the module docstring.
        target_model: the target network for the Double DQN targets of "td" (required there,
            unused otherwise).
        param_names: the parameters to differentiate (default: all with ``requires_grad``);
            the others are held constant.
        chunk_size: samples whose per-sample gradients are held in memory at once ("softmax"
            holds A, or ``softmax_samples``, gradients per state, and takes fewer states).
        huber_delta: Huber delta of the TD loss for "td"; use the agent's own.
        softmax_temperature: temperature of the policy for "softmax" (in units of Q).
        softmax_samples: for "softmax", actions drawn per state instead of the exact
            expectation (None: exact).
        generator: the randomness of ``softmax_samples`` (on the model's device; required then).

    Returns:
        ``{name: F}`` with each F shaped like its parameter, on the parameter's device.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown Fisher estimator {estimator!r}; expected one of {ESTIMATORS}")
    if estimator == "td" and target_model is None:
        raise ValueError("the 'td' Fisher needs target_model for its Double DQN targets")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if softmax_temperature <= 0:
        raise ValueError(f"softmax_temperature must be > 0, got {softmax_temperature}")
    if softmax_samples is not None and (softmax_samples < 1 or generator is None):
        raise ValueError("softmax_samples needs a value >= 1 and a torch.Generator")

    all_params = dict(model.named_parameters())
    names = (
        [n for n, p in all_params.items() if p.requires_grad]
        if param_names is None
        else list(param_names)
    )
    unknown = [n for n in names if n not in all_params]
    if unknown:
        raise ValueError(f"fisher_diagonal: the model has no parameters named {unknown}")
    diff = {n: all_params[n].detach() for n in names}
    frozen = {n: p.detach() for n, p in all_params.items() if n not in diff}
    buffers = dict(model.named_buffers())

    def q_values(params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """Q-values (A,) of one observation (no batch dimension) under ``params``."""
        return functional_call(model, (params, frozen, buffers), (obs.unsqueeze(0), task_id))[0]

    def q_taken(params: dict[str, torch.Tensor], obs: torch.Tensor, action: torch.Tensor):
        return q_values(params, obs).gather(0, action.unsqueeze(0)).squeeze(0)

    def td_sample_loss(params, obs, action, target):
        q = q_values(params, obs).unsqueeze(0)
        return td_loss(q, action.unsqueeze(0), target.unsqueeze(0), huber_delta)[0]

    def log_policy(params, obs):
        return F.log_softmax(q_values(params, obs) / softmax_temperature, dim=0)

    def log_policy_taken(params, obs, action):
        return log_policy(params, obs).gather(0, action.unsqueeze(0)).squeeze(0)

    sums = {n: torch.zeros_like(p) for n, p in diff.items()}
    count = 0
    with torch.no_grad():  # the function transforms below differentiate regardless
        for batch in batches:
            _check_batch(batch)
            if estimator == "td":
                assert target_model is not None
                target = double_dqn_targets(
                    batch.reward,
                    batch.discount,
                    model(batch.next_obs, task_id),
                    target_model(batch.next_obs, task_id),
                )
            n = batch.action.shape[0]
            step = chunk_size
            if estimator == "softmax" and softmax_samples is not None:
                step = max(1, chunk_size // softmax_samples)
            elif estimator == "softmax":
                step = max(1, chunk_size // model(batch.obs[:1], task_id).shape[1])
            for lo in range(0, n, step):
                obs = batch.obs[lo : lo + step]
                action = batch.action[lo : lo + step].long()
                if estimator == "q_value":
                    per_sample = vmap(grad(q_taken), in_dims=(None, 0, 0))(diff, obs, action)
                    _add_squares(sums, per_sample, weight=None)
                elif estimator == "td":
                    per_sample = vmap(grad(td_sample_loss), in_dims=(None, 0, 0, 0))(
                        diff, obs, action, target[lo : lo + step]
                    )
                    _add_squares(sums, per_sample, weight=None)
                elif softmax_samples is not None:
                    probs = F.softmax(model(obs, task_id) / softmax_temperature, dim=1)
                    drawn = torch.multinomial(probs, softmax_samples, True, generator=generator)
                    per_sample = vmap(grad(log_policy_taken), in_dims=(None, 0, 0))(
                        diff, obs.repeat_interleave(softmax_samples, dim=0), drawn.flatten()
                    )
                    _add_squares(sums, per_sample, weight=None, scale=1.0 / softmax_samples)
                else:
                    # (c, A, *shape): gradient of log pi(a|s) for every action a of every state.
                    per_action = vmap(jacrev(log_policy), in_dims=(None, 0))(diff, obs)
                    probs = F.softmax(model(obs, task_id) / softmax_temperature, dim=1)
                    _add_squares(sums, per_action, weight=probs)
            count += n
    if count == 0:
        raise ValueError("fisher_diagonal got no samples (empty batches)")
    return {n: s / count for n, s in sums.items()}


def _add_squares(
    sums: dict[str, torch.Tensor],
    per_sample: Mapping[str, torch.Tensor],
    weight: torch.Tensor | None,
    scale: float = 1.0,
) -> None:
    """sums[n] += scale * sum over leading dims of weight * g^2 (weight shaped like g's leading
    dims). Squares ``per_sample`` in place where it can: its tensors are fresh outputs of vmap
    (the gradients of unused parameters come back as expanded zeros, squared out of place)."""
    for n, g in per_sample.items():
        lead = g.ndim - sums[n].ndim
        sq = g.square_() if g.is_contiguous() else g.square()
        if weight is None:
            sums[n].add_(sq.sum(dim=tuple(range(lead))), alpha=scale)
        else:
            sums[n].add_(torch.tensordot(weight, sq, dims=lead), alpha=scale)


def _check_batch(batch: Transition) -> None:
    b = batch.action.shape[0]
    if batch.action.shape != (b,) or batch.obs.shape[0] != b:
        raise ValueError(
            f"Fisher batch: obs {tuple(batch.obs.shape)} and action {tuple(batch.action.shape)} "
            "must share the batch size B, action shaped (B,)"
        )


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its name without the last component.

    ``"convs.0.conv.weight"`` -> ``"convs.0.conv"``; ``"fc.linear.bias"`` -> ``"fc.linear"``.
    """
    return name.rsplit(".", 1)[0] if "." in name else name


def fisher_overlap(
    fisher_1: Mapping[str, torch.Tensor],
    fisher_2: Mapping[str, torch.Tensor],
    group: Callable[[str], str] = layer_of,
    exclude: str | None = None,
) -> dict[str, float]:
    """Per-layer Fisher overlap 1 - d^2 of two diagonal Fishers (Kirkpatrick et al. 2017, SI).

    Within each layer both Fishers are normalised to unit trace, and
    d^2 = 1/2 || F1^(1/2) - F2^(1/2) ||_F^2 (the Frechet distance of the two normalised
    matrices). 1 means the two tasks weigh the layer's parameters identically, 0 means they use
    disjoint parameters. A layer where either Fisher is all zero gets NaN.

    Args:
        fisher_1, fisher_2: ``{name: F}`` with the same names and shapes.
        group: maps a parameter name to its layer (default: drop ``.weight`` / ``.bias``).
        exclude: regular expression of names to leave out (e.g. ``TASK_PARAM_PATTERN``).

    Returns:
        ``{layer: overlap}`` in the order the layers first appear in ``fisher_1``.
    """
    if set(fisher_1) != set(fisher_2):
        raise ValueError(
            f"fisher_overlap: different parameter names {sorted(set(fisher_1) ^ set(fisher_2))}"
        )
    layers: dict[str, list[str]] = defaultdict(list)
    for name in fisher_1:
        if exclude is not None and re.search(exclude, name):
            continue
        if fisher_1[name].shape != fisher_2[name].shape:
            raise ValueError(
                f"fisher_overlap: {name} is {tuple(fisher_1[name].shape)} vs "
                f"{tuple(fisher_2[name].shape)}"
            )
        layers[group(name)].append(name)
    result = {}
    for layer, names in layers.items():
        f1 = torch.cat([fisher_1[n].detach().double().flatten() for n in names])
        f2 = torch.cat([fisher_2[n].detach().double().flatten().to(f1.device) for n in names])
        if (f1 < 0).any() or (f2 < 0).any():
            raise ValueError(f"fisher_overlap: negative Fisher entries in layer {layer}")
        t1, t2 = f1.sum().item(), f2.sum().item()
        if t1 == 0 or t2 == 0:
            result[layer] = math.nan
            continue
        d2 = 0.5 * (torch.sqrt(f1 / t1) - torch.sqrt(f2 / t2)).square().sum().item()
        result[layer] = 1.0 - d2
    return result
