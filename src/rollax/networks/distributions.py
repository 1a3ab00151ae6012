"""One adapter from model outputs to action distributions, shared by every trainer and collector.

Model output conventions (DESIGN.md): discrete actions -> logits `[..., A]`; continuous ->
`(mean, log_std)`; actor-critic -> `(policy_output, value)`; token models -> logits
`[B, T, V]` (a categorical per token). Whether actions are discrete decides how a 2-tuple
is read, because `(logits, value)` and `(mean, log_std)` can have the same shapes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


class GaussianParams(NamedTuple):
    """A diagonal Gaussian: `mean [..., A]`, `log_std [A]` or `[..., A]`."""

    mean: jax.Array
    log_std: jax.Array


def is_discrete_actions(actions: jax.Array) -> bool:
    """Integer actions are categorical choices (or tokens); float actions are continuous."""
    return jnp.issubdtype(jnp.asarray(actions).dtype, jnp.integer)


def split_output(output: Any, discrete: bool) -> tuple[Any, jax.Array | None]:
    """Split a model output into `(policy_output, value or None)`.

    The value, when present, is returned without a trailing axis of size 1.
    """
    if discrete:
        if isinstance(output, (tuple, list)):
            if len(output) != 2:
                raise ValueError(
                    f"a discrete policy returns logits or (logits, value); got a {len(output)}-tuple"
                )
            return output[0], _squeeze_value(output[1])
        return output, None
    if isinstance(output, GaussianParams):
        return output, None
    if isinstance(output, (tuple, list)) and len(output) == 2:
        first, second = output
        if isinstance(first, (tuple, list)):
            return GaussianParams(*first), _squeeze_value(second)
        return GaussianParams(first, second), None
    raise ValueError(
        "a continuous policy returns (mean, log_std) or ((mean, log_std), value); "
        f"got {type(output).__name__}"
    )


def _squeeze_value(value: jax.Array) -> jax.Array:
    return value[..., 0] if value.ndim >= 1 and value.shape[-1] == 1 else value


def log_prob(policy_output: Any, actions: jax.Array, discrete: bool) -> jax.Array:
    """Log-probability of `actions`: `actions.shape` for categorical, `actions.shape[:-1]` for Gaussian."""
    if discrete:
        log_softmax = jax.nn.log_softmax(policy_output, axis=-1)
        return jnp.take_along_axis(log_softmax, actions[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mean, log_std = policy_output
    z = (actions - mean) * jnp.exp(-log_std)
    per_dim = -0.5 * z**2 - log_std - 0.5 * LOG_2PI
    return jnp.sum(jnp.broadcast_to(per_dim, jnp.broadcast_shapes(mean.shape, per_dim.shape)), axis=-1)


def entropy(policy_output: Any, discrete: bool) -> jax.Array:
    """Entropy of the distribution, shaped like `log_prob`'s result."""
    if discrete:
        log_softmax = jax.nn.log_softmax(policy_output, axis=-1)
        return -jnp.sum(jnp.exp(log_softmax) * log_softmax, axis=-1)
    mean, log_std = policy_output
    per_dim = jnp.broadcast_to(log_std + 0.5 * (1.0 + LOG_2PI), mean.shape)
    return jnp.sum(per_dim, axis=-1)


def sample(policy_output: Any, key: jax.Array, discrete: bool) -> jax.Array:
    """Draw actions from the distribution."""
    if discrete:
        return jax.random.categorical(key, policy_output, axis=-1)
    mean, log_std = policy_output
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)


def mode(policy_output: Any, discrete: bool) -> jax.Array:
    """The greedy action: argmax logits, or the Gaussian mean."""
    if discrete:
        return jnp.argmax(policy_output, axis=-1)
    return policy_output[0]
