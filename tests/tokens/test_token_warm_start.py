"""The supervised warm start of a token policy: its loss against a NumPy cross-entropy, the
stop at the target success (judged by a Python check of the greedy completions), the cache."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rollax
from rollax.tokens.generation import generate
from rollax.tokens.source import held_out_prompts
from rollax.tokens.tasks import DIGITS
from rollax.tokens.warm_start import (
    WarmStartConfig,
    demonstration_loss,
    token_policy,
    warm_start,
)

SMALL = WarmStartConfig(width=32, layers=1, heads=2, batch_size=32, learning_rate=3e-3,
                        eval_every=10, eval_prompts=100, target_success=0.3, max_steps=600)
SHORT = {"min_digits": 2, "max_digits": 3}


def python_success(model, task, prompts):
    """Share of prompts whose greedy completion decodes to the reversed digits."""
    sample = nnx.jit(generate, static_argnames=("max_new_tokens", "greedy"))
    out = np.asarray(sample(model, prompts, jax.random.key(0), task.completion_length, greedy=True).completions)
    texts = [DIGITS.decode(p) for p in np.asarray(prompts)]
    return np.mean([DIGITS.decode(c) == t[:-1][::-1] and 1 in list(c)
                    for c, t in zip(out, texts, strict=True)])


def test_loss_is_the_cross_entropy_of_the_demonstration_tokens():
    env, _ = rollax.make("rollax/Tokens-Reverse-v0", **SHORT)
    task = env.task
    model = token_policy(task, SMALL, rngs=nnx.Rngs(3))
    prompts = held_out_prompts(task, 6)
    forward = nnx.jit(lambda m, tokens: m(tokens).distribution.logits[0])
    expected = []
    for prompt in np.asarray(prompts):
        answer = DIGITS.encode(DIGITS.decode(prompt)[:-1][::-1]) + [1]  # the digits, then EOS
        tokens = np.concatenate([prompt, answer]).astype(np.int32)
        logits = np.asarray(forward(model, jnp.asarray(tokens[None, :-1])), np.float64)
        for i, target in enumerate(answer):
            row = logits[task.prompt_length - 1 + i]
            expected.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[target])
    loss = nnx.jit(demonstration_loss, static_argnums=2)(model, prompts, task)
    assert float(loss) == pytest.approx(np.mean(expected), rel=1e-4)


def test_warm_start_stops_at_a_moderate_success_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLAX_CACHE_DIR", str(tmp_path))  # trained here, then read back
    model, report = warm_start("rollax/Tokens-Reverse-v0", SMALL, **SHORT)
    env, _ = rollax.make("rollax/Tokens-Reverse-v0", **SHORT)
    prompts = held_out_prompts(env.task, SMALL.eval_prompts)
    success = python_success(model, env.task, prompts)
    assert report["source"] == "trained" and success == pytest.approx(report["success"])
    assert 0.3 <= success <= 0.9 and report["steps"] < SMALL.max_steps
    again, cached = warm_start("rollax/Tokens-Reverse-v0", SMALL, **SHORT)
    assert cached["source"] == "cache" and cached["success"] == report["success"]
    for a, b in zip(jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(again)), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_warm_start_input_is_named():
    with pytest.raises(ValueError, match="not a token-task env"):
        warm_start("CartPole-v1", SMALL)
    with pytest.raises(ValueError, match="target_success"):
        WarmStartConfig(target_success=0.0)
    with pytest.raises(ValueError, match="eval_every"):
        WarmStartConfig(eval_every=0)
