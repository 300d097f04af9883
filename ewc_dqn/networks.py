"""Q-networks with shared weights and per-task gains and biases on every layer.

Kirkpatrick et al. 2017 (SI, Atari) give every layer "task-specific biases and per-element
multiplicative gains", initialised to 0 and 1, while all other weights are shared between games.
We read "per-element" as one gain per output unit (per output channel of a convolution, per unit
of a linear layer), which is what the paper's parameter count allows. The per-task parameters are
created up front for ``max_tasks`` tasks so the optimiser sees a fixed parameter set; each task's
gains and biases are separate ``nn.Parameter`` objects, so the tasks not in the current batch get
no gradient at all (``grad is None``) and no optimiser moves them, Adam's momentum included.

A minibatch can mix tasks (rehearsal, ewc_dqn.rehearsal): ``forward`` then takes its task ids as
``TaskRuns``, ((task, count), ...) in batch order, and every sample gets its own task's gains and
biases; only the tasks present join the graph, so the others still get no gradient.

Parameter names: shared weights are ``<layer>.weight`` / ``<layer>.bias``; per-task ones are
``<layer>.task_gains.<k>`` / ``<layer>.task_biases.<k>``. The EWC consolidator excludes names
matching ``TASK_PARAM_PATTERN`` by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

TASK_PARAM_PATTERN = r"\.task_(gains|biases)\."
"""Regular expression matching the names of per-task parameters."""

TaskRuns = tuple[tuple[int, int], ...]
"""The task ids of a minibatch that mixes tasks, as runs in batch order: ((task, count), ...),
the counts summing to the batch size (host values: no device sync to read them)."""

Arch = Literal["paper", "nature", "minatar"]


@dataclass(frozen=True)
class NetworkConfig:
    """Which Q-network to build."""

    arch: Arch = "paper"
    """'paper': conv 32-64-128, FC 1024 (Kirkpatrick et al. 2017, Table S2); 'nature': conv
    32-64-64, FC 512 (Mnih et al. 2015); 'minatar': conv 16 3x3, FC 128 (Young & Tian 2019)."""
    # Not a variant (ewc_dqn.config.NOT_A_VARIANT): sets no task uses change nothing in training.
    max_tasks: int = field(default=20, metadata={"not_a_variant": True})
    """Number of per-task gain/bias sets allocated (the most tasks a run may create)."""


class TaskConditioned(nn.Module):
    """Per-task per-unit gain and bias applied after a shared layer: y = x * g_t + b_t (t: one
    task for the batch, or each sample's own from ``TaskRuns``)."""

    def __init__(self, num_units: int, max_tasks: int, spatial: bool) -> None:
        super().__init__()
        self.task_gains = nn.ParameterList(
            nn.Parameter(torch.ones(num_units)) for _ in range(max_tasks)
        )
        self.task_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(num_units)) for _ in range(max_tasks)
        )
        self._spatial = spatial

    def forward(self, x: torch.Tensor, task_id: int | TaskRuns) -> torch.Tensor:
        if isinstance(task_id, tuple):  # (B, C): each run's gains repeated over its samples
            g = torch.cat([self.task_gains[k].expand(n, -1) for k, n in task_id])
            b = torch.cat([self.task_biases[k].expand(n, -1) for k, n in task_id])
        else:
            g, b = self.task_gains[task_id], self.task_biases[task_id]  # (C,)
        if self._spatial:  # (B, C, H, W): broadcast one gain per channel
            return x * g[..., None, None] + b[..., None, None]
        return x * g + b

    @torch.no_grad()
    def reset_task(self, task: int) -> list[nn.Parameter]:
        """Give ``task`` the gains and biases it was created with (ones, zeros); returns them."""
        gain, bias = self.task_gains[task], self.task_biases[task]
        gain.fill_(1.0)
        bias.zero_()
        return [gain, bias]


