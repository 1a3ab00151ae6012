"""MLP policies: output conventions, orthogonal init scales, a NumPy forward reference, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gymnax.environments import spaces

from rollax.networks.distributions import Categorical, GaussianParams
from rollax.networks.mlp import build_policy
from rollax.networks.policy import PolicyOutput, policy_output, score_actions

BOX4 = spaces.Box(-1.0, 1.0, (4,), jnp.float32)
DISCRETE2 = spaces.Discrete(2)
BOX_ACTION3 = spaces.Box(-2.0, 2.0, (3,), jnp.float32)


def params_of(model):
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def num_params(model):
    return sum(x.size for x in jax.tree.leaves(params_of(model)))


def test_discrete_actor_critic_shapes():
    model = build_policy(BOX4, DISCRETE2, rngs=nnx.Rngs(0))
    distribution, value = model(jnp.ones((5, 4)))
    assert isinstance(distribution, Categorical)
    assert distribution.logits.shape == (5, 2) and value.shape == (5,)
    assert isinstance(model(jnp.ones((5, 4))), PolicyOutput)


def test_continuous_actor_critic_shapes_and_log_std():
    model = build_policy(BOX4, BOX_ACTION3, log_std_init=-0.5, rngs=nnx.Rngs(0))
    policy_output, value = model(jnp.ones((2, 5, 4)))
    assert isinstance(policy_output, GaussianParams)
    assert policy_output.mean.shape == (2, 5, 3) and policy_output.log_std.shape == (2, 5, 3)
    np.testing.assert_allclose(policy_output.log_std, -0.5)
    assert value.shape == (2, 5)
    # the learned log_std is one parameter per action dimension, independent of the state
    assert params_of(model)["log_std"].shape == (3,)


def test_actor_only_returns_policy_output():
    categorical, value = build_policy(BOX4, DISCRETE2, critic=False, rngs=nnx.Rngs(0))(jnp.ones((5, 4)))
    assert isinstance(categorical, Categorical) and categorical.logits.shape == (5, 2) and value is None
    gaussian, value = build_policy(BOX4, BOX_ACTION3, critic=False, rngs=nnx.Rngs(0))(jnp.ones((4,)))
    assert isinstance(gaussian, GaussianParams) and gaussian.mean.shape == (3,) and value is None


def test_image_observations_are_flattened():
    minatar_like = spaces.Box(0.0, 1.0, (10, 10, 4), jnp.bool_)
    model = build_policy(minatar_like, spaces.Discrete(6), hidden_sizes=(16,), rngs=nnx.Rngs(0))
    distribution, value = model(jnp.zeros((2, 3, 10, 10, 4), bool))
    assert distribution.logits.shape == (2, 3, 6) and value.shape == (2, 3)
    assert params_of(model)["actor_torso"]["layers"][0]["kernel"].shape == (400, 16)


def test_discrete_observations_are_one_hot():
    model = build_policy(spaces.Discrete(5), DISCRETE2, hidden_sizes=(8,), rngs=nnx.Rngs(0))
    distribution, value = model(jnp.array([0, 3, 4]))
    logits = distribution.logits
    assert logits.shape == (3, 2) and value.shape == (3,)
    kernel = params_of(model)["actor_torso"]["layers"][0]["kernel"]
    expected_hidden = np.tanh(kernel[3])  # one-hot row selects a kernel row; bias is zero
    head = params_of(model)["policy_head"]
    np.testing.assert_allclose(logits[1], expected_hidden @ head["kernel"], rtol=1e-5, atol=1e-7)


def assert_orthogonal(kernel, scale):
    """`kernel [in, out]` is `scale` times a matrix with orthonormal rows or columns."""
    gram = kernel.T @ kernel if kernel.shape[0] >= kernel.shape[1] else kernel @ kernel.T
    np.testing.assert_allclose(gram, scale**2 * np.eye(len(gram)), atol=1e-5 * max(1, scale**2))


def test_orthogonal_init_scales_and_zero_biases():
    params = params_of(build_policy(BOX4, DISCRETE2, rngs=nnx.Rngs(0)))
    for torso in ("actor_torso", "critic_torso"):
        for layer in params[torso]["layers"].values():
            assert_orthogonal(layer["kernel"], np.sqrt(2.0))
            np.testing.assert_array_equal(layer["bias"], 0.0)
    assert_orthogonal(params["policy_head"]["kernel"], 0.01)
    assert_orthogonal(params["value_head"]["kernel"], 1.0)
    np.testing.assert_array_equal(params["policy_head"]["bias"], 0.0)
    np.testing.assert_array_equal(params["value_head"]["bias"], 0.0)


def test_separate_and_shared_torso_parameter_counts():
    torso = (4 * 64 + 64) + (64 * 64 + 64)
    heads = (64 * 2 + 2) + (64 + 1)
    assert num_params(build_policy(BOX4, DISCRETE2, rngs=nnx.Rngs(0))) == 2 * torso + heads
    shared = build_policy(BOX4, DISCRETE2, shared_torso=True, rngs=nnx.Rngs(0))
    assert num_params(shared) == torso + heads


def numpy_mlp(x, layers, activation):
    for layer in layers:
        x = activation(x @ layer["kernel"] + layer["bias"])
    return x


@pytest.mark.parametrize(
    ("activation", "numpy_activation"),
    [("tanh", np.tanh), ("relu", lambda x: np.maximum(x, 0.0))],
)
@pytest.mark.parametrize("shared_torso", [False, True])
def test_forward_matches_numpy(activation, numpy_activation, shared_torso):
    model = build_policy(
        BOX4, BOX_ACTION3, hidden_sizes=(8, 5), activation=activation,
        shared_torso=shared_torso, log_std_init=0.3, rngs=nnx.Rngs(1),
    )
    # non-zero biases so a missing bias term would show
    state = nnx.state(model, nnx.Param)
    state = jax.tree.map(lambda p: p + 0.1, state)
    nnx.update(model, state)
    params = params_of(model)
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    actor = numpy_mlp(x, params["actor_torso"]["layers"].values(), numpy_activation)
    critic = actor if shared_torso else numpy_mlp(
        x, params["critic_torso"]["layers"].values(), numpy_activation
    )
    gaussian, value = model(jnp.asarray(x))
    mean, log_std = gaussian.mean, gaussian.log_std
    head = params["policy_head"]
    np.testing.assert_allclose(mean, actor @ head["kernel"] + head["bias"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_std, np.broadcast_to(params["log_std"], (6, 3)))
    value_head = params["value_head"]
    expected_value = (critic @ value_head["kernel"] + value_head["bias"])[:, 0]
    np.testing.assert_allclose(value, expected_value, rtol=1e-5, atol=1e-6)


def test_unsupported_spaces_and_options_raise():
    with pytest.raises(ValueError, match="observation space"):
        build_policy(spaces.Dict({"a": BOX4}), DISCRETE2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="action space"):
        build_policy(BOX4, spaces.Box(-1.0, 1.0, (2, 2)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="activation 'swish2'"):
        build_policy(BOX4, DISCRETE2, activation="swish2", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden_sizes"):
        build_policy(BOX4, DISCRETE2, hidden_sizes=(64, 0), rngs=nnx.Rngs(0))


def test_observation_shape_mismatch_raises():
    model = build_policy(BOX4, DISCRETE2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        model(jnp.ones((5, 3)))


def test_distributions_match_numpy_formulas():
    """log_prob/entropy/mode of each distribution against closed forms in NumPy."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    actions = np.array([0, 2, 1, 2])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    categorical = Categorical(jnp.asarray(logits))
    np.testing.assert_allclose(categorical.log_prob(jnp.asarray(actions)),
                               log_softmax[np.arange(4), actions], rtol=1e-5)
    np.testing.assert_allclose(categorical.entropy(), -(np.exp(log_softmax) * log_softmax).sum(-1),
                               rtol=1e-5)
    np.testing.assert_array_equal(categorical.mode(), logits.argmax(-1))

    mean, log_std = rng.normal(size=(4, 2)), np.array([-0.5, 0.3])
    x = rng.normal(size=(4, 2))
    gaussian = GaussianParams(jnp.asarray(mean, jnp.float32), jnp.asarray(log_std, jnp.float32))
    expected = (-0.5 * ((x - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(gaussian.log_prob(jnp.asarray(x, jnp.float32)), expected, rtol=1e-5)
    np.testing.assert_allclose(gaussian.entropy(), np.full(4, (log_std + 0.5 * np.log(2 * np.pi * np.e)).sum()),
                               rtol=1e-5)

    token_logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    tokens, mask = np.array([[1, 4, 0], [2, 2, 3]]), np.array([[True, True, False], [True, False, False]])
    token_log_softmax = token_logits - np.log(np.exp(token_logits).sum(-1, keepdims=True))
    per_token = np.take_along_axis(token_log_softmax, tokens[..., None], -1)[..., 0]
    # a sequence model's output is one categorical per position, scored on the batch's grid
    terms = score_actions(lambda x: PolicyOutput(Categorical(jnp.asarray(token_logits))),
                          jnp.zeros((2, 3), jnp.int32), jnp.asarray(tokens), (2, 3))
    np.testing.assert_allclose(np.where(mask, terms.log_probs, 0.0), np.where(mask, per_token, 0.0),
                               rtol=1e-5)


def test_raw_outputs_are_read_by_the_hint():
    logits, value = jnp.ones((3, 2)), jnp.zeros((3, 1))
    distribution, v = policy_output((logits, value), discrete=True)
    assert isinstance(distribution, Categorical) and v.shape == (3,)
    distribution, v = policy_output((logits, value[:, 0] + 0.1), discrete=False)
    assert isinstance(distribution, GaussianParams) and v is None
    # an actor-critic's inner pair is always (mean, log_std)
    distribution, v = policy_output(((logits, logits), value), discrete=True)
    assert isinstance(distribution, GaussianParams) and v.shape == (3,)
