"""The denoiser: an MLP over a noisy image and its noise level, with a sinusoidal time
embedding (Ho et al., 2020, after the Transformer's positions). One network serves both base
models: it predicts the noise (DDPM) or the velocity (rectified flow) of `samplers.py`.

`shifts` are extra inputs added to each hidden layer before its activation: how a policy feeds
the denoiser a condition through zero-initialised layers (ControlNet's zero convolutions,
Zhang et al., 2023), so that an untrained policy is exactly the base model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

TIME_SCALE = 1000.0  # times in [0, 1] are embedded as positions in [0, 1000]


def time_embedding(times: jax.Array, dim: int) -> jax.Array:
    """`[..., dim]` sines and cosines of `times [...]` (in [0, 1]) at geometric frequencies."""
    half = dim // 2
    frequencies = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half) / half)
    angles = (times[..., None] * TIME_SCALE) * frequencies
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Denoiser(nnx.Module):
    """`(x [..., D], times [...]) -> [..., D]` with `depth` hidden layers of `hidden_dim`
    (SiLU, residual after the first)."""

    def __init__(self, data_dim: int = 64, hidden_dim: int = 256, depth: int = 3,
                 time_dim: int = 64, *, rngs: nnx.Rngs):
        self.data_dim, self.hidden_dim, self.time_dim = data_dim, hidden_dim, time_dim
        self.input = nnx.Linear(data_dim + time_dim, hidden_dim, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(hidden_dim, hidden_dim, rngs=rngs)
                                for _ in range(depth - 1)])
        self.output = nnx.Linear(hidden_dim, data_dim, rngs=rngs)

    @property
    def depth(self) -> int:
        return 1 + len(self.hidden)

    def __call__(self, x: jax.Array, times: jax.Array, shifts: list[jax.Array] | None = None
                 ) -> jax.Array:
        """`shifts`: None, or one `[..., hidden_dim]` per hidden layer (`depth` of them)."""
        shifts = shifts or [0.0] * self.depth
        h = self.input(jnp.concatenate([x, time_embedding(times, self.time_dim)], axis=-1))
        h = nnx.silu(h + shifts[0])
        for layer, shift in zip(self.hidden, shifts[1:], strict=True):
            h = h + nnx.silu(layer(h) + shift)
        return self.output(h)
