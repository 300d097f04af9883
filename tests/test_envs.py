"""The environment layer on real ROMs and real MinAtar: shapes, dtypes, episode handling."""

import numpy as np
import pytest

from envs.games import UnknownGameError
from envs.make import make_env
from envs.vector import EnvConfig

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
            assert (step.episode_return[done] >= 0).all()  # raw Breakout points, unclipped
            prev = step.obs
        assert ended >= 1 and firsts >= 1
    finally:
        env.close()


def test_atari_bilinear_and_area_resizes_agree_roughly():
    a = make_env("Pong", EnvConfig(num_envs=1, resize="bilinear"), seed=3)
    b = make_env("Pong", EnvConfig(num_envs=1, resize="area"), seed=3)
    try:
        fa, fb = a.reset()[0, -1].astype(int), b.reset()[0, -1].astype(int)
        assert np.abs(fa - fb).mean() < 10  # same screen, different interpolation
    finally:
        a.close()
        b.close()


def test_atari_raw_rewards_are_reported_unclipped():
    # Pong gives -1/+1 only; Boxing gives +1/+2: play until a reward of magnitude > 1 appears.
    env = make_env("Boxing", EnvConfig(num_envs=1), seed=0)
    try:
        env.reset()
        rng = np.random.default_rng(0)
        rewards = [env.step(rng.integers(0, 18, 1)).reward[0] for _ in range(1500)]
        assert max(abs(r) for r in rewards) >= 1
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
