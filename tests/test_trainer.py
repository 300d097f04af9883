"""The training loop's task bookkeeping on real parts (MinAtar smoke preset)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from synthetic_frames import minatar_sources, mode_stream

from ewc_dqn.checkpoint import load_checkpoint
from ewc_dqn.config import preset
from ewc_dqn.rand_index import adjusted_rand_from_counts
from ewc_dqn.run_builder import build_trainer, make_schedule, resolve_device
from ewc_dqn.run_folder import TRAIN_CSV


def _trainer(tmp_path, **overrides):
    config = replace(preset("smoke", "minatar"), **overrides)
    return build_trainer(
        config, make_schedule(config), tmp_path, resolve_device("cpu"), show_progress=False
    )


def _fill(trainer, task, steps):
    """Give ``task`` a replay with ``steps`` transitions and count them as trained."""
    trainer._switch_task(task)
    replay = trainer.replays[task]
    n, c = replay.num_envs, replay.frame_shape
    rng = np.random.default_rng(task)
    first = np.ones(n, dtype=bool)
    replay.add(np.zeros((n, *c), np.uint8), np.zeros(n, int), np.zeros(n), ~first, ~first, first)
    for _ in range(steps):
        frame = rng.integers(0, 2, (n, *c), dtype=np.uint8)
        replay.add(frame, rng.integers(0, 6, n), np.ones(n), ~first, ~first, ~first)
    trainer.counters.add(task, steps, steps)


def _consolidations(trainer, task):
    return trainer.ewc.stats().get(f"ewc/task{task}/consolidations", 0.0)


def test_switching_consolidates_the_task_left(tmp_path):
    trainer = _trainer(tmp_path, consolidation_min_steps=0)  # the paper: at every switch
    _fill(trainer, 0, 100)
    _fill(trainer, 1, 100)  # leaving 0: its Fisher is estimated and stored
    assert _consolidations(trainer, 0) == 1
    assert trainer.ewc.stats()["ewc/stored_terms"] == 1
    _fill(trainer, 0, 100)  # leaving 1
    _fill(trainer, 1, 100)  # leaving 0 again: its term is replaced, not stacked
    assert _consolidations(trainer, 0) == 2
    assert trainer.ewc.stats()["ewc/stored_terms"] == 2


def test_flickering_labels_do_not_reestimate_before_min_steps(tmp_path):
    trainer = _trainer(tmp_path, consolidation_min_steps=150)
    _fill(trainer, 0, 100)
    _fill(trainer, 1, 100)
    assert _consolidations(trainer, 0) == 1  # the first time always counts
    _fill(trainer, 0, 100)  # only 100 new steps of task 0 by the next switch
    _fill(trainer, 1, 10)
    assert _consolidations(trainer, 0) == 1
    _fill(trainer, 0, 60)  # 160 steps since its consolidation now
    _fill(trainer, 1, 10)
    assert _consolidations(trainer, 0) == 2


def test_no_ewc_never_consolidates(tmp_path):
    # The same task switches consolidate with EWC (a Fisher logged, terms in the checkpoint
    # state) and leave no trace of EWC without it.
    runs = {"ewc": {"consolidation_min_steps": 0}, "none": {"consolidation": "none"}}
    states = {}
    for name, overrides in runs.items():
        (tmp_path / name).mkdir()
        trainer = _trainer(tmp_path / name, **overrides)
        for task in (0, 1, 0):
            _fill(trainer, task, 100)
        states[name] = trainer.state_dict()
        assert set(trainer.replays) == {0, 1}
        trainer.close()
    tags = {name: set(pd.read_csv(tmp_path / name / TRAIN_CSV)["tag"]) for name in runs}
    assert {"ewc/consolidated_task", "perf/fisher_seconds"} <= tags["ewc"]
    assert len(states["ewc"]["ewc"]["tensors"]) > 0
    assert not any(tag.startswith("ewc/") for tag in tags["none"]), tags["none"]
    assert "perf/fisher_seconds" not in tags["none"] and "ewc" not in states["none"]


def test_adjusted_rand_from_counts_matches_sklearn():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 500)
    used = np.where(rng.random(500) < 0.8, true, rng.integers(0, 5, 500))
    counts: dict[tuple[int, int], int] = {}
    for t, u in zip(true, used, strict=True):
        counts[(int(t), int(u))] = counts.get((int(t), int(u)), 0) + 1
    assert abs(adjusted_rand_from_counts(counts) - adjusted_rand_score(true, used)) < 1e-12
    assert adjusted_rand_from_counts({(0, 3): 5, (1, 4): 7}) == 1.0


def test_a_merged_id_given_to_a_new_task_starts_afresh(tmp_path):
    """Task inference merges a second board of a game into the game's task and gives the
    retired id to the next new game. The loop must then forget all it kept for the id: the new
    game starts with an empty replay, its own step counts (epsilon, learning start), no EWC
    term, and per-task gains and biases (both networks) as created, without optimiser state."""
    trainer = _trainer(tmp_path, task_labels="inferred", consolidation_min_steps=0)
    fmn, agent = trainer.labeler.fmn, trainer.agent
    frames = mode_stream(
        minatar_sources(2, seed=21),
        [("A", 800), ("A2", 64), ("A", 400), ("B", 200)],
        seed=21,
    )
    gains = agent.online.fc.task.task_gains[1]
    seen = []
    for frame in frames:
        task = trainer.labeler.train_label(frame, 0, episode_start=False)
        if task == trainer.current_task:
            continue
        _fill(trainer, task, 40)
        seen.append((task, fmn.generation(task)))
        if seen[-1] == (1, 1):  # the second board's task learns: its gains move
            agent.update(trainer.replays[1].sample(32), 1)
            agent.sync_target()
            assert not torch.equal(gains, torch.ones_like(gains)) and gains in agent.optimizer.state
        if seen[-1] == (1, 2):
            break
    assert seen[:2] == [(0, 1), (1, 1)] and seen[-1] == (1, 2), seen
    assert _consolidations(trainer, 1) == 0 and trainer.ewc.stats()["ewc/stored_terms"] == 1
    assert len(trainer.replays[1]) <= 40 + 1 and trainer.counters.steps[1] == 40
    for net in (agent.online, agent.target):
        for name, p in net.named_parameters():
            if name.endswith(".task_gains.1") or name.endswith(".task_biases.1"):
                assert torch.equal(p, torch.ones_like(p) if "gains" in name else 0 * p), name
                assert p not in agent.optimizer.state, name
    path = trainer.save()
    trainer.close()
    log = pd.read_csv(tmp_path / TRAIN_CSV)
    assert log[log["tag"] == "tasks/forgotten_task"]["value"].tolist() == [1.0]
    # A checkpoint keeps the generations; one from before ids were reused has every id in its
    # first (the merged id, retired in its FMN state, is then forgotten at the next switch).
    _, state = load_checkpoint(path)
    for generations in ({0: 1, 1: 2}, None):
        (tmp_path / str(generations)).mkdir()
        resumed = _trainer(tmp_path / str(generations), task_labels="inferred")
        if generations is None:
            del state["loop"]["task_generation"]
        resumed.restore(path, state)
        assert resumed.task_generation == (generations or {0: 1, 1: 1})
        resumed.close()


def test_task_inference_is_told_where_episodes_start(tmp_path):
    """The loop tells the labeler which frames start an episode of the copy it sees (the
    episode rule of FMN, ``episode_switch_steps``, needs it): every segment's first frame and
    each frame after an episode of that copy ended, and no other."""
    trainer = _trainer(tmp_path, task_labels="inferred")
    real = trainer.labeler.train_label
    flags: list[bool] = []

    def spy(frame, true_task, episode_start):
        flags.append(episode_start)
        return real(frame, true_task, episode_start)

    trainer.labeler.train_label = spy  # type: ignore[method-assign]
    trainer.train()
    trainer.close()
    segments = len(trainer.schedule.visits)
    starts = int(np.sum(flags))
    assert flags[0] and starts > 2 * segments  # random play ends many short episodes
    assert starts < len(flags) / 5
