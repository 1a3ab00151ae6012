"""Gymnasium -> rollax: roll out any Gymnasium id on the host and yield the jitted collector's
`Trajectory`.

Env stepping runs on the host through `gymnasium.make_vec`; the policy forward pass (sample,
log-prob, value) is one jitted function per observation shape. Terminated and truncated stay
apart and `bootstrap_values[t]` is V of the true (pre-reset) next observation in both autoreset
modes: SAME_STEP reads `info["final_obs"]`/`info["_final_obs"]`; NEXT_STEP returns the final
observation itself and spends the following call on a reset.

How NEXT_STEP keeps T steps: that reset call is not a transition, so it is never recorded (its
observation becomes the env's next real observation). Each env keeps its own count of real
transitions; `collect` steps the vector env until every env has `num_steps`, and transitions an
env makes beyond `num_steps` while others catch up are carried into the next `collect` call
(their stored log-probs are the behaviour policy's, which is what PPO's ratio needs).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Self

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from gymnasium.vector import AutoresetMode
from gymnax.environments import spaces as gymnax_spaces

from rollax.envs.gymnasium_ids import GYMNASIUM_PREFIX, check_gymnasium_id, is_host_env_id
from rollax.networks.policy import policy_output
from rollax.rollout.trajectory import Trajectory

# evaluation episodes of an env without an episode limit of its own end here
DEFAULT_EVAL_EPISODE_STEPS = 10_000
_SUPPORTED_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
_FIELDS = (
    "observations", "actions", "rewards", "terminated", "truncated", "log_probs", "values",
    "next_observations", "episode_returns", "episode_lengths",
)  # fmt: skip


def make_host(env_id: str, num_envs: int, *, seed: int = 0, **kwargs: Any) -> HostCollector:
    """Build the `HostCollector` for a `gymnasium:<id>` env id (the training loop's hook)."""
    if not is_host_env_id(env_id):
        raise ValueError(f"env id {env_id!r} is not a host env id; expected 'gymnasium:<id>'")
    return HostCollector(env_id, num_envs, seed=seed, **kwargs)


def to_gymnax_space(space: gymnasium.spaces.Space, role: str) -> Any:
    """Gymnasium Discrete/Box -> gymnax Discrete/Box (float64 becomes float32, JAX's default)."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return gymnax_spaces.Discrete(int(space.n))
    if isinstance(space, gymnasium.spaces.Box):
        dtype = np.float32 if space.dtype == np.float64 else space.dtype
        return gymnax_spaces.Box(
            np.asarray(space.low, dtype), np.asarray(space.high, dtype), space.shape, dtype
        )
    if isinstance(space, (gymnasium.spaces.Dict, gymnasium.spaces.Tuple)):
        raise ValueError(
            f"{role} space {space} is a {type(space).__name__} space; flatten it first, e.g. "
            "HostCollector(..., wrappers=[gymnasium.wrappers.FlattenObservation], "
            "vectorization_mode='sync')"
        )
    raise ValueError(f"{role} space {space} is not supported; expected Discrete or Box")


@functools.partial(jax.jit, static_argnums=(0, 4))
def _policy_step(graphdef, state, obs, key, discrete):
    """Sample actions for obs `[N, ...]`: `(actions, log_probs [N], values [N])`."""
    distribution, value = policy_output(nnx.merge(graphdef, state)(obs), discrete)
    actions = distribution.sample(key)
    if value is None:
        value = jnp.zeros(obs.shape[:1], jnp.float32)
    return actions, distribution.log_prob(actions), value.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _values(graphdef, state, obs, discrete):
    """V(obs) for obs `[B, ...]` (zeros for a policy without a value head): `[B]`."""
    value = policy_output(nnx.merge(graphdef, state)(obs), discrete).value
    return jnp.zeros(obs.shape[:1], jnp.float32) if value is None else value.astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy_actions(graphdef, state, obs, discrete):
    distribution = policy_output(nnx.merge(graphdef, state)(obs), discrete).distribution
    return distribution.mode()


class HostCollector:
    """Collect `Trajectory`s `[T, N, ...]` from `gymnasium.make_vec(env_id, num_envs)`.

    `observation_space`/`action_space` are gymnax spaces so rollax's network builders work
    unchanged. Episodes continue across `collect` calls, like the jitted collector's carry.
    `vectorization_mode` is passed to `make_vec`; naming an `autoreset_mode` that the env's own
    vector entry point does not use switches to `"sync"`.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        seed: int = 0,
        autoreset_mode: str | AutoresetMode | None = None,
        vectorization_mode: str | None = None,
        **make_kwargs: Any,
    ):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.gym_id = check_gymnasium_id(env_id.removeprefix(GYMNASIUM_PREFIX))
        if autoreset_mode is not None:
            autoreset_mode = _autoreset_mode(autoreset_mode)
        self.num_envs = num_envs
        self.seed = seed
        self._make_args = (autoreset_mode, vectorization_mode, make_kwargs)
        self._env = self._make_vector_env(num_envs)
        self.autoreset_mode = _autoreset_mode(
            self._env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        )
        single_action_space = self._env.single_action_space
        self.observation_space = to_gymnax_space(self._env.single_observation_space, "observation")
        self.action_space = to_gymnax_space(single_action_space, "action")
        self.discrete = isinstance(self.action_space, gymnax_spaces.Discrete)
        self._action_start = int(getattr(single_action_space, "start", 0)) if self.discrete else 0
        obs, _ = self._env.reset(seed=seed)
        self._obs = self._to_obs(obs)
        self._episode_return = np.zeros(num_envs, np.float64)
        self._episode_length = np.zeros(num_envs, np.int32)
        self._reset_pending = np.zeros(num_envs, bool)  # NEXT_STEP: next call resets these envs
        self._carry: tuple[dict[str, np.ndarray], np.ndarray] | None = None

    def _make_vector_env(self, num_envs: int, **more_kwargs: Any) -> gymnasium.vector.VectorEnv:
        autoreset_mode, vectorization_mode, make_kwargs = self._make_args
        make_kwargs = {**make_kwargs, **more_kwargs}
        if autoreset_mode is None:
            return gymnasium.make_vec(
                self.gym_id, num_envs, vectorization_mode=vectorization_mode, **make_kwargs
            )
        if vectorization_mode in (None, "vector_entry_point"):
            env = gymnasium.make_vec(
                self.gym_id, num_envs, vectorization_mode=vectorization_mode, **make_kwargs
            )
            if env.metadata.get("autoreset_mode") == autoreset_mode:
                return env
            env.close()
            if vectorization_mode == "vector_entry_point":
                raise ValueError(
                    f"the vector entry point of {self.gym_id!r} does not use autoreset_mode "
                    f"{autoreset_mode.value!r}; use vectorization_mode='sync'"
                )
        return gymnasium.make_vec(
            self.gym_id,
            num_envs,
            vectorization_mode=vectorization_mode or "sync",
            vector_kwargs={"autoreset_mode": autoreset_mode},
            **make_kwargs,
        )

    def _to_obs(self, obs: Any) -> np.ndarray:
        return np.asarray(obs, dtype=self.observation_space.dtype)

    def _to_env_actions(self, actions: np.ndarray) -> np.ndarray:
        """Shift Discrete actions by the space's `start`; clip continuous ones into the Box."""
        if self.discrete:
            return actions.astype(np.int64) + self._action_start
        space = self._env.single_action_space
        return np.clip(actions, space.low, space.high).astype(space.dtype)

    def _true_next_obs(self, next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
        """The pre-reset next observation `[N, ...]` (SAME_STEP keeps it in `info`)."""
        if self.autoreset_mode == AutoresetMode.NEXT_STEP or not done.any():
            return next_obs
        if "_final_obs" not in info:
            raise ValueError(
                f"{self.gym_id!r} declares SAME_STEP autoreset but its step info has no "
                "'final_obs'/'_final_obs' for the envs that finished"
            )
        true_next = next_obs.copy()
        for i in np.flatnonzero(info["_final_obs"]):
            true_next[i] = info["final_obs"][i]
        return true_next

    def collect(self, model: nnx.Module, key: jax.Array, num_steps: int) -> Trajectory:
        """Step every env `num_steps` real transitions with actions sampled from `model`;
        returns a `Trajectory` with fields `[num_steps, num_envs, ...]`."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        graphdef, state = nnx.split(model)
        buffer, count = self._carry if self._carry is not None else ({}, np.zeros(self.num_envs, int))
        while count.min() < num_steps:
            key, sub = jax.random.split(key)
            actions, log_probs, values = _policy_step(
                graphdef, state, jnp.asarray(self._obs), sub, self.discrete
            )
            actions = np.asarray(actions)
            # Exceptions raised by the env propagate unchanged, with its traceback.
            next_obs, rewards, terminated, truncated, info = self._env.step(
                self._to_env_actions(actions)
            )
            self._check_numbers(next_obs, rewards)
            next_obs = self._to_obs(next_obs)
            terminated = np.asarray(terminated, bool)
            truncated = np.asarray(truncated, bool)
            done = terminated | truncated
            real = ~self._reset_pending
            self._episode_return[real] += np.asarray(rewards)[real]
            self._episode_length[real] += 1
            ended = real & done
            step = {
                "observations": self._obs,
                "actions": actions,
                "rewards": np.asarray(rewards, np.float32),
                "terminated": terminated,
                "truncated": truncated,
                "log_probs": np.asarray(log_probs),
                "values": np.asarray(values),
                "next_observations": self._true_next_obs(next_obs, done, info),
                "episode_returns": np.where(ended, self._episode_return, 0.0).astype(np.float32),
                "episode_lengths": np.where(ended, self._episode_length, 0).astype(np.int32),
            }
            _append(buffer, count, np.flatnonzero(real), step, num_steps)
            self._episode_return[ended] = 0.0
            self._episode_length[ended] = 0
            if self.autoreset_mode == AutoresetMode.NEXT_STEP:
                self._reset_pending = ended
            self._obs = next_obs
        out = {name: np.swapaxes(array[:, :num_steps], 0, 1) for name, array in buffer.items()}
        leftover = count - num_steps
        self._carry = (
            ({name: array[:, num_steps:] for name, array in buffer.items()}, leftover)
            if leftover.any()
            else None
        )
        next_obs = out.pop("next_observations")
        flat = next_obs.reshape((-1, *next_obs.shape[2:]))
        bootstrap = _values(graphdef, state, jnp.asarray(flat), self.discrete)
        return Trajectory(
            **{name: jnp.asarray(array) for name, array in out.items()},
            bootstrap_values=bootstrap.reshape(next_obs.shape[:2]),
        )

    def evaluate(
        self,
        model: nnx.Module,
        num_episodes: int,
        *,
        seed: int | None = None,
        max_episode_steps: int | None = None,
    ) -> np.ndarray:
        """Undiscounted returns `[num_episodes]` of greedy (`mode`) episodes in a fresh vector env.

        Env i runs a fixed quota of episodes (so short episodes are not over-counted); `seed`
        defaults to the collector's seed + 1_000_003. An episode ends at the env's own limit, or
        at `max_episode_steps` (default: that limit; `DEFAULT_EVAL_EPISODE_STEPS` for an env
        without one); an episode cut by that cap counts with its return so far, and a warning
        names the env.
        """
        if not isinstance(num_episodes, int) or num_episodes < 1:
            raise ValueError(f"num_episodes must be a positive int, got {num_episodes!r}")
        own_limit = self.episode_limit()
        cap = max_episode_steps or own_limit or DEFAULT_EVAL_EPISODE_STEPS
        if not isinstance(cap, int) or cap < 1:
            raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        num_envs = min(self.num_envs, num_episodes)
        quota = np.full(num_envs, num_episodes // num_envs)
        quota[: num_episodes % num_envs] += 1
        graphdef, state = nnx.split(model)
        env = self._make_vector_env(num_envs, **({} if cap == own_limit else
                                                  {"max_episode_steps": cap}))
        next_step = env.metadata.get("autoreset_mode", "next_step") == AutoresetMode.NEXT_STEP
        cut = 0
        try:
            obs, _ = env.reset(seed=self.seed + 1_000_003 if seed is None else seed)
            running, lengths = np.zeros(num_envs), np.zeros(num_envs, np.int64)
            pending = np.zeros(num_envs, bool)
            returns: list[list[float]] = [[] for _ in range(num_envs)]
            # every episode ends within `cap` steps, and a next-step reset takes one more
            for _ in range(int(quota.max()) * (cap + 1)):
                if all(len(r) >= q for r, q in zip(returns, quota, strict=True)):
                    break
                actions = np.asarray(
                    _greedy_actions(graphdef, state, jnp.asarray(self._to_obs(obs)), self.discrete)
                )
                obs, rewards, terminated, truncated, _ = env.step(self._to_env_actions(actions))
                running[~pending] += np.asarray(rewards)[~pending]
                lengths[~pending] += 1
                ended = ~pending & (np.asarray(terminated) | np.asarray(truncated))
                for i in np.flatnonzero(ended):
                    if len(returns[i]) < quota[i]:
                        returns[i].append(float(running[i]))
                        cut += bool(cap != own_limit and lengths[i] >= cap and not np.asarray(terminated)[i])
                running[ended], lengths[ended] = 0.0, 0
                if next_step:
                    pending = ended
        finally:
            env.close()
        if cut:
            warnings.warn(f"{cut} of {num_episodes} evaluation episodes of {self.gym_id!r} ran "
                          f"{cap} steps without ending and were cut there (eval.max_episode_steps):"
                          " their returns are partial", RuntimeWarning, stacklevel=2)
        return np.array([r for env_returns in returns for r in env_returns])

    def _check_numbers(self, observations: Any, rewards: Any) -> None:
        """The env's step output as numbers a policy can learn from: a NaN or inf reward or
        observation is a ValueError naming the env (the update would turn it into a NaN loss)."""
        for what, values in (("reward", rewards), ("observation", observations)):
            values = np.asarray(values)
            if values.dtype.kind in "fc" and not np.isfinite(values).all():
                bad = values[~np.isfinite(values)].flat[0]
                raise ValueError(f"Gymnasium env {self.gym_id!r} returned {what} {bad} from "
                                 f"step: rewards and observations must be finite")

    def episode_limit(self) -> int | None:
        """The env's own episode limit: `max_episode_steps` given to `make`, else its spec's."""
        return (self._make_args[2].get("max_episode_steps")
                or gymnasium.spec(self.gym_id).max_episode_steps)

    def close(self) -> None:
        """Close the underlying vector env."""
        self._env.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _autoreset_mode(value: str | AutoresetMode) -> AutoresetMode:
    """Accept an `AutoresetMode`, its value ("SameStep") or its name ("same_step")."""
    mode_ = value if isinstance(value, AutoresetMode) else None
    if mode_ is None and isinstance(value, str):
        mode_ = AutoresetMode._value2member_map_.get(value) or AutoresetMode.__members__.get(
            value.upper()
        )
    if mode_ not in _SUPPORTED_MODES:
        raise ValueError(
            f"autoreset_mode {value!r} is not supported; use one of "
            f"{[m.name.lower() for m in _SUPPORTED_MODES]}"
        )
    return mode_


def _append(
    buffer: dict[str, np.ndarray],
    count: np.ndarray,
    env_ids: np.ndarray,
    step: dict[str, np.ndarray],
    num_steps: int,
) -> None:
    """Write row `count[i]` of env i's buffer `[N, capacity, ...]` for each i in `env_ids`."""
    needed = int(count.max()) + 1
    for name, values in step.items():
        values = np.asarray(values)
        array = buffer.get(name)
        if array is None or array.shape[1] < needed:
            capacity = max(needed, num_steps + 8, 2 * (0 if array is None else array.shape[1]))
            grown = np.zeros((count.shape[0], capacity, *values.shape[1:]), values.dtype)
            if array is not None:
                grown[:, : array.shape[1]] = array
            buffer[name] = array = grown
        array[env_ids, count[env_ids]] = values[env_ids]
    count[env_ids] += 1
