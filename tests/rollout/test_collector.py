"""The jitted collector against a plain Python loop that steps each env on its own with the
same keys (the key use documented in `rollax.rollout.collector`), and `evaluate` likewise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rollax.envs import make
from rollax.networks.mlp import build_policy
from rollax.rollout.collector import collect, init_rollout, make_collect_fn, make_evaluate_fn
from rollax.rollout.trajectory import Trajectory

TOL = {"rtol": 1e-5, "atol": 1e-5}


def env_slice(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def numpy_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def reference_rollout(model, env, params, reset_key, chunk_keys, num_envs, num_steps):
    """Python loop over chunks, steps and envs; returns a dict of `[chunks * T, N, ...]` arrays."""
    action_space = env.action_space(params)
    discrete = not hasattr(action_space, "low")
    reset_keys = jax.random.split(reset_key, num_envs)
    obs, states = zip(*[env.reset(reset_keys[i], params) for i in range(num_envs)], strict=True)
    obs, states = [np.asarray(o) for o in obs], list(states)
    running_return, running_length = [0.0] * num_envs, [0] * num_envs
    rows = []
    for chunk_key in chunk_keys:
        for step_key in jax.random.split(chunk_key, num_steps):
            action_key, env_key = jax.random.split(step_key)
            env_keys = jax.random.split(env_key, num_envs)
            output = model(jnp.asarray(np.stack(obs)))
            policy_output, value = output if isinstance(output, tuple) else (output, None)
            if discrete:
                logits = np.asarray(policy_output.logits)
                actions = np.asarray(jax.random.categorical(action_key, policy_output.logits, axis=-1))
                log_probs = numpy_log_softmax(logits)[np.arange(num_envs), actions]
                env_actions = actions
            else:
                mean, log_std = np.asarray(policy_output.mean), np.asarray(policy_output.log_std)
                noise = np.asarray(jax.random.normal(action_key, mean.shape))
                actions = mean + np.exp(log_std) * noise
                log_probs = np.sum(-0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi), axis=-1)
                env_actions = np.clip(actions, action_space.low, action_space.high)
            row = {"observations": np.stack(obs), "actions": actions, "log_probs": log_probs}
            row["values"] = np.zeros(num_envs) if value is None else np.asarray(value)
            final_obs, flags = [], []
            for i in range(num_envs):
                next_obs, states[i], reward, terminated, truncated, info = env.step(
                    env_keys[i], states[i], env_actions[i], params
                )
                obs[i] = np.asarray(next_obs)
                final_obs.append(np.asarray(info["final_observation"]))
                flags.append((float(reward), bool(terminated), bool(truncated)))
            rewards, terminated, truncated = (np.array(column) for column in zip(*flags, strict=True))
            row.update(rewards=rewards, terminated=terminated, truncated=truncated)
            bootstrap = None if value is None else model(jnp.asarray(np.stack(final_obs)))[1]
            row["bootstrap_values"] = np.zeros(num_envs) if bootstrap is None else np.asarray(bootstrap)
            row["episode_returns"], row["episode_lengths"] = np.zeros(num_envs), np.zeros(num_envs)
            for i in range(num_envs):
                running_return[i] += rewards[i]
                running_length[i] += 1
                if terminated[i] or truncated[i]:
                    row["episode_returns"][i] = running_return[i]
                    row["episode_lengths"][i] = running_length[i]
                    running_return[i], running_length[i] = 0.0, 0
            rows.append(row)
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def collect_chunks(model, env, params, reset_key, chunk_keys, num_envs, num_steps):
    collect_fn = make_collect_fn(env, params, num_steps)
    graphdef, state = nnx.split(model)
    rollout_state = init_rollout(env, params, reset_key, num_envs)
    chunks = []
    for chunk_key in chunk_keys:
        rollout_state, trajectory = collect_fn(graphdef, state, rollout_state, chunk_key)
        chunks.append(trajectory)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)


def rollout_pair(env_id, env_overrides, num_envs, num_steps, **policy_kwargs):
    env, params = make(env_id, **env_overrides)
    model = build_policy(
        env.observation_space(params), env.action_space(params), hidden_sizes=(8,),
        rngs=nnx.Rngs(3), **policy_kwargs,
    )
    reset_key, *chunk_keys = jax.random.split(jax.random.key(7), 3)  # two chunks: state carries
    ours = collect_chunks(model, env, params, reset_key, chunk_keys, num_envs, num_steps)
    expected = reference_rollout(model, env, params, reset_key, chunk_keys, num_envs, num_steps)
    return ours, expected


@pytest.fixture(scope="module")
def cartpole():
    return rollout_pair("CartPole-v1", {"max_steps_in_episode": 15}, num_envs=4, num_steps=20)


@pytest.fixture(scope="module")
def pendulum():
    return rollout_pair(
        "Pendulum-v1", {"max_steps_in_episode": 7}, num_envs=3, num_steps=10, log_std_init=1.0
    )


def assert_trajectories_equal(ours: Trajectory, expected: dict):
    for name in ("terminated", "truncated"):
        np.testing.assert_array_equal(getattr(ours, name), expected[name], err_msg=name)
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(ours, name), value, **TOL, err_msg=name)


def test_cartpole_matches_python_loop(cartpole):
    ours, expected = cartpole
    assert ours.observations.shape == (40, 4, 4) and ours.actions.dtype == jnp.int32
    # the comparison covers both kinds of episode end and carries across the two chunks
    assert expected["terminated"].any() and expected["truncated"].any()
    assert_trajectories_equal(ours, expected)


def test_pendulum_matches_python_loop_with_unclipped_actions(pendulum):
    ours, expected = pendulum
    assert ours.actions.shape == (20, 3, 1)
    assert np.abs(ours.actions).max() > 2.0  # clipping to the Box bounds was exercised
    assert expected["truncated"].any()
    assert_trajectories_equal(ours, expected)


@pytest.mark.parametrize("fixture", ["cartpole", "pendulum"])
def test_truncated_steps_bootstrap_from_the_final_observation(fixture, request):
    """At truncation the next stored observation is the reset one; the bootstrap must not use it."""
    ours, _ = request.getfixturevalue(fixture)
    t, i = np.nonzero(ours.truncated[:-1])
    assert len(t) > 0
    assert not np.allclose(ours.bootstrap_values[t, i], ours.values[t + 1, i])
    continuing = ~ours.dones[:-1]
    np.testing.assert_allclose(
        ours.bootstrap_values[:-1][continuing], ours.values[1:][continuing], **TOL
    )


def test_actor_only_model_gives_zero_values():
    ours, expected = rollout_pair(
        "CartPole-v1", {"max_steps_in_episode": 15}, num_envs=2, num_steps=6, critic=False
    )
    np.testing.assert_array_equal(ours.values, 0.0)
    np.testing.assert_array_equal(ours.bootstrap_values, 0.0)
    assert_trajectories_equal(ours, expected)


def reference_greedy_returns(model, env, params, key, num_envs, max_steps):
    reset_key, steps_key = jax.random.split(key)
    reset_keys = jax.random.split(reset_key, num_envs)
    step_keys = jax.random.split(steps_key, max_steps)
    returns = []
    for i in range(num_envs):
        obs, state = env.reset(reset_keys[i], params)
        total = 0.0
        for t in range(max_steps):
            distribution = model(obs[None])[0]
            action = int(np.argmax(distribution.logits[0]))
            env_key = jax.random.split(step_keys[t], num_envs)[i]
            obs, state, reward, terminated, truncated, _ = env.step(env_key, state, action, params)
            total += float(reward)
            if terminated or truncated:
                break
        returns.append(total)
    return np.array(returns)


def test_evaluate_matches_greedy_python_loop():
    env, params = make("CartPole-v1", max_steps_in_episode=30)
    model = build_policy(
        env.observation_space(params), env.action_space(params), hidden_sizes=(8,), rngs=nnx.Rngs(5)
    )
    graphdef, state = nnx.split(model)
    key = jax.random.key(11)
    ours = make_evaluate_fn(env, params, num_envs=3, max_steps=40)(graphdef, state, key)
    expected = reference_greedy_returns(model, env, params, key, num_envs=3, max_steps=40)
    np.testing.assert_allclose(ours, expected)


@pytest.mark.parametrize(
    ("env_id", "max_steps", "expected_return"),
    [("rollax/ProbeConstant-v0", 4, 1.0), ("rollax/ProbeTruncation-v0", 20, 5.0),
     ("rollax/ProbeTruncation-v0", 3, 3.0)],
)
def test_evaluate_counts_one_episode_per_env(env_id, max_steps, expected_return):
    env, params = make(env_id)
    model = build_policy(env.observation_space(params), env.action_space(params), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    returns = make_evaluate_fn(env, params, 2, max_steps)(graphdef, state, jax.random.key(0))
    np.testing.assert_array_equal(returns, [expected_return, expected_return])


def test_bad_sizes_raise():
    env, params = make("CartPole-v1")
    with pytest.raises(ValueError, match="num_envs"):
        init_rollout(env, params, jax.random.key(0), 0)
    model = build_policy(env.observation_space(params), env.action_space(params), rngs=nnx.Rngs(0))
    rollout_state = init_rollout(env, params, jax.random.key(0), 2)
    with pytest.raises(ValueError, match="num_steps"):
        collect(model, env, params, rollout_state, jax.random.key(1), 0)


def test_collect_vmaps_over_seeds():
    """Seeds run as `jax.vmap` over the whole training function (DESIGN.md); each seed's slice
    must equal collecting that seed alone."""
    env, params = make("CartPole-v1")
    model = build_policy(
        env.observation_space(params), env.action_space(params), hidden_sizes=(8,), rngs=nnx.Rngs(0)
    )
    graphdef, state = nnx.split(model)

    def run(seed_key):
        reset_key, collect_key = jax.random.split(seed_key)
        start = init_rollout(env, params, reset_key, 2)
        return collect(nnx.merge(graphdef, state), env, params, start, collect_key, 5)[1]

    seed_keys = jax.random.split(jax.random.key(0), 2)
    batched = jax.jit(jax.vmap(run))(seed_keys)
    assert batched.observations.shape == (2, 5, 2, 4)
    for seed in range(2):
        alone = jax.jit(run)(seed_keys[seed])
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, **TOL), env_slice(batched, seed), alone
        )
