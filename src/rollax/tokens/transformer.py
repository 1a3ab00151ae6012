"""A small decoder-only transformer over token ids, with a key/value cache for sampling.

`model(tokens [B, T])` gives a `PolicyOutput`: the next-token distribution at every position
(a `Categorical` over logits `[B, T, V]`), plus values `[B, T]` with `value_head=True` (PPO).
PAD tokens (id 0) are never attended to, so left-padded prompts of different lengths share
one batch. `init_cache` and `decode` run the same network one position at a time over
cached keys and values: what `rollax.tokens.generation` samples with.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.networks.distributions import Categorical
from rollax.networks.policy import PolicyOutput
from rollax.tokens.tokenizer import PAD

MASKED = -1e9  # not -inf: a PAD query that may attend to nothing gets a uniform row, not NaN


class KVCache(NamedTuple):
    """Per layer keys and values `[layers, B, heads, max_length, head_dim]`, and which cached
    positions hold a real (non-PAD) token `[B, max_length]`."""

    keys: jax.Array
    values: jax.Array
    valid: jax.Array


class Block(nnx.Module):
    """Pre-norm causal self-attention and MLP, each added to the residual stream."""

    def __init__(self, width: int, heads: int, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.heads, self.head_dim = heads, width // heads
        self.norm1, self.norm2 = nnx.LayerNorm(width, rngs=rngs), nnx.LayerNorm(width, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, rngs=rngs)
        self.out = nnx.Linear(width, width, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def project(self, h: jax.Array):
        """`(q, k, v)`, each `[B, heads, T, head_dim]`."""
        b, t, _ = h.shape
        qkv = self.qkv(self.norm1(h)).reshape(b, t, 3, self.heads, self.head_dim)
        return tuple(qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))

    def finish(self, h, q, k, v, allowed):
        """Attend (`allowed [B, 1, Tq, Tk]`), then the MLP, on the residual stream `h`."""
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
        weights = jax.nn.softmax(jnp.where(allowed, scores, MASKED), axis=-1)
        attended = jnp.einsum("bhqk,bhkd->bhqd", weights, v)
        b, _, t, _ = attended.shape
        h = h + self.out(attended.transpose(0, 2, 1, 3).reshape(b, t, -1))
        return h + self.down(jax.nn.gelu(self.up(self.norm2(h))))


class TransformerPolicy(nnx.Module):
    def __init__(self, vocab_size: int, max_length: int, *, width: int = 64, layers: int = 2,
                 heads: int = 4, value_head: bool = False, rngs: nnx.Rngs):
        for name, value in (("vocab_size", vocab_size), ("max_length", max_length),
                            ("width", width), ("layers", layers), ("heads", heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerPolicy {name} must be a positive int, got {value!r}")
        self.vocab_size, self.max_length = vocab_size, max_length
        self.embed = nnx.Embed(vocab_size, width, rngs=rngs)
        self.positions = nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_length, width)))
        self.blocks = nnx.List([Block(width, heads, rngs) for _ in range(layers)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, vocab_size, rngs=rngs)
        self.value = nnx.Linear(width, 1, rngs=rngs) if value_head else None

    def __call__(self, tokens: jax.Array):
        """Next-token distribution at each position of `tokens [B, T]` (and values `[B, T]`)."""
        tokens = self._checked(tokens)
        t = tokens.shape[1]
        h = self.embed(tokens) + self.positions[...][:t]
        causal = jnp.tril(jnp.ones((t, t), bool))
        allowed = causal[None, None] & (tokens != PAD)[:, None, None, :]
        for block in self.blocks:
            q, k, v = block.project(h)
            h = block.finish(h, q, k, v, allowed)
        return self._outputs(h)

    def init_cache(self, batch: int) -> KVCache:
        block = self.blocks[0]
        shape = (len(self.blocks), batch, block.heads, self.max_length, block.head_dim)
        return KVCache(jnp.zeros(shape), jnp.zeros(shape), jnp.zeros((batch, self.max_length), bool))

    def decode(self, tokens: jax.Array, position: jax.Array, cache: KVCache):
        """Run `tokens [B, S]` placed at `position, ..., position + S - 1` against the cached
        earlier positions: `(outputs for those S positions, the cache with them added)`. A
        prompt goes in at once (S = P), then one sampled token per call (S = 1)."""
        tokens = self._checked(tokens)
        s = tokens.shape[1]
        h = self.embed(tokens) + jax.lax.dynamic_slice_in_dim(self.positions[...], position, s)
        valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, tokens != PAD, position, axis=1)
        query_at = position + jnp.arange(s)
        allowed = (jnp.arange(self.max_length)[None, :] <= query_at[:, None])[None, None] \
            & valid[:, None, None, :]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            q, k, v = block.project(h)
            k = jax.lax.dynamic_update_slice_in_dim(cache.keys[i], k, position, axis=2)
            v = jax.lax.dynamic_update_slice_in_dim(cache.values[i], v, position, axis=2)
            h = block.finish(h, q, k, v, allowed)
            keys.append(k)
            values.append(v)
        return self._outputs(h), KVCache(jnp.stack(keys), jnp.stack(values), valid)

    def _outputs(self, h: jax.Array) -> PolicyOutput:
        h = self.norm(h)
        value = None if self.value is None else self.value(h)[..., 0]
        return PolicyOutput(Categorical(self.head(h)), value)

    def _checked(self, tokens: jax.Array) -> jax.Array:
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integer ids [B, T], got {tokens.dtype}{list(tokens.shape)}")
        if tokens.shape[1] > self.max_length:
            raise ValueError(f"{tokens.shape[1]} tokens exceed max_length={self.max_length}")
        return tokens
