"""The transformer policy and cached sampling, against the uncached forward pass, a NumPy
softmax and the trainers' own log-prob adapter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rollax.networks.policy import score_actions
from rollax.tokens.generation import EOS, PAD, generate, generate_without_cache
from rollax.tokens.transformer import TransformerPolicy

VOCAB, PROMPT, NEW = 14, 6, 5
# one compiled program per sampling setting (called eagerly, generate dispatches op by op)
sample = nnx.jit(generate, static_argnames=("max_new_tokens", "temperature", "top_k", "greedy"))


@pytest.fixture(scope="module")
def model():
    return TransformerPolicy(VOCAB, PROMPT + NEW, width=32, layers=2, heads=4, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def prompts():
    """Left-padded prompts of 2 to 6 tokens."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (2, 3, 4, 5, 6, 6):
        rows.append([PAD] * (PROMPT - n) + list(rng.integers(2, VOCAB, n)))
    return jnp.asarray(rows, jnp.int32)


def logits_of(output):
    return np.asarray((output[0] if isinstance(output, tuple) else output).logits)


def test_cached_decoding_gives_the_full_forward_logits(model, prompts):
    tokens = jnp.concatenate([prompts, jax.random.randint(jax.random.key(1), (6, NEW), 1, VOCAB)], 1)
    full = logits_of(nnx.jit(lambda m, t: m(t))(model, tokens))
    decode = nnx.jit(lambda m, t, position, cache: m.decode(t, position, cache))
    output, cache = decode(model, prompts, 0, model.init_cache(6))
    steps = [logits_of(output)]
    for t in range(NEW):
        output, cache = decode(model, tokens[:, PROMPT + t][:, None], PROMPT + t, cache)
        steps.append(logits_of(output))
    real = np.asarray(prompts != PAD)  # PAD queries are never used
    np.testing.assert_allclose(steps[0][real], full[:, :PROMPT][real], atol=1e-4)
    np.testing.assert_allclose(np.concatenate(steps[1:], 1), full[:, PROMPT:], atol=1e-4)


def test_cached_and_recomputed_sampling_agree(model, prompts):
    for greedy in (True, False):
        key = jax.random.key(2)
        a = jax.jit(lambda p, k, g=greedy: generate(model, p, k, NEW, greedy=g))(prompts, key)
        b = jax.jit(lambda p, k, g=greedy: generate_without_cache(model, p, k, NEW, greedy=g))(prompts, key)
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_allclose(a.log_probs, b.log_probs, atol=1e-4)


def test_generation_log_probs_are_what_the_trainers_recompute(model, prompts):
    g = sample(model, prompts, jax.random.key(3), NEW)
    observations, actions = g.tokens[:, :-1], g.tokens[:, 1:]
    mask = jnp.zeros(actions.shape, bool).at[:, PROMPT - 1:].set(g.mask)
    terms = nnx.jit(score_actions, static_argnums=3)(model, observations, actions, mask.shape)
    recomputed = np.where(mask, terms.log_probs, 0.0)[:, PROMPT - 1:]
    np.testing.assert_allclose(recomputed, g.log_probs, atol=1e-4)


def test_sampling_follows_temperature_and_top_k(model, prompts):
    """The first token's frequencies over 4000 draws against a NumPy softmax of logits / T."""
    row = prompts[:1]
    logits = logits_of(model(row))[0, -1].astype(np.float64)
    many = jnp.repeat(row, 4000, axis=0)
    for temperature, top_k in ((1.0, 0), (0.5, 0), (2.0, 3)):
        first = np.asarray(sample(model, many, jax.random.key(4), 1, temperature=temperature,
                                  top_k=top_k).completions[:, 0])
        expected = np.exp((logits - logits.max()) / temperature)
        if top_k:
            expected[np.argsort(logits)[:-top_k]] = 0.0
        expected /= expected.sum()
        observed = np.bincount(first, minlength=VOCAB) / len(first)
        assert np.abs(observed - expected).max() < 0.03, (temperature, top_k)
        assert (observed[expected == 0] == 0).all()
    greedy = sample(model, row, jax.random.key(5), NEW, greedy=True)
    top1 = sample(model, row, jax.random.key(6), NEW, top_k=1)
    np.testing.assert_array_equal(greedy.tokens, top1.tokens)


def test_rows_stop_at_eos():
    model = TransformerPolicy(VOCAB, PROMPT + NEW, width=16, layers=1, heads=2, rngs=nnx.Rngs(1))
    model.head.bias[...] = jnp.zeros(VOCAB).at[EOS].set(100.0)  # always EOS
    g = sample(model, jnp.full((2, PROMPT), 5, jnp.int32), jax.random.key(0), NEW)
    np.testing.assert_array_equal(g.completions, [[EOS] + [PAD] * (NEW - 1)] * 2)
    np.testing.assert_array_equal(g.mask, [[True] + [False] * (NEW - 1)] * 2)
    assert (np.asarray(g.completions) == EOS).any(1).all() and np.asarray(g.mask.sum(1)).tolist() == [1, 1]
    np.testing.assert_allclose(g.log_probs[:, 0], 0.0, atol=1e-6)  # p(EOS) = 1


def test_value_head_gives_a_value_per_position():
    model = TransformerPolicy(VOCAB, 8, width=16, layers=1, heads=2, value_head=True, rngs=nnx.Rngs(0))
    distribution, values = model(jnp.ones((3, 8), jnp.int32))
    assert distribution.logits.shape == (3, 8, VOCAB) and values.shape == (3, 8)


def test_bad_input_is_named(model, prompts):
    with pytest.raises(ValueError, match="width=30 must be a multiple of heads=4"):
        TransformerPolicy(VOCAB, 8, width=30, heads=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="layers must be a positive int"):
        TransformerPolicy(VOCAB, 8, layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="tokens must be integer ids"):
        model(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="exceed max_length=11"):
        model(jnp.ones((2, 12), jnp.int32))
    with pytest.raises(ValueError, match="exceeds the model's max_length=11"):
        generate(model, prompts, jax.random.key(0), NEW + 1)
    for kwargs, message in (({"temperature": 0.0}, "temperature"), ({"top_k": VOCAB + 1}, "top_k")):
        with pytest.raises(ValueError, match=message):
            generate(model, prompts, jax.random.key(0), NEW, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompts, jax.random.key(0), 0)
