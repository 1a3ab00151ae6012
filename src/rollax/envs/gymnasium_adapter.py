"""rollax -> Gymnasium: every jittable env in `rollax.envs` as a `gymnasium.Env` and a `VectorEnv`.

`gymnasium.make("rollax/CartPole-v1")` gives `RollaxGymnasiumEnv` (no auto-reset, numpy
observations of the declared dtype); `gymnasium.make_vec("rollax/CartPole-v1", num_envs=N)`
gives `RollaxVectorEnv`, one jitted `vmap`'d step per call. Key chain (so runs match the jitted
env with the same keys): `reset(seed=s)` starts at `jax.random.key(s)` (seeds from 2**32 up to
2**64 fold their high half in, so they stay distinct); every reset or step call
takes `key, sub = jax.random.split(key)`. The single env resets with `reset_env(sub)` and steps
like gymnax's `env.step(sub, ...)` without its auto-reset; the vector env uses
`split(sub, num_envs)`, one key per env, exactly as `jax.vmap(env.reset)` / `jax.vmap(env.step)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from gymnax.environments import spaces as gymnax_spaces

from rollax.envs.registry import (  # noqa: F401  (the id helpers are public here too)
    gymnasium_id,
    make,
    register_gymnasium_ids,
)
from rollax.envs.render import StateRenderer, can_render, has_pygame


def to_gymnasium_space(space: Any) -> gymnasium.spaces.Space:
    """Convert a gymnax space to Gymnasium with the same dtype and bounds broadcast to its shape."""
    if isinstance(space, gymnax_spaces.Discrete):
        return gymnasium.spaces.Discrete(int(space.n))
    if isinstance(space, gymnax_spaces.Box):
        dtype = np.dtype(space.dtype)
        shape = tuple(space.shape)
        low = np.broadcast_to(np.asarray(space.low), shape).astype(dtype)
        high = np.broadcast_to(np.asarray(space.high), shape).astype(dtype)
        return gymnasium.spaces.Box(low, high, shape, dtype)
    if isinstance(space, gymnax_spaces.Dict):
        return gymnasium.spaces.Dict({k: to_gymnasium_space(v) for k, v in space.spaces.items()})
    if isinstance(space, gymnax_spaces.Tuple):
        return gymnasium.spaces.Tuple(tuple(to_gymnasium_space(s) for s in space.spaces))
    raise ValueError(f"cannot convert gymnax space {space!r} to a Gymnasium space")


def _fit_to_space(obs: jax.Array, space: gymnasium.spaces.Space) -> jax.Array:
    """Clip and cast a (batch of) observation(s) so it lies in `space` (jittable)."""
    if isinstance(space, gymnasium.spaces.Box):
        return jnp.clip(obs, space.low, space.high).astype(space.dtype)
    if isinstance(space, gymnasium.spaces.Discrete):
        return jnp.clip(obs, 0, space.n - 1).astype(jnp.int32)
    raise ValueError(f"observation space {space} is not supported (only Box and Discrete)")


class _JittedEnv:
    """One gymnax env, its params and the jitted reset/step functions both adapters use."""

    def __init__(self, env_id: str, params: dict[str, Any]):
        self.env, self.env_params = make(env_id, **params)
        self.observation_space = to_gymnasium_space(self.env.observation_space(self.env_params))
        self.action_space = to_gymnasium_space(self.env.action_space(self.env_params))
        env, obs_space = self.env, self.observation_space

        def reset_one(key, env_params):
            obs, state = env.reset_env(key, env_params)
            return _fit_to_space(obs, obs_space), state

        def step_one(key, state, action, env_params):
            # gymnax's `step` splits its key the same way before calling step_env.
            key_step, _ = jax.random.split(key)
            obs, state, reward, terminated, _ = env.step_env(key_step, state, action, env_params)
            truncated = env.is_truncated(state, env_params)
            return _fit_to_space(obs, obs_space), state, reward, terminated, truncated

        def reset_batch(key, num_envs, env_params):
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, num_envs)
            obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
            return key, _fit_to_space(obs, obs_space), state

        def step_same_step(key, state, actions, env_params):
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, actions.shape[0])
            obs, state, reward, terminated, truncated, info = jax.vmap(
                env.step, in_axes=(0, 0, 0, None)
            )(keys, state, actions, env_params)
            final_obs = _fit_to_space(info["final_observation"], obs_space)
            return key, _fit_to_space(obs, obs_space), state, reward, terminated, truncated, final_obs

        def step_next_step(key, state, actions, pending_reset, env_params):
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, actions.shape[0])

            def one(key, state, action, pending):
                key_step, key_reset = jax.random.split(key)
                obs_st, state_st, reward, terminated, _ = env.step_env(
                    key_step, state, action, env_params
                )
                truncated = env.is_truncated(state_st, env_params)
                obs_re, state_re = env.reset_env(key_reset, env_params)
                state = jax.tree.map(lambda r, s: jax.lax.select(pending, r, s), state_re, state_st)
                obs = jax.tree.map(lambda r, s: jax.lax.select(pending, r, s), obs_re, obs_st)
                not_pending = jnp.logical_not(pending)
                reward = jnp.where(pending, 0.0, reward)
                return obs, state, reward, terminated & not_pending, truncated & not_pending

            obs, state, reward, terminated, truncated = jax.vmap(one, in_axes=(0, 0, 0, 0))(
                keys, state, actions, pending_reset
            )
            return key, _fit_to_space(obs, obs_space), state, reward, terminated, truncated

        self.reset_one = jax.jit(reset_one)
        self.step_one = jax.jit(step_one)
        self.reset_batch = jax.jit(reset_batch, static_argnums=1)
        self.step_same_step = jax.jit(step_same_step)
        self.step_next_step = jax.jit(step_next_step)


_JITTED_CACHE: dict[tuple, _JittedEnv] = {}


def _jitted_env(env_id: str, params: dict[str, Any]) -> _JittedEnv:
    """Share compiled functions between adapters of the same id and params (hashable ones)."""
    try:
        cache_key = (env_id, tuple(sorted(params.items())))
        hash(cache_key)
    except TypeError:
        return _JittedEnv(env_id, params)
    if cache_key not in _JITTED_CACHE:
        _JITTED_CACHE[cache_key] = _JittedEnv(env_id, params)
    return _JITTED_CACHE[cache_key]


def _to_env_actions(actions: Any, space: gymnasium.spaces.Space) -> np.ndarray:
    """Check actions against `space` (single or batched) and return them as a numpy array."""
    array = np.asarray(actions)
    if (
        isinstance(space, gymnasium.spaces.Box)
        and array.dtype.kind == "f"
        and array.shape == space.shape
    ):
        array = array.astype(space.dtype)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    if not space.contains(array):
        raise ValueError(
            f"action {actions!r} (dtype {array.dtype}, shape {array.shape}) is outside "
            f"the action space {space}"
        )
    return array


def _check_seed(seed: Any) -> None:
    """Before Gymnasium's own seeding, so a bad seed is a ValueError naming it."""
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                             or not 0 <= seed < 2**64):
        raise ValueError(f"seed must be an integer in [0, 2**64) (or None), got {seed!r}")


