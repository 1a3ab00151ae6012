"""Probe environments: tiny gymnax envs whose optimal value/policy is known in closed form,
so a trainer's sign, discounting and bootstrap bugs show up in seconds.

| id | episode | what must be learned |
| --- | --- | --- |
| rollax/ProbeConstant-v0 | 1 step, obs 0, reward 1 | V = 1 |
| rollax/ProbeObsReward-v0 | 1 step, obs +-1, reward = obs | V(obs) = obs |
| rollax/ProbeTwoStep-v0 | obs 0 then 1, reward 1 only at the end | V(0) = gamma, V(1) = 1 |
| rollax/ProbeActionReward-v0 | 1 step, obs +-1, reward +1 iff action == (obs > 0) else -1 | the policy |
| rollax/ProbeContinuousAction-v0 | 1 step, Box action in [-1, 1], reward -(a - 0.5)^2 | mean -> 0.5 |
| rollax/ProbeTruncation-v0 | reward 1 every step, never terminates, truncated after 5 | V = 1/(1-gamma) |

Observations are `[1]` float32. Episodes that end by termination keep a generous truncation
limit (`max_steps_in_episode`), so `truncated` is false there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

from rollax.envs.registry import override_params


@struct.dataclass
class ProbeState(environment.EnvState):
    observation: jax.Array  # [1], what the agent sees in this state
    time: int


@struct.dataclass
class ProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 100


@struct.dataclass
class ContinuousProbeParams(environment.EnvParams):
    target: float = 0.5
    max_steps_in_episode: int = 100


@struct.dataclass
class TruncationProbeParams(environment.EnvParams):
    max_steps_in_episode: int = 5


class _Probe(environment.Environment[ProbeState, Any]):
    """Shared plumbing: `[1]` observations read from the state, two discrete actions."""

    env_name = "Probe"
    obs_low, obs_high = -1.0, 1.0

    def __init__(self):
        super().__init__()
        self.obs_shape = (1,)

    @property
    def default_params(self) -> Any:
        return ProbeParams()

    def initial_observation(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.zeros((1,), jnp.float32)

    def reset_env(self, key: jax.Array, params: Any) -> tuple[jax.Array, ProbeState]:
        state = ProbeState(observation=self.initial_observation(key), time=jnp.int32(0))
        return state.observation, state

    def get_obs(self, state: ProbeState, params: Any = None, key: Any = None) -> jax.Array:
        return state.observation

    def transition(
        self, state: ProbeState, action: Any, params: Any
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`(next_observation [1], reward, terminated)` for the subclass's rule."""
        raise NotImplementedError

    def step_env(
        self, key: jax.Array, state: ProbeState, action: Any, params: Any
    ) -> tuple[jax.Array, ProbeState, jax.Array, jax.Array, dict[str, Any]]:
        observation, reward, terminated = self.transition(state, action, params)
        state = ProbeState(observation=observation, time=state.time + 1)
        return (
            observation,
            state,
            jnp.asarray(reward, jnp.float32),
            jnp.asarray(terminated, bool),
            {"discount": 1.0 - jnp.asarray(terminated, jnp.float32)},
        )

    @property
    def name(self) -> str:
        return self.env_name

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(self.obs_low, self.obs_high, (1,), jnp.float32)


def _random_sign(key: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, shape=(1,)), 1.0, -1.0).astype(jnp.float32)


class ProbeConstant(_Probe):
    """One step, observation 0, reward 1: the value must learn 1."""

    env_name = "ProbeConstant-v0"

    def transition(self, state, action, params):
        return state.observation, 1.0, True


class ProbeObsReward(_Probe):
    """One step, observation +-1 at random, reward = observation: the value must learn obs."""

    env_name = "ProbeObsReward-v0"

    def initial_observation(self, key):
        return _random_sign(key)

    def transition(self, state, action, params):
        return state.observation, state.observation[0], True


class ProbeTwoStep(_Probe):
    """Observation 0 then 1, reward 0 then 1, terminated after two steps: V(0) = gamma."""

    env_name = "ProbeTwoStep-v0"
    obs_low, obs_high = 0.0, 1.0

    def transition(self, state, action, params):
        is_last = state.time >= 1
        return jnp.ones((1,), jnp.float32), jnp.where(is_last, 1.0, 0.0), is_last


class ProbeActionReward(_Probe):
    """One step, observation +-1 at random, reward +1 if action == (obs > 0) else -1."""

    env_name = "ProbeActionReward-v0"

    def initial_observation(self, key):
        return _random_sign(key)

    def transition(self, state, action, params):
        correct = jnp.asarray(action).reshape(()) == (state.observation[0] > 0).astype(jnp.int32)
        return state.observation, jnp.where(correct, 1.0, -1.0), True


class ProbeContinuousAction(_Probe):
    """One step, 1-D Box action in [-1, 1], reward -(a - target)^2 with target 0.5."""

    env_name = "ProbeContinuousAction-v0"

    @property
    def default_params(self) -> ContinuousProbeParams:
        return ContinuousProbeParams()

    def transition(self, state, action, params):
        a = jnp.clip(jnp.asarray(action, jnp.float32).reshape(()), -1.0, 1.0)
        return state.observation, -((a - params.target) ** 2), True

    @property
    def num_actions(self) -> int:
        return 1

    def action_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (1,), jnp.float32)


class ProbeTruncation(_Probe):
    """Reward 1 every step, never terminates, truncated after 5 steps (constant observation):
    bootstrapped V = 1/(1-gamma); treating truncation as terminal gives a finite-horizon sum."""

    env_name = "ProbeTruncation-v0"

    @property
    def default_params(self) -> TruncationProbeParams:
        return TruncationProbeParams()

    def transition(self, state, action, params):
        return state.observation, 1.0, False


PROBES: dict[str, type[_Probe]] = {
    f"rollax/{cls.env_name}": cls
    for cls in (
        ProbeConstant,
        ProbeObsReward,
        ProbeTwoStep,
        ProbeActionReward,
        ProbeContinuousAction,
        ProbeTruncation,
    )
}


def make_probe(env_id: str, **overrides: Any) -> tuple[_Probe, Any]:
    """`(env, params)` of the probe `env_id`; keyword arguments override params fields."""
    env = PROBES[env_id]()
    return env, override_params(env.default_params, overrides, env_id)
