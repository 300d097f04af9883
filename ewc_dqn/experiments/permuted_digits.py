"""Permuted digits: the supervised sanity check of EWC (Kirkpatrick et al. 2017, Fig. 3).

A small MLP learns a sequence of tasks, each the same digit classification with the pixels
shuffled by its own fixed random permutation. Three learners see the same data in the same
order and start from the same weights:

- ``sgd``: plain SGD on the current task (forgets the earlier ones);
- ``l2``: SGD plus a uniform quadratic pull towards the weights left by every earlier task,
  which is EWC with F = 1 (it protects everything, so later tasks cannot be learnt well);
- ``ewc``: SGD plus the EWC penalty of ``ewc_dqn.ewc`` with the Fisher of ``ewc_dqn.fisher``
  (estimator "softmax": the exact Fisher of the classifier's own predictive distribution).

Data: scikit-learn's bundled 8x8 digits (1,797 images, no download), or real MNIST when
``--mnist-dir`` points at the four IDX files. Outputs: the accuracy of every task after every
task (printed), Fig. 3A (test accuracy of each task during training), Fig. 3B (mean accuracy
over the tasks seen so far vs number of tasks), and Fig. 3C (per-layer Fisher overlap between a
task and a slightly or a fully permuted version of it).

    python -m ewc_dqn.experiments.permuted_digits --out runs/permuted_digits
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from matplotlib.figure import Figure
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from ewc_dqn.ewc import EWCConfig, EWCConsolidator
from ewc_dqn.fisher import fisher_diagonal, fisher_overlap
from ewc_dqn.threads import torch_threads
from ewc_dqn.transition import Transition

Method = Literal["sgd", "l2", "ewc"]


@dataclass(frozen=True)
class Config:
    """Permuted-digits continual learning (all counts are per task unless said otherwise)."""

    num_tasks: int = 10
    """Number of permutations learnt in sequence (3 to 10 in the issue)."""
    methods: tuple[Method, ...] = ("sgd", "l2", "ewc")
    """Learners to compare."""
    hidden: int = 128
    """Units in each of the two hidden layers."""
    epochs: int = 20
    """Passes over the task's training set."""
    batch_size: int = 32
    """Minibatch size of SGD."""
    lr: float = 0.1
    """SGD learning rate (no momentum, as in the paper's plain SGD)."""
    ewc_lam: float = 15.0
    """EWC's lambda (dimensionless; the Fisher is a per-sample mean)."""
    l2_lam: float = 0.05
    """Strength of the uniform L2 pull towards each earlier task's weights."""
    fisher_samples: int = 600
    """Training images of a task used for its Fisher."""
    test_fraction: float = 0.25
    """Share of the 8x8 digits held out for testing."""
    canvas: int = 16
    """Side of the blank canvas the 8x8 digits are centred on before permuting (8: none).
    MNIST's 20x20 digits sit in a 28x28 frame; the empty border gives each permutation input
    weights that the other tasks' ink never touches, and the canvas gives the 8x8 digits that
    room too."""
    mnist_dir: Path | None = None
    """Folder with MNIST's train/t10k IDX files (optionally .gz); default: scikit-learn digits."""
    mnist_train_size: int = 10000
    """MNIST training images used (a subset keeps the run short)."""
    overlap_patch: int = 4
    """Side of the central square permuted for the 'small permutation' of Fig. 3C (pixels)."""
    seed: int = 0
    """Seed of the permutations, the split, the initial weights and the minibatch order."""
    out: Path | None = Path("runs/permuted_digits")
    """Folder for plots and results.json (None: print only)."""
    threads: int = 1
    """torch CPU threads while it runs (0: leave torch's setting). One is fastest for a net
    this small: more threads spin against each other on a busy machine."""


