"""Cost of the EWC penalty against one DQN update of the paper network.

Times, on one device, (1) penalty + backward with K = 1 and K = 10 consolidated tasks, once
through the consolidator's merged quadratic and once as a naive loop over the per-task terms,
and (2) one full Double DQN update at batch 32 on (4, 84, 84) uint8 frames (online forward on
s and s', target forward on s', Huber TD loss, backward, gradient clipping, RMSprop step).
Targets (issue 3): merged K = 10 costs at most 1.2x merged K = 1, and at most 10% of the update.

With ``--fisher`` it times ``fisher_diagonal`` ("q_value", the shared parameters) instead: the
batched path against the ``torch.func`` path (the same network behind a wrapper module, which
the batched path does not know and leaves to ``torch.func``), on the MinAtar network (100
batches of 32 = 3,200 samples, a task switch's estimate) and on the paper network (fewer
batches: ``torch.func`` takes about a second per batch there on one CPU thread). Target: at
most 1 s per switch on the MinAtar network.

    python bench/bench_ewc.py --device auto
    python bench/bench_ewc.py --device auto --threads 1 --fisher
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import tyro
from torch import nn

from ewc_dqn.dqn import double_dqn_targets, td_loss
from ewc_dqn.ewc import EWCConfig, EWCConsolidator
from ewc_dqn.ewc_maths import Tensors, ewc_penalty, quadratic_penalty
from ewc_dqn.fisher import fisher_diagonal
from ewc_dqn.networks import NetworkConfig, QNetwork, build_q_network
from ewc_dqn.transition import Transition


@dataclass(frozen=True)
class Args:
    """Benchmark settings."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run: 'auto' picks CUDA when available."""
    repeats: int = 20
    """Timed calls of each measurement, taken in turn (the median is reported)."""
    warmup: int = 2
    """Untimed rounds before timing."""
    batch_size: int = 32
    """Minibatch of the DQN update (paper: 32)."""
    seed: int = 0
    """Seed of the random network, Fishers and frames."""
    threads: int = 0
    """torch CPU threads (0: torch's default). On a busy CPU, 1 keeps the update from being
    slowed by threads spinning against other processes, which would flatter the ratios."""
    fisher: bool = False
    """Time the Fisher estimate (batched path against torch.func) instead of the penalty."""
    fisher_repeats: int = 5
    """Timed calls of each Fisher measurement (the median is reported)."""
    fisher_batches: int = 100
    """Minibatches of ``batch_size`` in the MinAtar network's Fisher (paper: 100)."""
    fisher_paper_batches: int = 10
    """Minibatches of ``batch_size`` in the paper network's Fisher."""


def ewc_penalty_naive(
    params: Tensors, terms: Sequence[tuple[Tensors, Tensors]], lam: float
) -> torch.Tensor:
    """The penalty summed term by term: K passes over the parameters, what merging saves."""
    total = ewc_penalty(params, *terms[0], lam=lam)
    for fisher, anchor in terms[1:]:
        total = total + ewc_penalty(params, fisher, anchor, lam=lam)
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(
    jobs: dict[str, Callable[[], None]], device: torch.device, repeats: int, warmup: int
) -> dict[str, float]:
    """Median wall time in seconds of each job, timed one call at a time in turn, so that a
    busy machine (other processes, clock changes) slows every job alike."""
    for _ in range(warmup):
        for fn in jobs.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


