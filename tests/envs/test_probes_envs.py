"""Probe environments behave as specified (closed-form rewards, flags and values)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rollax.envs import make, registered_ids
from rollax.networks.mlp import build_policy
from rollax.rollout.collector import init_rollout, make_collect_fn

PROBE_IDS = [
    "rollax/ProbeConstant-v0",
    "rollax/ProbeObsReward-v0",
    "rollax/ProbeTwoStep-v0",
    "rollax/ProbeActionReward-v0",
    "rollax/ProbeContinuousAction-v0",
    "rollax/ProbeTruncation-v0",
]
NUM_ENVS = 16


def batch_reset(env, params, seed=0):
    keys = jax.random.split(jax.random.key(seed), NUM_ENVS)
    return jax.vmap(env.reset, in_axes=(0, None))(keys, params)


def batch_step(env, params, state, actions, seed=1):
    keys = jax.random.split(jax.random.key(seed), NUM_ENVS)
    obs, state, reward, terminated, truncated, info = jax.vmap(
        env.step, in_axes=(0, 0, 0, None)
    )(keys, state, actions, params)
    return obs, state, np.asarray(reward), np.asarray(terminated), np.asarray(truncated), info


def test_every_probe_is_registered():
    assert set(PROBE_IDS) <= set(registered_ids())


@pytest.mark.parametrize("env_id", PROBE_IDS)
def test_observations_lie_in_the_observation_space(env_id):
    env, params = make(env_id)
    obs, state = batch_reset(env, params)
    assert obs.shape == (NUM_ENVS, 1) and obs.dtype == jnp.float32
    space = env.observation_space(params)
    actions = jax.vmap(env.action_space(params).sample)(jax.random.split(jax.random.key(2), NUM_ENVS))
    _, _, _, _, _, info = batch_step(env, params, state, actions)
    for o in (*obs, *info["final_observation"]):
        assert bool(space.contains(o))


def test_constant_probe():
    env, params = make("rollax/ProbeConstant-v0")
    obs, state = batch_reset(env, params)
    np.testing.assert_array_equal(obs, 0.0)
    _, _, reward, terminated, truncated, _ = batch_step(env, params, state, jnp.zeros(NUM_ENVS, int))
    np.testing.assert_array_equal(reward, 1.0)
    assert terminated.all() and not truncated.any()


def test_observation_reward_probe():
    env, params = make("rollax/ProbeObsReward-v0")
    obs, state = batch_reset(env, params)
    assert set(np.asarray(obs).ravel()) == {-1.0, 1.0}  # both signs occur among 16 resets
    _, _, reward, terminated, truncated, _ = batch_step(env, params, state, jnp.ones(NUM_ENVS, int))
    np.testing.assert_array_equal(reward, np.asarray(obs)[:, 0])
    assert terminated.all() and not truncated.any()


def test_two_step_probe_discounts_its_single_reward():
    env, params = make("rollax/ProbeTwoStep-v0")
    obs, state = batch_reset(env, params)
    actions = jnp.zeros(NUM_ENVS, int)
    obs1, state, reward1, terminated1, truncated1, _ = batch_step(env, params, state, actions)
    _, _, reward2, terminated2, truncated2, _ = batch_step(env, params, state, actions, seed=3)
    np.testing.assert_array_equal(obs, 0.0)
    np.testing.assert_array_equal(obs1, 1.0)  # the second state is distinguishable
    np.testing.assert_array_equal(reward1, 0.0)
    np.testing.assert_array_equal(reward2, 1.0)
    assert not terminated1.any() and terminated2.all()
    assert not truncated1.any() and not truncated2.any()
    gamma = 0.9
    value_of_first_state = reward1[0] + gamma * reward2[0]
    assert value_of_first_state == pytest.approx(gamma)


@pytest.mark.parametrize("action", [0, 1])
def test_action_reward_probe_rewards_the_observed_sign(action):
    env, params = make("rollax/ProbeActionReward-v0")
    obs, state = batch_reset(env, params)
    signs = np.asarray(obs)[:, 0]
    assert set(signs) == {-1.0, 1.0}
    _, _, reward, terminated, _, _ = batch_step(env, params, state, jnp.full(NUM_ENVS, action))
    expected = np.where(action == (signs > 0).astype(int), 1.0, -1.0)
    np.testing.assert_array_equal(reward, expected)
    assert terminated.all()


def test_continuous_action_probe_reward_is_negative_squared_error():
    env, params = make("rollax/ProbeContinuousAction-v0")
    space = env.action_space(params)
    assert space.shape == (1,) and space.low == -1.0 and space.high == 1.0
    _, state = batch_reset(env, params)
    actions = np.linspace(-2.0, 2.0, NUM_ENVS, dtype=np.float32)[:, None]
    _, _, reward, terminated, _, _ = batch_step(env, params, state, jnp.asarray(actions))
    expected = [-((min(max(a, -1.0), 1.0) - 0.5) ** 2) for a in actions[:, 0]]
    np.testing.assert_allclose(reward, expected, rtol=1e-6)
    assert terminated.all()
    _, moved = make("rollax/ProbeContinuousAction-v0", target=-0.25)
    _, _, reward, _, _, _ = batch_step(env, moved, state, jnp.asarray(actions))
    np.testing.assert_allclose(reward, [-((min(max(a, -1.0), 1.0) + 0.25) ** 2) for a in actions[:, 0]])


def test_truncation_probe_never_terminates_and_truncates_every_five_steps():
    env, params = make("rollax/ProbeTruncation-v0")
    _, state = batch_reset(env, params)
    truncated_at = []
    for t in range(1, 13):
        _, state, reward, terminated, truncated, _ = batch_step(
            env, params, state, jnp.zeros(NUM_ENVS, int), seed=t
        )
        np.testing.assert_array_equal(reward, 1.0)
        assert not terminated.any()
        assert truncated.all() or not truncated.any()
        if truncated.all():
            truncated_at.append(t)
    assert truncated_at == [5, 10]


def test_truncation_probe_separates_bootstrapping_from_treating_truncation_as_terminal():
    """A constant value c fitted to one-step targets from collected data: with bootstrapping
    (mask by `terminated`) the fixed point is 1/(1-gamma); masking by `dones` gives less."""
    env, params = make("rollax/ProbeTruncation-v0")
    model = build_policy(
        env.observation_space(params), env.action_space(params), hidden_sizes=(8,), rngs=nnx.Rngs(0)
    )
    graphdef, state = nnx.split(model)
    rollout_state = init_rollout(env, params, jax.random.key(0), 2)
    _, trajectory = make_collect_fn(env, params, 20)(graphdef, state, rollout_state, jax.random.key(1))
    gamma = 0.9

    def fixed_point(ends):  # c = mean(r + gamma * c * (1 - ends)) solved for c
        return np.mean(trajectory.rewards) / (1.0 - gamma * np.mean(1.0 - np.asarray(ends)))

    assert fixed_point(trajectory.terminated) == pytest.approx(1.0 / (1.0 - gamma))
    assert fixed_point(trajectory.dones) == pytest.approx(1.0 / (1.0 - gamma * 0.8))


def test_unknown_probe_param_raises():
    with pytest.raises(ValueError, match="horizon"):
        make("rollax/ProbeConstant-v0", horizon=3)
    _, params = make("rollax/ProbeTruncation-v0", max_steps_in_episode=3)
    assert params.max_steps_in_episode == 3
