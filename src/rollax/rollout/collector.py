"""The jitted rollout collector (`lax.scan` over `vmap`'d gymnax `step` and the policy) and the
env sources built on it: `EnvRollouts` (time-major `Steps` of N envs) and the evaluation and
pictures every env source shares (`EnvSource`).

`collect` and `evaluate` are pure functions meant to run inside the caller's `jax.jit`
(the training loop jits once around collect + update); `make_collect_fn` and
`make_evaluate_fn` wrap them in their own `jax.jit` for use outside a training loop.

Key use per step t (reproducible by a plain loop): `step_keys = split(key, num_steps)`;
`action_key, env_key = split(step_keys[t])`; actions are sampled for the whole `[N]` batch
with `action_key`, and env i steps with `split(env_key, N)[i]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct
from gymnax.environments import spaces
from gymnax.environments.environment import Environment

from rollax.envs.hooks import env_hooks
from rollax.networks.policy import PolicyOutput, policy_output
from rollax.rollout.batches import Steps
from rollax.rollout.reward_scaling import RewardScaler, RewardScaling
from rollax.rollout.sources import BatchSource
from rollax.rollout.trajectory import Trajectory


@struct.dataclass
class RolloutState:
    """What `collect` carries between calls: the batched env state, the current
    observations `[N, ...]`, the running episode's return `[N]` and length `[N]`, and the
    reward scaler when rewards are normalised (`rollout/reward_scaling.py`)."""

    env_state: Any
    obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array
    reward_scaler: RewardScaler | None = None


def check_action_space(action_space: Any) -> Any:
    """`action_space`, or a ValueError for a space rollax cannot sample (the one check)."""
    if not isinstance(action_space, (spaces.Discrete, spaces.Box)):
        raise ValueError(f"unsupported action space {action_space!r}; expected Discrete or Box")
    return action_space


def checked_action_space(env: Environment, env_params: Any) -> Any:
    """The env's action space, checked."""
    return check_action_space(env.action_space(env_params))


def act(model: Any, observations: jax.Array, action_space: Any) -> PolicyOutput:
    """`model(observations)` as a `PolicyOutput`; the action space reads a model that returns
    a raw `(array, array)` pair (see `policy_output`)."""
    return policy_output(model(observations), isinstance(action_space, spaces.Discrete))


def env_actions(actions: jax.Array, action_space: Any) -> jax.Array:
    """What the env is stepped with: discrete actions as they are, continuous ones clipped to
    the Box (the trajectory keeps the unclipped sample, whose log-prob the trainers use)."""
    if isinstance(action_space, spaces.Box):
        return jnp.clip(actions, action_space.low, action_space.high)
    return actions


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def init_rollout(env: Environment, env_params: Any, key: jax.Array, num_envs: int,
                 reward_scaling: RewardScaling | None = None) -> RolloutState:
    """Reset `num_envs` environments (env i with `split(key, num_envs)[i]`); with
    `reward_scaling`, `collect` hands out scaled rewards."""
    _check_positive("num_envs", num_envs)
    reset_keys = jax.random.split(key, num_envs)
    obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, env_params)
    return RolloutState(
        env_state=env_state,
        obs=obs,
        episode_return=jnp.zeros((num_envs,), jnp.float32),
        episode_length=jnp.zeros((num_envs,), jnp.int32),
        reward_scaler=None if reward_scaling is None else reward_scaling.start(num_envs),
    )


