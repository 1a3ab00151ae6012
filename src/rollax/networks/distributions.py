"""Action distributions, and the one adapter from model outputs to them.

A policy returns a distribution (`Categorical`, `DiagGaussian`, `TokenCategorical`), or a
`(distribution, value)` pair for actor-critics; every collector and trainer then calls
`sample`, `log_prob`, `entropy` and `mode` on it, whatever the policy kind. A new policy kind
plugs in by returning one of these (or a new `Distribution` subclass).

Models written to the documented raw conventions (DESIGN.md) still work through
`as_distribution`: logits `[..., A]` -> `Categorical`; `(mean, log_std)` -> `DiagGaussian`;
`(policy_output, value)` for actor-critics. A pair of plain arrays is read as
`(logits, value)` or `(mean, log_std)` by the caller's `discrete` hint (the action dtype or
the action space), the only place that knows which.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

LOG_2PI = math.log(2.0 * math.pi)


class Distribution:
    """The interface: `log_prob(actions)` and `entropy()` have the batch shape (one value per
    action, or per token for token models)."""

    def sample(self, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def log_prob(self, actions: jax.Array) -> jax.Array:
        raise NotImplementedError

    def entropy(self) -> jax.Array:
        raise NotImplementedError

    def mode(self) -> jax.Array:
        """The greedy action."""
        raise NotImplementedError


@struct.dataclass
class Categorical(Distribution):
    """Categorical over the last axis of `logits [..., A]`; actions are integers `[...]`."""

    logits: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits, axis=-1)

    def log_prob(self, actions: jax.Array) -> jax.Array:
        log_softmax = jax.nn.log_softmax(self.logits, axis=-1)
        return jnp.take_along_axis(log_softmax, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        log_softmax = jax.nn.log_softmax(self.logits, axis=-1)
        return -jnp.sum(jnp.exp(log_softmax) * log_softmax, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)


@struct.dataclass
class TokenCategorical(Categorical):
    """One categorical per token, `logits [B, T, V]`, with a `mask [B, T]` of the tokens that
    count: `log_prob`/`entropy` are 0 at masked-out positions, so sums over T are sequence
    log-probs."""

    mask: jax.Array

    def log_prob(self, actions: jax.Array) -> jax.Array:
        return jnp.where(self.mask, super().log_prob(actions), 0.0)

    def entropy(self) -> jax.Array:
        return jnp.where(self.mask, super().entropy(), 0.0)

    def sequence_log_prob(self, tokens: jax.Array) -> jax.Array:
        """`[B]`: log-probability of each whole sequence."""
        return jnp.sum(self.log_prob(tokens), axis=-1)


@struct.dataclass
class DiagGaussian(Distribution):
    """A diagonal Gaussian: `mean [..., A]`, `log_std [A]` or `[..., A]`; actions `[..., A]`."""

    mean: jax.Array
    log_std: jax.Array

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def log_prob(self, actions: jax.Array) -> jax.Array:
        z = (actions - self.mean) * jnp.exp(-self.log_std)
        per_dim = -0.5 * z**2 - self.log_std - 0.5 * LOG_2PI
        return jnp.sum(jnp.broadcast_to(per_dim, jnp.broadcast_shapes(self.mean.shape, per_dim.shape)), axis=-1)

    def entropy(self) -> jax.Array:
        per_dim = jnp.broadcast_to(self.log_std + 0.5 * (1.0 + LOG_2PI), self.mean.shape)
        return jnp.sum(per_dim, axis=-1)

    def mode(self) -> jax.Array:
        return self.mean


GaussianParams = DiagGaussian  # the name the public API has exported since the first version


def is_discrete_actions(actions: jax.Array) -> bool:
    """Integer actions are categorical choices (or tokens); float actions are continuous."""
    return jnp.issubdtype(jnp.asarray(actions).dtype, jnp.integer)


def as_distribution(output: Any, discrete: bool | None = None) -> tuple[Distribution, jax.Array | None]:
    """`(distribution, value or None)` from a model output (see the module docstring).

    The value is returned without a trailing axis of size 1. `discrete` is needed only for a
    pair of plain arrays, which is otherwise ambiguous.
    """
    if isinstance(output, Distribution):
        return output, None
    if not isinstance(output, (tuple, list)):
        return Categorical(output), None
    if len(output) != 2:
        raise ValueError(f"a policy returns a distribution, logits, (mean, log_std) or "
                         f"(policy_output, value); got a {len(output)}-tuple")
    first, second = output
    if isinstance(first, (Distribution, tuple, list)):
        return as_distribution(first, False if isinstance(first, (tuple, list)) else discrete)[0], \
            _squeeze_value(second)
    if discrete is None:
        raise ValueError("a pair of arrays is (logits, value) for discrete actions and "
                         "(mean, log_std) for continuous ones: return a Categorical or "
                         "DiagGaussian (rollax.networks.distributions) to say which")
    if discrete:
        return Categorical(first), _squeeze_value(second)
    return DiagGaussian(first, second), None


def _squeeze_value(value: jax.Array) -> jax.Array:
    return value[..., 0] if value.ndim >= 1 and value.shape[-1] == 1 else value
