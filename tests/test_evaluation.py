"""Evaluation: which episodes count, the budget rule, and that scoring changes nothing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from envs.games import resolve_game
from envs.make import EnvCache, make_env
from envs.scores import normalised_score
from envs.vector import EnvConfig
from ewc_dqn.evaluation import episode_quotas, evaluate_game, protocol_text
from ewc_dqn.networks import NetworkConfig, build_q_network

MINATAR_ENV = EnvConfig(
    num_envs=3,
    frame_skip=1,
    frame_stack=1,
    noop_max=0,
    repeat_action_probability=0.0,
    max_episode_frames=27_000,
)
BREAKOUT = resolve_game("MinAtar/Breakout")
CAPPED_ENV = replace(MINATAR_ENV, max_episode_frames=300)
"""Episodes of the ball follower below end within 300 frames (it rarely loses the ball)."""


def _network(seed: int = 0):
    torch.manual_seed(seed)
    return build_q_network((10, 10, 10), 6, NetworkConfig(arch="minatar", max_tasks=2), 1.0)


def _follow_the_ball(obs: torch.Tensor, task: int) -> torch.Tensor:
    """A MinAtar Breakout policy that reads its input: move the paddle (plane 0, bottom row)
    towards the ball's column (plane 1); Q-values one-hot on that action. It scores far above a
    constant action, so a loop that feeds it stale frames is seen."""
    paddle = obs[:, 0, 9].float().argmax(1)
    ball = obs[:, 1].amax(1).float().argmax(1)
    action = torch.where(ball < paddle, 1, torch.where(ball > paddle, 3, 0))  # left, right, no-op
    return torch.nn.functional.one_hot(action, 6).float()


def _episodes_per_copy(network, config: EnvConfig, seed: int, wanted: int) -> list[list[float]]:
    """Play greedily (epsilon 0, so the evaluation's own random draws change nothing) until
    every copy has finished ``wanted`` episodes; each copy's returns in order."""
    env = make_env(BREAKOUT, config, seed=seed)
    obs = env.reset(seed=seed)
    done_returns: list[list[float]] = [[] for _ in range(config.num_envs)]
    with torch.no_grad():
        while min(len(r) for r in done_returns) < wanted:
            actions = network(torch.as_tensor(obs), 0).argmax(1).numpy()
            step = env.step(actions)
            for i in np.flatnonzero(step.terminated | step.truncated):
                done_returns[i].append(float(step.episode_return[i]))
            obs = step.obs
    return done_returns


def test_quotas_split_episodes_evenly():
    assert episode_quotas(10, 4).tolist() == [3, 3, 2, 2]
    assert episode_quotas(3, 3).tolist() == [1, 1, 1]
    assert episode_quotas(5, 1).tolist() == [5]
    assert episode_quotas(1, 1).tolist() == [1]
    for bad in ((0, 2), (2, 0)):
        with pytest.raises(ValueError):
            episode_quotas(*bad)


def test_each_copy_contributes_its_first_episodes_whatever_their_length():
    """Episodes count by a fixed quota per copy, not by which copy finishes first: the returns
    are exactly the first quota[i] episodes of each copy, played by a policy that reads every
    new frame; the mean, spread and normalised score are those of these returns."""
    net = _follow_the_ball
    score = evaluate_game(
        net,
        BREAKOUT,
        CAPPED_ENV,
        lambda frame: 0,
        episodes=7,
        frames=10**9,
        epsilon=0.0,
        seed=3,
        device=torch.device("cpu"),
    )
    per_copy = _episodes_per_copy(net, CAPPED_ENV, seed=3, wanted=3)
    quota = episode_quotas(7, 3)
    want = sorted(r for i, q in enumerate(quota) for r in per_copy[i][:q])
    assert sorted(score.returns) == pytest.approx(want)
    assert score.episodes == 7 and score.complete
    assert score.raw_mean == pytest.approx(np.mean(want)) and np.mean(want) > 5
    assert score.raw_std == pytest.approx(np.std(want))
    assert score.normalised == pytest.approx(normalised_score(BREAKOUT, np.mean(want)))
    assert score.task_id == 0


def test_no_episode_starts_after_the_budget_and_started_ones_finish():
    net = _follow_the_ball
    score = evaluate_game(
        net,
        BREAKOUT,
        CAPPED_ENV,
        lambda frame: 0,
        episodes=9,
        frames=1,  # spent after the first step: each copy plays only the episode it began
        epsilon=0.0,
        seed=3,
        device=torch.device("cpu"),
    )
    per_copy = _episodes_per_copy(net, CAPPED_ENV, seed=3, wanted=1)
    assert score.episodes == 3 and score.complete
    assert sorted(score.returns) == pytest.approx(sorted(r[0] for r in per_copy))
    assert np.isfinite(score.raw_mean)


def test_the_task_reported_is_the_one_used_most_and_sees_the_newest_frame():
    """Atari Breakout (4 stacked frames, 4 frames per step, 2 copies): the task function gets
    copy 0's newest frame, the task id reported is the one it returned most often, and the
    frames played are whole vectorised steps."""
    game = resolve_game("Breakout")
    env = EnvConfig(num_envs=2, noop_max=30, max_episode_frames=108_000)
    seen, calls = [], []

    def task_fn(frame):
        seen.append(frame.shape)
        calls.append(None)
        return (0, 1, 1)[len(calls) % 3]

    def policy(obs, task):
        assert obs.shape[1:] == (4, 84, 84)
        return torch.zeros(obs.shape[0], 18)

    score = evaluate_game(
        policy, game, env, task_fn, episodes=2, frames=400, epsilon=1.0, seed=0,
        device=torch.device("cpu"),
    )  # fmt: skip
    assert set(seen) == {(1, 84, 84)}
    assert score.task_id == 1 and score.episodes == 2 and score.complete
    assert score.frames == len(calls) * 2 * 4


def test_protocol_text_states_the_protocol():
    text = protocol_text(MINATAR_ENV, 0.05, 10, 20_000)
    for part in ("epsilon 0.05", "10 episodes", "20000 frames", "27000 frames", "raw"):
        assert part in text, (part, text)


def test_copies_beyond_the_episodes_are_not_made():
    score = evaluate_game(
        _network(),
        BREAKOUT,
        MINATAR_ENV,
        lambda frame: 0,
        episodes=2,
        frames=10**9,
        epsilon=0.05,
        seed=1,
        device=torch.device("cpu"),
    )
    assert score.episodes == 2


def test_evaluation_uses_the_given_epsilon_and_changes_no_weights():
    net = _network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kwargs = dict(episodes=4, frames=10**9, seed=5, device=torch.device("cpu"))
    greedy = evaluate_game(net, BREAKOUT, MINATAR_ENV, lambda f: 0, epsilon=0.0, **kwargs)
    again = evaluate_game(net, BREAKOUT, MINATAR_ENV, lambda f: 0, epsilon=0.0, **kwargs)
    random = evaluate_game(net, BREAKOUT, MINATAR_ENV, lambda f: 0, epsilon=1.0, **kwargs)
    assert greedy.returns == again.returns  # seeded: same numbers
    assert greedy.returns != random.returns
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_a_kept_environment_gives_the_same_scores(tmp_path):
    net = _network()
    cache = EnvCache()
    kwargs = dict(episodes=3, frames=500, epsilon=0.05, device=torch.device("cpu"))
    fresh = [
        evaluate_game(net, BREAKOUT, MINATAR_ENV, lambda f: 0, seed=s, **kwargs) for s in (1, 2)
    ]
    kept = [
        evaluate_game(net, BREAKOUT, MINATAR_ENV, lambda f: 0, seed=s, envs=cache, **kwargs)
        for s in (1, 2)
    ]
    cache.close()
    assert [s.returns for s in kept] == [s.returns for s in fresh]


class _RecordingCache(EnvCache):
    """Real environments whose actions are recorded as they are played."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[np.ndarray] = []

    def get(self, game, config):
        env = super().get(game, config)
        if not getattr(env, "_recorded", False):
            play = env.step

            def step(actions):
                self.actions.append(np.array(actions))
                return play(actions)

            env.step, env._recorded = step, True
        return env


def test_exploring_actions_cover_the_whole_action_set():
    cache = _RecordingCache()
    kwargs = dict(episodes=3, frames=2_000, seed=4, device=torch.device("cpu"), envs=cache)
    evaluate_game(_follow_the_ball, BREAKOUT, CAPPED_ENV, lambda f: 0, epsilon=1.0, **kwargs)
    played = np.concatenate(cache.actions)
    counts = np.bincount(played, minlength=6)
    assert (counts > 0.1 * len(played) / 6).all(), counts  # every action, about uniformly
    cache.actions.clear()
    evaluate_game(_follow_the_ball, BREAKOUT, CAPPED_ENV, lambda f: 0, epsilon=0.0, **kwargs)
    assert set(np.concatenate(cache.actions).tolist()) <= {0, 1, 3}  # the policy's own
    cache.close()
