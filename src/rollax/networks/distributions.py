"""Action distributions: what every policy's output holds and every trainer scores with.

Each has the batch shape of the observations it was computed from: `log_prob(actions)`,
`entropy()` and `mode()` give one value (or action) per observation, whatever the policy kind
(a sequence model's observations are its positions, one next-token distribution each).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

LOG_2PI = math.log(2.0 * math.pi)


def compute_policy_entropy(log_probs: jax.Array) -> jax.Array:
    """H = -sum p log p over the last axis of a full log-probability vector `[..., A]` (a
    documented utility of `rollax.rl.utils`; defined here, where `Categorical` uses it)."""
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


class Distribution:
    """The interface: `log_prob(actions)` and `entropy()` have the batch shape."""

    def sample(self, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def log_prob(self, actions: jax.Array) -> jax.Array:
        raise NotImplementedError

    def entropy(self) -> jax.Array:
        raise NotImplementedError

    def mode(self) -> jax.Array:
        """The greedy action."""
        raise NotImplementedError

    def kl(self, other: Distribution) -> jax.Array:
        """KL(self || other) in closed form, of the batch shape."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form KL")


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
        return compute_policy_entropy(jax.nn.log_softmax(self.logits, axis=-1))

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)

    def kl(self, other: Categorical) -> jax.Array:
        log_p, log_q = jax.nn.log_softmax(self.logits, -1), jax.nn.log_softmax(other.logits, -1)
        return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


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

    def kl(self, other: DiagGaussian) -> jax.Array:
        """sum over dims of log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2."""
        per_dim = (other.log_std - self.log_std - 0.5
                   + 0.5 * jnp.exp(2 * (self.log_std - other.log_std))
                   + 0.5 * ((self.mean - other.mean) * jnp.exp(-other.log_std)) ** 2)
        return jnp.sum(jnp.broadcast_to(per_dim, jnp.broadcast_shapes(self.mean.shape, per_dim.shape)), axis=-1)


GaussianParams = DiagGaussian  # the name the public API has exported since the first version
