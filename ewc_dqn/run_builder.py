"""Build every part of a run in the open and hand them to the training loop.

``start_run`` is what ``train_agent.py`` and the sweep workers call: it creates or resumes the
run folder, builds the schedule, the environment-facing shapes, the network, the agent, the EWC
consolidator, the task labeller, the replay factory and the logger, wires them into a
``Trainer`` and restores the latest checkpoint when resuming.

The run folder is locked (``ewc_dqn.run_lock``) before anything in it is written or read for a
resume, and stays locked until the trainer is closed. Resuming uses the newest checkpoint that
loads and holds finite weights; newer damaged ones are set aside with a warning.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.games import resolve_game
from envs.make import frame_spec
from envs.schedule import Schedule, Visit, build_schedule
from ewc_dqn.agent import DQNAgent, nonfinite_tensors
from ewc_dqn.checkpoint import (
    CheckpointError,
    does_not_fit,
    load_checkpoint,
    load_newest_checkpoint,
    resolve_checkpoint,
)
from ewc_dqn.config import TrainConfig, config_from_dict, config_to_dict
from ewc_dqn.consolidation import ConsolidationPolicy
from ewc_dqn.errors import UserError
from ewc_dqn.ewc import EWCConsolidator
from ewc_dqn.fmn import ForgetMeNot
from ewc_dqn.labels import InferredLabels, TaskLabeler, TrueLabels
from ewc_dqn.metrics import MetricsLogger
from ewc_dqn.networks import QNetwork, build_q_network
from ewc_dqn.provenance import check_roms, write_provenance
from ewc_dqn.replay import FrameReplay
from ewc_dqn.run_folder import CONFIG_FILE, SCHEDULE_FILE, read_json, write_json_atomic
from ewc_dqn.run_lock import LOCK_FILE, RunInUseError, RunLock
from ewc_dqn.train import Trainer
from ewc_dqn.writable import check_creatable_folder, make_folder

RUN_FOLDER_ROOM = 100 + len(socket.gethostname())
"""Characters of the longest path a run writes inside its folder: a TensorBoard event file
(tb/events.out.tfevents.<time>.<host>.<pid>.<n>) or a temporary checkpoint's tensors."""


class RunError(UserError):
    """A run cannot start: bad folder, mismatched resume, unusable device. One-line message."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for but no CUDA device is available")
    return device


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Set torch's process-wide kernel choices for a run on ``device`` (see
    ``TrainConfig.deterministic``). Nothing to set on the CPU."""
    if device.type != "cuda":
        return
    if deterministic:
        # Read when cuBLAS makes its handle: set before the first matmul on the device.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic


def single_game_schedule(game: str, frames: int) -> Schedule:
    """A one-visit schedule: plain single-game training."""
    spec = resolve_game(game)
    if frames < 1:
        raise RunError(f"the number of steps must be positive, got {frames}")
    return Schedule(games=(spec.name,), visits=(Visit(0, spec.name, 0, 0, frames),))


def make_schedule(config: TrainConfig) -> Schedule:
    return build_schedule(config.schedule)


def prepare_run_dir(run_dir: Path, config: TrainConfig, schedule: Schedule) -> RunLock:
    """Create a new run folder with its config and schedule, locked for this process; refuse a
    folder holding another run or in use. A folder that cannot be made or written is refused
    before anything is created, and anything made before a later failure is removed again."""
    run_dir = Path(run_dir)
    _refuse_existing_run(run_dir)
    check_creatable_folder(run_dir, "run folder", room=RUN_FOLDER_ROOM)
    try:
        created = make_folder(run_dir)
    except OSError as e:
        raise RunError(f"cannot make run folder {run_dir}: {e.strerror or e}") from None
    try:
        lock = RunLock.acquire(run_dir)
    except RunInUseError:
        raise  # the folder is another process's: leave all of it alone
    except BaseException:
        _remove_made(run_dir, created, [])
        raise
    try:
        _refuse_existing_run(run_dir)  # another process made a run here before our lock
        write_json_atomic(run_dir / CONFIG_FILE, run_config_dict(config))
        write_json_atomic(run_dir / SCHEDULE_FILE, json.loads(schedule.to_json()))
    except BaseException as e:
        if not isinstance(e, RunError):
            _remove_made(run_dir, created, [CONFIG_FILE, SCHEDULE_FILE, LOCK_FILE])
        lock.release()
        if isinstance(e, OSError):
            raise RunError(f"cannot write run folder {run_dir}: {e.strerror or e}") from None
        raise
    return lock


