"""rollax -> Gymnasium: `gymnasium.make("rollax/...")` and `make_vec` against gymnax's own env."""

import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import rollax.envs
from rollax.envs.gymnasium_adapter import gymnasium_id, register_gymnasium_ids

# Gymnasium's own Pendulum-v1 triggers this advice too; it is not a defect of the adapter.
BENIGN_WARNINGS = ("we recommend using a symmetric and normalized space",)


@pytest.mark.parametrize(
    "gym_id",
    [
        "rollax/CartPole-v1",
        "rollax/Pendulum-v1",
        "rollax/Acrobot-v1",
        "rollax/MountainCarContinuous-v0",
        "rollax/Breakout-MinAtar-v0",
        "rollax/Catch-bsuite-v0",  # declares int32 observations, emits float32: cast to fit
        "rollax/FrozenLake-misc-v0",  # Discrete observation space
    ],
)
def test_check_env_passes_without_real_warnings(gym_id):
    env = gymnasium.make(gym_id).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    problems = [str(w.message) for w in caught if not any(b in str(w.message) for b in BENIGN_WARNINGS)]
    assert problems == []
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_ids_follow_the_naming_rule_and_every_registry_id_is_registered():
    assert gymnasium_id("CartPole-v1") == "rollax/CartPole-v1"
    assert gymnasium_id("Catch-bsuite") == "rollax/Catch-bsuite-v0"
    assert gymnasium_id("rollax/Foo-v3") == "rollax/Foo-v3"
    for env_id in rollax.envs.registered_ids():
        assert gymnasium_id(env_id) in gymnasium.registry


def test_ids_registered_later_are_gymnasium_ids_at_once():
    env, params = rollax.envs.make("CartPole-v1", max_steps_in_episode=3)
    rollax.envs.register("rollax/LateCartPole-v0", lambda: (env, params), overwrite=True)
    assert "rollax/LateCartPole-v0" in gymnasium.registry  # register() registers it with Gymnasium
    assert register_gymnasium_ids() == []  # idempotent
    late = gymnasium.make("rollax/LateCartPole-v0")
    late.reset(seed=0)
    truncated = [late.step(0)[3] for _ in range(3)]
    assert truncated == [False, False, True]


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_single_env_matches_gymnax_step_with_the_documented_keys(env_id):
    gym_env = gymnasium.make(gymnasium_id(env_id), max_steps_in_episode=12)
    gymnax_env, params = rollax.envs.make(env_id, max_steps_in_episode=12)
    gym_env.action_space.seed(0)
    obs, _ = gym_env.reset(seed=7)
    key = jax.random.key(7)
    key, sub = jax.random.split(key)
    ref_obs, state = gymnax_env.reset(sub, params)
    np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
    for _ in range(12):
        action = gym_env.action_space.sample()
        obs, reward, terminated, truncated, _ = gym_env.step(action)
        key, sub = jax.random.split(key)
        _, state, ref_reward, ref_term, ref_trunc, info = gymnax_env.step(
            sub, state, jnp.asarray(action), params
        )
        np.testing.assert_allclose(obs, info["final_observation"], rtol=1e-5, atol=1e-6)
        assert isinstance(reward, float) and isinstance(terminated, bool)
        assert reward == pytest.approx(float(np.squeeze(ref_reward)), rel=1e-6)
        assert (terminated, truncated) == (bool(ref_term), bool(ref_trunc))
        if terminated or truncated:
            break
    assert truncated or terminated


@pytest.fixture(scope="module")
def cartpole_reference():
    env, params = rollax.envs.make("CartPole-v1", max_steps_in_episode=4)
    return env, params, jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))


