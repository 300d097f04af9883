"""The rules of the algorithm, checked on what the training loop does with real games.

Each test names a rule of the paper's agent and fails when the loop breaks it, however the code
is changed: the penalty must pull the shared weights back towards a consolidated task, a task's
term must activate on its frames, evaluation must play the agent's policy, the target network
must follow the online one at its period, rewards must be clipped for learning, and epsilon must
follow the acting task's own steps. ``tools/named_mutants.py`` breaks each rule on purpose and
checks that these tests notice.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from ewc_dqn.config import TrainConfig, preset
from ewc_dqn.dqn import linear_epsilon
from ewc_dqn.run_builder import build_trainer, make_schedule, resolve_device
from ewc_dqn.run_folder import TRAIN_CSV

GAMES = ("MinAtar/Breakout", "MinAtar/Freeway")


def _minatar(visits: int = 1, visit_frames: int = 600, **overrides) -> TrainConfig:
    config = preset("smoke", "minatar")
    schedule = replace(
        config.schedule, games=GAMES, visits_per_game=visits, visit_frames=visit_frames
    )
    return replace(config, schedule=schedule, **overrides)


def _trainer(config: TrainConfig, run_dir):
    run_dir.mkdir(parents=True, exist_ok=True)
    return build_trainer(
        config, make_schedule(config), run_dir, resolve_device("cpu"), show_progress=False
    )


def _scalars(run_dir, tag: str) -> pd.DataFrame:
    log = pd.read_csv(run_dir / TRAIN_CSV)
    return log[log["tag"] == tag].set_index("step")["value"]


# ------------------------------------------------------------------------------ the penalty


def test_the_penalty_holds_the_shared_weights_near_the_consolidated_task(tmp_path):
    """Task 0 (Breakout) is consolidated when Freeway starts. With a penalty that dominates the
    TD loss, Freeway's training must stay close to Breakout's weights in the Fisher metric;
    without EWC the same training moves far. Logged penalty positive during Freeway."""
    base = _minatar(visit_frames=1_500)
    base = replace(base, ewc=replace(base.ewc, lam=1e5, fisher_batches=8, fisher_batch_size=32))
    moved, anchors = {}, {}
    for name, config in {"ewc": base, "none": replace(base, consolidation="none")}.items():
        trainer = _trainer(config, tmp_path / name)
        trainer.train(stop_after_steps=1_500)  # the end of Breakout's visit
        anchors[name] = {k: v.detach().clone() for k, v in trainer.agent.online.named_parameters()}
        assert trainer.train() is True
        final = {k: v.detach().clone() for k, v in trainer.agent.online.named_parameters()}
        moved[name] = final
        if name == "ewc":
            fisher, anchor = trainer.ewc.task_terms()[0]
            fisher = {k: v.clone() for k, v in fisher.items()}
            for k, v in anchor.items():  # the anchor is the weights at the switch
                torch.testing.assert_close(v, anchors["ewc"][k], rtol=0, atol=0)
        trainer.close()

    def fisher_distance(name: str) -> float:
        return sum(
            float((fisher[k] * (moved[name][k] - anchors[name][k]) ** 2).sum()) for k in fisher
        )

    assert sum(float(f.sum()) for f in fisher.values()) > 0
    with_ewc, without = fisher_distance("ewc"), fisher_distance("none")
    assert without > 0
    assert with_ewc < 0.2 * without, (with_ewc, without)
    penalty = _scalars(tmp_path / "ewc", "losses/ewc_penalty")
    assert (penalty.loc[1_600:] > 0).all() and len(penalty.loc[1_600:]) >= 10


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """Breakout, Freeway, Breakout, Freeway (600 frames each) with ewc.start_frames of one
    visit: the run folder and its config."""
    run_dir = tmp_path_factory.mktemp("two-rounds")
    config = _minatar(visits=2)
    config = replace(config, ewc=replace(config.ewc, start_frames=600))
    trainer = _trainer(config, run_dir)
    assert trainer.train() is True
    trainer.close()
    return run_dir, config


def test_a_term_activates_once_its_task_has_its_frames(two_rounds):
    """ewc.start_frames of one visit: Breakout's term counts from Freeway's first visit on,
    Freeway's from Breakout's second visit on, and none before."""
    tmp_path, _ = two_rounds
    active0 = _scalars(tmp_path, "ewc/task0/active")
    active1 = _scalars(tmp_path, "ewc/task1/active")
    penalty = _scalars(tmp_path, "losses/ewc_penalty")
    # Logged after the step: a row at 600 has 600 frames of Breakout behind it.
    assert (active0.loc[:500] == 0).all() and (active0.loc[600:] == 1).all()
    assert (active1.loc[:1100] == 0).all() and (active1.loc[1200:] == 1).all()
    assert (penalty.loc[700:1200] > 0).all()  # Breakout's term pulls during Freeway


# ------------------------------------------------------------------------------ evaluation


def test_evaluation_plays_the_agents_policy_at_the_configured_epsilon(tmp_path):
    """A policy that always moves up scores in Freeway (every crossing is a point); random play
    almost never crosses. The trainer's end-of-visit evaluation must play the network."""
    config = _minatar()
    config = replace(config, eval=replace(config.eval, frames=3_000, epsilon=0.05))
    trainer = _trainer(config, tmp_path)
    up = 2  # MinAtar's actions: no-op, left, up, right, down, fire

    def always_up(module, inputs, output):
        return torch.nn.functional.one_hot(torch.full(output.shape[:1], up), output.shape[1]).to(
            output.dtype
        )

    trainer.agent.online.register_forward_hook(always_up)
    state = {k: v.clone() for k, v in trainer.agent.online.state_dict().items()}
    scores = {s.game: s for s in trainer.evaluate(trainer.schedule.visits[0])}
    trainer.close()
    freeway = scores["MinAtar/Freeway"]
    assert freeway.episodes == 1 and freeway.raw_mean >= 5, freeway
    for k, v in trainer.agent.online.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_periodic_evaluations_and_the_end_of_visit_one_are_one_row_per_point(tmp_path):
    """With ``eval.every_frames`` dividing the visit, the periodic evaluation due at a visit's
    last frame is the end-of-visit one: each point of the curve is evaluated once, and every
    visit ends with its evaluation."""
    config = _minatar(visit_frames=600)
    config = replace(config, eval=replace(config.eval, every_frames=200, frames=300))
    trainer = _trainer(config, tmp_path)
    assert trainer.train() is True
    trainer.close()
    steps = pd.read_csv(tmp_path / "eval_summary.csv")["step"].tolist()
    assert steps == [200, 400, 600, 800, 1000, 1200]