class MLP(nn.Module):
    """Two hidden ReLU layers; ``forward(x, task_id)`` ignores the task (one shared head)."""

    def __init__(self, num_inputs: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.hidden1 = nn.Linear(num_inputs, hidden)
        self.hidden2 = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, task_id: int = 0) -> torch.Tensor:
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        return self.output(x)


@dataclass
class Dataset:
    """Flattened images in [0, 1] and integer labels, with the image side (for patches)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    side: int


def load_digits_dataset(test_fraction: float, seed: int, canvas: int = 8) -> Dataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1] and centred on a blank ``canvas`` x
    ``canvas`` image, with a stratified train/test split."""
    if canvas < 8:
        raise ValueError(f"canvas must be >= 8 pixels, got {canvas}")
    digits = load_digits()
    images = np.zeros((len(digits.images), canvas, canvas), dtype=np.float32)
    lo = (canvas - 8) // 2
    images[:, lo : lo + 8, lo : lo + 8] = digits.images / 16.0
    x = images.reshape(len(images), -1)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    return Dataset(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr).long(),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te).long(),
        side=canvas,
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_dataset(folder: Path, train_size: int, seed: int) -> Dataset:
    """MNIST from its IDX files in ``folder`` (train-images-idx3-ubyte etc., .gz or not)."""

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
            if (folder / name).exists():
                return folder / name
        raise FileNotFoundError(f"{stem}[.gz] not found in {folder}")

    x_tr = _read_idx(find("train-images-idx3-ubyte"))
    y_tr = _read_idx(find("train-labels-idx1-ubyte"))
    x_te = _read_idx(find("t10k-images-idx3-ubyte"))
    y_te = _read_idx(find("t10k-labels-idx1-ubyte"))
    keep = np.random.default_rng(seed).permutation(len(x_tr))[:train_size]

    def flat(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)

    return Dataset(
        flat(x_tr[keep]),
        torch.from_numpy(y_tr[keep].astype(np.int64)),
        flat(x_te),
        torch.from_numpy(y_te.astype(np.int64)),
        side=x_tr.shape[1],
    )


