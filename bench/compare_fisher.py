"""Compare the Fisher estimators of ``ewc_dqn.fisher`` on a trained agent.

The paper does not say which likelihood its Fisher differentiated; ``fisher_diagonal`` offers
three ("q_value", "td", "softmax"). Given a finished run folder, this loads the newest
checkpoint's online and target networks and task 0's replay, estimates each Fisher of the
protected (shared) parameters from the same M minibatches, and reports

1. the cost of each estimate (wall and process CPU seconds);
2. each Fisher's trace, largest entry and share of the trace per layer;
3. the per-layer Fisher overlap between estimators (Kirkpatrick et al. 2017, SI) and the
   Spearman rank correlation of the full diagonals;
4. a perturbation test in the spirit of the paper's Fig. 4C: Gaussian noise of a fixed total
   norm, with per-parameter scale proportional to (F_i + eps)^(-1/2) (noise concentrated where
   the estimator says the weights do not matter), against isotropic noise; the estimator whose
   "unimportant" directions change the greedy policy (and Q(s, a)) least is the one that best
   identifies what matters. Measured on replay states drawn apart from the Fisher batches, with
   the same Gaussian draws for every scheme (so differences between estimators are paired):
   (4a) on all protected weights, where the weights that every estimator gives F = 0 (inputs
   the game never sets, units that never fire) soak up most of the noise, and (4b) on the
   weights that every estimator gives F > 0 only, where the estimators actually disagree.

Caveat built into the metrics: the q_value Fisher is the curvature of Q(s, a) itself, so it is
favoured by |Delta Q(s, a)|, and the softmax Fisher is the curvature of a policy over Q, so it is
favoured by the greedy-action change; read both.

    python bench/compare_fisher.py --run runs/minatar-breakout

It waits for the run's final.json (polling every 30 s, up to 40 minutes by default;
``--no-wait`` uses the newest checkpoint at once). Prints Markdown tables.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro
from scipy.stats import spearmanr
from torch import nn

from ewc_dqn.checkpoint import latest_checkpoint, load_checkpoint
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.errors import UserError
from ewc_dqn.fisher import fisher_diagonal, fisher_overlap, layer_of
from ewc_dqn.networks import build_q_network
from ewc_dqn.replay import FrameReplay
from ewc_dqn.run_builder import load_run_config
from ewc_dqn.run_folder import CONFIG_FILE, FINAL_FILE
from ewc_dqn.transition import Transition


@dataclass(frozen=True)
class Args:
    """Fisher-estimator comparison settings."""

    run: Path
    """Run folder (its newest complete checkpoint must hold the replay: save_replay=true)."""
    task: int = 0
    """Task id whose replay and head are used."""
    batches: int = 100
    """Minibatches M for each Fisher estimate (paper: 100)."""
    batch_size: int = 32
    """Transitions per minibatch (paper: 32)."""
    chunk_size: int = 48
    """Per-sample gradients held at once (memory only; the result does not depend on it)."""
    seed: int = 0
    """Seed of the replay draws, the sampled-softmax actions and the noise."""
    eval_states: int = 4096
    """Replay states, drawn apart from the Fisher batches, on which perturbations are measured."""
    noise_norms: tuple[float, ...] = (0.1, 0.3, 1.0)
    """Total noise norms, as fractions of the norm of the protected weights."""
    noise_draws: int = 8
    """Noise draws per scheme and norm (the same Gaussian draws for every scheme)."""
    eps_rel: float = 1e-3
    """eps of (F_i + eps)^(-1/2), relative to the mean of that estimator's F."""
    wait_minutes: float = 40.0
    """How long to wait for the run's final.json."""
    poll_seconds: float = 30.0
    """Polling interval while waiting."""
    no_wait: bool = False
    """Use the newest checkpoint now, finished or not."""
    repeats: int = 3
    """Timed estimates per estimator (the median is reported)."""
    threads: int = 1
    """torch CPU threads."""


# ------------------------------------------------------------------------------------ loading


