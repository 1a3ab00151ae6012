"""Reward combinators: the documented constructor arguments, values by hand, jit, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rollax
from rollax import (
    ClippedReward,
    CompositeReward,
    ConstantReward,
    RewardFunction,
    ScaledReward,
    ThresholdReward,
)


def first_feature(samples, conditions=None, **kwargs):
    """A base reward: the first feature of each sample `[B, D] -> [B]`."""
    return samples[:, 0]


def matches_condition(samples, conditions=None, **kwargs):
    """1 where the sample's argmax equals the condition."""
    return (jnp.argmax(samples, axis=-1) == conditions).astype(jnp.float32)


SAMPLES = jnp.array([[-2.0, 0.0], [0.3, 1.0], [0.5, 0.1], [0.9, -1.0], [3.0, 0.0]])
FIRST = np.array([-2.0, 0.3, 0.5, 0.9, 3.0])


def test_documented_constructors_and_values():
    np.testing.assert_array_equal(ConstantReward(value=1.0)(SAMPLES), np.ones(5))
    composite = CompositeReward(reward_fns=[first_feature, ConstantReward(value=2.0)], weights=[0.3, 0.7])
    np.testing.assert_allclose(composite(SAMPLES), 0.3 * FIRST + 1.4, rtol=1e-6)
    threshold = ThresholdReward(reward_fn=first_feature, threshold=0.5, above_value=1.0, below_value=0.0)
    np.testing.assert_array_equal(threshold(SAMPLES), [0.0, 0.0, 0.0, 1.0, 1.0])  # strictly above
    np.testing.assert_allclose(ScaledReward(reward_fn=first_feature, scale=10.0)(SAMPLES), 10 * FIRST)
    clipped = ClippedReward(reward_fn=first_feature, min_value=-1.0, max_value=1.0)
    np.testing.assert_allclose(clipped(SAMPLES), [-1.0, 0.3, 0.5, 0.9, 1.0], rtol=1e-6)


def test_defaults_follow_the_reference_examples():
    assert ConstantReward().value == 1.0
    threshold = ThresholdReward(first_feature)
    assert (threshold.threshold, threshold.above_value, threshold.below_value) == (0.5, 1.0, 0.0)
    assert ScaledReward(first_feature).scale == 1.0
    assert (ClippedReward(first_feature).min_value, ClippedReward(first_feature).max_value) == (-1.0, 1.0)
    np.testing.assert_allclose(CompositeReward([first_feature, first_feature])(SAMPLES), 2 * FIRST)


def test_custom_threshold_values_and_conditions_pass_through():
    threshold = ThresholdReward(first_feature, threshold=0.0, above_value=2.0, below_value=-3.0)
    np.testing.assert_array_equal(threshold(SAMPLES), [-3.0, 2.0, 2.0, 2.0, 2.0])
    conditions = jnp.array([1, 1, 0, 1, 0])
    composite = CompositeReward([matches_condition, first_feature], weights=[5.0, 0.0])
    np.testing.assert_allclose(composite(SAMPLES, conditions), [5.0, 5.0, 5.0, 0.0, 5.0])
    nested = ScaledReward(ClippedReward(composite, min_value=0.0, max_value=2.0), scale=-1.0)
    np.testing.assert_allclose(nested(SAMPLES, conditions), [-2.0, -2.0, -2.0, 0.0, -2.0])


def test_combinators_are_jittable():
    reward_fn = CompositeReward(
        [ScaledReward(first_feature, 2.0), ThresholdReward(first_feature, 0.4),
         ClippedReward(first_feature, -0.5, 0.5), ConstantReward(0.25)],
        weights=[1.0, 10.0, -1.0, 4.0])

    @jax.jit
    def batch_reward(samples):
        return reward_fn(samples)

    want = 2 * FIRST + 10 * (FIRST > 0.4) - np.clip(FIRST, -0.5, 0.5) + 1.0
    np.testing.assert_allclose(batch_reward(SAMPLES), want, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(batch_reward)(jnp.stack([SAMPLES, -SAMPLES]))[0], want, rtol=1e-6)
    assert batch_reward(SAMPLES).shape == (5,)


def test_builtins_satisfy_the_protocol():
    for reward_fn in (ConstantReward(), ScaledReward(first_feature), ClippedReward(first_feature),
                      ThresholdReward(first_feature), CompositeReward([first_feature])):
        assert isinstance(reward_fn, RewardFunction)
    assert rollax.RewardFunction is RewardFunction


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="weights"):
        CompositeReward([first_feature, first_feature], weights=[1.0])
    with pytest.raises(ValueError, match="at least one"):
        CompositeReward([])
    with pytest.raises(ValueError, match="min_value"):
        ClippedReward(first_feature, min_value=1.0, max_value=-1.0)
    for make in (lambda: ScaledReward(3.0), lambda: ThresholdReward("x"), lambda: ClippedReward(None),
                 lambda: CompositeReward([first_feature, 1.0])):
        with pytest.raises(TypeError, match="callable"):
            make()


def test_public_api_is_importable_from_the_top_level():
    from rollax import (  # noqa: F401
        DPOConfig,
        DPOTrainer,
        GRPOConfig,
        GRPOTrainer,
        PPOConfig,
        PPOTrainer,
        REINFORCEConfig,
        REINFORCETrainer,
    )
    from rollax.rl.utils import (  # noqa: F401
        compute_clipped_surrogate_loss,
        compute_discounted_returns,
        compute_gae_advantages,
        compute_kl_divergence,
        compute_policy_entropy,
        normalize_advantages,
    )

    assert rollax.utils.compute_gae_advantages is compute_gae_advantages
    assert PPOTrainer.config_class is PPOConfig and DPOTrainer.config_class is DPOConfig
