"""Elastic weight consolidation: one quadratic penalty per task, evaluated at the cost of one.

Kirkpatrick et al. 2017: while learning the current task, the loss gains for every protected
task k the term sum_i (lam/2) F_k,i (theta_i - theta*_k,i)^2, with F_k the diagonal Fisher of
task k and theta*_k the parameters when it was consolidated. At every task switch the task just
left is consolidated again; a task that recurs *replaces* its own term.

The sum of quadratics is one quadratic,

    sum_k F_k (theta - theta*_k)^2 = A (theta - m)^2 + c,
    A = sum_k F_k,  m = sum_k F_k theta*_k / A,  c = sum_k F_k (theta*_k - m)^2,

so the consolidator keeps the per-task terms (each is replaced on its own) and an aggregate
(A, m, c) that ``penalty()`` evaluates in one pass whatever the number of tasks K. The aggregate
is built by ``merge_quadratics``, a pairwise update (Chan et al. 1979, the parallel variance
formula) that never subtracts two large numbers, so it is as accurate in float32 as the naive
sum. Adding a task merges one term into the aggregate; replacing a task's term, or leaving one
out, rebuilds the aggregate from the stored terms (K merges, once per task switch): subtracting
the old term instead would cancel catastrophically in float32 wherever it dominated A.

Online EWC (Schwarz et al. 2018) keeps one running Fisher F <- gamma F + F_new and the latest
anchor instead of one term per task; the interface is the same. The L2 baseline (the paper's
Fig. 3) is the 'separate' machinery with F = 1 on every protected weight: one term
(l2_lam/2) ||theta - theta*_k||^2 per task, anchored at the task's weights when it is left and
replaced when it recurs. Which of the three a consolidator is, is its ``kind``.

Device: the consolidator keeps its own tensors on the device of the model's parameters. It
follows ``model.to(device)`` by itself (``penalty()`` moves its tensors when it sees the
parameters on another device); ``to(device)`` moves them explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ewc_dqn.chunk_store import Chunks, TensorDigests
from ewc_dqn.errors import UserError
from ewc_dqn.ewc_maths import (
    Quadratic,
    Tensors,
    merge_quadratics,
    online_fisher_update,
    quadratic_penalty,
)
from ewc_dqn.fisher import DEFAULT_CHUNK_SIZE, ESTIMATORS, Estimator, fisher_diagonal
from ewc_dqn.networks import TASK_PARAM_PATTERN
from ewc_dqn.transition import Transition

ConsolidatorKind = Literal["ewc", "online-ewc", "l2"]
"""'ewc': one term per task, its diagonal Fisher as the metric, replaced when the task recurs
(Kirkpatrick et al. 2017); 'online-ewc': one running Fisher and anchor (Schwarz et al. 2018);
'l2': one term per task like 'ewc' with a uniform (all-ones) metric and ``l2_lam``."""
KINDS: tuple[str, ...] = typing.get_args(ConsolidatorKind)
STATE_FORMAT = 2
"""Version of the ``state_dict`` layout (its ``metric`` key is optional: absent is 'fisher')."""


@dataclass(frozen=True)
class EWCConfig:
    """Elastic weight consolidation and its L2 baseline: penalty, activation and Fisher
    estimation (which of them runs is ``TrainConfig.consolidation``)."""

    lam: float = 400.0
    """Fisher multiplier lambda of (lam/2) sum_i F_i (theta_i - theta*_i)^2 (dimensionless;
    paper: 400)."""
    l2_lam: float = 0.35
    """Strength of the L2 baseline, (l2_lam/2) sum_i (theta_i - theta*_i)^2 per task (loss units
    per squared unit of weight). Default: 400 (the paper's lambda) times 8.8e-4, the Fisher's
    mean per protected weight over the five MinAtar games, so that L2 puts the same total
    stiffness on the shared weights as EWC at 400 (docs/ewc.md, "Baselines")."""
    start_frames: int = 0
    """Emulator frames, counted from a task's first frame, before its term counts (paper: its
    penalty is active once 20M frames of the game have been played). The clock is the run's
    frame counter, not the frames labelled with the task, so that frames an inferred label gives
    to the previous task while a switch is detected cannot hold a term back (docs/ewc.md)."""
    online_gamma: float = 1.0
    """Decay of the running Fisher of online EWC, F <- gamma F + F_new (dimensionless)."""
    exclude: str = TASK_PARAM_PATTERN
    """Regular expression of parameter names left unprotected (default: per-task gains and
    biases)."""
    include_current_task: bool = True
    """Whether the current task's own term counts while it is trained ('ewc' and 'l2' only)."""
    fisher_estimator: Estimator = "q_value"
    """'q_value' (Gaussian Fisher of Q(s, a)), 'td' (empirical Fisher of the TD loss) or
    'softmax' (Fisher of a Boltzmann policy over Q); see ewc_dqn.fisher."""
    fisher_batches: int = 100
    """Minibatches drawn from the task's replay for one Fisher estimate (paper: 100)."""
    fisher_batch_size: int = 32
    """Transitions per Fisher minibatch (paper: 32)."""
    fisher_chunk_size: int = DEFAULT_CHUNK_SIZE
    """Samples whose per-sample gradients are held in memory at once (bounds memory)."""
    fisher_huber_delta: float = 1.0
    """Huber delta of the TD loss for the 'td' estimator (should be the agent's; Q units)."""
    softmax_temperature: float = 1.0
    """Temperature of the 'softmax' estimator's policy (Q units)."""

    def validate(self, kind: ConsolidatorKind | None = None) -> None:
        """Raise UserError (one line) for settings that cannot run, for a consolidator of
        ``kind`` when given (checked by the consolidator and by TrainConfig.validate, not at
        construction, so the CLI reports them as one line)."""
        for name in ("lam", "l2_lam"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"ewc {name} must be finite and >= 0, got {value}")
        if self.start_frames < 0:
            raise UserError(f"ewc start_frames must be >= 0, got {self.start_frames}")
        if kind is not None and kind not in KINDS:
            raise UserError(f"unknown consolidation {kind!r}; expected one of {', '.join(KINDS)}")
        if not 0.0 <= self.online_gamma <= 1.0:
            raise UserError(f"ewc online_gamma must be in [0, 1], got {self.online_gamma}")
        if kind == "online-ewc" and not self.include_current_task:
            raise UserError(
                "online EWC has one merged term; leaving out the current task's share of it is "
                "not defined (include_current_task=False needs --consolidation ewc or l2)"
            )
        if self.fisher_estimator not in ESTIMATORS:
            raise UserError(
                f"unknown Fisher estimator {self.fisher_estimator!r}; expected one of {ESTIMATORS}"
            )
        for field in ("fisher_batches", "fisher_batch_size", "fisher_chunk_size"):
            if getattr(self, field) < 1:
                raise UserError(f"ewc {field} must be >= 1, got {getattr(self, field)}")
        try:
            re.compile(self.exclude)
        except re.error as e:
            raise UserError(
                f"ewc exclude is not a regular expression ({e}): {self.exclude!r}"
            ) from None