class TaskConv2d(nn.Module):
    """A shared convolution followed by a per-task gain and bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, max_tasks: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.task = TaskConditioned(cout, max_tasks, spatial=True)
        _paper_init(self.conv.weight, self.conv.bias, fan_in=cin * kernel * kernel)

    def forward(self, x: torch.Tensor, task_id: int | TaskRuns) -> torch.Tensor:
        return self.task(self.conv(x), task_id)


class TaskLinear(nn.Module):
    """A shared linear layer followed by a per-task gain and bias."""

    def __init__(self, fin: int, fout: int, max_tasks: int) -> None:
        super().__init__()
        self.linear = nn.Linear(fin, fout)
        self.task = TaskConditioned(fout, max_tasks, spatial=False)
        _paper_init(self.linear.weight, self.linear.bias, fan_in=fin)

    def forward(self, x: torch.Tensor, task_id: int | TaskRuns) -> torch.Tensor:
        return self.task(self.linear(x), task_id)


def _paper_init(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """Uniform(-1/sqrt(fan_in), +1/sqrt(fan_in)), the paper's initialisation of shared weights."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


class QNetwork(nn.Module):
    """Convolutional Q-network: uint8 observations (B, C, H, W) and a task id -> Q-values (B, A).

    Inputs are scaled from [0, 255] to [0, 1] inside the network for Atari frames; MinAtar's
    binary planes are stored as 0/1 and passed through unscaled (``input_scale``).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_actions: int,
        config: NetworkConfig | None = None,
        input_scale: float = 1.0 / 255.0,
    ) -> None:
        super().__init__()
        self.config = config or NetworkConfig()
        self.in_shape = tuple(in_shape)
        self.num_actions = num_actions
        self.input_scale = input_scale
        c, h, w = in_shape
        t = self.config.max_tasks
        if self.config.arch == "paper":
            convs = [(c, 32, 8, 4), (32, 64, 4, 2), (64, 128, 3, 1)]
            hidden = 1024
        elif self.config.arch == "nature":
            convs = [(c, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)]
            hidden = 512
        elif self.config.arch == "minatar":
            convs = [(c, 16, 3, 1)]
            hidden = 128
        else:
            raise ValueError(f"unknown network arch {self.config.arch!r}")
        self.convs = nn.ModuleList(TaskConv2d(*spec, max_tasks=t) for spec in convs)
        for _, cout, k, s in convs:
            h, w = (h - k) // s + 1, (w - k) // s + 1
            if h <= 0 or w <= 0:
                raise ValueError(f"input {in_shape} is too small for the {self.config.arch} net")
            flat = cout * h * w
        self.fc = TaskLinear(flat, hidden, max_tasks=t)
        self.head = TaskLinear(hidden, num_actions, max_tasks=t)

    def forward(self, obs: torch.Tensor, task_id: int | TaskRuns) -> torch.Tensor:
        """Q-values (B, num_actions) for uint8 or float observations (B, C, H, W), with the
        gains and biases of ``task_id``, or of each sample's task given as ``TaskRuns``."""
        if isinstance(task_id, tuple):
            self._check_runs(task_id, obs.shape[0])
        elif not 0 <= task_id < self.config.max_tasks:
            raise ValueError(f"task id {task_id} outside [0, {self.config.max_tasks})")
        x = obs.float() * self.input_scale
        for conv in self.convs:
            x = F.relu(conv(x, task_id))
        x = F.relu(self.fc(x.flatten(1), task_id))
        return self.head(x, task_id)

    def _check_runs(self, runs: TaskRuns, batch: int) -> None:
        for k, n in runs:
            if not 0 <= k < self.config.max_tasks:
                raise ValueError(f"task id {k} outside [0, {self.config.max_tasks})")
            if n < 1:
                raise ValueError(f"task runs {runs} hold an empty run")
        if sum(n for _, n in runs) != batch:
            raise ValueError(f"task runs {runs} do not cover the batch of {batch}")

    def reset_task(self, task: int) -> list[nn.Parameter]:
        """Give ``task`` the gains and biases of every layer as they were created, for an id
        that now names another task; returns those parameters (their optimiser state is the
        agent's to drop)."""
        if not 0 <= task < self.config.max_tasks:
            raise ValueError(f"task id {task} outside [0, {self.config.max_tasks})")
        layers = [m for m in self.modules() if isinstance(m, TaskConditioned)]
        return [p for layer in layers for p in layer.reset_task(task)]

    def shared_parameter_names(self) -> list[str]:
        """Names of the parameters shared by all tasks (what EWC protects by default)."""
        return [n for n, _ in self.named_parameters() if ".task_" not in n]


def build_q_network(
    in_shape: tuple[int, int, int], num_actions: int, config: NetworkConfig, input_scale: float
) -> QNetwork:
    """Build the Q-network named by ``config.arch`` (explicit constructor for the entry points)."""
    return QNetwork(in_shape, num_actions, config, input_scale)
