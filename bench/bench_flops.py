"""How close one DQN update of the paper network comes to this machine's floating-point bound.

The update is the agent's own (``DQNAgent.update``: online pass on s and s', target pass on s',
Huber TD loss, backward, gradient clip, the preset's optimiser step) with the EWC penalty of one
consolidated task added, at batch 32 on (4, 84, 84) uint8 frames. Printed:

- FLOPs of one update, counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and
  matrix products, forward and backward), plus the element-wise work it does not count
  (optimiser, penalty, gains and biases: about ten operations per parameter, stated separately);
- the machine's sustained rate on the same layer shapes: each convolution and linear layer of the
  update timed alone (its forward pass, and for the online network its backward pass), as the
  kernels torch runs; the sum of these times is the **bound** the update cannot beat with the
  same kernels;
- the peak rate of one large single-precision matrix product, for scale;
- the update's median time and its ratio to the bound (goal: within 1.5x).

Timings are medians of calls taken in turn (a busy machine slows all alike).

    python bench/bench_flops.py                    # the paper network on this CPU
    python bench/bench_flops.py --arch nature --threads 1
    python bench/bench_flops.py --device cuda
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
import tyro
from torch.utils.flop_counter import FlopCounterMode

from ewc_dqn.agent import DQNAgent
from ewc_dqn.config import ATARI
from ewc_dqn.ewc import EWCConsolidator
from ewc_dqn.networks import NetworkConfig
from ewc_dqn.run_builder import build_suite_network
from ewc_dqn.transition import Transition


@dataclass(frozen=True)
class Args:
    """FLOP bound of one DQN update."""

    arch: Literal["paper", "nature"] = "paper"
    """Network: the paper's (conv 32-64-128, FC 1024) or the Nature DQN's."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    repeats: int = 30
    """Timed calls of each measurement (the median is reported)."""
    batch_size: int = 32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_times(
    jobs: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    for fn in jobs.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@dataclass
class _Layer:
    """One convolution or linear layer as the update calls it."""

    name: str
    module: torch.nn.Module
    input_shape: tuple[int, ...]
    backward: bool  # the online network's passes are differentiated
    input_grad: bool  # every layer but the first passes a gradient to its input


def _layers_of_update(agent: DQNAgent, batch: Transition) -> list[_Layer]:
    """The conv/linear calls of one update with their input shapes, read with forward hooks."""
    calls: list[_Layer] = []
    handles = []
    for net, differentiated in ((agent.online, True), (agent.target, False)):
        first = True
        for name, module in net.named_modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):

                def hook(mod, inputs, output, name=name, d=differentiated, f=first):
                    calls.append(_Layer(name, mod, tuple(inputs[0].shape), d, d and not f))

                handles.append(module.register_forward_hook(hook))
                first = False
    agent.update(batch, 0, None)
    for handle in handles:
        handle.remove()
    # The online network runs once on s and s' together; the target once on s'.
    seen: dict[tuple[str, bool], _Layer] = {}
    for call in calls:
        seen.setdefault((call.name, call.backward), call)
    return list(seen.values())


def _isolated(layer: _Layer, device: torch.device) -> Callable[[], object]:
    """The layer's kernels alone at the update's shape: forward, and backward if the update
    differentiates it."""
    mod = layer.module
    x = torch.randn(layer.input_shape, device=device, requires_grad=layer.input_grad)
    w = mod.weight.detach().clone().requires_grad_(layer.backward)
    b = mod.bias.detach().clone().requires_grad_(layer.backward) if mod.bias is not None else None
    if isinstance(mod, torch.nn.Conv2d):

        def forward() -> torch.Tensor:
            return F.conv2d(x, w, b, mod.stride, mod.padding)
    else:

        def forward() -> torch.Tensor:
            return F.linear(x, w, b)

    if not layer.backward:
        return lambda: forward()
    wanted = [t for t in (x, w, b) if t is not None and t.requires_grad]

    def forward_backward() -> object:
        out = forward()
        return torch.autograd.grad(out, wanted, torch.ones_like(out))

    return forward_backward


def main(args: Args) -> dict[str, float]:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(0)
    config = replace(ATARI, network=NetworkConfig(arch=args.arch))
    agent = DQNAgent(build_suite_network(config), config.agent, device)
    ewc = EWCConsolidator(agent.online, config=config.ewc)
    params = dict(agent.online.named_parameters())
    ewc.consolidate(
        0,
        {n: torch.rand_like(params[n]) * 1e-3 for n in ewc.param_names},
        {n: params[n].detach() + 1e-2 for n in ewc.param_names},
    )
    b = args.batch_size
    batch = Transition(
        obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, device=device),
        action=torch.randint(0, 18, (b,), device=device),
        reward=torch.rand(b, device=device),
        discount=torch.full((b,), 0.99, device=device),
        next_obs=torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, device=device),
    )
    layers = _layers_of_update(agent, batch)

    counter = FlopCounterMode(display=False)
    with counter:
        agent.update(batch, 0, ewc.penalty)
    counted = counter.get_total_flops()
    n_params = sum(p.numel() for p in agent.online.parameters())
    elementwise = 10 * n_params  # optimiser, clip, penalty: about ten operations per parameter

    n = 2048
    a_mat, b_mat = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    jobs: dict[str, Callable[[], object]] = {
        "update": lambda: agent.update(batch, 0, ewc.penalty),
        "sgemm": lambda: a_mat @ b_mat,
    }
    for layer in layers:
        jobs[f"{layer.name} {'fwd+bwd' if layer.backward else 'fwd'}"] = _isolated(layer, device)
    times = _median_times(jobs, device, args.repeats)
    bound = sum(t for k, t in times.items() if k not in ("update", "sgemm"))
    peak = 2 * n**3 / times["sgemm"]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{args.arch} network, batch {b}, {n_params:,} parameters, median of {args.repeats}")
    print(f"FLOPs of one update (conv + matmul, fwd + bwd): {counted / 1e9:.3f} GFLOP")
    print(f"element-wise work not counted above (about):   {elementwise / 1e9:.3f} GFLOP")
    print(f"peak rate, {n}x{n} sgemm:                     {peak / 1e9:.1f} GFLOP/s")
    print(f"{'layer kernels alone':<40}{'ms':>9}{'GFLOP/s':>10}")
    for layer in layers:
        key = f"{layer.name} {'fwd+bwd' if layer.backward else 'fwd'}"
        with FlopCounterMode(display=False) as c:
            _isolated(layer, device)()
        print(f"  {key:<38}{times[key] * 1e3:>9.2f}{c.get_total_flops() / times[key] / 1e9:>10.1f}")
    update = times["update"]
    print(f"bound (sum of the kernels alone):       {bound * 1e3:9.2f} ms")
    print(f"bound at the sgemm peak:                {counted / peak * 1e3:9.2f} ms")
    print(f"one update, measured:                   {update * 1e3:9.2f} ms")
    ratio = update / bound
    print(f"update / bound = {ratio:.2f} (goal <= 1.5): {'PASS' if ratio <= 1.5 else 'FAIL'}")
    return {"update": update, "bound": bound, "ratio": ratio, "gflop": counted / 1e9}


if __name__ == "__main__":
    main(tyro.cli(Args))
