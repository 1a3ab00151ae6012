"""Sampling completions from a token policy, with its key/value cache (pure, jittable).

The prompt `[B, P]` (left-padded) goes through the model once; then each new token is one
`decode` call over the cached keys and values. Tokens after a row's EOS are PAD and outside
its `mask`. `log_probs` are the model's own (temperature 1, no top-k) log-probabilities of the
sampled tokens: what a trainer recomputes from `model(tokens)`, so an importance ratio is 1 at
the sampling parameters whatever the sampling temperature.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rollax.networks.policy import policy_output
from rollax.tokens.tokenizer import EOS, PAD


class Generation(NamedTuple):
    tokens: jax.Array  # [B, P + L]: prompt then completion
    completions: jax.Array  # [B, L]
    log_probs: jax.Array  # [B, L], 0 outside mask
    mask: jax.Array  # [B, L]: the tokens the policy wrote, its EOS included (not a tool's)
    stats: Any = None  # per-row counts of a multi-turn episode (`turns.ToolTurns`)


def pick(logits: jax.Array, key: jax.Array, temperature: float, top_k: int, greedy: bool) -> jax.Array:
    """A token per row of `logits [B, V]`: argmax when `greedy`, else a sample at
    `temperature` among the `top_k` most likely (0: all)."""
    if greedy:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1)


def _next_token(logits, key, done, temperature, top_k, greedy) -> tuple[jax.Array, jax.Array]:
    """`(token, its log-prob under the model's own logits)` per row; PAD once `done`."""
    token = jnp.where(done, PAD, pick(logits, key, temperature, top_k, greedy))
    return token, jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=-1)[:, 0]


def _next(output) -> jax.Array:
    """Last position's logits `[B, V]` from a model output."""
    return policy_output(output, True).distribution.logits[:, -1]


def generate(model, prompts: jax.Array, key: jax.Array, max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int = 0, greedy: bool = False) -> Generation:
    """`max_new_tokens` completion tokens per prompt, sampled with the model's cache (a model
    without one, `init_cache` and `decode`, recomputes the prefix for every token)."""
    if not hasattr(model, "decode"):
        return generate_without_cache(model, prompts, key, max_new_tokens, temperature=temperature,
                                      top_k=top_k, greedy=greedy)
    check_sampling(model, prompts, max_new_tokens, temperature, top_k)
    b, p = prompts.shape
    output, cache = model.decode(prompts, 0, model.init_cache(b))

    def step(carry, step_key):
        logits, cache, position, done = carry
        token, log_prob = _next_token(logits, step_key, done, temperature, top_k, greedy)
        output, cache = model.decode(token[:, None], position, cache)
        return (_next(output), cache, position + 1, done | (token == EOS)), \
            (token, jnp.where(done, 0.0, log_prob), ~done)

    carry = (_next(output), cache, jnp.int32(p), jnp.zeros((b,), bool))
    _, (tokens, log_probs, mask) = jax.lax.scan(step, carry, jax.random.split(key, max_new_tokens))
    completions = tokens.T
    return Generation(jnp.concatenate([prompts, completions], axis=1), completions, log_probs.T, mask.T)


def generate_without_cache(model, prompts: jax.Array, key: jax.Array, max_new_tokens: int, *,
                           temperature: float = 1.0, top_k: int = 0, greedy: bool = False) -> Generation:
    """The same sampling, recomputing the whole prefix for every token (no cache): the
    reference the cached path is tested and benchmarked against."""
    check_sampling(model, prompts, max_new_tokens, temperature, top_k)
    b, p = prompts.shape
    tokens = jnp.concatenate([prompts, jnp.full((b, max_new_tokens), PAD, prompts.dtype)], axis=1)

    def step(carry, inputs):
        tokens, done = carry
        t, step_key = inputs
        # PAD after position p + t is never attended to, so the fixed-size input is exact
        logits = policy_output(model(tokens), True).distribution.logits[:, p + t - 1]
        token, log_prob = _next_token(logits, step_key, done, temperature, top_k, greedy)
        tokens = tokens.at[:, p + t].set(token)
        return (tokens, done | (token == EOS)), (jnp.where(done, 0.0, log_prob), ~done)

    (tokens, _), (log_probs, mask) = jax.lax.scan(
        step, (tokens, jnp.zeros((b,), bool)),
        (jnp.arange(max_new_tokens), jax.random.split(key, max_new_tokens)))
    return Generation(tokens, tokens[:, p:], log_probs.T, mask.T)


def decoder(model, prompts: jax.Array, max_new_tokens: int):
    """`(logits [B, V] after the prompt, state, advance)` with `advance(state, token [B],
    position) -> (logits after it, state)`: one token at a time through the model's cache, or,
    for a model without one, through the whole prefix (PAD after it is never attended to)."""
    b, p = prompts.shape
    if hasattr(model, "decode"):
        def advance(cache, token, position):
            output, cache = model.decode(token[:, None], position, cache)
            return _next(output), cache

        output, cache = model.decode(prompts, 0, model.init_cache(b))
        return _next(output), cache, advance

    def advance_without_cache(tokens, token, position):
        tokens = tokens.at[:, position].set(token)
        return policy_output(model(tokens), True).distribution.logits[:, position], tokens

    tokens = jnp.concatenate([prompts, jnp.full((b, max_new_tokens), PAD, prompts.dtype)], axis=1)
    return policy_output(model(tokens), True).distribution.logits[:, p - 1], tokens, \
        advance_without_cache


@dataclasses.dataclass(frozen=True)
class SingleTurn:
    """A task's episode is one completion per prompt, without tools (`turns.ToolTurns` is the
    multi-turn one): how it is sampled, which demonstration tokens a tool wrote (none), the
    answer it gives (all of it) and what it adds to a batch's metrics (nothing)."""

    def generate(self, model, prompts: jax.Array, key: jax.Array, max_new_tokens: int,
                 **sampling: Any) -> Generation:
        return generate(model, prompts, key, max_new_tokens, **sampling)

    def observed(self, completion: jax.Array) -> jax.Array:
        return jnp.zeros(completion.shape, bool)

    def final_answer(self, completion: jax.Array) -> jax.Array:
        return completion

    def step(self, tokens: jax.Array, start: int, time: jax.Array, action: jax.Array):
        """An env step: `(tokens with action written at start + time, time + 1, not cut)`."""
        return tokens.at[start + time].set(action), time + 1, jnp.array(False)

    def metrics(self, generation: Generation, rewards: jax.Array) -> dict[str, jax.Array]:
        return {}


def check_sampling(model, prompts, max_new_tokens, temperature, top_k) -> None:
    if prompts.ndim != 2:
        raise ValueError(f"prompts must be token ids [B, P], got shape {prompts.shape}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if prompts.shape[1] + max_new_tokens > model.max_length:
        raise ValueError(f"prompt length {prompts.shape[1]} + max_new_tokens {max_new_tokens} "
                         f"exceeds the model's max_length={model.max_length}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not isinstance(top_k, int) or not 0 <= top_k <= model.vocab_size:
        raise ValueError(f"top_k must be an int in [0, {model.vocab_size}], got {top_k!r}")