def test_evaluation_changes_no_training_state(tmp_path):
    """Evaluating with inferred labels reads the task inference without adding to it, and
    touches neither the weights nor the replay."""
    config = _minatar(task_labels="inferred")
    trainer = _trainer(config, tmp_path)
    trainer.train(stop_after_steps=400)
    before = trainer.state_dict()
    replay = trainer.replays[0].state_dict()
    trainer.evaluate(trainer.schedule.visits[0])
    after = trainer.state_dict()
    trainer.close()
    assert _flatten(after["labeler"]) == _flatten(before["labeler"])
    for k, v in trainer.agent.online.state_dict().items():
        assert torch.equal(v, before["agent"]["online"][k]), k
    replay_after = trainer.replays[0].state_dict()
    assert replay_after.keys() == replay.keys()
    for k in replay:
        assert np.array_equal(np.asarray(replay_after[k]), np.asarray(replay[k])), k


def _flatten(state, prefix="") -> dict:
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flatten(v, f"{prefix}/{k}"))
    elif isinstance(state, torch.Tensor):
        out[prefix] = state.tolist()
    elif isinstance(state, np.ndarray):
        out[prefix] = state.tolist()
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flatten(v, f"{prefix}/{i}"))
    else:
        out[prefix] = state
    return out


# ------------------------------------------------------------------------------ the learner


def test_the_target_network_follows_the_online_one_at_its_period(tmp_path):
    """target_update 300 agent steps, a stop at every 100: right after a sync the two networks
    are equal; between syncs the online network moves and the target keeps the last copy."""
    config = _minatar(visit_frames=1_200, checkpoint_every=100)
    config = replace(config, agent=replace(config.agent, target_update=300))
    trainer = _trainer(config, tmp_path)
    last_sync = None
    for stop in range(100, 1_100, 100):
        trainer.train(stop_after_steps=stop)
        assert trainer.step == stop
        online = trainer.agent.online.state_dict()
        target = trainer.agent.target.state_dict()
        equal = all(torch.equal(online[k], target[k]) for k in online)
        if stop % 300 == 0:
            assert equal, f"not synced at {stop}"
            last_sync = {k: v.clone() for k, v in online.items()}
        elif stop > 200:  # updates began at 100 (the learning start)
            assert not equal, f"the target followed the online network at {stop}"
            assert last_sync is not None
            assert all(torch.equal(target[k], last_sync[k]) for k in target), stop
    trainer.close()


@pytest.mark.parametrize("clip", [True, False])
def test_rewards_are_clipped_for_learning(tmp_path, clip):
    """Space Invaders pays 5 to 30 points per alien. With clipping on, the replay the agent learns
    from holds rewards in {-1, 0, 1}; with it off, the game's own rewards."""
    config = preset("smoke", "atari")
    config = replace(
        config,
        schedule=replace(config.schedule, games=("SpaceInvaders", "Pong"), visits_per_game=1,
                         visit_frames=4_800),
        agent=replace(config.agent, clip_rewards=clip),
        network=replace(config.network, arch="nature"),  # the rule is the loop's; a cheaper net
        checkpoint_every=600,
    )  # fmt: skip
    trainer = _trainer(config, tmp_path)
    trainer.train(stop_after_steps=600)
    replay = trainer.replays[0]
    rewards = replay.sample(4_000).reward.numpy()
    trainer.close()
    # One-step transitions: the reward of a sampled transition is one step's reward.
    assert rewards.max() > 0
    if clip:
        assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
    else:
        assert rewards.max() >= 5


def test_each_task_explores_on_its_own_timer(two_rounds):
    """Epsilon decays over a task's own first 200 agent steps: Freeway's first visit starts
    from 1 again after Breakout has reached the floor, and each logged epsilon is the schedule
    at the acting task's step count."""
    tmp_path, config = two_rounds
    agent = config.agent
    eps = _scalars(tmp_path, "train/epsilon")
    task_steps = _scalars(tmp_path, "train/task_steps")
    want = [
        linear_epsilon(int(s) - 1, agent.eps_start, agent.eps_end, agent.eps_decay_start,
                       agent.eps_decay_end)
        for s in task_steps.loc[eps.index]
    ]  # fmt: skip
    np.testing.assert_allclose(eps.to_numpy(), want, rtol=0, atol=1e-12)
    assert eps.loc[700] > 0.5 > agent.eps_end == eps.loc[600]  # Freeway's own timer restarts
