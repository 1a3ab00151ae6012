"""The `RewardFunction` protocol and the documented combinators, all jittable.

A reward function maps a batch of samples `[B, ...]` (and optional conditions `[B, ...]`)
to rewards `[B]`. The combinators are NNX modules: one that combines model-backed rewards (a
classifier's, a VAE's) is itself split into frozen weights by the env that scores with it, as
every reward is, so its models' weights are data of the compiled program, not constants in it.
A NaN from a base reward stays NaN through every combinator, so it is caught where rewards are
checked instead of turning into an ordinary number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from flax import nnx


@runtime_checkable
class RewardFunction(Protocol):
    """Computes rewards `[B]` for generated samples `[B, ...]`."""

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        ...


def _check_callable(value: Any, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a callable reward function, got {type(value).__name__}")


class ConstantReward(nnx.Module):
    """The same reward for every sample (useful for testing)."""

    def __init__(self, value: float = 1.0):
        self.value = value

    def __call__(self, samples, conditions=None, **kwargs):
        return jnp.full((jnp.shape(samples)[0],), self.value, dtype=jnp.float32)


class CompositeReward(nnx.Module):
    """Weighted sum of several reward functions (weights 1 by default)."""

    def __init__(self, reward_fns: Sequence[RewardFunction], weights: Sequence[float] | None = None):
        if len(reward_fns) == 0:
            raise ValueError("CompositeReward needs at least one reward function")
        for i, fn in enumerate(reward_fns):
            _check_callable(fn, f"reward_fns[{i}]")
        if weights is not None and len(weights) != len(reward_fns):
            raise ValueError(f"CompositeReward got {len(weights)} weights for {len(reward_fns)} "
                             "reward functions")
        self.reward_fns = nnx.List(reward_fns)
        self.weights = tuple(float(w) for w in (weights if weights is not None else [1.0] * len(reward_fns)))

    def __call__(self, samples, conditions=None, **kwargs):
        return sum(w * fn(samples, conditions, **kwargs) for w, fn in zip(self.weights, self.reward_fns))


class ThresholdReward(nnx.Module):
    """`above_value` where the base reward exceeds `threshold`, else `below_value` (NaN stays NaN)."""

    def __init__(self, reward_fn: RewardFunction, threshold: float = 0.5, above_value: float = 1.0,
                 below_value: float = 0.0):
        _check_callable(reward_fn, "reward_fn")
        self.reward_fn, self.threshold = reward_fn, threshold
        self.above_value, self.below_value = above_value, below_value

    def __call__(self, samples, conditions=None, **kwargs):
        base = self.reward_fn(samples, conditions, **kwargs)
        rewards = jnp.where(base > self.threshold, self.above_value, self.below_value)
        return jnp.where(jnp.isnan(base), jnp.nan, rewards).astype(jnp.float32)


class ScaledReward(nnx.Module):
    """The base reward times a constant."""

    def __init__(self, reward_fn: RewardFunction, scale: float = 1.0):
        _check_callable(reward_fn, "reward_fn")
        self.reward_fn, self.scale = reward_fn, scale

    def __call__(self, samples, conditions=None, **kwargs):
        return self.scale * self.reward_fn(samples, conditions, **kwargs)


class ClippedReward(nnx.Module):
    """The base reward clipped to `[min_value, max_value]` (NaN stays NaN)."""

    def __init__(self, reward_fn: RewardFunction, min_value: float = -1.0, max_value: float = 1.0):
        _check_callable(reward_fn, "reward_fn")
        if min_value > max_value:
            raise ValueError(f"ClippedReward min_value={min_value} > max_value={max_value}")
        self.reward_fn, self.min_value, self.max_value = reward_fn, min_value, max_value

    def __call__(self, samples, conditions=None, **kwargs):
        return jnp.clip(self.reward_fn(samples, conditions, **kwargs), self.min_value, self.max_value)