def test_vector_same_step_matches_vmapped_gymnax_step(cartpole_reference):
    env, params, step_batch = cartpole_reference
    n = 3
    vec = gymnasium.make_vec(
        "rollax/CartPole-v1", num_envs=n, autoreset_mode="same_step", max_steps_in_episode=4
    )
    assert vec.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = vec.reset(seed=3)
    key, sub = jax.random.split(jax.random.key(3))
    ref_obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(sub, n), params)
    np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(1)
    saw_done = False
    for _ in range(10):
        actions = rng.integers(0, 2, n)
        obs, rewards, terminated, truncated, info = vec.step(actions)
        key, sub = jax.random.split(key)
        ref_obs, state, ref_rew, ref_term, ref_trunc, ref_info = step_batch(
            jax.random.split(sub, n), state, jnp.asarray(actions), params
        )
        np.testing.assert_allclose(obs, ref_obs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rewards, ref_rew)
        np.testing.assert_array_equal(terminated, ref_term)
        np.testing.assert_array_equal(truncated, ref_trunc)
        done = terminated | truncated
        if done.any():
            saw_done = True
            np.testing.assert_array_equal(info["_final_obs"], done)
            for i in np.flatnonzero(done):
                np.testing.assert_allclose(info["final_obs"][i], ref_info["final_observation"][i])
    assert saw_done


def test_vector_next_step_matches_a_per_env_gymnax_loop(cartpole_reference):
    env, params, _ = cartpole_reference
    n = 2
    vec = gymnasium.make_vec("rollax/CartPole-v1", num_envs=n, max_steps_in_episode=4)
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=5)
    key, sub = jax.random.split(jax.random.key(5))
    states, pending = [], [False] * n
    for i, k in enumerate(jax.random.split(sub, n)):
        ref_obs, state = env.reset_env(k, params)
        np.testing.assert_allclose(obs[i], ref_obs, rtol=1e-5, atol=1e-6)
        states.append(state)
    rng = np.random.default_rng(2)
    for _ in range(12):
        actions = rng.integers(0, 2, n)
        obs, rewards, terminated, truncated, _ = vec.step(actions)
        key, sub = jax.random.split(key)
        for i, k in enumerate(jax.random.split(sub, n)):
            key_step, key_reset = jax.random.split(k)
            if pending[i]:  # the reset step: reset observation, reward 0, no flags
                ref_obs, states[i] = env.reset_env(key_reset, params)
                ref = (0.0, False, False)
            else:
                ref_obs, states[i], rew, term, _ = env.step_env(
                    key_step, states[i], jnp.asarray(actions[i]), params
                )
                ref = (float(rew), bool(term), bool(env.is_truncated(states[i], params)))
            np.testing.assert_allclose(obs[i], ref_obs, rtol=1e-5, atol=1e-6)
            assert (rewards[i], terminated[i], truncated[i]) == ref
            pending[i] = ref[1] or ref[2]


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_vector_env_works_under_gymnasium_vector_wrappers(mode):
    from gymnasium.wrappers.vector import NormalizeObservation, RecordEpisodeStatistics

    n, horizon = 2, 5
    vec = gymnasium.make_vec(
        "rollax/Pendulum-v1", num_envs=n, autoreset_mode=mode, max_steps_in_episode=horizon
    )
    # Gymnasium's vector observation wrappers accept only NEXT_STEP (and DISABLED) envs.
    inner = NormalizeObservation(vec) if mode == "next_step" else vec
    wrapped = RecordEpisodeStatistics(inner)
    obs, _ = wrapped.reset(seed=0)
    # Gymnasium 1.3's vector RecordEpisodeStatistics always assumes NEXT_STEP (it drops the
    # first reward after a done), so under SAME_STEP (its own SyncVectorEnv's too) only the
    # first episode's statistics are right; check what it can get right.
    steps = 2 * horizon + 1 if mode == "next_step" else horizon
    running, finished = np.zeros(n), []
    for _ in range(steps):
        obs, rewards, terminated, truncated, info = wrapped.step(wrapped.action_space.sample())
        assert obs.shape == (n, 3) and obs.dtype == np.float32 and np.isfinite(obs).all()
        running += rewards
        done = terminated | truncated
        if done.any():
            assert np.array_equal(info["_episode"], done)
            np.testing.assert_allclose(info["episode"]["r"][done], running[done], rtol=1e-5)
            np.testing.assert_array_equal(info["episode"]["l"][done], horizon)
            finished.append(done.sum())
            running[done] = 0.0
    assert sum(finished) == (2 * n if mode == "next_step" else n)


