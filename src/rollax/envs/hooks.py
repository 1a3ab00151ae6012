"""rollax's optional env hooks, declared once with their defaults.

A gymnax env needs none of them; an env that offers any subclasses `EnvHooks` (next to
gymnax's `Environment`) and overrides what it has. The env sources call them through
`env_hooks(env)`, so a plain gymnax env gets the defaults.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


class EnvHooks:
    """What the training loop may ask an env beyond gymnax's interface."""

    renders_images: bool = False  # `render` draws the samples of actions

    def num_tasks(self, params: Any) -> int:
        """How many task keys `task_ids` gives (e.g. condition classes)."""
        return 1

    def task_ids(self, params: Any, observations: jax.Array, batch_shape: tuple[int, ...]) -> jax.Array:
        """The task key of each observation `[*batch_shape]` (per-task baselines such as
        REINFORCE's EMA one)."""
        return jnp.zeros(batch_shape, jnp.int32)

    def evaluation_metrics(self, params: Any, observations: jax.Array,
                           actions: jax.Array) -> dict[str, jax.Array]:
        """Scalars describing one step from reset `observations [B, ...]` with `actions`
        (logged as `eval/<name>` for greedy actions and `eval/sampled_<name>` for sampled ones)."""
        return {}

    def render(self, params: Any, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """Pictures `[B', H, W]` of what `actions` produce from `observations`."""
        raise NotImplementedError(f"{type(self).__name__} draws no pictures")

    def pictures(self, params: Any, observations: jax.Array, actions: jax.Array) -> jax.Array:
        """One picture `[B, H, W]` in [0, 1] per action `[B, ...]` from reset `observations`."""
        raise ValueError(f"{type(self).__name__} makes no pictures of its samples")

    def with_task(self, params: Any, task: int) -> Any:
        """`params` whose resets all pick task key `task` (e.g. a condition class)."""
        raise ValueError(f"{type(self).__name__} has no tasks to ask for")


_DEFAULTS = EnvHooks()


def env_hooks(env: Any) -> EnvHooks:
    """`env` itself when it declares rollax's hooks, else the defaults."""
    return env if isinstance(env, EnvHooks) else _DEFAULTS
