"""Generators that stay generators: the judge's set metrics against NumPy loops, the noise and
sample modes of the latent env, the noise-conditioned and generator policies at their start,
and the KL anchor of PPO and REINFORCE against the published (InstructGPT) reward shaping."""

from __future__ import annotations

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rollax.envs
from rollax.generative import DigitJudge, load_pretrained
from rollax.generative.judge import mean_pairwise_distance
from rollax.generative.latent_env import LatentEnv
from rollax.generative.policies import NoiseConditionedPolicy, NoisePolicyConfig, generative_policy
from rollax.networks.kinds import PolicyContext
from rollax.rl import (
    DPOConfig,
    DPOTrainer,
    PPOConfig,
    PPOTrainer,
    REINFORCEConfig,
    REINFORCETrainer,
)


def np_mean_pairwise(samples: np.ndarray) -> float:
    pairs = list(itertools.permutations(range(len(samples)), 2))
    return float(np.mean([np.linalg.norm(samples[i] - samples[j]) for i, j in pairs]))


def test_mean_pairwise_distance_matches_a_loop():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(9, 5)).astype(np.float32)
    weights = np.array([1, 0, 1, 1, 0, 1, 0, 0, 1], np.float32)
    got = float(mean_pairwise_distance(jnp.asarray(samples), jnp.asarray(weights)))
    assert got == pytest.approx(np_mean_pairwise(samples[weights > 0]), rel=1e-5)
    assert float(mean_pairwise_distance(jnp.asarray(samples), jnp.asarray(np.eye(9)[0]))) == 0.0


class FirstPixelsJudge(nnx.Module):
    """A stand-in classifier: the class is the brightest of the first 10 pixels."""

    def __call__(self, samples):
        return 100.0 * samples[:, :10]


def _judge(real_class_diversity):
    return DigitJudge(FirstPixelsJudge(), lambda samples: jnp.zeros(samples.shape[0]), -1.0,
                      real_class_diversity, real_overall_diversity=2.0)


def test_set_metrics_match_numpy():
    rng = np.random.default_rng(1)
    num, classes = 40, 10
    samples = rng.uniform(size=(num, 64)).astype(np.float32)
    judged = samples[:, :10].argmax(-1)
    targets = rng.integers(0, 3, num)  # three classes requested; the others are absent
    targets[0] = 7  # a class requested once: no pair, so no diversity
    real = np.linspace(1.0, 2.0, classes).astype(np.float32)
    judge = _judge(real)
    metrics = jax.jit(judge)(jnp.asarray(samples), jnp.asarray(np.eye(classes)[targets], jnp.float32))
    ratios = [np_mean_pairwise(samples[targets == c]) / real[c] for c in range(3)]
    assert float(metrics["diversity"]) == pytest.approx(np.mean(ratios), rel=1e-5)
    assert float(metrics["diversity_min"]) == pytest.approx(min(ratios), rel=1e-5)
    share = np.bincount(judged, minlength=classes) / num
    assert float(metrics["classes_covered"]) == np.sum(share >= 0.03)
    nonzero = share[share > 0]
    assert float(metrics["class_entropy"]) == pytest.approx(-np.sum(nonzero * np.log(nonzero)), rel=1e-5)
    unconditioned = judge(jnp.asarray(samples), None)
    assert "diversity_min" not in unconditioned and "judge_success" not in unconditioned
    assert float(unconditioned["diversity"]) == pytest.approx(np_mean_pairwise(samples) / 2.0, rel=1e-5)


def test_judge_rejects_a_non_positive_real_diversity():
    with pytest.raises(ValueError, match="real_class_diversity"):
        _judge(np.array([1.0, 0.0], np.float32))


# ---- the env's noise and sample modes, with a linear decoder and a NumPy reward
LATENT, PIXELS = 3, 4
DECODER = np.arange(LATENT * PIXELS, dtype=np.float32).reshape(LATENT, PIXELS) / 10.0


def decoder(latents):
    return jax.nn.sigmoid(latents @ DECODER)


def reward_fn(samples, conditions):
    return samples.sum(-1) + (0.0 if conditions is None else conditions.argmax(-1))


def _reset(env, params, num, seed=0):
    return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(jax.random.key(seed), num), params)


def test_noise_observation_ends_with_a_standard_normal_sample():
    env = LatentEnv(decoder, reward_fn, LATENT, conditions=np.eye(2, dtype=np.float32), noise=True)
    params = env.default_params
    observations, states = _reset(env, params, 4000)
    assert observations.shape == (4000, 2 + LATENT) == (4000, *env.observation_space(params).shape)
    np.testing.assert_array_equal(observations[:, 2:], states.noise)
    np.testing.assert_array_equal(observations[:, :2], states.condition)
    noise = np.asarray(observations[:, 2:])
    assert np.abs(noise.mean(0)).max() < 0.06 and np.abs(noise.std(0) - 1).max() < 0.05
    unconditioned = LatentEnv(decoder, reward_fn, LATENT, noise=True)
    assert unconditioned.observation_space(unconditioned.default_params).shape == (LATENT,)


