"""Bytes and seconds of a checkpoint of the ``atari`` preset with ten full replays.

Builds the real Trainer of ``--preset atari`` (the paper network, its optimiser, one EWC term
per task) with ``--replays`` full replays of 50,000 transitions, 4 copies, 84x84 frames, stack 4,
filled with random frames (incompressible and never repeated, so no chunk is shared by accident),
and checkpoints it in two run folders side by side:

- **chunked**: ``Trainer.save``, the path every run takes (the replay frames and the EWC terms
  as chunks in ``checkpoints/chunks/``, each written once);
- **inline**: the same state with every array (frames, terms) inside ``tensors.safetensors``,
  the layout of checkpoint format 1 (before the chunk store), through the same
  ``save_checkpoint``.

Each format is saved at four points of the same run:

1. **first**: every replay new to the disk;
2. **steady**: after ``--between-steps`` more agent steps into one replay (the acting task;
   250,000 by default, one checkpoint period of ``atari-short``, 1M frames; any period longer
   than a replay's 50,000 transitions rewrites all of it, so ``atari``'s 1M agent steps write the
   same bytes);
3. **short**: after ``--short-steps`` more (a visit's end soon after a periodic checkpoint);
4. **again**: the same step once more, nothing played (the checkpoint after an evaluation).

Then each format's newest checkpoint is loaded into a fresh Trainer (``Trainer.restore``, files
first dropped from the page cache with ``posix_fadvise``, as after a restart), and the resumed
Trainer of the chunked run saves once more after a few steps (**resumed**: the digests checked
by the load are kept; only the chunks of those steps are new and hashed). For each save:
seconds, bytes of the files it added (the new checkpoint folder and its new chunks) and what
``checkpoints/`` holds after it; last, the share of run time that checkpoints take at
``--steps-per-second`` agent steps/s with each preset's checkpoint period and visit length (a
steady checkpoint per period, the last at the visit's end, and one after the visit's evaluation).

    python bench/bench_checkpoint.py --dir /tmp/bench-checkpoint

With ten replays it holds about 4 GB of replays in memory (9 GB at its peak, an inline save,
which copies the arrays) and writes about 27 GB under ``--dir``, at most 17 GB at once; ``--dir``
is removed at the end. ``--replays`` and ``--capacity`` scale it down.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tyro

from ewc_dqn.checkpoint import latest_checkpoint, save_checkpoint
from ewc_dqn.config import preset
from ewc_dqn.run_builder import build_trainer, make_schedule, resolve_device
from ewc_dqn.train import Trainer


@dataclass(frozen=True)
class Args:
    """Benchmark settings."""

    dir: Path = Path("/tmp/bench-checkpoint")
    """Scratch folder for the two runs (removed at the end)."""
    replays: int = 10
    """Tasks, each with a full replay and an EWC term."""
    capacity: int = 50_000
    """Transitions per replay (the atari preset's 50,000)."""
    between_steps: int = 250_000
    """Agent steps played into one replay between the first and the steady checkpoint."""
    short_steps: int = 10_000
    """Agent steps played before the short checkpoint."""
    steps_per_second: float = 5_000.0
    """The GPU target throughput, in agent steps per second."""
    seed: int = 0
    """Seed of the random frames."""


def files_under(path: Path) -> dict[str, tuple[int, int]]:
    """(size, inode) of every file under ``path``, by its path relative to it."""
    found = {}
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            found[str(p.relative_to(path))] = (st.st_size, st.st_ino)
    return found


def drop_from_page_cache(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def play(trainer: Trainer, task: int, agent_steps: int, rng: np.random.Generator) -> None:
    """Add ``agent_steps`` random transitions to ``task``'s replay, episodes of about 1,000
    steps, as the loop would (one frame per copy per vector step)."""
    replay = trainer.replays[task]
    n = replay.num_envs
    frame_bytes = n * int(np.prod(replay.frame_shape))
    is_first = np.ones(n, dtype=bool) if len(replay) == 0 else np.zeros(n, dtype=bool)
    no = np.zeros(n, dtype=bool)
    for _ in range(agent_steps // n):
        frame = np.frombuffer(rng.bytes(frame_bytes), np.uint8).reshape(n, *replay.frame_shape)
        ended = ~is_first & (rng.random(n) < 1e-3)
        replay.add(frame, rng.integers(0, 18, n), rng.standard_normal(n), ended, no, is_first)
        is_first = ended
    trainer.step += agent_steps
    trainer.frames += agent_steps * trainer.frames_per_step
    trainer.counters.add(task, agent_steps, agent_steps * trainer.frames_per_step)


def inline_state(trainer: Trainer) -> dict[str, Any]:
    """The state as ``Trainer.state_dict`` gave it before the chunk store: every array (replay
    frames, EWC terms) itself, to go inside the safetensors file."""
    state = trainer.state_dict()
    if trainer.ewc is not None:
        state["ewc"] = trainer.ewc.state_dict()
    state["replays"] = {str(k): r.state_dict() for k, r in trainer.replays.items()}
    return state


def save_inline(trainer: Trainer, run: Path) -> None:
    """What ``Trainer.save`` did before the chunk store (checkpoint format 1)."""
    trainer.check_finite()
    state = inline_state(trainer)
    save_checkpoint(run, trainer.step, state, keep=trainer.config.keep_checkpoints)


def timed(name: str, save: Callable[[], Any], folder: Path) -> float:
    """Run one save; print its seconds, the bytes of the files it wrote (new ones and ones
    replaced), what ``folder`` holds."""
    before = files_under(folder) if folder.is_dir() else {}
    gc.collect()
    t0 = time.perf_counter()
    save()
    seconds = time.perf_counter() - t0
    after = files_under(folder)
    added = [p for p in after if before.get(p) != after[p]]  # new, or written again
    wrote = sum(after[p][0] for p in added)
    print(
        f"{name:<18}{seconds:>8.2f} s{wrote / 1e9:>9.3f} GB in {len(added):>4} files written"
        f"{sum(size for size, _ in after.values()) / 1e9:>9.3f} GB in checkpoints/ "
        f"({len(after)} files)",
        flush=True,
    )
    return seconds


def arrays_in(state: object) -> list:
    """Every tensor and numpy array in a state."""
    if isinstance(state, dict):
        return [a for v in state.values() for a in arrays_in(v)]
    if isinstance(state, (list, tuple)):
        return [a for v in state for a in arrays_in(v)]
    return [state] if isinstance(state, (np.ndarray, torch.Tensor)) else []


def build(args: Args, run: Path) -> Trainer:
    base = preset("atari")
    # One Fisher minibatch per task: the EWC terms have their real size at a fraction of the cost.
    config = replace(
        base,
        ewc=replace(base.ewc, fisher_batches=1),
        replay=replace(base.replay, capacity=args.capacity),
    )
    return build_trainer(
        config, make_schedule(config), run, resolve_device("cpu"), show_progress=False
    )


def load(args: Args, run: Path) -> tuple[Trainer, float]:
    """A fresh Trainer restored from ``run``'s newest checkpoint, its files not cached."""
    drop_from_page_cache(run / "checkpoints")
    fresh = build(args, run)
    newest = latest_checkpoint(run)
    assert newest is not None
    gc.collect()
    t0 = time.perf_counter()
    fresh.restore(newest)
    return fresh, time.perf_counter() - t0


def fill(args: Args, trainer: Trainer, rng: np.random.Generator) -> None:
    """Every task's replay full (and wrapped), its EWC term estimated, the optimiser stepped."""
    t0 = time.perf_counter()
    for task in range(args.replays):
        trainer.replays[task] = trainer.make_replay(trainer.rng)
        trainer.replay_born[task] = trainer.counters.steps.get(task, 0)
        play(trainer, task, args.capacity + 16, rng)
        # One update first, so that every task's anchor differs (as between visits) and the
        # optimiser's statistics exist, as in a run.
        trainer.agent.update(trainer.replays[task].sample(32), task_id=task)
        trainer.consolidate(task)
    trainer.current_task = 0
    replay = trainer.replays[0]
    state = inline_state(trainer)
    del state["replays"]
    other = sum(a.nbytes for a in arrays_in(state))
    chunk_mb = replay.chunk_slots * int(np.prod(replay.frame_shape)) / 1e6
    print(
        f"{args.replays} replays of {replay.capacity:,} transitions, {replay.num_envs} copies, "
        f"{replay.frame_shape} frames: {replay.nbytes() / 1e6:.0f} MB each, in chunks of "
        f"{replay.chunk_slots} slots ({chunk_mb:.1f} MB); {other / 1e6:.0f} MB of other arrays "
        f"(networks, optimiser, {args.replays} EWC terms); filled and consolidated in "
        f"{time.perf_counter() - t0:.0f} s"
    )


def saves(args: Args, chunked: Path, inline: Path, rng: np.random.Generator) -> dict[str, float]:
    """The first, steady and short saves of both formats; their seconds by name."""
    trainer = build(args, chunked)
    try:
        fill(args, trainer, rng)
        print(f"{'save':<18}{'seconds':>10}{'written':>32}{'held':>32}")
        seconds = {}
        for name, steps in (
            ("first", 0),
            ("steady", args.between_steps),
            ("short", args.short_steps),
        ):
            play(trainer, 0, steps, rng)
            seconds[f"{name} chunked"] = timed(
                f"{name} chunked", trainer.save, chunked / "checkpoints"
            )
            seconds[f"{name} inline"] = timed(
                f"{name} inline", lambda: save_inline(trainer, inline), inline / "checkpoints"
            )
        # The checkpoint after a visit's evaluation: the same step again, nothing new played.
        seconds["again chunked"] = timed("again chunked", trainer.save, chunked / "checkpoints")
        seconds["again inline"] = timed(
            "again inline", lambda: save_inline(trainer, inline), inline / "checkpoints"
        )
        return seconds
    finally:
        trainer.close()


def share_of_run_time(name: str, seconds: dict[str, float], rate: float) -> str:
    """The share of a preset's run time spent on checkpoints at ``rate`` agent steps/s: per
    visit, one steady checkpoint per period (the last at the visit's end) and one after its
    evaluation (``again``)."""
    config = preset(name)
    every = config.checkpoint_every
    visit = config.schedule.visit_frames // config.frames_per_step
    saves = -(-visit // every)
    shares = []
    for layout in ("chunked", "inline"):
        steady, again = seconds[f"steady {layout}"], seconds[f"again {layout}"]
        spent = saves * steady + again
        shares.append(
            f"{layout} {spent:.1f} s = {spent / (visit / rate + spent):.1%} "
            f"(one checkpoint: {steady / (every / rate + steady):.1%})"
        )
    return (
        f"--preset {name}: a checkpoint every {every:,} agent steps ({every / rate:.0f} s at "
        f"{rate:,.0f} steps/s); a visit of {visit:,} agent steps ({visit / rate:.0f} s) saves "
        f"{saves} times and once after its evaluation: {'; '.join(shares)} of run time"
    )


def main(args: Args) -> None:
    shutil.rmtree(args.dir, ignore_errors=True)
    chunked, inline = args.dir / "chunked", args.dir / "inline"
    chunked.mkdir(parents=True)
    inline.mkdir()
    rng = np.random.default_rng(args.seed)
    try:
        seconds = saves(args, chunked, inline, rng)
        gc.collect()
        for name, run in (("inline", inline), ("chunked", chunked)):
            fresh, took = load(args, run)
            print(f"{'load ' + name:<18}{took:>8.2f} s (Trainer.restore, files not cached)")
            if run == chunked:
                play(fresh, 0, 4 * fresh.replays[0].num_envs, rng)  # as a resumed run would
                timed("resumed chunked", fresh.save, chunked / "checkpoints")
            fresh.close()
            del fresh
            gc.collect()
        for name in ("atari-short", "atari"):
            print(share_of_run_time(name, seconds, args.steps_per_second))
    finally:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
