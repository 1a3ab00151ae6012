"""The denoising chain as a jittable gymnax environment (DDPO's MDP, Black et al., 2024).

- observation: `concat(x, [step], condition)`: the current noisy image `x [D]` (pure noise at
  reset), the chain step k in 0..K-1 (as a float), and a condition row (a one-hot class, drawn
  at reset like `rollax/VAEDigit-v0`'s);
- action: the next image `x [D]`, which the policy samples from its Gaussian transition;
- K steps per episode, terminated after the last; reward at the last step only:
  `reward_fn(images [1, D] in [0, 1], conditions [1, C])`, the image mapped from the data
  range [-1, 1].

The env holds the base denoiser and its sampler for the policy (`rollax.diffusion.policy`):
the untrained policy samples exactly the base model's chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from gymnax.environments import environment, spaces

from rollax.envs.hooks import EnvHooks
from rollax.generative.latent_env import Frozen, rows_by_class

PROBE_ROWS = 4


@struct.dataclass
class ChainState(environment.EnvState):
    x: jax.Array
    condition: jax.Array
    time: int


@struct.dataclass
class ChainParams(environment.EnvParams):
    reward_state: Any = None
    evaluator_state: Any = None
    conditions: jax.Array = None
    max_steps_in_episode: int = 10
    target_index: int = struct.field(pytree_node=False, default=-1)


def to_images(x: jax.Array) -> jax.Array:
    """Chain samples in the data range [-1, 1] as pixel intensities in [0, 1]."""
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


class DenoisingChain(EnvHooks, environment.Environment[ChainState, ChainParams]):
    """K steps of a stochastic sampler from noise to an image, rewarded at the end."""


    def __init__(self, denoiser: nnx.Module, sampler: Any, reward_fn: Callable | nnx.Module, *,
                 num_conditions: int, image_shape: tuple[int, int] = (8, 8),
                 evaluator: Callable | nnx.Module | None = None, name: str = "DenoisingChain-v0"):
        super().__init__()
        if not isinstance(num_conditions, int) or num_conditions < 1:
            raise ValueError(f"num_conditions={num_conditions!r} must be a positive int")
        self.denoiser, self.sampler = denoiser, sampler
        self.num_steps = sampler.num_steps
        self.image_shape = tuple(image_shape)
        self.data_dim = int(np.prod(self.image_shape))
        self.num_conditions = num_conditions
        self._name = name
        self._reward = Frozen(reward_fn)
        self._evaluator = None if evaluator is None else Frozen(evaluator)
        self._check_denoiser()
        self._probe_reward()

    # --- the models, batched
    def reward(self, params: ChainParams, x: jax.Array, conditions: jax.Array) -> jax.Array:
        """Rewards `[B]` of chain samples `x [B, D]` for condition rows `[B, C]`."""
        return self._reward(params.reward_state, to_images(x), conditions)

    def evaluate_samples(self, params: ChainParams, x: jax.Array, conditions: jax.Array
                         ) -> dict[str, jax.Array]:
        """The evaluator's metrics `{name: scalar}` (batch means) of chain samples `x [B, D]`."""
        if self._evaluator is None:
            return {}
        metrics = self._evaluator(params.evaluator_state, to_images(x), conditions)
        return {name: jnp.mean(value) for name, value in metrics.items()}

    def picture(self, params: ChainParams, x: jax.Array, conditions: jax.Array) -> jax.Array:
        """Chain samples `[B, D]` as a grid of pictures: row c holds samples of class c."""
        images = to_images(x).reshape(-1, *self.image_shape)
        return rows_by_class(images, conditions.argmax(-1), self.num_conditions)

    def _check_denoiser(self) -> None:
        x = jnp.zeros((1, self.data_dim), jnp.float32)
        try:
            out = jax.eval_shape(self.denoiser, x, jnp.zeros((1,), jnp.float32))
        except Exception as error:
            raise ValueError(f"the denoiser failed on images [1, {self.data_dim}] and times [1]: "
                             f"{error}") from error
        if getattr(out, "shape", None) != x.shape:
            raise ValueError(f"the denoiser maps images [1, {self.data_dim}] (the data's "
                             f"{self.image_shape} pixels) to {getattr(out, 'shape', out)}; it "
                             f"must return the same shape")

    def _probe_reward(self) -> None:
        """Score a few images as one batch: the reward's shape and finiteness checked now."""
        params = self.default_params
        x = jax.random.uniform(jax.random.key(0), (PROBE_ROWS, self.data_dim), minval=-1.0)
        conditions = jnp.eye(self.num_conditions)[np.arange(PROBE_ROWS) % self.num_conditions]
        try:
            rewards = self.reward(params, x, conditions)
        except Exception as error:
            raise ValueError(f"reward_fn failed on images [{PROBE_ROWS}, {self.data_dim}] with "
                             f"conditions [{PROBE_ROWS}, {self.num_conditions}]: {error}") from error
        if getattr(rewards, "shape", None) != (PROBE_ROWS,):
            raise ValueError(f"reward_fn must return shape [B] = ({PROBE_ROWS},) for images "
                             f"[{PROBE_ROWS}, {self.data_dim}], got "
                             f"{getattr(rewards, 'shape', type(rewards).__name__)}")
        if not bool(jnp.all(jnp.isfinite(rewards))):
            raise ValueError(f"reward_fn gave non-finite rewards {np.asarray(rewards)} on probe images")

    # --- gymnax interface
    @property
    def default_params(self) -> ChainParams:
        return ChainParams(
            reward_state=self._reward.state,
            evaluator_state=None if self._evaluator is None else self._evaluator.state,
            conditions=jnp.eye(self.num_conditions, dtype=jnp.float32),
            max_steps_in_episode=self.num_steps)

    def start(self, key: jax.Array, conditions: jax.Array) -> tuple[jax.Array, ChainState]:
        """A chain from noise for one condition row `[C]`."""
        state = ChainState(x=jax.random.normal(key, (self.data_dim,)), condition=conditions, time=0)
        return self.observe(state), state

    def reset_env(self, key: jax.Array, params: ChainParams) -> tuple[jax.Array, ChainState]:
        row_key, noise_key = jax.random.split(key)
        num_rows = params.conditions.shape[0]
        if not -1 <= params.target_index < num_rows:
            raise ValueError(f"target_class={params.target_index} must be -1 (uniform) or in "
                             f"[0, {num_rows})")
        row = jax.random.randint(row_key, (), 0, num_rows) if params.target_index < 0 else \
            jnp.asarray(params.target_index)
        return self.start(noise_key, params.conditions[row])

    def step_env(self, key: jax.Array, state: ChainState, action: jax.Array, params: ChainParams):
        del key
        action = jnp.asarray(action, jnp.float32)
        if action.shape != (self.data_dim,):
            raise ValueError(f"action must be the next image, shape ({self.data_dim},); got "
                             f"{action.shape}")
        time = state.time + 1
        terminated = time >= self.num_steps
        reward = self.reward(params, action[None], state.condition[None])[0]
        state = state.replace(x=action, time=time)
        return (jax.lax.stop_gradient(self.observe(state)), jax.lax.stop_gradient(state),
                jnp.where(terminated, reward, 0.0).astype(jnp.float32), terminated, {})

    def observe(self, state: ChainState) -> jax.Array:
        return jnp.concatenate([state.x, jnp.asarray(state.time, jnp.float32)[None],
                                state.condition])

    def is_terminated(self, state: ChainState, params: ChainParams) -> jax.Array:
        return state.time >= self.num_steps

    def is_truncated(self, state: ChainState, params: ChainParams) -> jax.Array:
        return jnp.zeros((), bool)

    def num_tasks(self, params: ChainParams) -> int:
        return self.num_conditions

    def task_ids(self, params: ChainParams, observations: jax.Array,
                 batch_shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.argmax(observations[..., self.data_dim + 1:], axis=-1).astype(jnp.int32)

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return self.data_dim

    def action_space(self, params: ChainParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (self.data_dim,), jnp.float32)

    def observation_space(self, params: ChainParams | None = None) -> spaces.Box:
        size = self.data_dim + 1 + self.num_conditions
        return spaces.Box(-jnp.inf, jnp.inf, (size,), jnp.float32)