def collect(
    model: nnx.Module,
    env: Environment,
    env_params: Any,
    rollout_state: RolloutState,
    key: jax.Array,
    num_steps: int,
) -> tuple[RolloutState, Trajectory]:
    """Run `num_steps` steps of the policy in every env; returns the carried state and a
    `Trajectory` with fields `[num_steps, N, ...]`.

    Continuous actions are stored unclipped (with their log-prob) and clipped to the Box
    bounds only for the env. `bootstrap_values[t]` is V of the pre-reset next observation.
    With a reward scaler in the state, `rewards` are scaled; the episode returns stay raw.
    """
    _check_positive("num_steps", num_steps)
    action_space = checked_action_space(env, env_params)
    num_envs = rollout_state.obs.shape[0]
    graphdef, params = nnx.split(model)
    step_batch = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(carry: RolloutState, step_key: jax.Array):
        policy = nnx.merge(graphdef, params)
        action_key, env_key = jax.random.split(step_key)
        distribution = act(policy, carry.obs, action_space).distribution  # critic DCE'd
        actions = distribution.sample(action_key)
        next_obs, env_state, rewards, terminated, truncated, info = step_batch(
            jax.random.split(env_key, num_envs), carry.env_state,
            env_actions(actions, action_space), env_params
        )
        rewards = rewards.astype(jnp.float32)
        dones = jnp.logical_or(terminated, truncated)
        episode_return = carry.episode_return + rewards
        episode_length = carry.episode_length + 1
        scaler = carry.reward_scaler
        if scaler is not None:
            scaler, rewards = scaler.scale(rewards, dones)
        transition = Trajectory(
            observations=carry.obs,
            actions=actions,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            log_probs=distribution.log_prob(actions),
            values=rewards,  # placeholders: the critic runs once, after the scan
            bootstrap_values=rewards,
            episode_returns=jnp.where(dones, episode_return, 0.0),
            episode_lengths=jnp.where(dones, episode_length, 0),
        )
        carry = RolloutState(
            env_state=env_state,
            obs=next_obs,
            episode_return=jnp.where(dones, 0.0, episode_return),
            episode_length=jnp.where(dones, 0, episode_length),
            reward_scaler=scaler,
        )
        return carry, (transition, info["final_observation"])

    rollout_state, (trajectory, final_observations) = jax.lax.scan(
        one_step, rollout_state, jax.random.split(key, num_steps)
    )
    # V(s_t) and V(true next observation) in two batched passes over [T * N] observations:
    # much cheaper on CPU than a critic call inside every step, and the same parameters.
    values = _critic_values(model, trajectory.observations, action_space)
    bootstrap_values = _critic_values(model, final_observations, action_space)
    return rollout_state, trajectory.replace(values=values, bootstrap_values=bootstrap_values)


def _critic_values(model: nnx.Module, observations: jax.Array, action_space: Any) -> jax.Array:
    """V of `[T, N, ...]` observations as `[T, N]` (zeros for a model without a critic)."""
    steps, num_envs = observations.shape[:2]
    flat = observations.reshape(steps * num_envs, *observations.shape[2:])
    values = act(model, flat, action_space).value
    if values is None:
        return jnp.zeros((steps, num_envs), jnp.float32)
    return values.reshape(steps, num_envs)


def evaluate(
    model: nnx.Module,
    env: Environment,
    env_params: Any,
    key: jax.Array,
    num_envs: int,
    max_steps: int,
) -> jax.Array:
    """Return of one greedy-action (`mode`) episode per env, `[num_envs]`, stopping each at its
    first termination or truncation, or after `max_steps` steps.

    Keys: `reset_key, steps_key = split(key)`; env i resets with `split(reset_key, N)[i]` and
    steps at t with `split(split(steps_key, max_steps)[t], N)[i]`.
    """
    _check_positive("max_steps", max_steps)
    action_space = checked_action_space(env, env_params)
    reset_key, steps_key = jax.random.split(key)
    start = init_rollout(env, env_params, reset_key, num_envs)
    graphdef, params = nnx.split(model)
    step_batch = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(carry, step_key):
        env_state, obs, returns, finished = carry
        distribution = act(nnx.merge(graphdef, params), obs, action_space).distribution
        actions = env_actions(distribution.mode(), action_space)
        obs, env_state, rewards, terminated, truncated, _ = step_batch(
            jax.random.split(step_key, num_envs), env_state, actions, env_params
        )
        returns = returns + jnp.where(finished, 0.0, rewards)
        finished = finished | terminated | truncated
        return (env_state, obs, returns, finished), None

    carry = (start.env_state, start.obs, start.episode_return, jnp.zeros((num_envs,), bool))
    (_, _, returns, _), _ = jax.lax.scan(one_step, carry, jax.random.split(steps_key, max_steps))
    return returns


def make_collect_fn(
    env: Environment, env_params: Any, num_steps: int
) -> Callable[[nnx.GraphDef, nnx.State, RolloutState, jax.Array], tuple[RolloutState, Trajectory]]:
    """A `jax.jit`-compiled `collect` taking `(graphdef, state, rollout_state, key)` from
    `nnx.split(model)`, for collecting outside a jitted training loop."""
    _check_positive("num_steps", num_steps)

    @jax.jit
    def collect_fn(graphdef, state, rollout_state, key):
        model = nnx.merge(graphdef, state)
        return collect(model, env, env_params, rollout_state, key, num_steps)

    return collect_fn


def make_evaluate_fn(
    env: Environment, env_params: Any, num_envs: int, max_steps: int
) -> Callable[[nnx.GraphDef, nnx.State, jax.Array], jax.Array]:
    """A `jax.jit`-compiled `evaluate` taking `(graphdef, state, key)`; returns `[num_envs]`."""
    _check_positive("num_envs", num_envs)
    _check_positive("max_steps", max_steps)

    @jax.jit
    def evaluate_fn(graphdef, state, key):
        model = nnx.merge(graphdef, state)
        return evaluate(model, env, env_params, key, num_envs, max_steps)

    return evaluate_fn


