"""Reward normalisation as Stable-Baselines3's `VecNormalize` does it: each reward divided by
the running standard deviation of the discounted return of the env's episode so far (not
centred), then clipped.

Per env, `returns = returns * gamma + reward`; the running statistics of `returns` (over the
env batch, `RunningStatistics`) are updated, the reward scaled by them, and `returns` set to 0
where the episode ended (terminated or truncated). The scaler is part of the env-rollout
state, so it is per seed, checkpointed and restored on resume; episode returns stay raw.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from rollax.networks.normalization import EPSILON, RunningStatistics


@struct.dataclass
class RewardScaler:
    returns: jax.Array  # [N]: each env's discounted return so far
    statistics: RunningStatistics  # of those returns
    gamma: float = struct.field(pytree_node=False)
    clip: float = struct.field(pytree_node=False)

    def scale(self, rewards: jax.Array, dones: jax.Array) -> tuple[RewardScaler, jax.Array]:
        """`(the scaler after this step, the scaled rewards [N])`."""
        returns = self.returns * self.gamma + rewards
        statistics = self.statistics.update(returns)
        scaled = jnp.clip(rewards / jnp.sqrt(statistics.var + EPSILON), -self.clip, self.clip)
        return self.replace(returns=jnp.where(dones, 0.0, returns), statistics=statistics), scaled


@dataclasses.dataclass(frozen=True)
class RewardScaling:
    """How rewards are scaled: the discount of the returns and the clip."""

    gamma: float
    clip: float

    def start(self, num_envs: int) -> RewardScaler:
        return RewardScaler(jnp.zeros((num_envs,), jnp.float32), RunningStatistics.start(),
                            self.gamma, self.clip)
