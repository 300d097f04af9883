"""Weight perturbation: does the Fisher know which weights a trained agent needs? (Fig. 4C)

After Kirkpatrick et al. 2017, Fig. 4C. A trained single-game agent plays with learning off
while Gaussian noise is added to its shared weights, drawn afresh at every agent step, and is
scored over ``episodes`` episodes per point, for noise of several sizes and three shapes:

- ``isotropic``: covariance proportional to I;
- ``inverse_fisher``: covariance proportional to (F + lambda I)^-1, lambda = ``damping`` times
  the mean of F; the noise avoids the weights the Fisher calls important;
- ``null_space``: isotropic on the weights whose F is at most the ``null_quantile`` quantile of
  F (ties included, so every F = 0 weight is in it), zero elsewhere.

F is the diagonal Fisher of the run's own estimator and settings (``ewc.*`` in its config.json),
estimated from the checkpoint's replay of the game's task as the run's EWC would at a task
switch. Only the weights EWC protects are perturbed (the per-task gains and biases are not).
The size of a perturbation is its expected norm relative to the norm of those weights,
sqrt(E |eps|^2) / |theta|, the same for every shape at a point, on a log scale.

Outputs: ``perturbation.png`` (mean score and its 95% t-interval against noise size, with the
unperturbed score and random play), ``perturbation.csv`` (one row per point, the episode
returns included) and a printed table.

    python -m ewc_dqn.experiments.perturbation --checkpoint runs/breakout --out DIR
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
from matplotlib.figure import Figure
from scipy import stats  # type: ignore[import-untyped]  # via scikit-learn, rliable
from torch import nn
from torch.func import functional_call

from envs.games import GameSpec, resolve_game
from envs.scores import ReferenceNotMeasuredError, reference_scores
from ewc_dqn.checkpoint import CheckpointError
from ewc_dqn.cli_errors import exit_on_user_errors
from ewc_dqn.errors import UserError
from ewc_dqn.evaluation import evaluate_game
from ewc_dqn.ewc import EWCConsolidator
from ewc_dqn.replay import FrameReplay
from ewc_dqn.run_builder import (
    TrainedPolicy,
    build_suite_network,
    load_trained_policy,
    resolve_device,
)
from ewc_dqn.threads import torch_threads

Shape = Literal["isotropic", "inverse_fisher", "null_space"]
SHAPES: tuple[Shape, ...] = ("isotropic", "inverse_fisher", "null_space")
COLOURS = {"isotropic": "tab:grey", "inverse_fisher": "tab:red", "null_space": "tab:blue"}


@dataclass(frozen=True)
class Config:
    """Score a trained agent under Gaussian weight noise of several sizes and shapes."""

    checkpoint: Path
    """A checkpoint folder or a run folder (its newest checkpoint); it must hold the replay."""
    out: Path | None = Path("runs/perturbation")
    """Folder for perturbation.png and perturbation.csv (None: print only)."""
    game: str | None = None
    """Game to play (default: the run's first game); its task's head and replay are used."""
    episodes: int = 10
    """Episodes per point (noise shape and size)."""
    min_size: float = 0.1
    """Smallest noise size, sqrt(E|eps|^2) / |theta| over the perturbed weights."""
    max_size: float = 10.0
    """Largest noise size."""
    num_sizes: int = 9
    """Noise sizes, log-spaced from min_size to max_size."""
    shapes: tuple[Shape, ...] = SHAPES
    """Noise shapes to score."""
    damping: float = 1.0
    """lambda of (F + lambda I)^-1, in units of the mean of F over the perturbed weights."""
    null_quantile: float = 0.1
    """The null space: weights whose F is at most this quantile of F (ties included)."""
    live_only: bool = False
    """Perturb only weights with F > 0 (every shape). A MinAtar game leaves input planes that
    it never sets, whose weights have F = 0 and no effect at all; this takes them out."""
    epsilon: float | None = None
    """Exploration rate while scoring (default: the run's eval.epsilon)."""
    seed: int = 0
    """Seed of the replay draws, the environments (the same at every point) and the noise."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    threads: int = 1
    """torch CPU threads (0: leave torch's setting)."""


@dataclass(frozen=True)
class Point:
    """The score at one noise shape and size (size 0: no noise)."""

    shape: str
    size: float
    returns: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    def interval(self) -> tuple[float, float]:
        """The 95% Student-t interval of the mean episode return."""
        n = len(self.returns)
        if n < 2:
            return self.mean, self.mean
        half = stats.t.ppf(0.975, n - 1) * np.std(self.returns, ddof=1) / np.sqrt(n)
        return self.mean - half, self.mean + half


class NoisyQ(nn.Module):
    """``network`` whose ``names`` parameters get fresh noise ``std * z``, z ~ N(0, I), at
    every call (one agent step); ``std`` is flat over the parameters in ``names`` order."""

    def __init__(
        self,
        network: nn.Module,
        names: list[str],
        std: torch.Tensor,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        self.network = network
        params = dict(network.named_parameters())
        self.names = names
        self.base = {n: params[n].detach() for n in names}
        self.std = std
        self.generator = generator

    def forward(self, obs: torch.Tensor, task_id: int) -> torch.Tensor:
        eps = self.std * torch.randn(
            self.std.shape, generator=self.generator, device=self.std.device
        )
        perturbed, offset = {}, 0
        for n in self.names:
            p = self.base[n]
            perturbed[n] = p + eps[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return functional_call(self.network, perturbed, (obs, task_id))


def noise_std(
    fisher: torch.Tensor,
    shape: Shape,
    perturbed: torch.Tensor,
    damping: float,
    null_quantile: float,
) -> torch.Tensor:
    """Per-weight standard deviations of one noise shape with unit expected squared norm.

    Args:
        fisher: the flat Fisher diagonal (D,).
        shape: "isotropic", "inverse_fisher" or "null_space".
        perturbed: bool mask (D,) of the weights that may be perturbed.
        damping: lambda of (F + lambda I)^-1 in units of the mean F over ``perturbed``.
        null_quantile: the null space is F <= this quantile of F over ``perturbed``.
    """
    f = fisher.double()
    live = f[perturbed]
    if shape == "isotropic":
        var = torch.ones_like(f)
    elif shape == "inverse_fisher":
        var = 1.0 / (f + damping * live.mean())
    elif shape == "null_space":
        var = (f <= torch.quantile(live, null_quantile)).double()
    else:
        raise ValueError(f"unknown noise shape {shape!r}; expected one of {SHAPES}")
    var = var * perturbed
    return (var / var.sum()).sqrt().to(fisher.dtype)


def load_replay(policy: TrainedPolicy, task: int, seed: int) -> FrameReplay:
    """The checkpoint's replay of ``task``, sampling with its own generator."""
    replays = policy.state.get("replays", {})
    if str(task) not in replays:
        raise CheckpointError(
            f"checkpoint {policy.checkpoint} holds no replay for task {task}: the Fisher needs "
            "it (the run was saved with --no-save-replay?)"
        )
    rs = replays[str(task)]
    replay = FrameReplay(
        int(rs["capacity"]),
        int(rs["num_envs"]),
        tuple(int(x) for x in rs["frame_shape"]),  # type: ignore[arg-type]
        int(rs["stack"]),
        float(rs["gamma"]),
        np.random.default_rng(seed),
    )
    replay.load_state_dict(rs)
    return replay


def estimate_fisher(
    policy: TrainedPolicy, task: int, seed: int, device: torch.device
) -> tuple[list[str], torch.Tensor]:
    """(protected names, flat Fisher diagonal) as the run's EWC estimates it for ``task``."""
    config = policy.config
    replay = load_replay(policy, task, seed)
    target = build_suite_network(config).to(device)
    target.load_state_dict(policy.state["agent"]["target"])
    target.eval()
    ewc = EWCConsolidator(policy.network, config=config.ewc)
    fisher = ewc.consolidate_from_replay(task, lambda b: replay.sample(b).to(device), target)
    names = ewc.param_names
    return names, torch.cat([fisher[n].flatten() for n in names])


def score(
    network: nn.Module,
    game: GameSpec,
    policy: TrainedPolicy,
    task: int,
    episodes: int,
    epsilon: float,
    seed: int,
    device: torch.device,
) -> list[float]:
    """Raw returns of ``episodes`` episodes of ``game`` played by ``network`` (one copy, so
    every episode meets its own noise draws)."""
    env = replace(policy.config.env, num_envs=1)
    result = evaluate_game(
        network,
        game,
        env,
        lambda _frame: task,
        episodes=episodes,
        frames=episodes * env.max_episode_frames,
        epsilon=epsilon,
        seed=seed,
        device=device,
    )
    return result.returns


def main(cfg: Config) -> list[Point]:
    """Score every shape and size, print the table, write the figure and the CSV."""
    with torch_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: Config) -> list[Point]:
    if cfg.episodes < 1 or cfg.num_sizes < 1 or not 0 < cfg.min_size <= cfg.max_size:
        raise UserError("--episodes and --num-sizes must be >= 1, 0 < --min-size <= --max-size")
    if cfg.damping <= 0 or not 0 <= cfg.null_quantile < 1 or not cfg.shapes:
        raise UserError("--damping must be > 0, --null-quantile in [0, 1), --shapes non-empty")
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    policy = load_trained_policy(cfg.checkpoint, device)
    game = resolve_game(cfg.game or policy.schedule.games[0])
    if game.name not in policy.schedule.games:
        raise UserError(
            f"{game.name} is not a game of the run ({', '.join(policy.schedule.games)})"
        )
    if policy.config.task_labels != "true":
        raise UserError(
            "the run inferred its task labels, so which task head plays a game is not known; "
            "use a run trained with true labels (a single-game run is)"
        )
    task = policy.schedule.games.index(game.name)
    epsilon = policy.config.eval.epsilon if cfg.epsilon is None else cfg.epsilon
    names, fisher = estimate_fisher(policy, task, cfg.seed, device)
    params = dict(policy.network.named_parameters())
    theta = torch.cat([params[n].detach().flatten() for n in names])
    perturbed = fisher > 0 if cfg.live_only else torch.ones_like(fisher, dtype=torch.bool)
    stds = {s: noise_std(fisher, s, perturbed, cfg.damping, cfg.null_quantile) for s in cfg.shapes}
    f_live = fisher[perturbed].double()
    null_max = torch.quantile(f_live, cfg.null_quantile)
    print(
        f"checkpoint {policy.checkpoint} (agent step {policy.step}), {game.name}, task {task}; "
        f"Fisher: {policy.config.ewc.fisher_estimator} estimator, "
        f"{policy.config.ewc.fisher_batches} x {policy.config.ewc.fisher_batch_size} replay "
        f"samples; {len(fisher)} shared weights, {(fisher == 0).double().mean():.1%} with F = 0"
    )
    print(
        f"perturbed: {int(perturbed.sum())} weights (|theta| = {theta.norm():.3g}); "
        f"lambda = {cfg.damping:g} x mean F = {cfg.damping * f_live.mean():.3g}; null space: "
        f"{int((f_live <= null_max).sum())} weights with F <= {null_max:.3g}; "
        f"{cfg.episodes} episodes per point, epsilon {epsilon}, seed {cfg.seed}"
    )

    sizes = np.geomspace(cfg.min_size, cfg.max_size, cfg.num_sizes)
    points = [
        Point(
            "none",
            0.0,
            score(policy.network, game, policy, task, cfg.episodes, epsilon, cfg.seed, device),
        )
    ]
    for shape in cfg.shapes:
        for j, size in enumerate(sizes):
            gen = torch.Generator(device=device)
            key = [cfg.seed, SHAPES.index(shape), j]
            gen.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
            std = stds[shape] * float(size * theta.norm())
            noisy = NoisyQ(policy.network, names, std, gen)
            returns = score(noisy, game, policy, task, cfg.episodes, epsilon, cfg.seed, device)
            points.append(Point(shape, float(size), returns))
    print_table(points, sizes, cfg.shapes)
    floor = random_score(game)
    level = "random play" if floor is not None else "zero"
    halfway = {s: halfway_size(points, s, floor or 0.0) for s in cfg.shapes}
    print(
        f"noise size at which the mean return falls halfway from no noise to {level}: "
        + ", ".join(
            f"{s} {'beyond the range' if v is None else f'{v:.2g}'}" for s, v in halfway.items()
        )
    )
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        write_csv(cfg.out / "perturbation.csv", points)
        plot(points, game, policy, cfg, cfg.out / "perturbation.png")
        print(f"perturbation.png and perturbation.csv written to {cfg.out}")
    print(f"took {time.perf_counter() - start:.0f} s")
    return points


def random_score(game: GameSpec) -> float | None:
    """The game's random-play score, if measured."""
    try:
        return reference_scores(game)[0]
    except ReferenceNotMeasuredError:
        return None


def halfway_size(points: list[Point], shape: str, floor: float) -> float | None:
    """The noise size at which ``shape``'s mean return first falls below the midpoint of the
    unperturbed mean and ``floor``, interpolated in log size (None: it never does)."""
    target = (points[0].mean + floor) / 2
    pts = sorted((p for p in points if p.shape == shape), key=lambda p: p.size)
    prev_size, prev_mean = None, points[0].mean
    for p in pts:
        if p.mean < target:
            if prev_size is None:
                return p.size
            frac = (prev_mean - target) / (prev_mean - p.mean)
            return float(np.exp(np.log(prev_size) + frac * np.log(p.size / prev_size)))
        prev_size, prev_mean = p.size, p.mean
    return None


def print_table(points: list[Point], sizes: np.ndarray, shapes: tuple[Shape, ...]) -> None:
    """Mean return [95% interval] per size (rows) and shape (columns)."""
    by = {(p.shape, p.size): p for p in points}
    base = by[("none", 0.0)]
    lo, hi = base.interval()
    print(f"\nno noise: {base.mean:.2f} [{lo:.2f}, {hi:.2f}]")
    print("| size | " + " | ".join(shapes) + " |")
    print("|---|" + "---|" * len(shapes))
    for size in sizes:
        cells = []
        for shape in shapes:
            p = by[(shape, float(size))]
            lo, hi = p.interval()
            cells.append(f"{p.mean:.2f} [{lo:.2f}, {hi:.2f}]")
        print(f"| {size:.3g} | " + " | ".join(cells) + " |")


def write_csv(path: Path, points: list[Point]) -> None:
    """One row per point: shape, size, episodes, mean, interval, the returns."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["shape", "size", "episodes", "mean", "ci95_low", "ci95_high", "returns"])
        for p in points:
            lo, hi = p.interval()
            returns = " ".join(f"{r:g}" for r in p.returns)
            out.writerow([p.shape, f"{p.size:.6g}", len(p.returns), p.mean, lo, hi, returns])


def plot(
    points: list[Point], game: GameSpec, policy: TrainedPolicy, cfg: Config, path: Path
) -> None:
    """Mean return with its 95% interval against noise size, one line per shape."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    base = points[0]
    lo, hi = base.interval()
    ax.axhline(base.mean, color="black", lw=1, label="no noise")
    ax.axhspan(lo, hi, color="black", alpha=0.08, lw=0)
    floor = random_score(game)
    if floor is not None:
        ax.axhline(floor, color="black", ls=":", lw=1, label="random play")
    for shape in cfg.shapes:
        pts = [p for p in points if p.shape == shape]
        x = [p.size for p in pts]
        ax.plot(x, [p.mean for p in pts], "o-", ms=3, color=COLOURS[shape], label=shape)
        lows, highs = np.array([p.interval() for p in pts]).T
        ax.fill_between(x, lows, highs, color=COLOURS[shape], alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("noise size sqrt(E|eps|^2) / |theta| (shared weights)")
    ax.set_ylabel(f"{game.name} return ({cfg.episodes} episodes, 95% CI)")
    ax.legend(fontsize=8)
    fig.suptitle(f"Weight noise drawn at every step, agent step {policy.step}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    with exit_on_user_errors():
        main(tyro.cli(Config))
