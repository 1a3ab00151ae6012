"""The `RewardFunction` protocol and the documented combinators, all jittable.

A reward function maps a batch of samples `[B, ...]` (and optional conditions `[B, ...]`)
to rewards `[B]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp


@runtime_checkable
class RewardFunction(Protocol):
    """Computes rewards `[B]` for generated samples `[B, ...]`."""

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        ...


def _check_callable(value: Any, name: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be a callable reward function, got {type(value).__name__}")


@dataclass(frozen=True)
class ConstantReward:
    """The same reward for every sample (useful for testing)."""

    value: float = 1.0

    def __call__(self, samples, conditions=None, **kwargs):
        return jnp.full((jnp.shape(samples)[0],), self.value, dtype=jnp.float32)


@dataclass(frozen=True)
class CompositeReward:
    """Weighted sum of several reward functions."""

    reward_fns: Sequence[RewardFunction]
    weights: Sequence[float] | None = None

    def __post_init__(self):
        if len(self.reward_fns) == 0:
            raise ValueError("CompositeReward needs at least one reward function")
        for i, fn in enumerate(self.reward_fns):
            _check_callable(fn, f"reward_fns[{i}]")
        if self.weights is not None and len(self.weights) != len(self.reward_fns):
            raise ValueError(
                f"CompositeReward got {len(self.weights)} weights for {len(self.reward_fns)} reward functions"
            )
        object.__setattr__(self, "reward_fns", tuple(self.reward_fns))
        weights = self.weights if self.weights is not None else (1.0,) * len(self.reward_fns)
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))

    def __call__(self, samples, conditions=None, **kwargs):
        return sum(w * fn(samples, conditions, **kwargs) for w, fn in zip(self.weights, self.reward_fns))


@dataclass(frozen=True)
class ThresholdReward:
    """`above_value` where the base reward exceeds `threshold`, else `below_value`."""

    reward_fn: RewardFunction
    threshold: float = 0.5
    above_value: float = 1.0
    below_value: float = 0.0

    def __post_init__(self):
        _check_callable(self.reward_fn, "reward_fn")

    def __call__(self, samples, conditions=None, **kwargs):
        base = self.reward_fn(samples, conditions, **kwargs)
        return jnp.where(base > self.threshold, self.above_value, self.below_value).astype(jnp.float32)


@dataclass(frozen=True)
class ScaledReward:
    """The base reward times a constant."""

    reward_fn: RewardFunction
    scale: float = 1.0

    def __post_init__(self):
        _check_callable(self.reward_fn, "reward_fn")

    def __call__(self, samples, conditions=None, **kwargs):
        return self.scale * self.reward_fn(samples, conditions, **kwargs)


@dataclass(frozen=True)
class ClippedReward:
    """The base reward clipped to `[min_value, max_value]`."""

    reward_fn: RewardFunction
    min_value: float = -1.0
    max_value: float = 1.0

    def __post_init__(self):
        _check_callable(self.reward_fn, "reward_fn")
        if self.min_value > self.max_value:
            raise ValueError(f"ClippedReward min_value={self.min_value} > max_value={self.max_value}")

    def __call__(self, samples, conditions=None, **kwargs):
        return jnp.clip(self.reward_fn(samples, conditions, **kwargs), self.min_value, self.max_value)
