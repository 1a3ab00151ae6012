"""LatentEnv / ReconstructionEnv / registered generative ids: a step equals decoding and scoring
the same latent directly; jit and vmap; K-step edits against a Python loop; bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rollax.envs
from rollax.generative import encoder_policy, load_digits_split, load_pretrained
from rollax.generative.latent_env import LatentEnv, from_model, with_target
from rollax.generative.reconstruction_env import ReconstructionEnv

LATENT = 8


@pytest.fixture(scope="module")
def digit_env(digit_models):
    return rollax.envs.make("rollax/VAEDigit-v0")


@pytest.fixture(scope="module")
def models(digit_models):
    return {name: load_pretrained(name)[0] for name in ("classifier", "vae", "gan")}


@pytest.fixture(scope="module")
def batched_step(digit_env):
    env, _ = digit_env
    return jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def _direct_digit_reward(models, latents, targets, class_weight=1.0, realism_weight=0.1):
    """Decode and score without the env: classifier log p(target) + weighted prior log-density
    of the re-encoded sample (per latent dim), written out in NumPy."""
    samples = models["vae"].decoder(jnp.asarray(latents))
    log_p = _log_softmax(models["classifier"](samples))[np.arange(len(targets)), targets]
    enc_mean = np.asarray(models["vae"].encoder(samples)[0], np.float64)
    log_prior = (-0.5 * (enc_mean**2).sum(-1) - 0.5 * LATENT * np.log(2 * np.pi)) / LATENT
    return class_weight * log_p + realism_weight * log_prior


def test_vmapped_jitted_step_equals_direct_decode_and_reward(digit_env, models, batched_step):
    env, params = digit_env
    num = 32
    reset_keys = jax.random.split(jax.random.key(0), num)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(reset_keys, params)
    latents = jax.random.uniform(jax.random.key(1), (num, LATENT), minval=-2.5, maxval=2.5)
    step_keys = jax.random.split(jax.random.key(2), num)
    next_obs, _, reward, terminated, truncated, info = batched_step(step_keys, state, latents,
                                                                    params)
    targets = np.asarray(obs).argmax(-1)
    np.testing.assert_allclose(reward, _direct_digit_reward(models, latents, targets),
                               rtol=1e-4, atol=1e-4)
    assert obs.shape == (num, 10) and np.all(np.asarray(obs).sum(-1) == 1)
    assert np.all(terminated) and not np.any(truncated)
    np.testing.assert_array_equal(info["final_observation"], obs)  # bandit: same condition
    assert next_obs.shape == (num, 10)  # auto-reset to a fresh condition


def test_reset_is_uniform_over_classes_or_fixed_by_target(digit_env):
    env, params = digit_env
    keys = jax.random.split(jax.random.key(4), 2000)
    obs, _ = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, params)
    counts = np.bincount(np.asarray(obs).argmax(-1), minlength=10)
    assert counts.min() > 150 and counts.max() < 250, counts  # 200 expected per class
    fixed = with_target(env, params, 7)
    obs, _ = jax.vmap(env.reset, in_axes=(0, None))(keys[:16], fixed)
    np.testing.assert_array_equal(np.asarray(obs).argmax(-1), 7)


def test_actions_outside_the_box_are_clipped(digit_env, models):
    env, params = digit_env
    params = with_target(env, params, 3)
    _, state = env.reset(jax.random.key(0), params)
    action = jnp.array([9.0, -9.0, 0.5, 0, 0, 0, 0, 0])
    reward = env.step(jax.random.key(1), state, action, params)[2]
    clipped = np.clip(np.asarray(action), -3, 3)[None]
    np.testing.assert_allclose(reward, _direct_digit_reward(models, clipped, [3])[0], rtol=1e-4)
    assert env.action_space(params).shape == (LATENT,)


def _toy_decoder(latents):
    """A fixed linear 'decoder' [B, 2] -> [B, 3]."""
    return latents @ jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])


def _toy_reward(samples, conditions):
    """Sum of sample entries, plus the target class index (so the condition visibly matters)."""
    return samples.sum(-1) + conditions.argmax(-1)


@pytest.mark.parametrize("reward_on", ["final", "step"])
def test_k_step_latent_edits_match_a_python_loop(reward_on):
    horizon, bound = 3, 1.5
    env, params = from_model(_toy_decoder, _toy_reward, 2, num_conditions=4, horizon=horizon,
                             action_bound=bound, reward_on=reward_on, target_index=2)
    step = jax.jit(env.step)
    obs, state = env.reset(jax.random.key(0), params)
    np.testing.assert_array_equal(obs, [0, 0, 1, 0, 0, 0])
    actions = np.array([[1.0, -0.5], [1.0, 0.25], [-0.5, 3.0], [0.1, 0.1]])
    latent = np.zeros(2)
    for t, action in enumerate(actions):
        obs, state, reward, terminated, truncated, info = step(
            jax.random.key(t), state, jnp.asarray(action), params)
        latent = np.clip(latent + action, -bound, bound)
        step_reward = (np.array([[1, 0, 2], [0, 1, -1]]).T @ latent).sum() + 2
        last = (t % horizon) == horizon - 1
        expected = step_reward if (reward_on == "step" or last) else 0.0
        assert float(reward) == pytest.approx(expected, abs=1e-5), t
        assert bool(terminated) == last and not bool(truncated)
        np.testing.assert_allclose(info["final_observation"], np.r_[0, 0, 1, 0, latent],
                                   atol=1e-6)
        if last:
            np.testing.assert_array_equal(obs, [0, 0, 1, 0, 0, 0])  # auto-reset: latent zero
            latent = np.zeros(2)
        else:
            np.testing.assert_allclose(obs, np.r_[0, 0, 1, 0, latent], atol=1e-6)


def test_from_model_accepts_an_nnx_module_and_unconditioned_rewards_get_none():
    decoder = nnx.Linear(3, 5, rngs=nnx.Rngs(0))
    seen = {}

    def reward(samples, conditions):
        seen["conditions"] = conditions
        return -jnp.sum(samples**2, -1)

    env, params = from_model(decoder, reward, 3)
    assert seen["conditions"] is None
    # weights are data in the params: swapping them changes the reward without re-tracing
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == (1,) and float(obs[0]) == 0.0
    action = jnp.array([0.5, -1.0, 2.0])
    step = jax.jit(env.step)
    reward_a = step(jax.random.key(1), state, action, params)[2]
    kernel = np.asarray(decoder.kernel[...])
    np.testing.assert_allclose(reward_a, -np.sum((np.asarray(action) @ kernel
                                                  + np.asarray(decoder.bias[...])) ** 2),
                               rtol=1e-5)
    zeroed = params.replace(decoder_state=jax.tree.map(jnp.zeros_like, params.decoder_state))
    assert float(step(jax.random.key(1), state, action, zeroed)[2]) == 0.0


def test_reconstruction_env_reward_and_encoder_policy(digit_models, models):
    env, params = rollax.envs.make("rollax/VAEReconstruct-v0")
    assert isinstance(env, ReconstructionEnv)
    vae = models["vae"]
    keys = jax.random.split(jax.random.key(5), 64)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    train = load_digits_split().train_images
    assert obs.shape == (64, 64)
    assert all(np.any(np.all(train == row, axis=1)) for row in np.asarray(obs[:8]))
    policy = encoder_policy(vae)
    mean_actions = policy(obs).distribution.mean
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    reward = step(keys, state, mean_actions, params)[2]
    recon = np.asarray(vae.decoder(jnp.clip(mean_actions, -3, 3)))
    np.testing.assert_allclose(reward, -np.mean((recon - np.asarray(obs)) ** 2, -1), rtol=1e-4,
                               atol=1e-6)
    zero_reward = step(keys, state, jnp.zeros_like(mean_actions), params)[2]
    assert float(reward.mean()) > float(zero_reward.mean())  # the encoder is a good start


def test_gan_env_reward_is_the_discriminator_logit(digit_models, models):
    env, params = rollax.envs.make("rollax/GANDiscriminator-v0")
    gan = models["gan"]
    latents = jax.random.normal(jax.random.key(0), (8, LATENT))
    keys = jax.random.split(jax.random.key(1), 8)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, params)
    reward = jax.vmap(env.step, in_axes=(0, 0, 0, None))(keys, state, latents, params)[2]
    np.testing.assert_allclose(reward, gan.discriminator(gan.generator(latents)), rtol=1e-4,
                               atol=1e-5)
    assert obs.shape == (8, 1)


def test_registration_does_not_train_at_import(tmp_path):
    code = ("import rollax.envs as e; ids = e.registered_ids(); "
            "assert {'rollax/VAEDigit-v0', 'rollax/VAEReconstruct-v0', "
            "'rollax/GANDiscriminator-v0'} <= set(ids), ids")
    env = {**os.environ, "ROLLAX_CACHE_DIR": str(tmp_path / "cache"), "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("env_id", ["rollax/VAEDigit-v0", "rollax/GANDiscriminator-v0"])
def test_gymnasium_env_checker_passes(digit_models, env_id):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gymnasium.make(env_id).unwrapped)
    # the only accepted advice is the [-1, 1] action-range tip: our box is the prior's +-3 sigma
    unexpected = [str(w.message) for w in caught if "symmetric and normalized" not in str(w.message)]
    assert not unexpected, unexpected


# --- bad input
def test_wrong_action_shape_names_the_shapes(digit_env):
    env, params = digit_env
    _, state = env.reset(jax.random.key(0), params)
    with pytest.raises(ValueError, match=r"\(8,\).*\(5,\)"):
        env.step(jax.random.key(0), state, jnp.zeros(5), params)


def test_condition_outside_class_range_raises(digit_env):
    env, params = digit_env
    with pytest.raises(ValueError, match="target_index.*10.*12"):
        with_target(env, params, 12)
    with pytest.raises(ValueError, match="target_index"):
        rollax.envs.make("rollax/VAEDigit-v0", target_class=-3)
    with pytest.raises(ValueError, match="target_index"):  # params edited by hand: caught at trace
        env.reset(jax.random.key(0), params.replace(target_index=10))


def test_reward_with_wrong_shape_or_nan_raises():
    with pytest.raises(ValueError, match=r"\(1,\)"):
        from_model(_toy_decoder, lambda s, c: jnp.sum(s), 2)  # reduces over the batch
    with pytest.raises(ValueError, match=r"\(1,\)"):
        from_model(_toy_decoder, lambda s, c: s, 2)  # per-pixel, not per-sample
    with pytest.raises(ValueError, match="non-finite"):
        from_model(_toy_decoder, lambda s, c: jnp.log(s.sum(-1) - 1.0), 2)


def test_reward_that_mixes_the_rows_of_a_batch_is_refused():
    # shape [B], but each row's reward depends on the others: a batch of one cannot show it
    with pytest.raises(ValueError, match=r"score each sample on its own: row \d scores \S+ alone but \S+ in a batch of 4"):
        from_model(_toy_decoder, lambda s, c: s.sum(-1) - s.sum() / 2, 2)
    with pytest.raises(ValueError, match="score each sample on its own"):
        from_model(_toy_decoder, lambda s, c: s.sum(-1) / (1 + s.sum(-1).std()), 2)
    from_model(_toy_decoder, lambda s, c: s.sum(-1), 2)  # a per-row reward passes


def test_model_output_not_fitting_the_reward_names_the_shapes(models):
    from rollax.generative import ClassifierReward

    # a decoder of 3 pixels fed to a classifier of 64-pixel images
    with pytest.raises(ValueError, match=r"samples of shape \(1, 3\)"):
        from_model(_toy_decoder, ClassifierReward(models["classifier"]), 2, num_conditions=10)
    # latent_dim that does not fit the decoder
    with pytest.raises(ValueError, match=r"latents of shape \(1, 5\)"):
        LatentEnv(models["vae"].decoder, lambda s, c: s.sum(-1), 5)
    # a classifier reward with the wrong number of conditions
    with pytest.raises(ValueError, match=r"\[B, 10\]"):
        from_model(models["vae"].decoder, ClassifierReward(models["classifier"]), LATENT,
                   num_conditions=4)
