"""Gymnasium -> rollax: HostCollector trajectories against plain loops over Gymnasium's own envs."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rollax.networks.distributions import GaussianParams
from rollax.rollout.host_collector import HostCollector, make_host

VALUE_WEIGHTS = np.array([1.0, -2.0, 3.0, 0.5], np.float32)


class FixedPolicy(nnx.Module):
    """Actor-critic with known outputs: constant logits (or Gaussian) and V(obs) = obs @ w."""

    def __init__(self, logits, weights, gaussian=False):
        self.logits = nnx.Param(jnp.asarray(logits, jnp.float32))
        self.weights = nnx.Param(jnp.asarray(weights, jnp.float32))
        self.gaussian = gaussian

    def __call__(self, obs):
        batch_logits = jnp.broadcast_to(self.logits[...], (obs.shape[0], self.logits.shape[0]))
        value = obs @ self.weights[...]
        if self.gaussian:  # mean = logits, log_std = log(3): samples leave Pendulum's [-2, 2]
            return GaussianParams(batch_logits, jnp.full_like(batch_logits, np.log(3.0))), value
        return batch_logits, value


def replay_with_gymnasium(gym_id, num_envs, seed, actions, action_fn=lambda a: a, **kwargs):
    """Step N separate `gymnasium.make` envs with the recorded actions `[T, N, ...]`; returns
    per-step observations, true next observations, rewards, flags and finished-episode stats."""
    T = actions.shape[0]
    out = {
        k: [[None] * num_envs for _ in range(T)]
        for k in ("obs", "next", "rew", "term", "trunc", "ep_ret", "ep_len")
    }
    for i in range(num_envs):
        env = gymnasium.make(gym_id, **kwargs)
        obs, _ = env.reset(seed=seed + i)
        ep_ret, ep_len = 0.0, 0
        for t in range(T):
            out["obs"][t][i] = obs
            obs, reward, term, trunc, _ = env.step(action_fn(actions[t, i]))
            ep_ret, ep_len = ep_ret + reward, ep_len + 1
            out["next"][t][i], out["rew"][t][i] = obs, reward
            out["term"][t][i], out["trunc"][t][i] = term, trunc
            out["ep_ret"][t][i] = ep_ret if term or trunc else 0.0
            out["ep_len"][t][i] = ep_len if term or trunc else 0
            if term or trunc:
                obs, _ = env.reset()
                ep_ret, ep_len = 0.0, 0
    return {k: np.array(v) for k, v in out.items()}


def concat(trajectories):
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *trajectories)


@pytest.fixture(scope="module")
def cartpole_policy():
    return FixedPolicy([0.3, -0.2], VALUE_WEIGHTS)


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_cartpole_matches_a_plain_gymnasium_loop_and_bootstraps_truncation(mode, cartpole_policy):
    n, seed, limit = 3, 11, 6
    collector = HostCollector(
        "gymnasium:CartPole-v1", n, seed=seed, autoreset_mode=mode,
        vectorization_mode="sync", max_episode_steps=limit,
    )  # fmt: skip
    # Two calls: episodes (and NEXT_STEP's carried transitions) continue across them.
    traj = concat([collector.collect(cartpole_policy, jax.random.key(k), 10) for k in range(2)])
    assert traj.observations.shape == (20, n, 4) and traj.actions.dtype == np.int32
    ref = replay_with_gymnasium(
        "CartPole-v1", n, seed, np.asarray(traj.actions), max_episode_steps=limit
    )
    np.testing.assert_allclose(traj.observations, ref["obs"], rtol=1e-6)
    np.testing.assert_allclose(traj.rewards, ref["rew"])
    np.testing.assert_array_equal(traj.terminated, ref["term"])
    np.testing.assert_array_equal(traj.truncated, ref["trunc"])
    assert ref["trunc"].any()
    # V is a known function of the observation: bootstrap = V(true pre-reset next obs).
    np.testing.assert_allclose(traj.values, ref["obs"] @ VALUE_WEIGHTS, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        traj.bootstrap_values, ref["next"] @ VALUE_WEIGHTS, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(traj.episode_returns, ref["ep_ret"])
    np.testing.assert_array_equal(traj.episode_lengths, ref["ep_len"])
    # Log-probs of the constant logits, computed independently.
    log_softmax = np.array([0.3, -0.2]) - np.log(np.exp(0.3) + np.exp(-0.2))
    np.testing.assert_allclose(traj.log_probs, log_softmax[np.asarray(traj.actions)], rtol=1e-5)
    collector.close()


def test_default_vector_entry_point_keeps_time_consistent(cartpole_policy):
    collector = make_host("gymnasium:CartPole-v1", 4, seed=0, max_episode_steps=5)
    traj = collector.collect(cartpole_policy, jax.random.key(0), 12)
    dones = np.asarray(traj.dones)
    assert dones.any()
    obs = np.asarray(traj.observations)
    # Where no episode ended, the next row's observation is this row's next observation.
    not_done = ~dones[:-1]
    np.testing.assert_allclose(
        np.asarray(traj.bootstrap_values)[:-1][not_done], (obs[1:] @ VALUE_WEIGHTS)[not_done],
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    # CartPoleVectorEnv's reset steps (reward 0) are never recorded as transitions.
    np.testing.assert_array_equal(np.asarray(traj.rewards), 1.0)
    # An episode's length is the number of recorded steps since the env's previous episode end.
    lengths = np.asarray(traj.episode_lengths)
    for i in range(4):
        ends = np.flatnonzero(dones[:, i])
        np.testing.assert_array_equal(lengths[ends, i], np.diff(ends, prepend=-1))


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_continuous_actions_are_stored_unclipped_and_sent_clipped(mode):
    n, seed = 2, 4
    collector = HostCollector(
        "gymnasium:Pendulum-v1", n, seed=seed, autoreset_mode=mode, max_episode_steps=3
    )
    policy = FixedPolicy([0.5], [1.0, 0.0, -1.0], gaussian=True)
    traj = collector.collect(policy, jax.random.key(1), 7)
    actions = np.asarray(traj.actions)
    assert actions.shape == (7, n, 1) and np.abs(actions).max() > 2.0
    ref = replay_with_gymnasium(
        "Pendulum-v1", n, seed, actions, lambda a: np.clip(a, -2.0, 2.0), max_episode_steps=3
    )
    np.testing.assert_allclose(traj.observations, ref["obs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(traj.rewards, ref["rew"], rtol=1e-5)
    np.testing.assert_array_equal(traj.truncated, ref["trunc"])
    np.testing.assert_allclose(
        traj.bootstrap_values, ref["next"] @ np.array([1.0, 0.0, -1.0]), rtol=1e-5, atol=1e-5
    )
    z = (actions - 0.5) / 3.0
    expected = (-0.5 * z**2 - np.log(3.0) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(traj.log_probs, expected, rtol=1e-5)


def test_spaces_are_gymnax_spaces():
    from gymnax.environments import spaces

    collector = HostCollector("gymnasium:Pendulum-v1", 1)
    assert isinstance(collector.observation_space, spaces.Box)
    assert isinstance(collector.action_space, spaces.Box)
    np.testing.assert_allclose(collector.action_space.high, [2.0])
    assert isinstance(HostCollector("CartPole-v1", 1).action_space, spaces.Discrete)


def test_evaluate_runs_a_quota_of_greedy_episodes(cartpole_policy):
    collector = HostCollector("gymnasium:CartPole-v1", 2, max_episode_steps=4)
    returns = collector.evaluate(cartpole_policy, 5)
    # Greedy = always push left; the pole survives 4 steps, so every episode is truncated at 4.
    np.testing.assert_array_equal(returns, np.full(5, 4.0))


def test_unknown_id_is_a_value_error_with_close_matches():
    with pytest.raises(ValueError, match=r"'CartPol-v1'.*CartPole-v1"):
        HostCollector("gymnasium:CartPol-v1", 2)


class DictObsEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.Dict({"a": gymnasium.spaces.Discrete(2)})
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return {"a": 0}, {}


class EndlessEnv(gymnasium.Env):
    """Reward 1 per step, never terminated, no time limit of its own."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.zeros(4, np.float32), 1.0, False, False, {}


