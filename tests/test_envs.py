"""The environment layer on real ROMs and real MinAtar: shapes, dtypes, episode handling."""

import cv2
import numpy as np
import pytest
import torch

from envs.atari import _make_source
from envs.games import UnknownGameError, resolve_game
from envs.make import make_env
from envs.vector import EnvConfig
from ewc_dqn.errors import UserError
from ewc_dqn.evaluation import evaluate_game

MINATAR_CFG = EnvConfig(
    num_envs=2,
    frame_skip=1,
    frame_stack=1,
    noop_max=0,
    repeat_action_probability=0.1,
    max_episode_frames=50,
)


@pytest.mark.parametrize("backend", ["vector", "gymnasium"])
def test_atari_observations_actions_and_episodes(backend):
    env = make_env("ALE/Breakout-v5", EnvConfig(num_envs=2, backend=backend), seed=1)
    try:
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        assert env.num_actions == 18 and env.frame_shape == (1, 84, 84)
        assert (obs[:, :3] == 0).all() and obs[:, 3].any()  # zero-padded stack at reset
        rng = np.random.default_rng(0)
        ended, firsts = 0, 0
        prev = obs
        running = np.zeros(2)  # each copy's sum of step rewards since its episode started
        for _ in range(600):
            step = env.step(rng.integers(0, 18, 2))
            assert step.obs.shape == (2, 4, 84, 84)
            assert step.reward.dtype == np.float32
            # Frames shift through the stack except where a new episode starts.
            keep = ~step.is_first
            assert (step.obs[keep, :3] == prev[keep, 1:]).all()
            firsts += int(step.is_first.sum())
            assert (step.obs[step.is_first, :3] == 0).all()
            done = step.terminated | step.truncated
            ended += int(done.sum())
            running = np.where(step.is_first, 0.0, running + step.reward)
            np.testing.assert_array_equal(step.episode_return, running)
            prev = step.obs
        assert ended >= 1 and firsts >= 1
    finally:
        env.close()


def test_atari_resize_options_are_opencv_bilinear_and_area():
    # The raw 210x160 greyscale reset frame of the same seed, resized by OpenCV both ways.
    source = _make_source(resolve_game("Pong"), EnvConfig(num_envs=1), 3, native_resize=False)
    raw, _ = source.reset(seed=3)
    source.close()
    raw = np.asarray(raw).reshape(-1, 210, 160)[0]
    frames = {}
    for resize, interpolation in (("bilinear", cv2.INTER_LINEAR), ("area", cv2.INTER_AREA)):
        env = make_env("Pong", EnvConfig(num_envs=1, resize=resize), seed=3)
        try:
            frames[resize] = env.reset()[0, -1]
        finally:
            env.close()
        want = cv2.resize(raw, (84, 84), interpolation=interpolation)
        np.testing.assert_array_equal(frames[resize], want, err_msg=resize)
    assert (frames["bilinear"] != frames["area"]).sum() > 100  # the option changes the frames


def test_atari_raw_rewards_are_reported_unclipped():
    # Boxing scores +-1 for a jab and +-2 for a power punch; 1,500 random steps at seed 0 see
    # both, so clipping to [-1, 1] anywhere before the learner would show.
    env = make_env("Boxing", EnvConfig(num_envs=1), seed=0)
    try:
        env.reset()
        rng = np.random.default_rng(0)
        steps = [env.step(rng.integers(0, 18, 1)) for _ in range(1500)]
        rewards = [s.reward[0] for s in steps]
        assert max(abs(r) for r in rewards) == 2.0
        assert not any(s.is_first.any() for s in steps)  # one episode: its return is the sum
        assert steps[-1].episode_return[0] == sum(rewards)
    finally:
        env.close()


def test_minatar_shapes_padding_and_truncation():
    env = make_env("MinAtar/Breakout", MINATAR_CFG, seed=0)
    obs = env.reset()
    assert obs.shape == (2, 10, 10, 10) and obs.dtype == np.uint8
    assert env.num_actions == 6
    assert (obs[:, 4:] == 0).all()  # Breakout has 4 planes, padded with zeros to 10
    rng = np.random.default_rng(0)
    truncated = False
    for _ in range(300):
        step = env.step(rng.integers(0, 6, 2))
        assert set(np.unique(step.obs)) <= {0, 1}
        truncated |= bool(step.truncated.any())
        assert (step.episode_frames <= 50).all()
    env.close()
    freeway = make_env("minatar:freeway", MINATAR_CFG, seed=0)  # no terminal before the cap
    freeway.reset()
    caps = [freeway.step(np.zeros(2, dtype=int)) for _ in range(60)]
    assert any(s.truncated.all() and not s.terminated.any() for s in caps)