class EnvSource(BatchSource):
    """What every source sampling a jittable env shares: greedy evaluation episodes, the env's
    own evaluation metrics, and its pictures."""

    def evaluate(self, policy: Any, key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Greedy returns `[eval_episodes]` and the env's `evaluation_metrics` on a batch of
        resets, for greedy actions and, as `sampled_<name>`, for sampled ones: a greedy policy
        can look diverse while the sampling one collapses, and the reverse."""
        settings = self.settings
        returns_key, metrics_key = jax.random.split(key)
        returns = evaluate(policy, self.env, self.env_params, returns_key, settings.eval_episodes,
                           settings.eval_max_steps)
        hooks = env_hooks(self.env)
        observations, distribution = self._reset_batch(policy, metrics_key)
        greedy = hooks.evaluation_metrics(self.env_params, observations, distribution.mode())
        sampled = hooks.evaluation_metrics(self.env_params, observations,
                                           distribution.sample(jax.random.fold_in(metrics_key, 1)))
        return returns, {**greedy, **{f"sampled_{name}": value for name, value in sampled.items()}}

    @property
    def shows_images(self) -> bool:
        return env_hooks(self.env).renders_images

    def images(self, policy: Any, key: jax.Array) -> jax.Array:
        """The env's `render` of the greedy actions on a batch of resets."""
        observations, distribution = self._reset_batch(policy, key)
        return env_hooks(self.env).render(self.env_params, observations, distribution.mode())

    def sample_images(self, policy: Any, tasks: Any, count: int, key: jax.Array,
                      greedy: bool) -> jax.Array:
        hooks, reset_key, action_key = env_hooks(self.env), *jax.random.split(key)
        if tasks is None:
            observations, _ = jax.vmap(self.env.reset, in_axes=(0, None))(
                jax.random.split(reset_key, count), self.env_params)
        else:
            keys = jax.random.split(reset_key, len(tasks))
            observations = jnp.stack([self.env.reset(k, hooks.with_task(self.env_params, task))[0]
                                      for k, task in zip(keys, tasks, strict=True)])
        distribution = act(policy, observations, self.env.action_space(self.env_params)).distribution
        actions = distribution.mode() if greedy else distribution.sample(action_key)
        return hooks.pictures(self.env_params, observations,
                              env_actions(actions, self.env.action_space(self.env_params)))

    def _reset_batch(self, policy: Any, key: jax.Array):
        """`(observations [eval_episodes, ...], the policy's distribution)` on a batch of resets."""
        observations, _ = jax.vmap(self.env.reset, in_axes=(0, None))(
            jax.random.split(key, self.settings.eval_episodes), self.env_params)
        return observations, act(policy, observations, self.env.action_space(self.env_params)).distribution


class EnvRollouts(EnvSource):
    """`num_steps` steps of `num_envs` envs per iteration, carried across iterations: `Steps`."""

    batch_type = Steps

    scales_rewards = True

    def init(self, key: jax.Array) -> RolloutState:
        return init_rollout(self.env, self.env_params, key, self.settings.num_envs,
                            self.settings.reward_scaling)

    def sample(self, policy: Any, reference: Any, state: RolloutState, key: jax.Array):
        settings = self.settings
        state, trajectory = collect(policy, self.env, self.env_params, settings.shard(state), key,
                                    settings.num_steps)
        ref_log_probs = None
        if settings.needs_reference:  # the actions under the frozen initial policy
            action_space = self.env.action_space(self.env_params)
            ref_log_probs = act(reference, trajectory.observations, action_space).distribution.log_prob(
                trajectory.actions)
        steps = steps_of(trajectory, env_hooks(self.env).task_ids(
            self.env_params, trajectory.observations, trajectory.rewards.shape), ref_log_probs)
        episodes = (trajectory.episode_returns, trajectory.episode_lengths, trajectory.dones)
        return state, steps, episodes, {}


def steps_of(trajectory: Trajectory, task_ids: jax.Array, ref_log_probs: jax.Array | None = None
             ) -> Steps:
    """A collected `Trajectory` as the `Steps` algorithms learn from (one action per step; a
    step both terminated and truncated ended, so it is not bootstrapped)."""
    return Steps(observations=trajectory.observations, actions=trajectory.actions,
                 mask=jnp.ones((*trajectory.rewards.shape, 1), bool), rewards=trajectory.rewards,
                 dones=trajectory.dones, truncated=trajectory.truncated & ~trajectory.terminated,
                 values=trajectory.values, last_values=trajectory.bootstrap_values[-1],
                 bootstrap_values=trajectory.bootstrap_values, task_ids=task_ids,
                 log_probs=trajectory.log_probs, ref_log_probs=ref_log_probs)