class ExplodingEnv(EndlessEnv):
    def step(self, action):
        raise RuntimeError("exploding env step")


gymnasium.register("TestDictObs-v0", entry_point=DictObsEnv)
gymnasium.register("TestExploding-v0", entry_point=ExplodingEnv)


def test_dict_observation_space_is_a_value_error_naming_the_space():
    with pytest.raises(ValueError, match=r"observation space Dict\('a': Discrete\(2\)\)"):
        HostCollector("gymnasium:TestDictObs-v0", 1)


def test_env_errors_propagate_with_the_env_traceback(cartpole_policy):
    collector = HostCollector("gymnasium:TestExploding-v0", 1)
    with pytest.raises(RuntimeError, match="exploding env step") as excinfo:
        collector.collect(cartpole_policy, jax.random.key(0), 2)
    assert any(
        entry.name == "step" and "test_host_collector" in str(entry.path)
        for entry in excinfo.traceback
    )


def test_bad_arguments_are_value_errors(cartpole_policy):
    with pytest.raises(ValueError, match="num_envs"):
        HostCollector("gymnasium:CartPole-v1", 0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        HostCollector("gymnasium:CartPole-v1", 1, autoreset_mode="disabled")
    with pytest.raises(ValueError, match="not a host env id"):
        make_host("CartPole-v1", 1)
    with pytest.raises(ValueError, match="num_steps"):
        HostCollector("gymnasium:CartPole-v1", 1).collect(cartpole_policy, jax.random.key(0), 0)


def test_evaluation_of_an_env_that_never_ends_is_capped_with_a_warning(cartpole_policy):
    gymnasium.register("EndlessTest-v0", entry_point=EndlessEnv)  # no max_episode_steps
    collector = HostCollector("gymnasium:EndlessTest-v0", 2)
    with pytest.warns(RuntimeWarning, match=r"3 of 3 evaluation episodes of 'EndlessTest-v0' ran "
                      r"7 steps without ending and were cut there"):
        returns = collector.evaluate(cartpole_policy, 3, max_episode_steps=7)
    np.testing.assert_array_equal(returns, np.full(3, 7.0))  # each episode's return so far
    with pytest.warns(RuntimeWarning, match="ran 10000 steps"):  # the documented default cap
        assert collector.evaluate(cartpole_policy, 1).tolist() == [10000.0]


def test_a_nan_reward_from_a_gymnasium_env_is_named(cartpole_policy):
    class NaNReward(EndlessEnv):
        def step(self, action):
            return np.zeros(4, np.float32), float("nan"), True, False, {}

    gymnasium.register("NaNRewardTest-v0", entry_point=NaNReward)
    collector = HostCollector("gymnasium:NaNRewardTest-v0", 2)
    with pytest.raises(ValueError, match="Gymnasium env 'NaNRewardTest-v0' returned reward nan"):
        collector.collect(cartpole_policy, jax.random.key(0), 3)


def test_evaluation_episodes_are_capped_for_jittable_and_gymnasium_envs():
    from rollax.presets import load_experiment
    from rollax.run.plan import make_plan

    # a jittable env's evaluation scans every step up to its limit: 10**8 would run for hours
    long = load_experiment("cartpole_ppo", ["env.params.max_steps_in_episode=100000000"])
    with pytest.warns(RuntimeWarning, match=r"episodes of 'CartPole-v1' end after 10000 steps "
                      r"\(eval.max_episode_steps\), before its own limit of 100000000"):
        assert make_plan(long).eval_max_steps == 10_000
    # the env's own limit when it comes first, the cap when it is set lower
    assert make_plan(load_experiment("cartpole_ppo")).eval_max_steps == 500
    assert make_plan(load_experiment("cartpole_ppo", ["eval.max_episode_steps=20000"])) \
        .eval_max_steps == 500
    assert make_plan(load_experiment("gymnasium_cartpole_ppo", ["eval.max_episode_steps=20000"])) \
        .eval_max_steps == 500
    gymnasium.register("EndlessPlanTest-v0", entry_point=EndlessEnv)
    endless = load_experiment("gymnasium_cartpole_ppo", ["env.id='gymnasium:EndlessPlanTest-v0'"])
    assert make_plan(endless).eval_max_steps == 10_000
    assert make_plan(endless.replace(eval={"max_episode_steps": 50})).eval_max_steps == 50