def _refuse_existing_run(run_dir: Path) -> None:
    if os.path.exists(run_dir / CONFIG_FILE):  # not Path.exists: False for a path too long
        raise RunError(
            f"{run_dir} already holds a run; resume it with --resume {run_dir} or choose "
            "another --run-dir"
        )


def _remove_made(run_dir: Path, created: Path | None, files: list[str]) -> None:
    """Undo a failed start: the folders this process created, else the files it wrote."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for name in files:
        for path in (run_dir / name, run_dir / f"{name}.tmp"):
            path.unlink(missing_ok=True)


def run_config_dict(config: TrainConfig) -> dict:
    """What config.json holds: every field plus the variant label."""
    return {"variant": config.variant, "suite": config.suite, **config_to_dict(config)}


def load_run_config(run_dir: Path) -> tuple[TrainConfig, Schedule]:
    """The config and schedule saved in a run folder (for --resume and evaluation)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    try:
        config = config_from_dict(read_json(run_dir / CONFIG_FILE))
        schedule = Schedule.from_json((run_dir / SCHEDULE_FILE).read_text())
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise RunError(f"{run_dir} holds an unreadable run config: {e}") from None
    return config, schedule


def build_suite_network(config: TrainConfig, init_seed: int | None = None) -> QNetwork:
    """The Q-network for the config's suite: stacked frames in, the suite's actions out
    (Atari pixels scaled to [0, 1]; MinAtar's 0/1 planes as they are). ``init_seed``: initial
    weights drawn from a generator seeded with it, the process's own torch generator untouched
    (None: drawn from the process's generator, for a network whose weights are loaded next)."""
    (c, h, w), num_actions = frame_spec(config.suite)
    input_scale = 1.0 / 255.0 if config.suite == "atari" else 1.0
    in_shape = (config.env.frame_stack * c, h, w)
    if init_seed is None:
        return build_q_network(in_shape, num_actions, config.network, input_scale)
    # torch's initialisers draw from the default generator: fork it, seed the fork, and the
    # network is built on the CPU, so the weights are the same on every device.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return build_q_network(in_shape, num_actions, config.network, input_scale)


@dataclass(frozen=True)
class TrainedPolicy:
    """A checkpoint's online network with its run's config and schedule, ready to act."""

    checkpoint: Path
    step: int
    config: TrainConfig
    schedule: Schedule
    network: QNetwork
    state: dict
    """The checkpoint's state as ``load_checkpoint`` gives it: every owner (labeller, replays,
    counters, ...), or only the ``parts`` asked for."""