def _key_from(seed: int | None, np_random: np.random.Generator) -> jax.Array:
    if seed is None:
        seed = int(np_random.integers(2**31 - 1))
    seed = int(seed)
    if seed < 2**32:
        return jax.random.key(seed)
    # jax.random.key keeps only 32 bits without x64: fold the high half in, so 2**32 != 0
    return jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), seed >> 32)


class RollaxGymnasiumEnv(gymnasium.Env):
    """A rollax/gymnax env as a `gymnasium.Env`: no auto-reset, `reset(seed=...)` seeds a JAX key.

    Observations are numpy arrays of the declared dtype, clipped into the observation space;
    rewards are Python floats and flags Python bools. `render_mode="rgb_array"` draws the
    classic-control envs with Gymnasium's own renderer (`rollax.envs.render`; needs pygame).
    """

    # the class's modes are what `gymnasium.make` offers (its 'human' wrapper draws
    # 'rgb_array' frames); each env's own `metadata` lists the modes it can draw now
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"]}

    def __init__(self, env_id: str, render_mode: str | None = None, **params: Any):
        self._renderer = None
        self.metadata = {"render_modes": ["rgb_array"] if can_render(env_id) and has_pygame() else []}
        if render_mode is not None:
            if render_mode != "rgb_array" or not can_render(env_id):
                raise ValueError(f"render_mode {render_mode!r} is not supported for {env_id!r}; "
                                 "rollax draws 'rgb_array' frames of the classic-control envs")
            self._renderer = StateRenderer(env_id)
            self.metadata["render_fps"] = self._renderer.render_fps
        self.env_id = env_id
        self._jitted = _jitted_env(env_id, params)
        self.observation_space = self._jitted.observation_space
        self.action_space = self._jitted.action_space
        self.render_mode = render_mode
        self._key: jax.Array | None = None
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode; `seed` restarts the key chain at `jax.random.key(seed)`."""
        _check_seed(seed)
        super().reset(seed=seed)
        if seed is not None or self._key is None:
            self._key = _key_from(seed, self.np_random)
        self._key, sub = jax.random.split(self._key)
        obs, self._state = self._jitted.reset_one(sub, self._jitted.env_params)
        return self._observation(obs), {}

    def step(self, action: Any):
        """One transition without auto-reset: `(obs, reward, terminated, truncated, info)`."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        env_action = _to_env_actions(action, self.action_space)
        self._key, sub = jax.random.split(self._key)
        obs, self._state, reward, terminated, truncated = self._jitted.step_one(
            sub, self._state, jnp.asarray(env_action), self._jitted.env_params
        )
        return (
            self._observation(obs),
            float(np.asarray(reward).reshape(())),
            bool(terminated),
            bool(truncated),
            {},
        )

    def render(self) -> np.ndarray | None:
        """The current state as `uint8 [H, W, 3]` with `render_mode="rgb_array"`, else None."""
        if self._renderer is None:
            return None
        if self._state is None:
            raise RuntimeError("call reset() before render()")
        return self._renderer(self._state)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()

    def _observation(self, obs: jax.Array) -> Any:
        if isinstance(self.observation_space, gymnasium.spaces.Discrete):
            return np.int64(obs)
        return np.asarray(obs, dtype=self.observation_space.dtype)


class RollaxVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` copies of a rollax/gymnax env stepped by one jitted `vmap` per call.

    `autoreset_mode` is NEXT_STEP (default: the call after a done returns the reset observation
    with reward 0) or SAME_STEP (reset within the call; the pre-reset observation is in
    `info["final_obs"]` where `info["_final_obs"]`). `max_episode_steps` (from `make_vec`) sets
    the env's `max_steps_in_episode` param; other keyword arguments override env params.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": [],
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        max_episode_steps: int | None = None,
        **params: Any,
    ):
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported: the vector env does "
                             "not render; gymnasium.make(id, render_mode='rgb_array') does")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
        mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else None
        if mode is None and isinstance(autoreset_mode, str):  # "SameStep" or "same_step"
            mode = AutoresetMode._value2member_map_.get(autoreset_mode)
            mode = mode or AutoresetMode.__members__.get(autoreset_mode.upper())
        if mode not in modes:
            raise ValueError(
                f"autoreset_mode {autoreset_mode!r} is not supported; use one of "
                f"{[m.name.lower() for m in modes]}"
            )
        if max_episode_steps is not None:  # make_vec's time limit is gymnax's truncation param
            params["max_steps_in_episode"] = max_episode_steps
        self.env_id = env_id
        self.num_envs = num_envs
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.render_mode = None
        self._jitted = _jitted_env(env_id, params)
        self.single_observation_space = self._jitted.observation_space
        self.single_action_space = self._jitted.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._key: jax.Array | None = None
        self._state = None
        self._pending_reset = np.zeros(num_envs, dtype=bool)

    @property
    def autoreset_mode(self) -> AutoresetMode:
        """NEXT_STEP or SAME_STEP, as declared in `metadata["autoreset_mode"]`."""
        return self.metadata["autoreset_mode"]

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every env; an int `seed` restarts the key chain at `jax.random.key(seed)`."""
        _check_seed(seed)  # one int for all envs
        if options:
            raise ValueError(f"reset options {sorted(options)} are not supported")
        super().reset(seed=seed)
        if seed is not None or self._key is None:
            self._key = _key_from(seed, self.np_random)
        self._key, obs, self._state = self._jitted.reset_batch(
            self._key, self.num_envs, self._jitted.env_params
        )
        self._pending_reset = np.zeros(self.num_envs, dtype=bool)
        return self._observations(obs), {}

    def step(self, actions: Any):
        """Step all envs: `(obs [N, ...], rewards [N], terminations [N], truncations [N], info)`."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        env_actions = jnp.asarray(_to_env_actions(actions, self.action_space))
        params = self._jitted.env_params
        info: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._key, obs, self._state, reward, terminated, truncated, final_obs = (
                self._jitted.step_same_step(self._key, self._state, env_actions, params)
            )
        else:
            self._key, obs, self._state, reward, terminated, truncated = (
                self._jitted.step_next_step(
                    self._key, self._state, env_actions, self._pending_reset, params
                )
            )
        terminated = np.asarray(terminated, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        done = terminated | truncated
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            if done.any():
                final = self._observations(final_obs)
                info["final_obs"] = np.empty(self.num_envs, dtype=object)
                info["final_info"] = np.empty(self.num_envs, dtype=object)
                for i in np.flatnonzero(done):
                    info["final_obs"][i] = final[i]
                    info["final_info"][i] = {}
                info["_final_obs"] = done
                info["_final_info"] = done.copy()
        else:
            self._pending_reset = done
        rewards = np.asarray(reward, dtype=np.float64).reshape(self.num_envs)
        return self._observations(obs), rewards, terminated, truncated, info

    def _observations(self, obs: jax.Array) -> np.ndarray:
        return np.asarray(obs, dtype=self.single_observation_space.dtype)