def test_decode_is_the_decoded_latent_and_the_step_scores_it():
    env = LatentEnv(decoder, reward_fn, LATENT, conditions=np.eye(2, dtype=np.float32), noise=True,
                    action_bound=1.0)
    params = env.default_params
    observations, states = _reset(env, params, 5)
    actions = np.random.default_rng(2).normal(scale=2.0, size=(5, LATENT)).astype(np.float32)
    expected = 1 / (1 + np.exp(-np.clip(actions, -1, 1) @ DECODER))
    pictures = expected.reshape(5, 2, 2)  # 4 pixels: square 2 x 2 pictures
    np.testing.assert_allclose(env.decode(params, observations, actions), pictures, rtol=1e-6)
    rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(jax.random.key(1), 5), states, jnp.asarray(actions), params)[2]
    np.testing.assert_allclose(rewards, expected.sum(-1) + np.asarray(states.condition).argmax(-1),
                               rtol=1e-6)


def test_sample_actions_are_the_samples():
    env = LatentEnv(decoder, reward_fn, LATENT, noise=True, action="sample")
    params = env.default_params
    space = env.action_space(params)
    assert space.shape == (PIXELS,) and float(space.low) == 0.0 and float(space.high) == 1.0
    observations, states = _reset(env, params, 3)
    actions = np.array([[-0.5, 0.2, 0.7, 1.5]] * 3, np.float32)
    np.testing.assert_allclose(env.decode(params, observations, actions),
                               np.clip(actions, 0, 1).reshape(3, 2, 2))
    rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(jax.random.key(1), 3), states, jnp.asarray(actions), params)[2]
    np.testing.assert_allclose(rewards, np.clip(actions, 0, 1).sum(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="plain function"):
        env.generator()  # a function has no weights to fine-tune


@pytest.mark.parametrize("kwargs, message", [
    ({"noise": True, "horizon": 2}, "horizon=1"),
    ({"action": "sample"}, "noise=True"),
    ({"action": "pixels", "noise": True}, "action must be one of"),
])
def test_bad_modes_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LatentEnv(decoder, reward_fn, LATENT, **kwargs)


# ---- policies at their start: the model's own distribution
def test_noise_latent_policy_starts_as_the_identity_on_the_noise():
    policy = NoiseConditionedPolicy(2 + LATENT, LATENT, hidden_sizes=(8,), activation="tanh",
                                    log_std_init=-1.0, critic=True, rngs=nnx.Rngs(0))
    observations = jax.random.normal(jax.random.key(0), (6, 2 + LATENT))
    distribution, value = policy(observations)
    np.testing.assert_array_equal(distribution.mean, observations[:, 2:])
    np.testing.assert_allclose(distribution.log_std, -1.0)
    assert value.shape == (6,)


def context(env, params) -> PolicyContext:
    return PolicyContext(env, params, env.observation_space(params), env.action_space(params),
                         critic=False)


@pytest.fixture(scope="module")
def gan_generator_env(digit_models):
    return rollax.envs.make("rollax/GANDiscriminator-v0", noise=True, action="sample")


def test_generator_policy_starts_as_the_pretrained_generator(gan_generator_env):
    env, params = gan_generator_env
    gan, _ = load_pretrained("gan")
    policy = generative_policy(NoisePolicyConfig("generator", hidden_sizes=(8,), log_std_init=-3.0),
                               context(env, params), nnx.Rngs(0))
    observations, _ = _reset(env, params, 4)
    mean = policy(observations).distribution.mean
    np.testing.assert_allclose(mean, gan.generator(observations), atol=1e-6)
    samples = env.decode(params, observations, mean)
    assert samples.shape == (4, 8, 8)


def test_generator_whose_output_does_not_fit_the_samples_is_named():
    with pytest.raises(ValueError, match="generator maps latents"):
        NoiseConditionedPolicy(LATENT, LATENT, generator=lambda latents: latents @ DECODER,
                               sample_dim=PIXELS + 1, hidden_sizes=(4,), activation="tanh",
                               log_std_init=0.0, critic=False, rngs=nnx.Rngs(0))


def test_policy_kind_and_env_mode_must_agree(gan_generator_env):
    env, params = gan_generator_env
    with pytest.raises(ValueError, match="kind='noise_latent' acts with latents"):
        generative_policy(NoisePolicyConfig("noise_latent", hidden_sizes=(4,)), context(env, params),
                          nnx.Rngs(0))
    plain = LatentEnv(decoder, reward_fn, LATENT)
    with pytest.raises(ValueError, match="observes prior noise"):
        generative_policy(NoisePolicyConfig("generator", hidden_sizes=(4,)),
                          context(plain, plain.default_params), nnx.Rngs(0))


# ---- the KL anchor of PPO and REINFORCE: reward - kl_coeff * (log pi - log pi_ref)
class Gaussian(nnx.Module):
    def __init__(self, critic: bool):
        self.mean = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        self.log_std = nnx.Param(jnp.full((1,), -0.3))
        self.value = nnx.Linear(2, 1, rngs=nnx.Rngs(1)) if critic else None

    def __call__(self, observations):
        policy = (self.mean(observations), self.log_std[...])
        return policy if self.value is None else (policy, self.value(observations))


def _np_log_prob(model, observations, actions):
    mean = np.asarray(model.mean(jnp.asarray(observations)), np.float64)
    log_std = float(model.log_std[...][0])
    z = (actions - mean) / math.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), -1)


