"""The time-major trajectory every collector yields and every trainer consumes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Trajectory:
    """A rollout of T steps from N environments, time-major: every field is `[T, N, ...]`.

    `bootstrap_values[t]` is V(s') of the true next observation after step t (the
    pre-reset `final_observation` when the episode ended there), so truncated steps are
    bootstrapped and terminated ones are not. `episode_returns`/`episode_lengths` hold the
    finished episode's totals at steps where `dones` is true and 0 elsewhere.
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    log_probs: jax.Array
    values: jax.Array
    bootstrap_values: jax.Array
    episode_returns: jax.Array
    episode_lengths: jax.Array

    @property
    def dones(self) -> jax.Array:
        """`[T, N]` true where an episode ended after step t, by termination or truncation."""
        return jnp.logical_or(self.terminated, self.truncated)

    def as_batch(self) -> dict[str, jax.Array]:
        """The trainer batch with the documented keys (`observations`, `actions`, ...)."""
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "dones": self.dones,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "values": self.values,
            "log_probs": self.log_probs,
            "bootstrap_values": self.bootstrap_values,
        }