def test_seeding_is_reproducible():
    def rollout(seed):
        env = make_env("MinAtar/Asterix", MINATAR_CFG, seed=seed)
        env.reset()
        out = [env.step(np.array([1, 3])).obs for _ in range(30)]
        env.close()
        return np.stack(out)

    assert np.array_equal(rollout(5), rollout(5))
    assert not np.array_equal(rollout(5), rollout(6))


def test_unknown_game_and_bad_config():
    with pytest.raises(UnknownGameError, match="did you mean 'Pong'"):
        make_env("Pongg", EnvConfig(), seed=0)
    with pytest.raises(ValueError, match="num_envs"):
        make_env("Pong", EnvConfig(num_envs=0), seed=0)


@pytest.mark.parametrize(
    "game,config",
    [
        ("Breakout", EnvConfig(num_envs=2, repeat_action_probability=0.25)),
        ("Pong", EnvConfig(num_envs=1, backend="gymnasium", repeat_action_probability=0.25)),
        (
            "MinAtar/Breakout",
            EnvConfig(
                num_envs=2, frame_skip=1, frame_stack=1, noop_max=0, repeat_action_probability=0.1
            ),
        ),
    ],
)
def test_a_reset_with_a_seed_plays_as_a_new_environment(game, config):
    """What lets the trainer keep environments open (envs.make.EnvCache) without changing a
    result: an environment reset with a seed, after any history, plays exactly as a new one."""

    def roll(env, seed):
        out = [env.reset(seed=seed)]
        rng = np.random.default_rng(0)
        for _ in range(150):
            step = env.step(rng.integers(0, env.num_actions, env.num_envs))
            out += [step.obs, step.reward, step.terminated, step.truncated]
        return out

    fresh = roll(make_env(game, config, seed=11), 11)
    used = make_env(game, config, seed=3)
    roll(used, 4)
    again = roll(used, 11)
    assert all(np.array_equal(a, b) for a, b in zip(fresh, again, strict=True))


def test_a_lost_life_ends_the_episode_for_learning_while_the_game_goes_on():
    """terminal_on_life_loss: the same game, frame for frame, as without it (same seed, same
    actions), with a termination at each of Breakout's four lost lives before the game over
    and a new stack after each; evaluation still scores whole games."""
    game = resolve_game("Breakout")
    plain = make_env(game, EnvConfig(num_envs=1), seed=0)
    lives = make_env(game, EnvConfig(num_envs=1, terminal_on_life_loss=True), seed=0)
    rng = np.random.default_rng(0)
    plain.reset(seed=0)
    lives.reset(seed=0)
    ends = []
    while True:
        action = rng.integers(0, 18, size=1)
        sa, sb = plain.step(action), lives.step(action)
        assert np.array_equal(sa.obs[:, -1], sb.obs[:, -1])  # the same screen
        if sb.terminated[0]:
            ends.append(bool(sa.terminated[0]))
        if sa.terminated[0]:
            break
    plain.close()
    lives.close()
    assert ends == [False] * 4 + [True]
    with pytest.raises(UserError, match="backend='vector'"):
        make_env(game, EnvConfig(backend="gymnasium", terminal_on_life_loss=True), seed=0)
    with pytest.raises(UserError, match="no lives"):
        make_env(resolve_game("MinAtar/Breakout"), EnvConfig(terminal_on_life_loss=True), seed=0)


def test_evaluation_plays_whole_games_whatever_ends_a_training_episode():
    game = resolve_game("Breakout")
    kwargs = dict(
        task_fn=lambda f: 0,
        episodes=2,
        frames=10**6,
        epsilon=1.0,
        seed=3,
        device=torch.device("cpu"),
    )
    policy = lambda obs, task: torch.zeros(obs.shape[0], 18)  # noqa: E731
    scores = [
        evaluate_game(policy, game, EnvConfig(num_envs=2, terminal_on_life_loss=life), **kwargs)
        for life in (False, True)
    ]
    assert scores[0].returns == scores[1].returns and scores[0].episodes == 2
