"""Diagonal Fisher information of a Q-network from replayed transitions, and Fisher overlap.

EWC needs, for every protected parameter theta_i, an estimate of F_i = E[g_i^2] where g is the
gradient of a per-sample log-likelihood (Kirkpatrick et al. 2017). The expectation is over
*samples*: squaring the gradient of a minibatch mean would give (E[g])^2, which vanishes at a
minimum and is not a Fisher. So every estimator here works from per-sample gradients, by one of
two exact paths that agree to float rounding:

Batched ("q_value" and "td" on a ``QNetwork``; ``_BatchedSquares``)
    One forward and one backward per chunk of samples. Q(s_n, a_n), and sample n's TD loss,
    depend on sample n alone, so backpropagating their sum over the chunk gives every sample's
    own gradient d at each layer's output; with the layer's input x (forward hooks keep both)
    the squared per-sample gradients follow in closed form: (d^2)^T (x^2), one matmul, for a
    linear weight; for a convolution kernel a batched matmul of the output gradients with the
    unfolded input patches (``F.unfold``), squared after the sum over positions; for the task's
    own gains and biases sums over positions of d x and d. No per-sample copy of the parameters
    is made (a convolution's per-sample kernel gradients are, one chunk at a time); chunks are
    sized by ``BATCHED_BYTES``. On one CPU thread the MinAtar network's 3,200 samples of a task
    switch take 0.2-0.3 s this way, against 1.1-1.8 s by ``torch.func``
    (``bench/bench_ewc.py --fisher``).
``torch.func`` (everything else)
    ``functional_call`` + ``vmap`` + ``grad``, ``chunk_size`` samples at a time so that memory
    stays at ``chunk_size`` copies of the parameters whatever the batch size. It serves
    "softmax", any model holding a module the batched path does not know (a custom network, a
    subclass, a module with hooks, a parameter shared by two layers), and a forward it cannot
    follow (a layer run twice): it falls back rather than guess.

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
from ewc_dqn.networks import QNetwork, TaskConditioned, TaskConv2d, TaskLinear
from ewc_dqn.transition import Transition

Estimator = Literal["q_value", "td", "softmax"]
ESTIMATORS: tuple[Estimator, ...] = ("q_value", "td", "softmax")

DEFAULT_CHUNK_SIZE = 16
"""Samples whose gradients are held at once: 16 copies of the paper network are about 420 MB."""

BATCHED_BYTES = 256 * 2**20
"""Memory the batched path ("q_value" and "td" on a ``QNetwork``) sizes its chunks by: the
chunk's activations, unfolded convolution patches and output gradients, and the per-sample
kernel gradients of one convolution at a time (about 100 samples of the paper network)."""


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
        chunk_size: samples whose per-sample gradients the ``torch.func`` path holds in memory
            at once ("softmax" holds A, or ``softmax_samples``, gradients per state, and takes
            fewer states); the batched path sizes its chunks by ``BATCHED_BYTES`` instead.
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
    batched = None
    try:
        if estimator in ("q_value", "td"):
            batched = _BatchedSquares.build(model, diff, task_id, estimator, huber_delta)
        with torch.no_grad():  # the function transforms below differentiate regardless
            for batch in batches:
                _check_batch(batch)
                target: torch.Tensor | None = None
                if estimator == "td":
                    assert target_model is not None
                    target = double_dqn_targets(
                        batch.reward,
                        batch.discount,
                        model(batch.next_obs, task_id),
                        target_model(batch.next_obs, task_id),
                    )
                n = batch.action.shape[0]
                start = 0
                if batched is not None:
                    start = batched.add(sums, batch.obs, batch.action.long(), target)
                    if start < n:  # a forward it cannot follow: torch.func from here on
                        batched.close()
                        batched = None
                step = chunk_size
                if estimator == "softmax" and softmax_samples is not None:
                    step = max(1, chunk_size // softmax_samples)
                elif estimator == "softmax":
                    step = max(1, chunk_size // model(batch.obs[:1], task_id).shape[1])
                for lo in range(start, n, step):
                    obs = batch.obs[lo : lo + step]
                    action = batch.action[lo : lo + step].long()
                    if estimator == "q_value":
                        per_sample = vmap(grad(q_taken), in_dims=(None, 0, 0))(diff, obs, action)
                        _add_squares(sums, per_sample, weight=None)
                    elif estimator == "td":
                        assert target is not None
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
                        # (c, A, *shape): gradient of log pi(a|s) for every action of every state.
                        per_action = vmap(jacrev(log_policy), in_dims=(None, 0))(diff, obs)
                        probs = F.softmax(model(obs, task_id) / softmax_temperature, dim=1)
                        _add_squares(sums, per_action, weight=probs)
                count += n
    finally:
        if batched is not None:
            batched.close()
    if count == 0:
        raise ValueError("fisher_diagonal got no samples (empty batches)")
    return {n: s / count for n, s in sums.items()}


class _Unsupported(Exception):
    """A forward the batched path cannot follow (a layer called twice, an unexpected input)."""


_LAYERS = (nn.Linear, nn.Conv2d, TaskConditioned)
"""Modules whose per-sample squared gradients the batched path computes."""
_KNOWN_MODULES = (*_LAYERS, QNetwork, TaskConv2d, TaskLinear, nn.ModuleList, nn.ParameterList)
"""Every module of a model the batched path takes (exact types: a subclass may change forward)."""


class _BatchedSquares:
    """Sums over samples of squared per-sample gradients from one forward and one backward per
    chunk of samples, for the "q_value" and "td" estimators of a ``QNetwork``.

    The chunk's root is sum_n r_n, with r_n = Q(s_n, a_n) ("q_value") or sample n's TD loss
    ("td"). Every r_n depends on sample n alone, so row n of the root's gradient with respect to
    a layer's output is sample n's own output gradient d_n, and with the layer's input x_n
    (forward hooks keep both) each parameter's per-sample gradient has a closed form:

    - linear y = W x + b: outer(d_n, x_n) and d_n; the sum over n of its square is
      (d^2)^T (x^2), one matmul, and sum_n d_n^2.
    - convolution: sum over output positions p of outer(d_n,p, patch_n,p) (``F.unfold``), one
      batched matmul, squared after the sum over positions; the bias gets sum_p d_n,p.
    - task gain and bias, y = x * g + b: sum_p d_n,p x_n,p and sum_p d_n,p.

    A shared layer's output gradient is taken at its own output, which its task gain multiplies
    afterwards, so the gain is in it. No per-sample copy of a linear weight is made; those of a
    convolution's kernel are, one chunk at a time, within ``BATCHED_BYTES`` with the activations.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[nn.Module, list[tuple[str, str]]],
        params: dict[str, torch.Tensor],
        task_id: int,
        estimator: Estimator,
        huber_delta: float,
    ) -> None:
        self._model = model
        self._layers = layers
        self._params = params
        self._task_id = task_id
        self._estimator = estimator
        self._huber_delta = huber_delta
        self._seen: dict[nn.Module, tuple[torch.Tensor | None, torch.Tensor]] = {}
        self._recording = False
        self._problem: str | None = None
        self._chunk: int | None = None
        self._hooks = [
            m.register_forward_hook(self._record) for m in model.modules() if type(m) in _LAYERS
        ]

    @classmethod
    def build(
        cls,
        model: nn.Module,
        diff: Mapping[str, torch.Tensor],
        task_id: int,
        estimator: Estimator,
        huber_delta: float,
    ) -> _BatchedSquares | None:
        """The batched path for ``model``, or None when it holds a module this path does not
        know (then ``fisher_diagonal`` takes per-sample gradients with torch.func)."""
        layers = _batched_layers(model, diff, task_id)
        if layers is None:
            return None
        own = dict(model.named_parameters())
        params = (  # differentiable stand-ins, swapped in only when some are not already
            {}
            if all(own[n].requires_grad for n in diff)
            else {n: p.detach().requires_grad_() for n, p in diff.items()}
        )
        return cls(model, layers, params, task_id, estimator, huber_delta)

    def close(self) -> None:
        """Remove the forward hooks from the model and drop what they kept."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._seen.clear()

    def _record(self, module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if not self._recording:
            return
        if module in self._seen:
            self._problem = "a layer ran twice in one forward"
        elif not isinstance(output, torch.Tensor):
            self._problem = "a layer whose output is not a tensor"
        else:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            self._seen[module] = (x, output)

    def _forward(self, obs: torch.Tensor) -> torch.Tensor:
        self._seen.clear()
        self._problem = None
        self._recording = True
        try:
            if self._params:
                q = functional_call(self._model, self._params, (obs, self._task_id))
            else:  # the model's own parameters (graph edges into the others are never run)
                q = self._model(obs, self._task_id)
        finally:
            self._recording = False
        if self._problem is not None:
            raise _Unsupported(self._problem)
        return q

    def add(
        self,
        sums: dict[str, torch.Tensor],
        obs: torch.Tensor,
        action: torch.Tensor,
        target: torch.Tensor | None,
    ) -> int:
        """Add the batch's squared per-sample gradients to ``sums``; return how many samples
        were taken (fewer than the batch when the forward is one it cannot follow: the rest are
        the caller's, and nothing of the chunk that failed has been added)."""
        n = action.shape[0]
        if self._chunk is None:
            try:
                self._chunk = self._chunk_size(obs[:1])
            except _Unsupported:
                return 0
        for lo in range(0, n, self._chunk):
            hi = lo + self._chunk
            try:
                layers = self._output_gradients(
                    obs[lo:hi], action[lo:hi], None if target is None else target[lo:hi]
                )
            except _Unsupported:
                return lo
            for m, x, d in layers:
                _add_layer_squares(sums, m, self._layers[m], x, d)
        return n

    def _chunk_size(self, obs: torch.Tensor) -> int:
        """Samples per chunk within ``BATCHED_BYTES``, from one sample's layer inputs and outputs
        (each held about three times over: activations, gradients, temporaries), unfolded
        patches and per-sample kernel gradients."""
        with torch.no_grad():
            self._forward(obs)
        per_sample = 0
        for m, (x, out) in self._seen.items():
            if x is None:
                raise _Unsupported("a layer without a tensor input")
            elems = 3 * (x.numel() + out.numel())
            if isinstance(m, nn.Conv2d) and out.ndim == 4:
                elems += m.weight[0].numel() * out.shape[-2] * out.shape[-1] + m.weight.numel()
            per_sample += elems * x.element_size()
        return max(1, BATCHED_BYTES // max(1, per_sample))

    def _output_gradients(
        self, obs: torch.Tensor, action: torch.Tensor, target: torch.Tensor | None
    ) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
        """(layer, input, output gradient) of every layer holding a differentiated parameter
        that the chunk's forward ran, each checked for shapes the closed forms hold for."""
        b = action.shape[0]
        with torch.enable_grad():
            q = self._forward(obs)
            if q.ndim != 2 or q.shape[0] != b:
                raise _Unsupported("Q-values not shaped (B, A)")
            if self._estimator == "q_value":
                root = q.gather(1, action.unsqueeze(1)).sum()
            else:
                assert target is not None
                root = td_loss(q, action, target, self._huber_delta)[0] * b  # mean -> sum
        used = []
        for m in self._layers:
            if m not in self._seen:
                continue  # not in this forward: its gradients are zero
            x, out = self._seen[m]
            if x is None or x.shape[0] != b or out.shape[0] != b:
                raise _Unsupported("a layer whose input or output is not batched")
            if isinstance(m, nn.Conv2d) and x.ndim != 4:
                raise _Unsupported("an unbatched convolution")
            if isinstance(m, nn.Linear) and x.ndim != 2:
                raise _Unsupported("a linear layer on more than (B, features)")
            if isinstance(m, TaskConditioned) and (x.shape != out.shape or x.ndim < 2):
                raise _Unsupported("task gains on an unexpected shape")
            if out.requires_grad:
                used.append((m, x, out))
        self._seen.clear()
        if not used or not root.requires_grad:
            return []
        grads = torch.autograd.grad(root, [out for _, _, out in used], allow_unused=True)
        return [
            (m, x.detach(), d) for (m, x, _), d in zip(used, grads, strict=True) if d is not None
        ]


def _batched_layers(
    model: nn.Module, names: Iterable[str], task_id: int
) -> dict[nn.Module, list[tuple[str, str]]] | None:
    """The layers that hold ``names``, each with (kind, name) of its differentiated parameters
    (kind "weight", "bias" or "gain"; another task's gains and biases are left out: their
    gradients are zero), or None when the model is not one the batched path knows."""
    owner: dict[str, tuple[nn.Module, str]] = {}
    for prefix, m in model.named_modules():
        if type(m) not in _KNOWN_MODULES:
            return None
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks:
            return None  # a hook may change what the layer computes
        if isinstance(m, nn.Conv2d) and (
            m.groups != 1 or isinstance(m.padding, str) or m.padding_mode != "zeros"
        ):
            return None
        if isinstance(m, _LAYERS):
            for local, _ in m.named_parameters():
                owner[f"{prefix}.{local}" if prefix else local] = (m, local)
    every = [p for _, p in model.named_parameters(remove_duplicate=False)]
    if len({id(p) for p in every}) != len(every):
        return None  # a parameter shared by two layers: its per-sample gradient is their sum
    kinds = {
        "weight": "weight",
        "bias": "bias",
        f"task_gains.{task_id}": "gain",
        f"task_biases.{task_id}": "bias",
    }
    layers: dict[nn.Module, list[tuple[str, str]]] = {}
    for name in names:
        if name not in owner:
            return None
        m, local = owner[name]
        if local in kinds:
            layers.setdefault(m, []).append((kinds[local], name))
    return layers


def _add_layer_squares(
    sums: dict[str, torch.Tensor],
    layer: nn.Module,
    params: Sequence[tuple[str, str]],
    x: torch.Tensor,
    d: torch.Tensor,
) -> None:
    """sums[name] += sum over samples n of (per-sample gradient of the parameter)^2, from the
    layer's input x and output gradient d (both (B, ...)); see ``_BatchedSquares``."""
    for kind, name in params:
        acc = sums[name]
        if isinstance(layer, nn.Conv2d):
            d_pos = d.flatten(2)  # (B, out, P)
            if kind == "weight":
                padding = layer.padding
                assert not isinstance(padding, str)
                patches = F.unfold(x, layer.kernel_size, layer.dilation, padding, layer.stride)
                per_sample = torch.bmm(d_pos, patches.transpose(1, 2))  # (B, out, in*kh*kw)
                acc.add_(per_sample.square_().sum(0).view_as(acc))
            else:
                acc.add_(d_pos.sum(2).square().sum(0))
        elif isinstance(layer, nn.Linear):
            if kind == "weight":
                acc.addmm_(d.square().T, x.square())
            else:
                acc.add_(d.square().sum(0))
        else:  # task gain and bias: y = x * g + b, one per unit (dim 1), summed over positions
            g = d * x if kind == "gain" else d
            per_unit = g if g.ndim == 2 else g.flatten(2).sum(2)
            acc.add_(per_unit.square().sum(0))


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