class Opaque(nn.Module):
    """A network behind a module type that ``fisher_diagonal``'s batched path does not know, so
    that its Fisher is taken with ``torch.func`` (the path before the batched one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, task_id: int) -> torch.Tensor:
        return self.net(obs, task_id)


def fisher_main(args: Args, device: torch.device) -> dict[str, float]:
    """Time ``fisher_diagonal`` by both paths on the MinAtar and paper networks; print the table,
    return the timings (seconds)."""
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    b = args.batch_size
    jobs: dict[str, Callable[[], None]] = {}
    samples: dict[str, int] = {}
    results: dict[str, dict[str, torch.Tensor]] = {}
    specs = [
        ("minatar", (10, 10, 10), 1.0, 2, args.fisher_batches),
        ("paper", (4, 84, 84), 1.0 / 255.0, 256, args.fisher_paper_batches),
    ]
    for arch, shape, scale, high, num in specs:
        config = NetworkConfig(arch=arch, max_tasks=20)  # type: ignore[arg-type]
        net = build_q_network(shape, 18, config, scale).to(device)
        batches = [
            Transition(
                torch.randint(0, high, (b, *shape), dtype=torch.uint8, generator=gen),
                torch.randint(0, 18, (b,), generator=gen),
                torch.rand(b, generator=gen),
                torch.full((b,), 0.99),
                torch.randint(0, high, (b, *shape), dtype=torch.uint8, generator=gen),
            ).to(device)
            for _ in range(num)
        ]
        for label, model in (("batched", net), ("torch.func", Opaque(net))):
            names = [n for n, _ in model.named_parameters() if ".task_" not in n]

            key = f"{arch} {label}"

            def fn(
                model: nn.Module = model,
                batches: list[Transition] = batches,
                names: list[str] = names,
                key: str = key,
            ) -> None:
                out = fisher_diagonal(model, batches, 3, "q_value", param_names=names)
                results[key] = {n.removeprefix("net."): f for n, f in out.items()}

            jobs[key] = fn
            samples[key] = num * b
    res = time_round_robin(jobs, device, args.fisher_repeats, min(args.warmup, 1))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"Fisher (q_value, shared parameters), median of {args.fisher_repeats}")
    head = f"{'network':<10}{'path':<12}{'samples':>9}{'s/call':>10}{'s/3,200':>10}"
    print(f"{head}{'max rel diff':>14}")
    for arch, *_ in specs:
        fast, slow = results[f"{arch} batched"], results[f"{arch} torch.func"]
        diff = max(
            float(((fast[n] - slow[n]).abs().max() / slow[n].abs().max().clamp_min(1e-30)).cpu())
            for n in slow
        )
        for label in ("torch.func", "batched"):
            key = f"{arch} {label}"
            per = res[key] * 3200 / samples[key]
            print(
                f"{arch:<10}{label:<12}{samples[key]:>9,}{res[key]:>10.3f}{per:>10.3f}{diff:>14.1e}"
            )
        res[f"{arch} speed-up"] = res[f"{arch} torch.func"] / res[f"{arch} batched"]
        print(f"{arch:<10}{'speed-up':<12}{res[f'{arch} speed-up']:>29.1f}x")
    ok = res["minatar batched"] * 3200 / samples["minatar batched"] <= 1.0
    print(f"MinAtar Fisher per 3,200 samples <= 1 s: {'PASS' if ok else 'FAIL'}")
    return res


def main(args: Args) -> dict[str, float]:
    """Run the benchmark, print the table, return the timings (seconds) and ratios."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.fisher:
        return fisher_main(args, device)
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    net = QNetwork((4, 84, 84), 18, NetworkConfig(arch="paper")).to(device)
    target = copy.deepcopy(net)
    optimiser = torch.optim.RMSprop(net.parameters(), lr=2.5e-4, alpha=0.95, eps=0.01)

    def random_like(p: torch.Tensor, scale: float) -> torch.Tensor:
        return (scale * torch.rand(p.shape, generator=gen)).to(device=device, dtype=p.dtype)

    consolidators = {}
    for k in (1, 10):
        ewc = EWCConsolidator(net, EWCConfig(lam=400.0))
        for task in range(k):
            params = dict(net.named_parameters())
            fisher = {n: random_like(params[n], 1e-3) for n in ewc.param_names}
            anchor = {n: params[n].detach() + random_like(params[n], 1e-2) for n in ewc.param_names}
            ewc.consolidate(task, fisher, anchor)
        ewc.penalty()  # builds the merged quadratic, as the first update after a switch does
        consolidators[k] = ewc

    def merged(k: int) -> Callable[[], None]:
        def fn() -> None:
            net.zero_grad(set_to_none=True)
            consolidators[k].penalty().backward()

        return fn

    def naive(k: int) -> Callable[[], None]:
        params = dict(net.named_parameters())
        terms = list(consolidators[k].task_terms().values())

        def fn() -> None:
            net.zero_grad(set_to_none=True)
            ewc_penalty_naive(params, terms, lam=400.0).backward()

        return fn

    def naive_fused(k: int) -> Callable[[], None]:
        names = consolidators[k].param_names
        params = [dict(net.named_parameters())[n] for n in names]
        terms = [
            ([f[n].sqrt() for n in names], [a[n] for n in names])
            for f, a in consolidators[k].task_terms().values()
        ]

        def fn() -> None:
            net.zero_grad(set_to_none=True)
            total = sum(quadratic_penalty(params, s, m, lam=400.0) for s, m in terms)
            total.backward()  # type: ignore[union-attr]

        return fn

    b = args.batch_size
    obs = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=gen).to(device)
    next_obs = torch.randint(0, 256, (b, 4, 84, 84), dtype=torch.uint8, generator=gen).to(device)
    action = torch.randint(0, 18, (b,), generator=gen).to(device)
    reward = torch.rand(b, generator=gen).to(device)
    discount = torch.full((b,), 0.99, device=device)

    def dqn_update() -> None:
        with torch.no_grad():
            y = double_dqn_targets(reward, discount, net(next_obs, 0), target(next_obs, 0))
        loss, _ = td_loss(net(obs, 0), action, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 50.0)
        optimiser.step()

    jobs = {
        "update": dqn_update,
        "merged_k1": merged(1),
        "merged_k10": merged(10),
        "naive_k1": naive(1),
        "naive_k10": naive(10),
        "naive_fused_k10": naive_fused(10),
    }
    res = time_round_robin(jobs, device, args.repeats, args.warmup)
    res["ratio_k10_k1"] = res["merged_k10"] / res["merged_k1"]
    res["ratio_k10_update"] = res["merged_k10"] / res["update"]
    res["ratio_naive_k10_update"] = res["naive_k10"] / res["update"]

    shared = sum(p.numel() for n, p in net.named_parameters() if n in consolidators[1].param_names)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"paper network: {shared:,} protected parameters, batch {b}, median of {args.repeats}")
    print(f"{'measurement':<48}{'ms':>10}{'x update':>10}")
    rows = [
        ("DQN update (fwd online+target, bwd, RMSprop)", res["update"]),
        ("penalty+backward, merged, K=1", res["merged_k1"]),
        ("penalty+backward, merged, K=10", res["merged_k10"]),
        ("penalty+backward, naive loop, K=1", res["naive_k1"]),
        ("penalty+backward, naive loop, K=10", res["naive_k10"]),
        ("penalty+backward, fused kernel per task, K=10", res["naive_fused_k10"]),
    ]
    for label, sec in rows:
        print(f"{label:<48}{sec * 1e3:>10.3f}{sec / res['update']:>10.3f}")
    ok_k = res["ratio_k10_k1"] <= 1.2
    ok_u = res["ratio_k10_update"] <= 0.10
    print(
        f"merged K=10 / K=1     = {res['ratio_k10_k1']:.3f} (target <= 1.2): "
        f"{'PASS' if ok_k else 'FAIL'}"
    )
    print(
        f"merged K=10 / update  = {res['ratio_k10_update']:.3f} (target <= 0.10): "
        f"{'PASS' if ok_u else 'FAIL'}"
    )
    print(f"naive  K=10 / update  = {res['ratio_naive_k10_update']:.3f} (comparison)")
    return res


if __name__ == "__main__":
    main(tyro.cli(Args))
