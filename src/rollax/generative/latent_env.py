"""A generative model as a jittable gymnax environment: the action is a latent, the reward scores
the decoded sample.

Conventions:
- `decoder(latents [B, d]) -> samples [B, ...]` and `reward_fn(samples [B, ...], conditions
  [B, C] | None) -> [B]`. Inside `step` one environment decodes and scores a *batch of one*
  (`latent[None]`, `condition[None]`) and takes element 0, so the same batched functions serve
  the env (under `vmap`) and direct evaluation.
- Either may be an `nnx.Module` (split once: the graph stays on the env, the frozen weights go
  into the params pytree, so `vmap`/`jit` see them as data) or a plain jittable function.
- Conditions come from a table `[M, C]` in the params (one-hot classes, images, ...); reset picks
  a row uniformly, or row `target_index` when it is >= 0. Unconditioned envs observe a single
  zero and give `conditions=None` to the reward.
- `noise=True`: reset also draws a prior sample `noise ~ N(0, I_d)` and the observation ends
  with it (`concat(condition, noise)`, or `noise` alone when unconditioned), so a policy can map
  noise to a latent and stay a generator (horizon 1 only).
- `action="sample"` (with `noise`): the generator itself is the policy; the action is the
  flattened sample in `[0, 1]`, which the reward scores directly.
- `horizon == 1`: a contextual bandit, action = latent, terminated after one step.
  `horizon == K > 1`: action = delta added to the current latent (clipped to the box),
  observation = concat(condition, latent); reward on the final step only (`reward_on="final"`)
  or every step (`"step"`). Episodes end by termination; they are never truncated.
- Optional `evaluator(samples [B, ...], conditions [B, C] | None) -> {name: [B]}` (e.g. an
  independent judge classifier, whose set metrics such as diversity are scalars): the training
  loop calls `evaluation_metrics` on greedy and on sampled actions and logs the batch means as
  `eval/<name>` and `eval/sampled_<name>`. `decode(params, observations, actions)` is the
  sample an action produces, as pictures; `render` draws them.
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


@struct.dataclass
class LatentEnvState(environment.EnvState):
    """Condition row `[C]`, current latent `[d]`, prior noise `[d]` (zeros without `noise`),
    step counter."""

    condition: jax.Array
    latent: jax.Array
    noise: jax.Array
    time: int


@struct.dataclass
class LatentEnvParams(environment.EnvParams):
    """Frozen model weights and the condition table; `target_index` is static (checked at trace)."""

    decoder_state: Any = None
    reward_state: Any = None
    evaluator_state: Any = None
    conditions: jax.Array = None
    init_latent_std: float = 0.0
    max_steps_in_episode: int = 1
    target_index: int = struct.field(pytree_node=False, default=-1)


RENDER_LIMIT = 36  # pictures of an unconditioned env's samples
ACTIONS = ("latent", "sample")
SAMPLE_RANGE = (0.0, 1.0)  # what a sample-valued action is clipped to (pixel intensities)


class Frozen:
    """A module split into (graph, weights), or a plain function with no weights."""

    def __init__(self, fn: Callable | nnx.Module):
        if isinstance(fn, nnx.Module):
            self.graphdef, self.state = nnx.split(fn)
            self.fn = None
        else:
            if not callable(fn):
                raise TypeError(f"expected an nnx.Module or a callable, got {type(fn).__name__}")
            self.graphdef, self.state, self.fn = None, None, fn

    def __call__(self, state: Any, *args: Any) -> Any:
        if self.fn is not None:
            return self.fn(*args)
        return nnx.merge(self.graphdef, state)(*args)


class LatentEnv(EnvHooks, environment.Environment[LatentEnvState, LatentEnvParams]):
    """Action = latent vector in `[-action_bound, action_bound]^d`; reward = reward_fn(decoded)."""

    def __init__(
        self,
        decoder: Callable | nnx.Module,
        reward_fn: Callable | nnx.Module,
        latent_dim: int,
        *,
        conditions: jax.Array | np.ndarray | None = None,
        horizon: int = 1,
        action_bound: float = 3.0,
        reward_on: str = "final",
        name: str = "LatentEnv-v0",
        evaluator: Callable | nnx.Module | None = None,
        noise: bool = False,
        action: str = "latent",
    ):
        super().__init__()
        if int(latent_dim) != latent_dim or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if not action_bound > 0:
            raise ValueError(f"action_bound must be > 0, got {action_bound!r}")
        if reward_on not in ("final", "step"):
            raise ValueError(f"reward_on must be 'final' or 'step', got {reward_on!r}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        if noise and horizon != 1:
            raise ValueError(f"noise=True needs horizon=1 (a noise-to-latent map), got {horizon}")
        if action == "sample" and not noise:
            raise ValueError("action='sample' (the generator as the policy) needs noise=True: the "
                             "policy maps the observed noise to a sample")
        self.noise = bool(noise)
        self.action = action
        self.latent_dim = int(latent_dim)
        self.horizon = int(horizon)
        self.action_bound = float(action_bound)
        self.reward_on = reward_on
        self._name = name
        self.conditioned = conditions is not None
        table = np.zeros((1, 1), np.float32) if conditions is None else np.asarray(conditions)
        if table.ndim != 2 or table.shape[0] < 1:
            raise ValueError(f"conditions must be a table [M, C] with M >= 1, got {table.shape}")
        self._conditions = jnp.asarray(table, jnp.float32)
        low, high = float(table.min()), float(table.max())
        self._condition_bounds = (low, high if high > low else low + 1.0)  # no degenerate Box
        self._decoder = Frozen(decoder)
        self._reward = Frozen(reward_fn)
        self._evaluator = None if evaluator is None else Frozen(evaluator)
        self._one_hot = bool(table.shape[0] == table.shape[1] and np.array_equal(
            table, np.eye(table.shape[0])))
        self.sample_shape = self._probe()

    # --- model calls, batched: latents [B, d] -> samples [B, ...] -> rewards [B]
    def decode_latents(self, params: LatentEnvParams, latents: jax.Array) -> jax.Array:
        """Decoded samples `[B, ...]` for latents `[B, d]`."""
        return self._decoder(params.decoder_state, latents)

    def generator(self) -> nnx.Module:
        """A copy of the decoder module (to fine-tune it as a policy); ValueError for a function."""
        if self._decoder.fn is not None:
            raise ValueError(f"{self.name}'s decoder is a plain function; the generator-as-policy "
                             "needs an nnx.Module decoder")
        return nnx.clone(nnx.merge(self._decoder.graphdef, self._decoder.state))

    def samples(self, params: LatentEnvParams, observations: jax.Array,
                actions: jax.Array) -> jax.Array:
        """Samples `[B, ...]` that actions `[B, A]` produce from reset observations `[B, ...]`
        (for `horizon > 1`: the first edit), as the reward sees them."""
        actions = jnp.asarray(actions, jnp.float32)
        if actions.ndim != 2 or actions.shape[1] != self.num_actions:
            size = "latent_dim" if self.action == "latent" else "sample size"
            raise ValueError(f"actions must be [B, {size}={self.num_actions}], got {actions.shape}")
        if self.action == "sample":
            return jnp.clip(actions, *SAMPLE_RANGE).reshape(-1, *self.sample_shape)
        return self.decode_latents(params, self.first_latents(observations, actions))

    def decode(self, params: LatentEnvParams, observations: jax.Array,
               actions: jax.Array) -> jax.Array:
        """The samples actions `[B, A]` produce from reset observations, as pictures
        `[B, H, W]` (as `samples` when they are not pictures): with `rollax.load_agent`, all
        a user needs to draw from a trained run."""
        samples = self.samples(params, observations, actions)
        if self.image_shape is None:
            return samples
        return samples.reshape(samples.shape[0], *self.image_shape)

    def reward(self, params: LatentEnvParams, samples: jax.Array,
               conditions: jax.Array | None) -> jax.Array:
        """Rewards `[B]` for samples `[B, ...]` and conditions `[B, C]` (None if unconditioned)."""
        return self._reward(params.reward_state, samples, conditions if self.conditioned else None)

    PROBE_ROWS = 4  # a batch of several rows: a reward that mixes rows (a sum) shows there

    def _probe(self) -> tuple[int, ...]:
        """Decode a few latents (the zero latent first) and score them as one batch and row by
        row, so shape, NaN and cross-row errors surface here."""
        params, rows = self.default_params, self.PROBE_ROWS
        latents = jnp.concatenate([jnp.zeros((1, self.latent_dim), jnp.float32), jax.random.normal(
            jax.random.key(0), (rows - 1, self.latent_dim), jnp.float32)])
        for batch in (latents[:1], latents):  # one row first: its errors are the simplest
            try:
                samples = self.decode_latents(params, batch)
            except Exception as error:
                raise ValueError(f"decoder failed on latents of shape {batch.shape} "
                                 f"(latent_dim={self.latent_dim}): {error}") from error
            if not hasattr(samples, "shape") or samples.ndim < 1 or samples.shape[0] != len(batch):
                raise ValueError(f"decoder must map latents [B, {self.latent_dim}] to samples "
                                 f"[B, ...], got {getattr(samples, 'shape', type(samples).__name__)}"
                                 f" for B = {len(batch)}")
        conditions = self._conditions[np.arange(rows) % len(self._conditions)]
        alone = np.concatenate([self._probe_reward(params, samples[i:i + 1], conditions[i:i + 1])
                                for i in range(rows)])  # row 0 first: the simplest errors
        rewards = self._probe_reward(params, samples, conditions)
        if not (bool(jnp.all(jnp.isfinite(samples))) and bool(jnp.all(jnp.isfinite(rewards)))):
            raise ValueError(f"decoder/reward_fn produced non-finite values on probe latents: "
                             f"rewards {np.asarray(rewards)}")
        if not np.allclose(alone, np.asarray(rewards), rtol=1e-3, atol=1e-4):
            row = int(np.argmax(np.abs(alone - np.asarray(rewards))))
            raise ValueError(f"reward_fn must score each sample on its own: row {row} scores "
                             f"{alone[row]:.6g} alone but {float(rewards[row]):.6g} in a batch of "
                             f"{rows} (does it sum or normalise over the batch?)")
        return tuple(samples.shape[1:])

    def _probe_reward(self, params: LatentEnvParams, samples: jax.Array,
                      conditions: jax.Array) -> jax.Array:
        try:
            rewards = self.reward(params, samples, conditions)
        except Exception as error:
            raise ValueError(f"reward_fn failed on decoded samples of shape {samples.shape} with "
                             f"conditions {conditions.shape if self.conditioned else None}: "
                             f"{error}") from error
        if getattr(rewards, "shape", None) != samples.shape[:1]:
            raise ValueError(f"reward_fn must return shape [B] = {samples.shape[:1]} for samples "
                             f"{samples.shape}, got "
                             f"{getattr(rewards, 'shape', type(rewards).__name__)}")
        return rewards

    # --- evaluation hooks called by the training loop on greedy actions
    def first_latents(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """Latents `[B, d]` after one step from reset observations `[B, ...]` (as `step` clips)."""
        actions = jnp.asarray(actions, jnp.float32)
        if self.action != "latent" or actions.ndim != 2 or actions.shape[1] != self.latent_dim:
            raise ValueError(f"actions must be latents [B, latent_dim={self.latent_dim}], "
                             f"got {actions.shape} (action={self.action!r})")
        base = observations[:, -self.latent_dim:] if self.horizon > 1 else 0.0
        return jnp.clip(base + actions, -self.action_bound, self.action_bound)

    def conditions_of(self, observations: jax.Array) -> jax.Array | None:
        """Condition rows `[B, C]` of observations `[B, ...]` (None when unconditioned)."""
        if not self.conditioned:
            return None
        return observations[:, : self._conditions.shape[1]]

    def pictures(self, params: LatentEnvParams, observations: jax.Array,
                 actions: jax.Array) -> jax.Array:
        return self.decode(params, observations, actions)

    def with_task(self, params: LatentEnvParams, task: int) -> LatentEnvParams:
        if not self.conditioned:
            raise ValueError(f"{self.name} is unconditioned: ask for n samples, not classes")
        return with_target(self, params, task)

    def num_tasks(self, params: LatentEnvParams) -> int:
        """How many task keys `task_ids` gives: the condition rows (1 when unconditioned)."""
        return int(self._conditions.shape[0]) if self.conditioned else 1

    def task_ids(self, params: LatentEnvParams, observations: jax.Array,
                 batch_shape: tuple[int, ...] = ()) -> jax.Array:
        """Per observation `[..., obs]`, the index of its condition row `[...]` (0 when
        unconditioned): the task key of per-task baselines such as REINFORCE's EMA one."""
        if not self.conditioned:
            return jnp.zeros(observations.shape[:-1], jnp.int32)
        rows = observations[..., None, : self._conditions.shape[1]]
        return jnp.argmin(jnp.sum((rows - self._conditions) ** 2, axis=-1), axis=-1).astype(jnp.int32)

    def evaluation_metrics(self, params: LatentEnvParams, observations: jax.Array,
                           actions: jax.Array) -> dict[str, jax.Array]:
        """Batch means of `mean_reward` and the evaluator's metrics for one step from reset
        observations `[B, ...]` with actions `[B, A]` (for `horizon > 1`: the first edit)."""
        conditions = self.conditions_of(observations)
        samples = self.samples(params, observations, actions)
        metrics = {"mean_reward": jnp.mean(self.reward(params, samples, conditions))}
        if self._evaluator is not None:
            values = self._evaluator(params.evaluator_state, samples, conditions)
            metrics.update({name: jnp.mean(value) for name, value in values.items()})
        return metrics

    @property
    def renders_images(self) -> bool:
        return self.image_shape is not None

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """`(H, W)` of a decoded sample as a picture: `[H, W]` samples, or square flat ones."""
        if len(self.sample_shape) == 2:
            return self.sample_shape
        side = round(float(np.sqrt(np.prod(self.sample_shape))))
        return (side, side) if len(self.sample_shape) == 1 and side * side == self.sample_shape[0] \
            else None

    def render(self, params: LatentEnvParams, observations: jax.Array,
               actions: jax.Array) -> jax.Array:
        """The samples of actions as images `[B', H, W]`. With one-hot conditions over M classes:
        an M x M grid whose row c holds the first M samples asked for class c (blank if fewer)."""
        if self.image_shape is None:
            raise ValueError(f"samples of shape {self.sample_shape} are not pictures")
        images = self.decode(params, observations, actions)
        if not self._one_hot:
            return images[:RENDER_LIMIT]
        return rows_by_class(images, self.conditions_of(observations).argmax(-1),
                              self._conditions.shape[0])

    # --- gymnax interface
    @property
    def default_params(self) -> LatentEnvParams:
        return LatentEnvParams(
            decoder_state=self._decoder.state,
            reward_state=self._reward.state,
            evaluator_state=None if self._evaluator is None else self._evaluator.state,
            conditions=self._conditions,
            max_steps_in_episode=self.horizon,
        )

    def step_env(self, key: jax.Array, state: LatentEnvState, action: jax.Array,
                 params: LatentEnvParams) -> tuple[jax.Array, LatentEnvState, jax.Array,
                                                   jax.Array, dict[str, Any]]:
        """Move (or set) the latent, decode it, score it; terminate after `horizon` steps."""
        del key
        action = jnp.asarray(action, jnp.float32)
        if action.shape != (self.num_actions,):
            raise ValueError(f"action must have shape ({self.num_actions},) per env "
                             f"(action={self.action!r}), got {action.shape}")
        if self.action == "sample":
            latent = state.latent
            samples = jnp.clip(action, *SAMPLE_RANGE).reshape(1, *self.sample_shape)
        else:
            base = state.latent if self.horizon > 1 else jnp.zeros_like(state.latent)
            latent = jnp.clip(base + action, -self.action_bound, self.action_bound)
            samples = self.decode_latents(params, latent[None])
        reward = self.reward(params, samples, state.condition[None])[0]
        time = state.time + 1
        terminated = time >= self.horizon
        if self.reward_on == "final":
            reward = jnp.where(terminated, reward, 0.0)
        state = state.replace(latent=latent, time=time)
        return (jax.lax.stop_gradient(self._observe(state)), jax.lax.stop_gradient(state),
                reward.astype(jnp.float32), terminated, {})

    def reset_env(self, key: jax.Array,
                  params: LatentEnvParams) -> tuple[jax.Array, LatentEnvState]:
        """Pick a condition row (uniform, or `target_index`) and the starting latent."""
        num_rows = params.conditions.shape[0]
        if not -1 <= params.target_index < num_rows:
            raise ValueError(f"target_index must be -1 (uniform) or in [0, {num_rows}), "
                             f"got {params.target_index}")
        row_key, latent_key, noise_key = jax.random.split(key, 3)
        if params.target_index >= 0:
            row = jnp.asarray(params.target_index)
        else:
            row = jax.random.randint(row_key, (), 0, num_rows)
        latent = jnp.zeros(self.latent_dim, jnp.float32)
        if self.horizon > 1:
            latent = params.init_latent_std * jax.random.normal(latent_key, (self.latent_dim,))
            latent = jnp.clip(latent, -self.action_bound, self.action_bound)
        noise = jnp.zeros(self.latent_dim, jnp.float32)
        if self.noise:
            noise = jax.random.normal(noise_key, (self.latent_dim,))
        state = LatentEnvState(condition=params.conditions[row], latent=latent, noise=noise, time=0)
        return self._observe(state), state

    def _observe(self, state: LatentEnvState) -> jax.Array:
        """`[condition, noise, latent]`, each part only where it applies (an unconditioned env
        without noise observes a single zero)."""
        parts = [state.condition] if self.conditioned or not self.noise else []
        if self.noise:
            parts.append(state.noise)
        if self.horizon > 1:
            parts.append(state.latent)
        return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

    def is_truncated(self, state: LatentEnvState, params: LatentEnvParams) -> jax.Array:
        """Never: every episode terminates after exactly `horizon` steps."""
        return jnp.zeros((), bool)

    def is_terminated(self, state: LatentEnvState, params: LatentEnvParams) -> jax.Array:
        return state.time >= self.horizon

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return int(np.prod(self.sample_shape)) if self.action == "sample" else self.latent_dim

    def action_space(self, params: LatentEnvParams | None = None) -> spaces.Box:
        if self.action == "sample":
            return spaces.Box(*SAMPLE_RANGE, (self.num_actions,), jnp.float32)
        return spaces.Box(-self.action_bound, self.action_bound, (self.latent_dim,), jnp.float32)

    def observation_space(self, params: LatentEnvParams | None = None) -> spaces.Box:
        width = self._conditions.shape[1] if self.conditioned or not self.noise else 0
        low = np.full(width, self._condition_bounds[0], np.float32)
        high = np.full(width, self._condition_bounds[1], np.float32)
        if self.noise:  # a standard normal: unbounded
            low = np.concatenate([low, np.full(self.latent_dim, -np.inf, np.float32)])
            high = np.concatenate([high, np.full(self.latent_dim, np.inf, np.float32)])
        if self.horizon > 1:
            low = np.concatenate([low, np.full(self.latent_dim, -self.action_bound, np.float32)])
            high = np.concatenate([high, np.full(self.latent_dim, self.action_bound, np.float32)])
        return spaces.Box(jnp.asarray(low), jnp.asarray(high), low.shape, jnp.float32)