def wait_for_run(args: Args) -> Path:
    """The newest complete checkpoint of ``args.run`` once the run has finished."""
    run = args.run
    if not run.is_dir():
        raise UserError(f"{run} is not a folder")
    if not (run / CONFIG_FILE).is_file():
        ckpt = latest_checkpoint(run)
        raise UserError(
            f"{run} holds no checkpoints (not a run folder: no {CONFIG_FILE})"
            if ckpt is None
            else f"{run} has checkpoints but no {CONFIG_FILE}; pass the run folder itself"
        )
    deadline = time.monotonic() + args.wait_minutes * 60
    while not args.no_wait and not (run / FINAL_FILE).exists():
        if time.monotonic() >= deadline:
            raise UserError(
                f"{run} did not finish (no {FINAL_FILE}) within {args.wait_minutes:g} minutes; "
                "rerun later or pass --no-wait"
            )
        print(f"waiting for {run / FINAL_FILE} ...", file=sys.stderr, flush=True)
        time.sleep(args.poll_seconds)
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise UserError(f"{run} holds no complete checkpoint")
    return ckpt


def load_agent_and_replay(
    args: Args, ckpt: Path
) -> tuple[int, nn.Module, nn.Module, FrameReplay, list[str], Any]:
    """(step, online net, target net, replay, protected names, config) from a checkpoint."""
    config, _ = load_run_config(args.run)
    step, state = load_checkpoint(ckpt)
    replays = state.get("replays", {})
    if str(args.task) not in replays:
        raise UserError(
            f"checkpoint {ckpt} has no replay for task {args.task} "
            f"(replays: {sorted(replays) or 'none; the run was saved without save_replay'})"
        )
    rs = replays[str(args.task)]
    frame_shape = tuple(int(x) for x in rs["frame_shape"])
    stack = int(rs["stack"])
    online_sd = state["agent"]["online"]
    num_actions = int(online_sd["head.linear.weight"].shape[0])
    in_shape = (stack * frame_shape[0], frame_shape[1], frame_shape[2])
    input_scale = 1.0 / 255.0 if config.suite == "atari" else 1.0
    nets = []
    for key in ("online", "target"):
        net = build_q_network(in_shape, num_actions, config.network, input_scale)
        net.load_state_dict(state["agent"][key])
        net.eval()
        nets.append(net)
    replay = FrameReplay(
        int(rs["capacity"]),
        int(rs["num_envs"]),
        frame_shape,
        stack,
        float(rs["gamma"]),
        np.random.default_rng(args.seed),
    )
    replay.load_state_dict(rs)
    pattern = re.compile(config.ewc.exclude)
    names = [n for n, p in nets[0].named_parameters() if p.requires_grad and not pattern.search(n)]
    return step, nets[0], nets[1], replay, names, config


def eval_batch(replay: FrameReplay, n: int, seed: int) -> Transition:
    """``n`` distinct replay transitions drawn with their own generator (not the Fisher's)."""
    env, slot = replay.sampleable_indices()
    rng = np.random.default_rng([seed, 1])
    pick = rng.choice(env.shape[0], size=min(n, env.shape[0]), replace=False)
    return replay.gather(env[pick], slot[pick])


# ----------------------------------------------------------------------------------- analysis