def test_action_outside_the_space_raises_value_error_naming_it():
    env = gymnasium.make("rollax/CartPole-v1").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"Discrete\(2\)"):
        env.step(2)
    pendulum = gymnasium.make("rollax/Pendulum-v1").unwrapped
    pendulum.reset(seed=0)
    with pytest.raises(ValueError, match="Box"):
        pendulum.step(np.array([3.0], np.float32))
    vec = gymnasium.make_vec("rollax/CartPole-v1", num_envs=2)
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="MultiDiscrete"):
        vec.step(np.array([0, 5]))


def test_unsupported_autoreset_mode_is_a_value_error():
    with pytest.raises(ValueError, match="autoreset_mode"):
        gymnasium.make_vec("rollax/CartPole-v1", num_envs=2, autoreset_mode="Disabled")


def test_seeds_past_32_bits_start_their_own_episodes():
    env = gymnasium.make("rollax/CartPole-v1").unwrapped
    starts = {seed: env.reset(seed=seed)[0] for seed in (0, 1, 2**32, 2**32 + 1, 2**63)}
    # distinct seeds, distinct first observations (jax.random.key alone keeps 32 bits: 2**32 == 0)
    assert len({obs.tobytes() for obs in starts.values()}) == len(starts)
    assert np.array_equal(env.reset(seed=2**32)[0], starts[2**32])  # still reproducible
    vec = gymnasium.make_vec("rollax/CartPole-v1", num_envs=2)
    assert not np.array_equal(vec.reset(seed=2**32)[0], vec.reset(seed=0)[0])
    for bad in (2**64, -1, True, 1.5):
        with pytest.raises(ValueError, match=rf"seed must be an integer in \[0, 2\*\*64\).*got {bad!r}"):
            env.reset(seed=bad)
        with pytest.raises(ValueError, match="seed must be an integer"):
            vec.reset(seed=bad)


@pytest.mark.parametrize("steps", [-5, 0, 2.5, True])
def test_episode_length_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match=rf"max_steps_in_episode' of env .* must be an integer >= 1, got {steps!r}"):
        gymnasium.make("rollax/CartPole-v1", max_steps_in_episode=steps)
    with pytest.raises(ValueError, match="max_steps_in_episode' of env .* must be an integer >= 1"):
        gymnasium.make_vec("rollax/CartPole-v1", num_envs=2, max_episode_steps=steps)


@pytest.mark.parametrize("key, value, why", [
    ("length", -1.0, "must be > 0"), ("gravity", "heavy", "must be a number"),
    ("gravity", float("nan"), "must be finite"), ("x_threshold", True, "must be a number"),
    ("masscart", 0, "must be > 0"),
])
def test_env_params_are_typed_and_ranged_by_their_defaults(key, value, why):
    with pytest.raises(ValueError, match=rf"env param '{key}' of env 'CartPole-v1' {why}"):
        rollax.envs.make("CartPole-v1", **{key: value})


def test_cartpole_masses_carry_into_the_fields_gymnax_derives_from_them():
    _, params = rollax.envs.make("CartPole-v1", masspole=0.5, length=2.0, gravity=3)
    assert params.gravity == 3.0 and isinstance(params.gravity, float)
    # gymnax's own definitions: total_mass = masspole + masscart, polemass_length = masspole * length
    assert params.total_mass == pytest.approx(1.5) and params.polemass_length == pytest.approx(1.0)