def patch_permutation(side: int, patch: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``side*side`` pixels that shuffles only the central ``patch`` square."""
    perm = np.arange(side * side)
    lo = (side - patch) // 2
    rows, cols = np.meshgrid(np.arange(lo, lo + patch), np.arange(lo, lo + patch), indexing="ij")
    idx = (rows * side + cols).ravel()
    perm[idx] = idx[rng.permutation(len(idx))]
    return perm


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` classified as ``y``."""
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def classifier_fisher(
    model: nn.Module, x: torch.Tensor, samples: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of the classifier's predictive distribution on ``samples`` images of x.

    Reuses the DQN Fisher code: the images travel as a ``Transition``'s observations and the
    "softmax" estimator takes the exact expectation over the classes.
    """
    idx = torch.randperm(len(x), generator=gen)[:samples]
    obs = x[idx]
    zeros = torch.zeros(len(obs))
    batch = Transition(obs, torch.zeros(len(obs), dtype=torch.long), zeros, zeros, obs)
    return fisher_diagonal(model, [batch], 0, estimator="softmax", chunk_size=160)


def train_sequence(
    cfg: Config, data: Dataset, perms: Sequence[np.ndarray], method: Method
) -> dict[str, Any]:
    """Learn the tasks ``perms`` in order with ``method``; returns the accuracy records.

    ``final[t][j]``: test accuracy of task j after training task t; ``curve[j]``: test accuracy
    of task j after every epoch of the whole run (Fig. 3A).
    """
    model = _initial_model(cfg, data)  # the same initial weights for every method
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    lam = {"sgd": 0.0, "l2": cfg.l2_lam, "ewc": cfg.ewc_lam}[method]
    ewc = EWCConsolidator(model, EWCConfig(lam=lam))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    tests = [(data.x_test[:, p], data.y_test) for p in perms]
    final: list[list[float]] = []
    curve: list[list[float]] = [[] for _ in perms]
    for task, perm in enumerate(perms):
        x, y = data.x_train[:, perm], data.y_train
        for _ in range(cfg.epochs):
            penalty = None if method == "sgd" else ewc.penalty
            _train_epoch(model, optimiser, x, y, cfg.batch_size, gen, penalty)
            for j, (xt, yt) in enumerate(tests):
                curve[j].append(accuracy(model, xt, yt) if j <= task else float("nan"))
        final.append([accuracy(model, xt, yt) for xt, yt in tests[: task + 1]])
        if method == "ewc":
            ewc.consolidate(task, classifier_fisher(model, x, cfg.fisher_samples, gen))
        elif method == "l2":
            ewc.consolidate(task, {n: torch.ones_like(p) for n, p in model.named_parameters()})
    return {"final": final, "curve": curve}


def _initial_model(cfg: Config, data: Dataset) -> MLP:
    """The MLP with initial weights drawn from a generator seeded with ``cfg.seed`` (torch's
    initialisers draw from the default one: a fork of it, so the process's stays untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return MLP(data.x_train.shape[1], cfg.hidden, 10)


def _train_epoch(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    penalty: Callable[[], torch.Tensor] | None,
) -> None:
    """One pass over (x, y) in minibatches drawn with ``gen``: cross-entropy plus ``penalty()``."""
    order = torch.randperm(len(x), generator=gen)
    for lo in range(0, len(x), batch_size):
        i = order[lo : lo + batch_size]
        loss = F.cross_entropy(model(x[i]), y[i])
        if penalty is not None:
            loss = loss + penalty()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def overlap_experiment(cfg: Config, data: Dataset) -> dict[str, dict[str, float]]:
    """Fig. 3C: per-layer Fisher overlap of a task and a permuted copy, after EWC on both.

    'small': only the central ``overlap_patch`` square is shuffled; 'large': every pixel is.
    """
    rng = np.random.default_rng(cfg.seed + 2)
    n_pix = data.side * data.side
    base = np.arange(n_pix)
    result = {}
    for label, perm in (
        ("small", patch_permutation(data.side, cfg.overlap_patch, rng)),
        ("large", rng.permutation(n_pix)),
    ):
        run = Config(**{**asdict(cfg), "num_tasks": 2, "methods": ("ewc",)})
        first, second = _fishers_after_two_tasks(run, data, [base, perm])
        result[label] = fisher_overlap(first, second)
    return result


def _fishers_after_two_tasks(
    cfg: Config, data: Dataset, perms: Sequence[np.ndarray]
) -> list[dict[str, torch.Tensor]]:
    model = _initial_model(cfg, data)
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    ewc = EWCConsolidator(model, EWCConfig(lam=cfg.ewc_lam))
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    for task, perm in enumerate(perms):
        x, y = data.x_train[:, perm], data.y_train
        for _ in range(cfg.epochs):
            _train_epoch(model, optimiser, x, y, cfg.batch_size, gen, ewc.penalty)
        ewc.consolidate(task, classifier_fisher(model, x, cfg.fisher_samples, gen))
    return [classifier_fisher(model, data.x_train[:, p], cfg.fisher_samples, gen) for p in perms]


def plot(cfg: Config, results: Mapping[str, dict[str, Any]], overlap: dict, out: Path) -> None:
    """Write fig3a_curves.png, fig3b_mean_accuracy.png and fig3c_overlap.png into ``out``."""
    methods = list(results)
    fig = Figure(figsize=(8, 2.2 * len(methods)))
    axes = fig.subplots(len(methods), 1, sharex=True, squeeze=False)
    for ax, method in zip(axes[:, 0], methods, strict=True):
        for j, acc in enumerate(results[method]["curve"]):
            epochs = np.arange(1, len(acc) + 1)
            ax.plot(epochs, acc, label=f"task {j + 1}" if j < 3 else None)
        for t in range(1, cfg.num_tasks):
            ax.axvline(t * cfg.epochs + 0.5, color="grey", lw=0.5)
        ax.set_ylabel(f"{method}\ntest accuracy")
        ax.set_ylim(0, 1.02)
    axes[0, 0].legend(loc="lower left", fontsize=7)
    axes[-1, 0].set_xlabel("training epochs (tasks in sequence)")
    _save(
        fig,
        "Permuted digits: accuracy of each task during training (cf. Fig. 3A)",
        out / "fig3a_curves.png",
    )

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for method in methods:
        final = results[method]["final"]
        ax.plot(range(1, cfg.num_tasks + 1), [np.mean(f) for f in final], marker="o", label=method)
    ax.set_xlabel("number of tasks")
    ax.set_ylabel("mean test accuracy over tasks so far")
    ax.set_ylim(0, 1.02)
    ax.legend()
    _save(fig, "cf. Fig. 3B", out / "fig3b_mean_accuracy.png")

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for label, per_layer in overlap.items():
        ax.plot(list(per_layer), list(per_layer.values()), marker="o", label=f"{label} permutation")
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("Fisher overlap")
    ax.set_ylim(0, 1.02)
    ax.legend()
    _save(fig, "cf. Fig. 3C", out / "fig3c_overlap.png")


def _save(fig, title: str, path: Path) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(cfg: Config) -> dict[str, object]:
    """Run every method on the same task sequence, print the tables, write plots."""
    with torch_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: Config) -> dict[str, object]:
    start = time.perf_counter()
    if cfg.mnist_dir is not None:
        data = load_mnist_dataset(cfg.mnist_dir, cfg.mnist_train_size, cfg.seed)
    else:
        data = load_digits_dataset(cfg.test_fraction, cfg.seed, cfg.canvas)
    rng = np.random.default_rng(cfg.seed)
    perms = [rng.permutation(data.x_train.shape[1]) for _ in range(cfg.num_tasks)]

    results: dict[str, dict[str, Any]] = {
        m: train_sequence(cfg, data, perms, m) for m in cfg.methods
    }
    for method, res in results.items():
        print(f"\n{method}: test accuracy of task j (columns) after training task t (rows)")
        print("  t  " + "".join(f"{j + 1:>6}" for j in range(cfg.num_tasks)) + "    mean")
        for t, accs in enumerate(res["final"]):
            print(
                f"{t + 1:>3}  "
                + "".join(f"{a:6.3f}" for a in accs)
                + " " * 6 * (cfg.num_tasks - len(accs))
                + f"  {np.mean(accs):6.3f}"
            )
    print("\nsummary: task 1 after the last task | mean over all tasks after the last task")
    for method, res in results.items():
        last = res["final"][-1]  # type: ignore[index]
        print(f"  {method:>4}: {last[0]:.3f} | {np.mean(last):.3f}")

    overlap = overlap_experiment(cfg, data)
    print("\nFisher overlap per layer (1 = same parameters matter, 0 = disjoint), cf. Fig. 3C")
    layers = list(next(iter(overlap.values())))
    print(f"  {'permutation':<12}" + "".join(f"{layer:>10}" for layer in layers))
    for label, per_layer in overlap.items():
        print(f"  {label:<12}" + "".join(f"{per_layer[layer]:10.3f}" for layer in layers))

    summary: dict[str, object] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "final": {m: r["final"] for m, r in results.items()},
        "overlap": overlap,
        "seconds": time.perf_counter() - start,
    }
    if cfg.out is not None:
        cfg.out.mkdir(parents=True, exist_ok=True)
        plot(cfg, results, overlap, cfg.out)
        (cfg.out / "results.json").write_text(json.dumps(summary, indent=1))
        print(f"\nplots and results.json written to {cfg.out}")
    print(f"took {summary['seconds']:.1f} s")
    return summary


if __name__ == "__main__":
    main(tyro.cli(Config))
