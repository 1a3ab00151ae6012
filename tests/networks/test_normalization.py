"""Running observation statistics against a plain NumPy loop of Stable-Baselines3's
definition (one sample at a time from mean 0, variance 1, count 1e-4), and the policy that
normalises its observations with them."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from gymnax.environments import spaces

from rollax.networks.mlp import build_policy
from rollax.networks.normalization import NormalizedPolicy, RunningStatistics


def numpy_running_statistics(batches):
    """SB3's RunningMeanStd fed one sample at a time (Welford's update with a prior weight)."""
    mean, var, count = np.zeros(batches[0].shape[-1]), np.ones(batches[0].shape[-1]), 1e-4
    for batch in batches:
        for sample in batch.reshape(-1, batch.shape[-1]).astype(np.float64):
            total = count + 1
            delta = sample - mean
            m2 = var * count + delta**2 * count / total
            mean, var, count = mean + delta / total, m2 / total, total
    return mean, var, count


def test_batches_merge_to_the_statistics_of_every_sample_seen():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (5, 4, 3)).astype(np.float32),
               rng.normal(-1.0, 0.1, (7, 4, 3)).astype(np.float32),
               rng.normal(0.0, 10.0, (1, 4, 3)).astype(np.float32)]
    statistics = RunningStatistics.start((3,))
    for batch in batches:
        statistics = statistics.update(jnp.asarray(batch))
    mean, var, count = numpy_running_statistics(batches)
    np.testing.assert_allclose(statistics.mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(statistics.var, var, rtol=1e-4)
    assert float(statistics.count) == pytest.approx(count)
    # and with the prior's weight negligible, the plain mean and variance of all samples
    every = np.concatenate([b.reshape(-1, 3) for b in batches])
    np.testing.assert_allclose(statistics.mean, every.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(statistics.var, every.var(0), rtol=1e-3)


def test_the_policy_sees_clipped_normalised_observations():
    observation_space = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    inner = build_policy(observation_space, spaces.Discrete(2), hidden_sizes=(8,), rngs=nnx.Rngs(0))
    policy = NormalizedPolicy(inner, (3,), clip=2.0)
    batch = np.random.default_rng(1).normal(5.0, 3.0, (64, 3)).astype(np.float32)
    policy.update_statistics(jnp.asarray(batch))
    mean, var, _ = numpy_running_statistics([batch])
    observations = np.array([[5.0, 5.0, 5.0], [100.0, -100.0, 5.0]], np.float32)
    expected = np.clip((observations - mean) / np.sqrt(var + 1e-8), -2.0, 2.0)
    assert np.abs(expected).max() == 2.0  # the clip was exercised
    ours, _ = policy(jnp.asarray(observations))
    reference, _ = inner(jnp.asarray(expected, jnp.float32))
    np.testing.assert_allclose(ours.logits, reference.logits, rtol=1e-5, atol=1e-6)
    # the statistics are state, never a parameter the optimizer would move
    paths = {path for path, _ in nnx.to_flat_state(nnx.state(policy, nnx.Param))}
    assert paths == {("policy", *path) for path, _ in nnx.to_flat_state(nnx.state(inner, nnx.Param))}
