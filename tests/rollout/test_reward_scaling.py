"""Reward normalisation in the collector against a plain NumPy loop of Stable-Baselines3's
`VecNormalize` definition, over episodes that terminate and are truncated, across two
collect calls; the episode returns stay raw."""

import jax
import numpy as np
from flax import nnx

from rollax.envs import make
from rollax.networks.mlp import build_policy
from rollax.rollout.collector import collect, init_rollout
from rollax.rollout.reward_scaling import RewardScaling

GAMMA, CLIP = 0.9, 1.5


def numpy_scaled_rewards(rewards, dones):
    """SB3: per env `ret = ret * gamma + r`; RunningMeanStd of `ret` over the env batch (from
    mean 0, var 1, count 1e-4); `r / sqrt(var + 1e-8)` clipped; `ret = 0` where done."""
    num_envs = rewards.shape[1]
    returns, mean, var, count = np.zeros(num_envs), 0.0, 1.0, 1e-4
    scaled = np.zeros_like(rewards, dtype=np.float64)
    for t in range(rewards.shape[0]):
        returns = returns * GAMMA + rewards[t]
        batch_mean, batch_var, total = returns.mean(), returns.var(), count + num_envs
        delta = batch_mean - mean
        m2 = var * count + batch_var * num_envs + delta**2 * count * num_envs / total
        mean, var, count = mean + delta * num_envs / total, m2 / total, total
        scaled[t] = np.clip(rewards[t] / np.sqrt(var + 1e-8), -CLIP, CLIP)
        returns[dones[t]] = 0.0
    return scaled


def rollout(env, params, model, scaling):
    state = init_rollout(env, params, jax.random.key(0), 4, scaling)
    chunks = []
    for key in jax.random.split(jax.random.key(1), 2):  # the scaler's state carries over
        state, trajectory = jax.jit(collect, static_argnums=(1, 5))(model, env, params, state, key, 30)
        chunks.append(trajectory)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)


def test_scaled_rewards_match_the_numpy_loop_over_terminations_and_truncations():
    env, params = make("CartPole-v1", max_steps_in_episode=12)
    model = build_policy(env.observation_space(params), env.action_space(params), hidden_sizes=(8,),
                         rngs=nnx.Rngs(0))
    raw = rollout(env, params, model, None)
    scaled = rollout(env, params, model, RewardScaling(GAMMA, CLIP))
    assert raw.terminated.any() and raw.truncated.any()
    np.testing.assert_array_equal(scaled.actions, raw.actions)  # scaling changes no decision
    expected = numpy_scaled_rewards(raw.rewards, raw.dones)
    assert (np.abs(expected) == CLIP).any() and (np.abs(expected) < CLIP).any()
    np.testing.assert_allclose(scaled.rewards, expected, rtol=1e-5)
    np.testing.assert_array_equal(scaled.episode_returns, raw.episode_returns)  # raw returns
