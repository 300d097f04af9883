"""The Double DQN learner: online and target networks, the optimiser, acting, and the rules of
learning (Mnih et al. 2015; van Hasselt et al. 2016; DeepMind's dqn_zoo agent).

The agent owns the networks, the optimiser and every rule of its config: each task's epsilon from
that task's own agent steps, the reward clipping of what replay stores, when a task's updates
begin (``learning_starts``), how often it updates (``train_every``) and when the target network
is synced (``target_update``); ``learn`` applies them to the agent steps the loop reports, and
``update`` is one gradient step. The training loop keeps the schedule, which task acts, each
task's replay and counters, evaluations and checkpoints. The EWC penalty comes in as a callable
so the agent is the same object with and without consolidation.

Divergence is watched on the device: every update ands "loss and gradient norm finite" into a
flag that stays on the accelerator, so no update waits for the host; ``divergence()`` reads it
(one sync) when the loop logs or checkpoints, and ``nonfinite_weights()`` checks the weights
before a checkpoint is written. The update statistics are summed on the device the same way and
read by ``take_stats()`` at log time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ewc_dqn.dqn import double_dqn_targets, dqn_targets, linear_epsilon, td_loss
from ewc_dqn.errors import UserError
from ewc_dqn.networks import TaskRuns
from ewc_dqn.transition import Transition


@dataclass(frozen=True)
class AgentConfig:
    """Double DQN hyper-parameters (defaults: Kirkpatrick et al. 2017, Table S2)."""

    gamma: float = 0.99
    """Discount per agent step."""
    double_dqn: bool = True
    """Double DQN targets (van Hasselt et al. 2016); False gives the Nature DQN max target."""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """RMSprop as in the paper; Adam as an option."""
    lr: float = 2.5e-4
    """Learning rate."""
    rmsprop_decay: float = 0.95
    """RMSprop squared-gradient decay (torch's alpha)."""
    rmsprop_eps: float = 1e-5
    """RMSprop epsilon (the paper gives none; Dopamine's DQN value, with centering)."""
    rmsprop_centered: bool = True
    """Centred RMSprop, as DeepMind's and Dopamine's DQN."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Dopamine's value for DQN-family agents)."""
    huber_delta: float = 1.0
    """TD errors' gradient clipped at this value (Huber loss); <= 0 for squared error."""
    max_grad_norm: float = 50.0
    """Global gradient-norm clip; <= 0 disables."""
    batch_size: int = 32
    """Transitions per update."""
    train_every: int = 4
    """Agent steps between updates (summed over parallel environment copies)."""
    target_update: int = 7_500
    """Agent steps between copies of the online network into the target network."""
    learning_starts: int = 50_000
    """Transitions stored in a task's replay (agent steps of the task since its replay was
    created) before updates on that task begin."""
    clip_rewards: bool = True
    """Clip rewards to [-1, 1] for learning (scores are always reported raw)."""
    eps_start: float = 1.0
    """Initial exploration rate of each task."""
    eps_end: float = 0.01
    """Final exploration rate of each task."""
    eps_decay_start: int = 50_000
    """Agent steps of a task before its epsilon starts to decay."""
    eps_decay_end: int = 1_050_000
    """Agent steps of a task at which its epsilon reaches eps_end."""

    def validate(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        for name in ("batch_size", "train_every", "target_update"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_starts < self.batch_size:
            raise UserError("learning_starts must be at least batch_size")
        if self.eps_decay_end < self.eps_decay_start:
            raise UserError("eps_decay_end must be >= eps_decay_start")


PenaltyFn = Callable[[int], torch.Tensor | None]
"""Maps the current task id to an extra loss term (the EWC penalty) or None."""

UPDATE_STATS = (
    "losses/td_loss",
    "losses/ewc_penalty",
    "losses/q_mean",
    "losses/abs_td",
    "losses/grad_norm",
)
"""Names of the statistics of one update, in the order of ``UpdateStats.values``."""


@dataclass(frozen=True)
class UpdateStats:
    """One update's statistics (UPDATE_STATS), kept on the device until a value is read."""

    values: torch.Tensor

    def as_dict(self) -> dict[str, float]:
        """Every statistic as a float (one host sync)."""
        return dict(zip(UPDATE_STATS, self.values.tolist(), strict=True))

    def __getitem__(self, name: str) -> float:
        return self.as_dict()[name]


Sampler = Callable[[int], tuple[Transition, TaskRuns | None]]
"""Draws a minibatch of n transitions (CPU tensors) and, when they mix tasks (rehearsal), the
task of each as ``TaskRuns``; None: all are the learning task's."""


class DQNAgent:
    """Online and target Q-networks with their optimiser."""

    def __init__(self, network: nn.Module, config: AgentConfig, device: torch.device) -> None:
        config.validate()
        self.config = config
        self.device = device
        self.online = network.to(device)
        self.num_actions = int(network.num_actions)  # type: ignore[arg-type]
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        # Walked once: with 64 tasks' gains and biases the MinAtar network has 390 parameter
        # tensors, and a parameters() walk per update (for the gradient norm) cost a tenth of
        # the update on the CPU (BENCHMARKS.md).
        self._params: list[torch.Tensor] = list(self.online.parameters())
        self.optimizer = make_optimizer(self._params, config)
        self.updates = 0
        self.target_syncs = 0
        self.update_debt = 0.0  # updates owed: agent steps / train_every, not yet made
        # Divergence watch, on the device (transient: a checkpoint is only written when finite).
        self._first_bad_update = torch.full((), -1, dtype=torch.int64, device=device)
        self._bad_at_first = torch.zeros(2, dtype=torch.bool, device=device)  # loss, gradient
        # Running sums of the update statistics (UPDATE_STATS), on the device; read at log time.
        self._stats_sum: torch.Tensor | None = None
        self._stats_count = 0

    @torch.inference_mode()  # lighter than no_grad: no version counters, no views tracked
    def act(
        self, obs: np.ndarray, task_id: int, epsilon: float, rng: np.random.Generator
    ) -> np.ndarray:
        """Epsilon-greedy actions (N,) int64 for observations (N, C, H, W) uint8."""
        n = obs.shape[0]
        explore = np.asarray(rng.random(n) < epsilon)
        random_actions = np.asarray(rng.integers(0, self.num_actions, size=n))
        if explore.all():
            return random_actions
        q = self.online(torch.as_tensor(obs, device=self.device), task_id)
        greedy = q.argmax(dim=1).cpu().numpy()
        return np.where(explore, random_actions, greedy).astype(np.int64)

    def epsilon(self, task_steps: int) -> float:
        """The exploration rate of a task that has acted ``task_steps`` agent steps."""
        cfg = self.config
        return linear_epsilon(
            task_steps, cfg.eps_start, cfg.eps_end, cfg.eps_decay_start, cfg.eps_decay_end
        )

    def learning_reward(self, reward: np.ndarray) -> np.ndarray:
        """The reward replay stores for learning (scores are always reported raw)."""
        cfg = self.config
        return np.clip(reward, -1, 1) if cfg.clip_rewards else reward

    def learn(
        self,
        task_id: int,
        sample: Sampler,
        new_steps: int,
        replay_steps: int,
        run_steps: int,
        penalty: PenaltyFn | None = None,
    ) -> int:
        """Learn from ``new_steps`` more agent steps of ``task_id``: one update per
        ``train_every`` agent steps on minibatches ``sample(batch_size)`` of replay, once the
        task has acted ``learning_starts`` steps since its replay was made (``replay_steps``);
        then the target sync when the run's agent steps (``run_steps``, these included) crossed
        a multiple of ``target_update``. Returns the number of updates made (their statistics
        go to ``take_stats``)."""
        cfg = self.config
        made = 0
        self.update_debt += new_steps / cfg.train_every
        # The start counts the task's own agent steps since its replay was made (its epsilon
        # timer's clock), not what the replay can sample now: a full buffer holds a few entries
        # less than its capacity (episode first frames), so a start equal to the capacity would
        # never be reached.
        if replay_steps < cfg.learning_starts:
            self.update_debt = 0.0
        while self.update_debt >= 1.0:
            batch, runs = sample(cfg.batch_size)
            self.update(batch.to(self.device), task_id, penalty, runs)
            self.update_debt -= 1.0
            made += 1
        if run_steps // cfg.target_update > (run_steps - new_steps) // cfg.target_update:
            self.sync_target()
        return made

    def update(
        self,
        batch: Transition,
        task_id: int,
        penalty: PenaltyFn | None = None,
        runs: TaskRuns | None = None,
    ) -> UpdateStats:
        """One gradient step on ``batch`` (already on the device) for ``task_id``; ``runs``: the
        task of each transition when the batch mixes tasks (each is learnt with its own gains
        and biases, the loss still the mean over the batch; the penalty is ``task_id``'s). Its
        statistics stay on the device (no host sync): they are added to the running sums that
        ``take_stats`` reads, and returned."""
        cfg = self.config
        tasks: int | TaskRuns = task_id if runs is None else runs
        q = self.online(batch.obs, tasks)
        with torch.no_grad():
            # s' gets its own passes without a graph: a pass over s and s' together would make
            # the backward run over twice the batch (the detached half's zero gradients).
            q_next_target = self.target(batch.next_obs, tasks)
            if cfg.double_dqn:
                q_next_online = self.online(batch.next_obs, tasks)
                y = double_dqn_targets(batch.reward, batch.discount, q_next_online, q_next_target)
            else:
                y = dqn_targets(batch.reward, batch.discount, q_next_target)
        loss, td = td_loss(q, batch.action, y, cfg.huber_delta)
        extra = penalty(task_id) if penalty is not None else None
        total = loss if extra is None else loss + extra
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        # Only the shared weights and the batch's tasks' gains and biases have a gradient (the
        # norm is the same over all parameters: those without one add nothing).
        trained = [p for p in self._params if p.grad is not None]
        if cfg.max_grad_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, cfg.max_grad_norm)
        else:
            grad_norm = _grad_norm(trained, loss.device)
        self._watch(total.detach(), grad_norm.detach())
        self.optimizer.step()
        self.updates += 1
        values = torch.stack(
            [
                loss.detach(),
                extra.detach() if extra is not None else torch.zeros((), device=loss.device),
                q.detach().mean(),
                td.abs().mean(),
                grad_norm.detach().to(loss.device),
            ]
        )
        if self._stats_sum is None or self._stats_sum.device != values.device:
            self._stats_sum = torch.zeros_like(values)
        self._stats_sum += values
        self._stats_count += 1
        return UpdateStats(values)

    def take_stats(self) -> dict[str, float]:
        """The mean of each update statistic since the last call (one host sync; empty when no
        update was made), and a fresh start of the sums."""
        if self._stats_count == 0 or self._stats_sum is None:
            return {}
        means = (self._stats_sum / self._stats_count).tolist()
        self._stats_sum.zero_()
        self._stats_count = 0
        return dict(zip(UPDATE_STATS, means, strict=True))

    def _watch(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Remember the first update whose loss or gradient norm is not finite (device ops only:
        no host sync)."""
        bad = torch.stack([~torch.isfinite(loss), ~torch.isfinite(grad_norm)])
        first = bad.any() & (self._first_bad_update < 0)
        self._first_bad_update = torch.where(first, self.updates + 1, self._first_bad_update)
        self._bad_at_first = torch.where(first, bad, self._bad_at_first)

    def divergence(self) -> tuple[int, list[str]] | None:
        """(its number, counting from 1; what was non-finite) of the first update whose loss
        ('loss': TD loss plus EWC penalty) or gradient norm ('gradient') was NaN or infinite;
        None when none was. One host sync: call it at log or checkpoint time, not per update."""
        first, loss_bad, grad_bad = torch.cat(
            [self._first_bad_update.view(1), self._bad_at_first.long()]
        ).tolist()
        if first < 0:
            return None
        return first, [name for name, bad in (("loss", loss_bad), ("gradient", grad_bad)) if bad]

    def nonfinite_weights(self) -> list[str]:
        """Names of the online and target network tensors holding a NaN or an infinity."""
        return nonfinite_tensors(
            {
                **{f"online/{k}": v for k, v in self.online.state_dict().items()},
                **{f"target/{k}": v for k, v in self.target.state_dict().items()},
            }
        )

    def forget_task(self, task_id: int) -> None:
        """Make ``task_id``'s gains and biases, in both networks, and their optimiser state what
        they were before the id was first used: the id now names another task (a task id that
        inference merged away and gave to a new task). The shared weights are untouched."""
        for param in self.online.reset_task(task_id):  # type: ignore[operator]
            # A never-used task's parameters have no optimiser state (they never had a
            # gradient): dropping it restarts their moments and Adam's step count.
            self.optimizer.state.pop(param, None)
        self.target.reset_task(task_id)  # type: ignore[operator]

    def sync_target(self) -> None:
        """Copy the online network's parameters into the target network."""
        self.target.load_state_dict(self.online.state_dict())
        self.target_syncs += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "online": self.online.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "target_syncs": self.target_syncs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(_restore_optimizer_types(state["optimizer"]))
        self.updates = int(state["updates"])
        self.target_syncs = int(state["target_syncs"])


def make_optimizer(params: list[torch.Tensor], config: AgentConfig) -> torch.optim.Optimizer:
    """The optimiser named in the config (explicit, two options)."""
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=config.lr,
            alpha=config.rmsprop_decay,
            eps=config.rmsprop_eps,
            momentum=0.0,
            centered=config.rmsprop_centered,
            foreach=True,
        )
    if config.optimizer == "adam":
        # The fused kernel (CPU and CUDA) does the whole step in one pass over each tensor: a
        # quarter less time per MinAtar update on the CPU than the foreach path (BENCHMARKS.md).
        if _fused_adam_supported(params):
            return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, fused=True)
        return torch.optim.Adam(params, lr=config.lr, eps=config.adam_eps, foreach=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def _fused_adam_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch has a fused Adam for the device of ``params`` (CUDA; CPU since torch 2.4)."""
    devices = {p.device.type for p in params}
    if devices <= {"cuda"}:
        return True
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return devices <= {"cpu"} and (major, minor) >= (2, 4)


def nonfinite_tensors(named: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in ``named`` holding a NaN or an infinity (one host
    sync for all of them)."""
    floats = {k: v for k, v in named.items() if torch.is_tensor(v) and v.is_floating_point()}
    if not floats:
        return []
    device = next(iter(floats.values())).device
    finite = torch.stack([torch.isfinite(v).all().to(device) for v in floats.values()]).tolist()
    return [k for k, ok in zip(floats, finite, strict=True) if not ok]


def _grad_norm(params: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The global L2 norm of the gradients (what clip_grad_norm_ returns), without clipping."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros((), device=device)


def _restore_optimizer_types(state: dict[str, Any]) -> dict[str, Any]:
    """JSON turns Adam's betas tuple into a list; torch wants a tuple back."""
    for group in state.get("param_groups", []):
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return state