def load_trained_policy(
    path: Path, device: torch.device, parts: Collection[str] | None = None
) -> TrainedPolicy:
    """The network of a checkpoint (or of a run folder's newest checkpoint) in eval mode;
    CheckpointError when the checkpoint does not fit its run's config. ``parts``: the owners of
    the state to load besides the agent (None: all of them; evaluation needs no replay)."""
    ckpt = resolve_checkpoint(path)
    config, schedule = load_run_config(ckpt.parent.parent)
    # On the CPU: only the network's weights go to the device (load_state_dict copies them).
    wanted = None if parts is None else {"agent", *parts}
    step, state = load_checkpoint(ckpt, device="cpu", parts=wanted)
    network = build_suite_network(config).to(device)
    try:
        network.load_state_dict(state["agent"]["online"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise does_not_fit(ckpt, e) from None
    bad = nonfinite_tensors(network.state_dict())
    if bad:
        raise CheckpointError(
            f"checkpoint {ckpt} holds non-finite weights ({', '.join(bad[:2])}"
            f"{' ...' if len(bad) > 2 else ''}): its run diverged; evaluate an earlier checkpoint"
        )
    return TrainedPolicy(ckpt, step, config, schedule, network.eval(), state)


def _unusable_for_resume(state: dict) -> str | None:
    """Why a loaded checkpoint cannot be resumed from (non-finite weights: a run that diverged
    before checkpoints were checked), or None. Structure is checked later, by restoring."""
    agent = state.get("agent")
    if not isinstance(agent, dict):
        return None
    weights = {
        f"{net}/{k}": v
        for net in ("online", "target")
        if isinstance(agent.get(net), dict)
        for k, v in agent[net].items()
    }
    bad = nonfinite_tensors(weights)
    return f"non-finite weights in {', '.join(bad[:2])}" if bad else None


def build_trainer(
    config: TrainConfig,
    schedule: Schedule,
    run_dir: Path,
    device: torch.device,
    resume_step: int | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Every part of a run, built explicitly, wired into a Trainer (``start_run`` has checked
    ``config`` against ``schedule``)."""
    frame_shape, _ = frame_spec(config.suite)
    stack = config.env.frame_stack
    network = build_suite_network(config, init_seed=config.seed)
    agent = DQNAgent(network, config.agent, device)
    kind = config.consolidator
    ewc = None if kind is None else EWCConsolidator(agent.online, config.ewc, kind)
    labeler: TaskLabeler = (
        InferredLabels(ForgetMeNot(config.fmn))
        if config.task_labels == "inferred"
        else TrueLabels()
    )

    def make_replay(rng: np.random.Generator) -> FrameReplay:
        return FrameReplay(
            config.replay.capacity, config.env.num_envs, frame_shape, stack, config.agent.gamma, rng
        )

    return Trainer(
        config=config,
        schedule=schedule,
        run_dir=run_dir,
        agent=agent,
        labeler=labeler,
        ewc=ewc,
        consolidation=ConsolidationPolicy(config.consolidation_min_steps),
        make_replay=make_replay,
        rng=np.random.default_rng(config.seed),
        logger=MetricsLogger(run_dir, resume_step=resume_step),
        device=device,
        show_progress=show_progress,
    )


def start_run(
    config: TrainConfig | None,
    schedule: Schedule | None,
    run_dir: Path,
    device: str = "auto",
    resume: bool = False,
    show_progress: bool = True,
) -> Trainer:
    """A Trainer for a new run (config and schedule given) or a resumed one (``resume``: the
    folder's own config; a given config must equal it)."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    if resume:
        saved, saved_schedule = load_run_config(run_dir)
        check_roms(run_dir)
        if config is not None and run_config_dict(config) != run_config_dict(saved):
            raise RunError(f"{run_dir} holds a run with another configuration; not resuming it")
        if schedule is not None and schedule.to_json() != saved_schedule.to_json():
            raise RunError(f"{run_dir} holds a run with another schedule; not resuming it")
        config, schedule = saved, saved_schedule
    if config is None or schedule is None:
        raise TypeError("start_run needs a config and a schedule for a new run")
    # The one check of a run's settings, before anything is written or locked: bad input leaves
    # the disk untouched.
    config.validate()
    config.check_schedule(schedule)
    configure_backends(dev, config.deterministic)
    if resume:
        lock = RunLock.acquire(run_dir)
        trainer = None
        try:
            # Loaded on the CPU: Trainer.load_state_dict moves what belongs on the device.
            found = load_newest_checkpoint(run_dir, "cpu", check=_unusable_for_resume)
            trainer = build_trainer(
                config,
                schedule,
                run_dir,
                dev,
                resume_step=found[1] if found else 0,
                show_progress=show_progress,
            )
            if found is not None:
                trainer.restore(found[0], found[2])
            else:
                trainer.truncate_logs(0)
        except BaseException:
            if trainer is not None:
                trainer.close()
            lock.release()
            raise
        trainer.run_lock = lock
        return trainer
    lock = prepare_run_dir(run_dir, config, schedule)
    try:
        write_provenance(run_dir, schedule.games, dev, config.torch_threads)
        trainer = build_trainer(config, schedule, run_dir, dev, show_progress=show_progress)
    except BaseException:
        lock.release()
        raise
    trainer.run_lock = lock
    return trainer