def rows_by_class(images: jax.Array, classes: jax.Array, num_classes: int) -> jax.Array:
    """`[M * M, H, W]`: slot `c * M + j` is the j-th image of class c, zeros if there is none."""
    count = images.shape[0]
    order = jnp.argsort(classes * count + jnp.arange(count))  # stable: by class, then position
    per_class = jnp.bincount(classes, length=num_classes)
    start = jnp.cumsum(per_class) - per_class
    slot = jnp.arange(num_classes)
    index = start[:, None] + slot[None, :]  # [M, M] into `order`
    valid = slot[None, :] < per_class[:, None]
    picked = images[order[jnp.clip(index, 0, count - 1)]]
    return jnp.where(valid[..., None, None], picked, 0.0).reshape(-1, *images.shape[1:])


def one_hot_conditions(num_classes: int) -> np.ndarray:
    """The condition table for class targets: the identity `[num_classes, num_classes]`."""
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_conditions must be a positive int, got {num_classes!r}")
    return np.eye(int(num_classes), dtype=np.float32)


def from_model(
    decoder: Callable | nnx.Module,
    reward_fn: Callable | nnx.Module,
    latent_dim: int,
    *,
    num_conditions: int = 0,
    horizon: int = 1,
    action_bound: float = 3.0,
    reward_on: str = "final",
    target_index: int = -1,
    evaluator: Callable | nnx.Module | None = None,
    noise: bool = False,
    action: str = "latent",
) -> tuple[LatentEnv, LatentEnvParams]:
    """Wrap a user's decoder (NNX module or function, `[B, d] -> [B, ...]`) as `(env, params)`.

    `num_conditions > 0` makes the observation a one-hot target class of that many; reward_fn
    then receives those one-hots `[B, num_conditions]` as `conditions`. `evaluator(samples,
    conditions) -> {name: [B]}` adds evaluation metrics (logged by the loop as `eval/<name>`).
    `noise`/`action`: see the module docstring (a noise-conditioned or generator policy).
    """
    if num_conditions < 0:
        raise ValueError(f"num_conditions must be >= 0, got {num_conditions}")
    conditions = one_hot_conditions(num_conditions) if num_conditions else None
    env = LatentEnv(decoder, reward_fn, latent_dim, conditions=conditions, horizon=horizon,
                    action_bound=action_bound, reward_on=reward_on, evaluator=evaluator,
                    noise=noise, action=action)
    return env, with_target(env, env.default_params, target_index)


def with_target(env: LatentEnv, params: LatentEnvParams, target_index: int) -> LatentEnvParams:
    """Params that fix the condition row to `target_index` (-1: uniform), checked now."""
    num_rows = params.conditions.shape[0]
    if int(target_index) != target_index or not -1 <= target_index < num_rows:
        raise ValueError(f"target_index must be -1 (uniform) or in [0, {num_rows}) for env "
                         f"{env.name!r}, got {target_index!r}")
    return params.replace(target_index=int(target_index))