def flat(fisher: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([fisher[n].detach().double().flatten() for n in names])


def layer_shares(fisher: dict[str, torch.Tensor], names: list[str]) -> dict[str, float]:
    total = sum(fisher[n].double().sum().item() for n in names)
    shares: dict[str, float] = {}
    for n in names:
        shares[layer_of(n)] = shares.get(layer_of(n), 0.0) + fisher[n].double().sum().item()
    return {k: v / total for k, v in shares.items()}


@torch.no_grad()
def perturbation_effect(
    model: nn.Module,
    names: list[str],
    delta: torch.Tensor,
    obs: torch.Tensor,
    action: torch.Tensor,
    task: int,
    q0: torch.Tensor,
) -> tuple[float, float]:
    """(fraction of states whose greedy action changes, mean |Delta Q(s, a)|) after adding the
    flat ``delta`` to the parameters ``names``; the parameters are restored afterwards."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    offset = 0
    for n in names:
        k = params[n].numel()
        params[n].add_(delta[offset : offset + k].view_as(params[n]).to(params[n].dtype))
        offset += k
    try:
        q = model(obs, task)
    finally:
        for n in names:
            params[n].copy_(saved[n])
    changed = (q.argmax(1) != q0.argmax(1)).double().mean().item()
    idx = action.long().unsqueeze(1)
    dq = (q.gather(1, idx) - q0.gather(1, idx)).abs().double().mean().item()
    return changed, dq


def mean_sem(xs: list[float]) -> tuple[float, float]:
    m = float(np.mean(xs))
    s = float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else 0.0
    return m, s


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- main


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    if args.batches < 1 or args.batch_size < 1 or args.noise_draws < 1 or not args.noise_norms:
        raise UserError("batches, batch-size, noise-draws and noise-norms must be positive")
    ckpt = wait_for_run(args)
    step, online, target, replay, names, config = load_agent_and_replay(args, ckpt)
    task = args.task
    n_params = sum(dict(online.named_parameters())[n].numel() for n in names)
    print(
        f"checkpoint: {ckpt} (agent step {step}); replay of task {task}: {len(replay)} "
        f"transitions; {n_params} protected parameters in {len({layer_of(n) for n in names})} "
        f"layers; torch threads {torch.get_num_threads()}"
    )

    batches = [replay.sample(args.batch_size) for _ in range(args.batches)]
    held_out = eval_batch(replay, args.eval_states, args.seed)
    print(
        f"Fisher data: {args.batches} minibatches of {args.batch_size} (numpy seed "
        f"{args.seed}); perturbation states: {held_out.action.shape[0]} distinct replay "
        "transitions drawn with a generator of their own"
    )

    common = dict(param_names=names, chunk_size=args.chunk_size)
    specs: dict[str, dict[str, Any]] = {
        "q_value": dict(estimator="q_value"),
        "td": dict(estimator="td", target_model=target, huber_delta=config.ewc.fisher_huber_delta),
        "softmax": dict(estimator="softmax", softmax_temperature=config.ewc.softmax_temperature),
        "softmax_n1": dict(
            estimator="softmax",
            softmax_temperature=config.ewc.softmax_temperature,
            softmax_samples=1,
            generator=torch.Generator().manual_seed(args.seed),
        ),
    }
    fishers: dict[str, dict[str, torch.Tensor]] = {}
    cost_rows = []
    for label, spec in specs.items():
        warm = dict(spec)
        if "generator" in warm:  # a throwaway generator, so the timed runs start alike
            warm["generator"] = torch.Generator().manual_seed(args.seed)
        fisher_diagonal(online, batches[:2], task, **warm, **common)  # warm-up, not timed
        walls, cpus = [], []
        for _ in range(args.repeats):
            if "generator" in spec:  # every repeat draws the same actions
                spec["generator"].manual_seed(args.seed)
            w0, c0 = time.perf_counter(), time.process_time()
            fishers[label] = fisher_diagonal(online, batches, task, **spec, **common)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        wall, cpu = float(np.median(walls)), float(np.median(cpus))
        cost_rows.append([label, f"{wall:.2f}", f"{cpu:.2f}", f"{1e3 * wall / args.batches:.1f}"])
        print(f"  {label}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr, flush=True)
    n_samples = args.batches * args.batch_size
    print(
        f"\n### 1. Cost of one estimate ({n_samples} samples; median of {args.repeats} after a "
        "warm-up)\n"
    )
    print(
        table(
            ["estimator", "wall s", "process CPU s", "wall ms per minibatch"],
            cost_rows,
        )
    )

    labels = list(fishers)
    layers = list(dict.fromkeys(layer_of(n) for n in names))
    flats = {k: flat(f, names) for k, f in fishers.items()}
    print("\n### 2. Size and where the trace lies\n")
    rows = []
    for k in labels:
        f = flats[k]
        sh = layer_shares(fishers[k], names)
        zero = (f == 0).double().mean().item()
        rows.append(
            [k, f"{f.sum().item():.4g}", f"{f.max().item():.4g}", f"{zero:.3f}"]
            + [f"{sh[layer]:.3f}" for layer in layers]
        )
    print(
        table(
            [
                "estimator",
                "trace",
                "max",
                "fraction F == 0",
                *[f"trace share {la}" for la in layers],
            ],
            rows,
        )
    )

    print("\n### 3. Agreement between estimators\n")
    rows = []
    for a, b in itertools.combinations(labels, 2):
        ov = fisher_overlap(fishers[a], fishers[b])
        ov_all = fisher_overlap(fishers[a], fishers[b], group=lambda _n: "all")["all"]
        fa, fb = flats[a].numpy(), flats[b].numpy()
        rho = spearmanr(fa, fb).statistic
        both = (fa > 0) & (fb > 0)
        rho_live = spearmanr(fa[both], fb[both]).statistic
        rows.append(
            [f"{a} vs {b}"]
            + [f"{ov[layer]:.3f}" for layer in layers]
            + [f"{ov_all:.3f}", f"{rho:.3f}", f"{rho_live:.3f}"]
        )
    print(
        table(
            [
                "pair",
                *[f"overlap {layer}" for layer in layers],
                "overlap all",
                "Spearman",
                "Spearman where both F > 0",
            ],
            rows,
        )
    )

    # ---- 4. protection test
    theta = torch.cat(
        [dict(online.named_parameters())[n].detach().double().flatten() for n in names]
    )
    theta_norm = theta.norm().item()
    obs, action = held_out.obs, held_out.action
    with torch.no_grad():
        q0 = online(obs, task)
    q0_taken = q0.gather(1, action.long().unsqueeze(1)).abs().double().mean().item()
    gen = torch.Generator().manual_seed(args.seed)
    draws = [
        torch.randn(theta.shape, generator=gen, dtype=torch.float64)
        for _ in range(args.noise_draws)
    ]
    live = torch.stack([f > 0 for f in flats.values()]).all(0)
    print(
        f"\n### 4. Perturbation test ({args.noise_draws} Gaussian draws per cell, the same "
        f"draws for every scheme; mean +- s.e. over draws; eps = {args.eps_rel:g} x mean F; "
        f"noise norm in units of ||theta|| = {theta_norm:.4g}; mean |Q(s,a)| on the held-out "
        f"states = {q0_taken:.4g})"
    )
    variants = {
        "4a. Noise on all protected weights": torch.ones_like(live),
        f"4b. Noise only on the {int(live.sum())} weights ({live.double().mean().item():.3f}) "
        "that every estimator gives F > 0": live,
    }
    for title, mask in variants.items():
        scales: dict[str, torch.Tensor] = {"uniform": mask.double()}
        for k in labels:
            f = flats[k]
            scales[k] = (f + args.eps_rel * f[mask].mean()).rsqrt() * mask
        results = {}
        for frac in args.noise_norms:
            for scheme, s in scales.items():
                changed, dq = [], []
                for z in draws:
                    delta = s * z
                    delta *= frac * theta_norm / delta.norm()
                    c, d = perturbation_effect(online, names, delta, obs, action, task, q0)
                    changed.append(c)
                    dq.append(d)
                results[(scheme, frac)] = (changed, dq)
        hdr = ["noise"] + [f"norm {frac:g}" for frac in args.noise_norms]
        measures = (
            ("fraction of held-out states whose greedy action changes", "{:.4f} +- {:.4f}"),
            ("mean |Delta Q(s, a)| at the replay action", "{:.3g} +- {:.1g}"),
        )
        for k, (what, fmt) in enumerate(measures):
            print(f"\n{title}: {what}\n")
            rows = [
                [scheme]
                + [fmt.format(*mean_sem(results[(scheme, frac)][k])) for frac in args.noise_norms]
                for scheme in scales
            ]
            print(table(hdr, rows))
        ref = labels[0]
        print(
            f"\n{title}: paired difference from {ref} (same noise draw), greedy-action change "
            f"/ |Delta Q(s, a)|; negative: that estimator's low-Fisher directions matter less "
            f"than {ref}'s\n"
        )
        rows = []
        for scheme in labels[1:]:
            cells = []
            for frac in args.noise_norms:
                mine, base = results[(scheme, frac)], results[(ref, frac)]
                pc = list(np.subtract(mine[0], base[0]))
                pq = list(np.subtract(mine[1], base[1]))
                cells.append(
                    "{:+.4f} +- {:.4f} / {:+.2g} +- {:.1g}".format(*mean_sem(pc), *mean_sem(pq))
                )
            rows.append([f"{scheme} - {ref}", *cells])
        print(table(hdr, rows))


if __name__ == "__main__":
    with exit_on_user_errors():
        main(tyro.cli(Args))