# ---------------------------------------------------------------------------------------------
# The stateful owner.


@dataclass
class _TaskRecord:
    """What the consolidator knows about one task id (scalars only)."""

    frames: int = 0
    """Emulator frames trained with this task as the label."""
    first_frame: int = 0
    """The run's frame counter at the task's first frame (its activation clock starts here)."""
    consolidations: int = 0
    fisher_sum: float = 0.0
    fisher_max: float = 0.0


class EWCConsolidator:
    """Owns the EWC (or L2) terms of a model's shared parameters and evaluates their penalty.

    Typical use by a training loop::

        ewc = EWCConsolidator(online_net, EWCConfig(start_frames=20_000_000))
        ...
        ewc.add_frames(task, frames_this_step)          # every step (emulator frames)
        loss = td + ewc.penalty(current_task=task)      # every update
        ...
        # at a switch away from task `old`:
        ewc.consolidate_from_replay(old, lambda b: replay[old].sample(b), target_net)
    """

    def __init__(
        self, model: nn.Module, config: EWCConfig | None = None, kind: ConsolidatorKind = "ewc"
    ) -> None:
        """The terms of ``model``'s protected parameters, all settings from ``config`` (None:
        the defaults), of ``kind``: 'ewc', 'online-ewc' or 'l2'."""
        self.config = config or EWCConfig()
        self.config.validate(kind)
        self.kind = kind
        self._online = kind == "online-ewc"
        self._uniform = kind == "l2"  # the metric is all ones: nothing is estimated
        self.lam = self.config.l2_lam if self._uniform else self.config.lam
        """The multiplier of the penalty: ``l2_lam`` for 'l2', ``lam`` otherwise."""
        self.namespace = "l2" if self._uniform else "ewc"
        """Prefix of the scalars of ``stats()`` (and of the training loop's consolidation
        scalars): 'l2' for the L2 baseline, 'ewc' for both EWCs."""
        self.model = model
        pattern = re.compile(self.config.exclude)
        # Parameter objects stay the same through module.to() and load_state_dict(), so caching
        # them keeps penalty() free of a named_parameters() walk.
        self._params = {
            n: p for n, p in model.named_parameters() if p.requires_grad and not pattern.search(n)
        }
        if not self._params:
            raise ValueError(f"no parameters left to protect after excluding {pattern.pattern!r}")
        self._excluded = {n for n, _ in model.named_parameters()} - set(self._params)
        self._device = next(iter(self._params.values())).device
        self._tasks: dict[int, _TaskRecord] = {}
        # 'ewc' and 'l2': one (fisher, anchor) per task id.
        self._fisher: dict[int, dict[str, torch.Tensor]] = {}
        self._anchor: dict[int, dict[str, torch.Tensor]] = {}
        # 'online-ewc': one running fisher and anchor, and how many consolidations it holds.
        self._online_fisher: dict[str, torch.Tensor] | None = None
        self._online_anchor: dict[str, torch.Tensor] | None = None
        self._online_folds = 0
        # 'online-ewc': terms of tasks consolidated before they were active, folded in when
        # their activation clock runs out.
        self._pending: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
        self._frames = 0  # emulator frames reported for all tasks together
        # The merged quadratic of the task ids in _agg_order (None: to be rebuilt).
        self._agg: Quadratic | None = None
        self._agg_order: list[int] = []
        # What penalty() evaluates: (sqrt(A), m, c) as lists in parameter order, for the key
        # (version of the stored terms, counted tasks); rebuilt when the key changes.
        self._version = 0
        self._digests = TensorDigests()  # the terms' checkpoint digests
        self._eval_key: tuple[int, tuple[int, ...]] | None = None
        self._eval: tuple[list[torch.Tensor], list[torch.Tensor], float] | None = None
        self._param_list = list(self._params.values())

    # -- the interface of the training loop -------------------------------------------------

    @property
    def param_names(self) -> list[str]:
        """Names of the protected parameters (pass them to ``fisher_diagonal``)."""
        return list(self._params)

    def add_frames(self, task_id: int, frames: int) -> None:
        """Report ``frames`` more emulator frames played with ``task_id`` as the label.

        The run's frame counter advances by ``frames`` whatever the task; a task's activation
        clock starts at its first report. In online EWC a held-back term whose task becomes
        active is folded into the running one here.
        """
        if frames < 0:
            raise ValueError(f"add_frames: frames must be >= 0, got {frames}")
        if task_id not in self._tasks:
            self._record(task_id).first_frame = self._frames
        self._tasks[task_id].frames += int(frames)
        self._frames += int(frames)
        if self._pending:
            for k in sorted(self._pending):
                if self.is_active(k):
                    self._fold_online(*self._pending.pop(k))

    def frames_trained(self, task_id: int) -> int:
        """Emulator frames reported for ``task_id`` so far."""
        record = self._tasks.get(task_id)
        return record.frames if record else 0

    def frames_since_first(self, task_id: int) -> int:
        """Emulator frames played (by any task) since ``task_id``'s first frame; 0 if unseen."""
        record = self._tasks.get(task_id)
        return self._frames - record.first_frame if record else 0

    def is_active(self, task_id: int) -> bool:
        """Whether ``start_frames`` frames have been played since ``task_id`` first appeared
        (its term counts from then on)."""
        return (
            task_id in self._tasks and self.frames_since_first(task_id) >= self.config.start_frames
        )

    def consolidate(self, task_id: int, fisher: Tensors, anchor: Tensors | None = None) -> None:
        """Set or replace ``task_id``'s term with ``fisher`` anchored at ``anchor``.

        Both map protected parameter names to tensors shaped like the parameters (names of
        excluded parameters, e.g. per-task gains, are ignored); ``anchor`` defaults to the
        current parameter values. In online EWC the Fisher is folded into the running one if
        the task is active; otherwise it is held back (replacing an earlier held-back term of
        the task) and folded in by ``add_frames`` once the task becomes active.
        """
        fisher_t = self._checked(fisher, "fisher")
        for n, f in fisher_t.items():
            if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
                raise ValueError(f"fisher[{n!r}] must be finite and >= 0")
        if anchor is None:
            anchor_t = {n: p.detach().clone() for n, p in self._params.items()}
        else:
            anchor_t = self._checked(anchor, "anchor")
        record = self._record(task_id)
        record.consolidations += 1
        record.fisher_sum = sum(f.sum(dtype=torch.float64).item() for f in fisher_t.values())
        record.fisher_max = max(f.max().item() for f in fisher_t.values())
        if self._online:
            if self.is_active(task_id):
                self._fold_online(fisher_t, anchor_t)
            else:
                self._pending[task_id] = (fisher_t, anchor_t)
            return
        self._fisher[task_id] = fisher_t
        self._anchor[task_id] = anchor_t
        self._version += 1
        if task_id in self._agg_order:
            self._agg, self._agg_order = None, []

    def forget(self, task_id: int) -> None:
        """Drop everything kept for ``task_id``: its term ('ewc', 'l2'), a term held back until
        it is active ('online-ewc'), and its frame counts and activation clock; the id then
        names another task (task inference merged it away and gave it to a new task). What
        was already folded into the running online term stays there."""
        self._tasks.pop(task_id, None)
        self._pending.pop(task_id, None)
        if self._fisher.pop(task_id, None) is not None:
            del self._anchor[task_id]
            self._version += 1
            if task_id in self._agg_order:
                self._agg, self._agg_order = None, []

    def _fold_online(
        self, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]
    ) -> None:
        self._online_fisher = online_fisher_update(
            self._online_fisher, fisher, self.config.online_gamma
        )
        self._online_anchor = anchor
        self._online_folds += 1
        self._version += 1

    def consolidate_from_replay(
        self,
        task_id: int,
        sample: Callable[[int], Transition],
        target_model: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """Estimate ``task_id``'s Fisher from ``fisher_batches`` minibatches ``sample(batch_size)``
        of its replay (config's estimator), consolidate it at the current parameters, return it.
        The L2 baseline's metric is all ones: it draws nothing from ``sample``.
        """
        if self._uniform:
            ones = self.uniform_metric()
            self.consolidate(task_id, ones)
            return ones
        cfg = self.config
        fisher = fisher_diagonal(
            self.model,
            (sample(cfg.fisher_batch_size) for _ in range(cfg.fisher_batches)),
            task_id,
            estimator=cfg.fisher_estimator,
            target_model=target_model,
            param_names=self.param_names,
            chunk_size=cfg.fisher_chunk_size,
            huber_delta=cfg.fisher_huber_delta,
            softmax_temperature=cfg.softmax_temperature,
        )
        self.consolidate(task_id, fisher)
        return fisher

    def penalty(self, current_task: int | None = None) -> torch.Tensor:
        """sum over counted tasks k of (lam/2) sum_i F_k,i (theta_i - theta*_k,i)^2.

        A task counts once it is active; ``current_task``'s own term is left out when
        ``include_current_task`` is False. Returns a scalar tensor on the parameters' device
        with gradient lam sum_k F_k (theta - theta*_k); a zero without gradient when nothing
        counts yet.
        """
        self._follow_model()
        evaluator = self._evaluator(current_task)
        if evaluator is None:
            return self._zero()
        sqrt_fisher, mean, const = evaluator
        return quadratic_penalty(self._param_list, sqrt_fisher, mean, self.lam, const)

    def _evaluator(
        self, current_task: int | None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], float] | None:
        if self._online:
            if self._online_fisher is None or self._online_anchor is None:
                return None
            key: tuple[int, tuple[int, ...]] = (self._version, ())
            quadratic = Quadratic(self._online_fisher, self._online_anchor, 0.0)
        else:
            counted = self.counted_tasks(current_task)
            if not counted:
                return None
            key = (self._version, tuple(counted))
            if key == self._eval_key:
                return self._eval
            quadratic = self._aggregate(counted)
        if key != self._eval_key:
            names = list(self._params)
            self._eval = (
                [quadratic.fisher[n].sqrt() for n in names],
                [quadratic.mean[n] for n in names],
                quadratic.const,
            )
            self._eval_key = key
        return self._eval

    def uniform_metric(self) -> dict[str, torch.Tensor]:
        """The L2 baseline's metric: ones shaped like each protected parameter."""
        return {n: torch.ones_like(p, requires_grad=False) for n, p in self._params.items()}

    @property
    def needs_replay(self) -> bool:
        """Whether ``consolidate_from_replay`` samples the task's replay (not for 'l2')."""
        return not self._uniform

    def counted_tasks(self, current_task: int | None = None) -> list[int]:
        """The task ids whose terms ``penalty(current_task)`` sums ('ewc' and 'l2')."""
        skip = None if self.config.include_current_task else current_task
        return [k for k in sorted(self._fisher) if k != skip and self.is_active(k)]

    def task_terms(self) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
        """The stored ``{task: (fisher, anchor)}`` ('ewc', 'l2'), or ``{-1: ...}`` for the
        running term ('online-ewc'); the tensors are the consolidator's own, do not modify them."""
        if self._online:
            if self._online_fisher is None or self._online_anchor is None:
                return {}
            return {-1: (self._online_fisher, self._online_anchor)}
        return {k: (self._fisher[k], self._anchor[k]) for k in sorted(self._fisher)}

    def stats(self) -> dict[str, float]:
        """Scalars for logging under ``<namespace>/`` (``ewc/``, or ``l2/`` for the L2
        baseline; no device synchronisation: cached at consolidation)."""
        ns = self.namespace
        out: dict[str, float] = {}
        if self._online:
            out[f"{ns}/active_terms"] = float(self._online_fisher is not None)
            out[f"{ns}/online_folds"] = float(self._online_folds)
        else:
            out[f"{ns}/active_terms"] = float(len(self.counted_tasks()))
            out[f"{ns}/stored_terms"] = float(len(self._fisher))
        for k in sorted(self._tasks):
            r = self._tasks[k]
            out[f"{ns}/task{k}/frames"] = float(r.frames)
            out[f"{ns}/task{k}/active"] = float(self.is_active(k))
            if r.consolidations:
                out[f"{ns}/task{k}/consolidations"] = float(r.consolidations)
                if not self._uniform:  # all ones: nothing to report
                    out[f"{ns}/task{k}/fisher_sum"] = r.fisher_sum
                    out[f"{ns}/task{k}/fisher_max"] = r.fisher_max
        return out

    def to(self, device: torch.device | str) -> EWCConsolidator:
        """Move every stored tensor to ``device`` (``penalty()`` does this by itself when the
        model has moved); returns self."""
        device = torch.device(device)
        for k in self._fisher:
            self._fisher[k] = _moved(self._fisher[k], device)
            self._anchor[k] = _moved(self._anchor[k], device)
        if self._online_fisher is not None and self._online_anchor is not None:
            self._online_fisher = _moved(self._online_fisher, device)
            self._online_anchor = _moved(self._online_anchor, device)
        self._pending = {
            k: (_moved(f, device), _moved(a, device)) for k, (f, a) in self._pending.items()
        }
        if self._agg is not None:
            self._agg = Quadratic(
                _moved(self._agg.fisher, device), _moved(self._agg.mean, device), self._agg.const
            )
        self._device = device
        self._eval_key, self._eval = None, None
        return self

    # -- checkpointing ----------------------------------------------------------------------

    def state_dict(self, chunked: bool = False) -> dict[str, Any]:
        """Tensors and plain Python values only (safetensors + JSON friendly); ``chunked``: the
        tensors as ``Chunks`` for a checkpoint's chunk store, each hashed once (a term is replaced
        by new tensors, never changed in place), so a checkpoint writes only the terms that are
        new since the chunks on disk.

        Layout: ``{"format", "mode" ('separate' or 'online'), "metric" ('fisher' or 'uniform'),
        "param_names", "tasks": {str(task): {frames,
        first_frame, consolidations, fisher_sum, fisher_max}}, "frames", "online_folds",
        "aggregate_order", "tensors": {"task<k>/fisher/<name>" | "task<k>/anchor/<name>" |
        "pending<k>/fisher/<name>" | "pending<k>/anchor/<name>" | "online/fisher/<name>" |
        "online/anchor/<name>": Tensor}}``. Task ids are string keys so JSON keeps them.
        """
        tensors: dict[str, torch.Tensor] = {}
        for k in self._fisher:
            for n in self._params:
                tensors[f"task{k}/fisher/{n}"] = self._fisher[k][n]
                tensors[f"task{k}/anchor/{n}"] = self._anchor[k][n]
        if self._online_fisher is not None and self._online_anchor is not None:
            for n in self._params:
                tensors[f"online/fisher/{n}"] = self._online_fisher[n]
                tensors[f"online/anchor/{n}"] = self._online_anchor[n]
        for k, (fisher, anchor) in self._pending.items():
            for n in self._params:
                tensors[f"pending{k}/fisher/{n}"] = fisher[n]
                tensors[f"pending{k}/anchor/{n}"] = anchor[n]
        return {
            "format": STATE_FORMAT,
            "mode": self._mode,
            "metric": self._metric,
            "param_names": list(self._params),
            "tasks": {str(k): dataclasses.asdict(r) for k, r in sorted(self._tasks.items())},
            "frames": self._frames,
            "online_folds": self._online_folds,
            "aggregate_order": list(self._agg_order),
            "tensors": self._digests.chunks(tensors) if chunked else tensors,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``; checks format, kind, names and shapes (ValueError)."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"EWC state format {state.get('format')!r}, expected {STATE_FORMAT}")
        # States from before the L2 baseline have no "metric": they hold Fishers.
        saved = (state.get("mode"), state.get("metric", "fisher"))
        if saved != (self._mode, self._metric):
            raise ValueError(
                f"EWC state was saved in mode {saved[0]!r} with metric {saved[1]!r}, this "
                f"consolidator is {self.kind!r} (mode {self._mode!r}, metric {self._metric!r})"
            )
        if list(state.get("param_names", [])) != list(self._params):
            raise ValueError(
                "EWC state protects other parameters: saved "
                f"{list(state.get('param_names', []))}, model has {list(self._params)}"
            )
        tasks = {int(k): _TaskRecord(**v) for k, v in state["tasks"].items()}
        fisher: dict[int, dict[str, torch.Tensor]] = {}
        anchor: dict[int, dict[str, torch.Tensor]] = {}
        online: dict[str, dict[str, torch.Tensor]] = {}
        pending: dict[str, dict[int, dict[str, torch.Tensor]]] = {"fisher": {}, "anchor": {}}
        remembered: dict[str, tuple[torch.Tensor, str]] = {}
        for key, value in state["tensors"].items():
            owner, kind, name = _split_key(key)
            if kind not in ("fisher", "anchor") or name not in self._params:
                raise ValueError(f"EWC state has an unexpected tensor {key!r}")
            param = self._params[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"EWC state tensor {key!r} is {tuple(value.shape)}, parameter {name!r} is "
                    f"{tuple(param.shape)}"
                )
            digest = None
            if isinstance(value, Chunks):  # a term from the chunk store, its digest checked
                digest = value.digests[0] if len(value.digests) == 1 else None
                value = value.joined()
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            same_bytes = value.dtype == param.dtype
            value = value.detach().to(device=self._device, dtype=param.dtype).clone()
            if digest is not None and same_bytes:
                remembered[key] = (value, digest)
            if owner == "online":
                online.setdefault(kind, {})[name] = value
            elif owner.startswith("task") and owner[4:].isdigit():
                target = fisher if kind == "fisher" else anchor
                target.setdefault(int(owner[4:]), {})[name] = value
            elif owner.startswith("pending") and owner[7:].isdigit():
                pending[kind].setdefault(int(owner[7:]), {})[name] = value
            else:
                raise ValueError(f"EWC state has an unexpected tensor {key!r}")
        terms = [
            *fisher.values(),
            *anchor.values(),
            *online.values(),
            *pending["fisher"].values(),
            *pending["anchor"].values(),
        ]
        for group in terms:
            missing = sorted(set(self._params) - set(group))
            if missing:
                raise ValueError(f"EWC state: a stored term lacks the tensors of {missing}")
        if set(fisher) != set(anchor):
            raise ValueError("EWC state: tasks with a Fisher and tasks with an anchor differ")
        if online and set(online) != {"fisher", "anchor"}:
            raise ValueError("EWC state: the online term needs both fisher and anchor")
        if self._online and fisher:
            raise ValueError("EWC state: per-task terms in an online-EWC state")
        if set(pending["fisher"]) != set(pending["anchor"]):
            raise ValueError("EWC state: held-back terms with a Fisher and with an anchor differ")
        self._tasks = tasks
        self._fisher, self._anchor = fisher, anchor
        self._online_fisher = online.get("fisher")
        self._online_anchor = online.get("anchor")
        self._online_folds = int(state["online_folds"])
        self._pending = {k: (f, pending["anchor"][k]) for k, f in pending["fisher"].items()}
        self._frames = int(state["frames"])
        order = [int(k) for k in state["aggregate_order"]]
        if any(k not in fisher for k in order):
            raise ValueError(f"EWC state: aggregate order {order} names unknown tasks")
        for key, (tensor, digest) in remembered.items():
            self._digests.remember(key, tensor, digest)
        # Merging in the saved order reproduces the saved aggregate bit for bit.
        self._version += 1
        self._agg, self._agg_order = None, []
        if order:
            self._aggregate(order)

    # -- internals --------------------------------------------------------------------------

    @property
    def _mode(self) -> str:
        """The state layout: 'online' (one running term) or 'separate' (one term per task)."""
        return "online" if self._online else "separate"

    @property
    def _metric(self) -> str:
        return "uniform" if self._uniform else "fisher"

    def _record(self, task_id: int) -> _TaskRecord:
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 0:
            raise ValueError(f"task ids are ints >= 0, got {task_id!r}")
        return self._tasks.setdefault(task_id, _TaskRecord())

    def _checked(self, tensors: Tensors, what: str) -> dict[str, torch.Tensor]:
        """``tensors`` restricted to the protected names, validated, detached, on our device."""
        unknown = sorted(set(tensors) - set(self._params) - self._excluded)
        if unknown:
            raise ValueError(f"{what} names parameters the model does not have: {unknown}")
        missing = sorted(set(self._params) - set(tensors))
        if missing:
            raise ValueError(f"{what} lacks protected parameters: {missing}")
        out = {}
        for n, p in self._params.items():
            t = tensors[n]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{what}[{n!r}] is {shape}, the parameter is {tuple(p.shape)}")
            out[n] = t.detach().to(device=self._device, dtype=p.dtype).clone()
        return out

    def _aggregate(self, counted: list[int]) -> Quadratic:
        """The merged quadratic of ``counted``: extended by merging when it only gains tasks,
        rebuilt from the stored terms otherwise."""
        if self._agg is None or not set(self._agg_order) <= set(counted):
            self._agg, self._agg_order = None, []
        for k in counted:
            if k not in self._agg_order:
                self._agg = merge_quadratics(self._agg, self._fisher[k], self._anchor[k])
                self._agg_order.append(k)
        assert self._agg is not None
        return self._agg

    def _follow_model(self) -> None:
        device = next(iter(self._params.values())).device
        if device != self._device:
            self.to(device)

    def _zero(self) -> torch.Tensor:
        p = next(iter(self._params.values()))
        return torch.zeros((), device=p.device, dtype=p.dtype)


def _moved(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {n: t.to(device) for n, t in tensors.items()}


def _split_key(key: str) -> tuple[str, str, str]:
    parts = key.split("/", 2)
    if len(parts) != 3:
        raise ValueError(f"EWC state has an unexpected tensor {key!r}")
    return parts[0], parts[1], parts[2]