def _anchor_batch(model):
    rng = np.random.default_rng(3)
    observations = rng.normal(size=(6, 2)).astype(np.float32)
    actions = rng.normal(size=(6, 1)).astype(np.float32)
    log_probs = _np_log_prob(model, observations, actions).astype(np.float32)
    return {"observations": observations, "actions": actions,
            "rewards": rng.normal(size=6).astype(np.float32), "dones": np.ones(6, bool),
            "log_probs": log_probs, "ref_log_probs": (log_probs - rng.uniform(0, 1, 6)).astype(np.float32)}


def test_reinforce_kl_anchor_shapes_the_return():
    model = Gaussian(critic=False)
    batch = _anchor_batch(model)
    trainer = REINFORCETrainer(model, nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param),
                               REINFORCEConfig(normalize_returns=False, entropy_coeff=0.0, kl_coeff=0.7))
    log_pi = _np_log_prob(model, batch["observations"], batch["actions"])
    metrics = trainer.train_step(batch)
    kl = batch["log_probs"] - batch["ref_log_probs"]
    shaped = batch["rewards"] - 0.7 * kl  # one-step episodes: the return is the shaped reward
    assert float(metrics["kl_to_reference"]) == pytest.approx(kl.mean(), rel=1e-5)
    assert float(metrics["policy_loss"]) == pytest.approx(-np.mean(log_pi * shaped), rel=1e-4)
    assert float(metrics["mean_reward"]) == pytest.approx(batch["rewards"].mean(), rel=1e-5)


def test_ppo_kl_anchor_shapes_the_advantage():
    model = Gaussian(critic=True)
    batch = {**_anchor_batch(model), "values": np.zeros(6, np.float32)}
    trainer = PPOTrainer(model, nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param),
                         PPOConfig(normalize_advantages=False, kl_coeff=0.5))
    metrics = trainer.train_step(batch)
    shaped = batch["rewards"] - 0.5 * (batch["log_probs"] - batch["ref_log_probs"])
    # ratio 1 (log_probs are the model's): the surrogate is -mean(advantage); V = 0 on one step
    assert float(metrics["advantage_mean"]) == pytest.approx(shaped.mean(), rel=1e-4)
    assert float(metrics["policy_loss"]) == pytest.approx(-shaped.mean(), rel=1e-4)


@pytest.mark.parametrize("trainer_class, config_class", [(PPOTrainer, PPOConfig),
                                                         (REINFORCETrainer, REINFORCEConfig)])
def test_kl_anchor_bad_input_is_named(trainer_class, config_class):
    with pytest.raises(ValueError, match="kl_coeff"):
        config_class(kl_coeff=-0.1)
    model = Gaussian(critic=trainer_class is PPOTrainer)
    batch = {**_anchor_batch(model), "values": np.zeros(6, np.float32)}
    if trainer_class is REINFORCETrainer:
        del batch["values"]
    del batch["ref_log_probs"]
    trainer = trainer_class(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param),
                            config_class(kl_coeff=0.1))
    with pytest.raises(ValueError, match="ref_log_probs"):
        trainer.train_step(batch)


def test_dpo_reference_of_another_structure_is_named():
    model, other = Gaussian(critic=False), Gaussian(critic=True)
    with pytest.raises(ValueError, match="reference_model does not match"):
        DPOTrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param), DPOConfig(),
                   reference_model=other)


@pytest.mark.parametrize("name", ["cartpole_ppo", "gymnasium_cartpole_ppo"])
def test_the_loop_anchors_to_the_initial_policy(tmp_path, name):
    """Jitted and host (Gymnasium) programs give the batch the initial policy's log-probs: at
    the first update the policy is that reference, so the logged KL is exactly 0, and later
    it is not."""
    from rollax.presets import load_experiment
    from rollax.run import train

    experiment = load_experiment(name, overrides=[
        f"logging.root='{tmp_path}'", "agent.config.kl_coeff=0.5", "budget.num_envs=4",
        "budget.num_steps=8", "budget.total_steps=96", "agent.config.num_minibatches=1",
        "agent.network.hidden_sizes=[8]", "eval.episodes=2", "logging.checkpoint=false",
        "logging.plot=false"])
    run_dir = train(experiment, progress=False).run_dir
    rows = [json.loads(line) for line in (run_dir / "seed_0" / "metrics.jsonl").open()]
    kl = [row["train/kl_to_reference"] for row in rows if "train/kl_to_reference" in row]
    assert len(kl) == 3 and kl[0] == 0.0 and kl[-1] != 0.0
