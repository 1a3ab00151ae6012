"""The chain's Gaussian steps against the published formulas written as plain NumPy: DDIM's
eta sampler (Song et al., 2021, eq. 12 and 16), Flow-GRPO's SDE step (Liu et al., 2025, eq. 9),
the closed-form KL of two diagonal Gaussians, and GRPO's exact-KL term."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rollax.diffusion.models import Denoiser
from rollax.diffusion.policy import DenoiserPolicy
from rollax.diffusion.samplers import DDIMSampler, FlowSampler
from rollax.networks.distributions import DiagGaussian
from rollax.rl.grpo import GRPOConfig
from rollax.rl.registry import get_algorithm
from rollax.rollout.batches import Sequences

RNG = np.random.default_rng(0)


def ddim_numpy(eps, x, k, K, T=1000, eta=1.0, min_std=0.1):
    """DDIM's mean at eta (eq. 12, sigma from eq. 16) with Ho et al.'s larger step std
    eta sqrt(1 - a / a_prev) (sigma^2 = beta, strided), the last step keeping eq. 16's."""
    betas = np.linspace(1e-4, 0.02, T)
    abar = np.cumprod(1 - betas)
    steps = np.round(np.linspace(0, T - 1, K + 1)).astype(int)[::-1]
    a, a_prev = abar[steps[k]], abar[steps[k + 1]]
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
    sigma = max(sigma, min_std)
    std = sigma if k == K - 1 else max(eta * math.sqrt(1 - a / a_prev), min_std)
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0)) * eps, std


def flow_numpy(v, x, k, K, a=2**0.5):
    h = 1 / K
    t = 1 - k * h
    sigma = a * math.sqrt(t / (1 - (1 - h if t >= 1 else t)))
    mean = x - h * (v + sigma**2 / (2 * t) * (x + (1 - t) * v))
    return mean, sigma * math.sqrt(h)


@pytest.mark.parametrize("sampler, reference", [(DDIMSampler(10), ddim_numpy),
                                                (FlowSampler(10), flow_numpy)], ids=["ddim", "flow"])
@pytest.mark.parametrize("k", [0, 1, 4, 9])
def test_a_step_matches_its_published_formula(sampler, reference, k):
    """DDIM's step (the output is the predicted noise) and Flow-GRPO's (the velocity)."""
    output, x = RNG.normal(size=(3, 64)), RNG.normal(size=(3, 64))
    mean, std = sampler.transition(jnp.asarray(output, jnp.float32), jnp.asarray(x, jnp.float32),
                                   jnp.full((3,), k))
    want_mean, want_std = reference(output, x, k, 10)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(std, np.full(3, want_std), rtol=1e-5)


def test_the_bare_sampler_is_the_step_loop():
    """`samplers.sample` = a plain loop of NumPy steps on the same keys."""
    from rollax.diffusion.samplers import sample

    sampler = FlowSampler(3)
    denoiser = lambda x, t: 0.5 * x - t[:, None]  # any function of (x, t)
    got = sample(denoiser, sampler, jax.random.key(0), 4, 64)
    start_key, steps_key = jax.random.split(jax.random.key(0))
    x = np.asarray(jax.random.normal(start_key, (4, 64)))
    for k, step_key in enumerate(jax.random.split(steps_key, 3)):
        t = float(sampler.model_time(k))
        mean, std = flow_numpy(0.5 * x - t, x, k, 3)
        x = mean + std * np.asarray(jax.random.normal(step_key, (4, 64)))
    np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-4)


DATA_STD = 0.5  # data N(0, 0.5^2): the exact denoiser of each model is linear in x_t


def exact_velocity(x, t):  # E[noise - x0 | x_t]
    var = (1 - t) ** 2 * DATA_STD**2 + t**2
    return x * (t - (1 - t) * DATA_STD**2) / var


def exact_noise(sampler):  # E[noise | x_t] at the DDPM's timestep of model time t
    alphas = sampler.alphas_cumprod()

    def noise(x, t):
        a = alphas[round(t * sampler.train_steps)]
        return x * np.sqrt(1 - a) / (a * DATA_STD**2 + 1 - a)
    return noise


def gaussian_chains(sampler, denoiser):
    """`(first noise, last x)` of 20,000 one-dimensional chains with the exact denoiser."""
    first = x = jax.random.normal(jax.random.key(0), (20_000, 1))
    for k in range(sampler.num_steps):
        mean, std = sampler.transition(denoiser(x, float(sampler.model_time(k))), x,
                                       jnp.asarray(k))
        x = mean + std * jax.random.normal(jax.random.key(k + 1), x.shape)
    return np.asarray(first[:, 0]), np.asarray(x[:, 0])


@pytest.mark.parametrize("model", ["ddpm", "flow"])
def test_the_shipped_chains_keep_the_data_marginal_and_forget_their_first_noise(model):
    """On data N(0, 0.5^2) with the exact denoiser, a 10-step chain at the shipped noise ends at
    std 0.5 and is memoryless (its last x uncorrelated with its first noise: Adjoint Matching's
    condition for a KL-anchored fine-tuning to reach the reward-tilted base model); Flow-GRPO's
    a = 0.7 and DDIM's eta = 0.5 keep a correlation of about 0.2 and 0.4."""
    if model == "ddpm":
        shipped, kept = DDIMSampler(10), DDIMSampler(10, eta=0.5)
        denoiser = exact_noise(shipped)
    else:
        shipped, kept, denoiser = FlowSampler(10), FlowSampler(10, 0.7), exact_velocity
    first, last = gaussian_chains(shipped, denoiser)
    assert abs(last.std() - DATA_STD) < 0.03, last.std()
    assert abs(np.corrcoef(first, last)[0, 1]) < 0.03
    assert np.corrcoef(*gaussian_chains(kept, denoiser))[0, 1] > 0.15


def test_gaussian_kl_is_the_closed_form():
    m1, m2 = RNG.normal(size=(2, 5, 3))
    l1, l2 = RNG.normal(size=(2, 5, 3)) * 0.3
    got = DiagGaussian(jnp.asarray(m1), jnp.asarray(l1)).kl(DiagGaussian(jnp.asarray(m2), jnp.asarray(l2)))
    s1, s2 = np.exp(l1), np.exp(l2)
    want = np.sum(np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def tiny_policy(sampler, seed=0):
    denoiser = Denoiser(hidden_dim=16, depth=2, time_dim=8, rngs=nnx.Rngs(seed))
    return denoiser, DenoiserPolicy(denoiser, sampler, 10, critic=False, rngs=nnx.Rngs(1))


def chain_observations(count, steps, rng):
    x = rng.normal(size=(count, steps, 64))
    k = np.broadcast_to(np.arange(steps), (count, steps))[..., None]
    c = np.eye(10)[rng.integers(0, 10, (count, steps))]
    return jnp.asarray(np.concatenate([x, k, c], -1), jnp.float32)


def test_the_untrained_policy_is_the_base_model_and_its_log_prob_is_gaussian():
    sampler = DDIMSampler(10)
    denoiser, policy = tiny_policy(sampler)
    obs = chain_observations(3, 10, RNG)
    actions = jnp.asarray(RNG.normal(size=(3, 10, 64)), jnp.float32)
    distribution = policy(obs).distribution
    x, k = np.asarray(obs[..., :64]), np.asarray(obs[..., 64]).astype(int)
    eps = np.asarray(denoiser(obs[..., :64], sampler.model_time(jnp.asarray(k))))
    for i in range(3):
        for j in (0, 9):
            mean, std = ddim_numpy(eps[i, j], x[i, j], k[i, j], 10)
            np.testing.assert_allclose(distribution.mean[i, j], mean, rtol=1e-4, atol=1e-4)
            a = np.asarray(actions[i, j])
            want = np.sum(-0.5 * ((a - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi))
            np.testing.assert_allclose(distribution.log_prob(actions)[i, j], want, rtol=1e-4)


def test_grpo_exact_kl_is_the_summed_gaussian_kl_of_the_steps():
    """GRPO's `kl_penalty` with kl_estimator = "exact" is the closed form per step, averaged."""
    sampler = FlowSampler(4)
    _, policy = tiny_policy(sampler)
    _, reference = tiny_policy(sampler, seed=3)
    obs = chain_observations(4, 4, RNG)
    actions = policy(obs).distribution.sample(jax.random.key(0))
    ref = reference(obs).distribution
    batch = Sequences(obs, actions, jnp.ones((4, 4), bool), jnp.asarray([1.0, 0.0, 2.0, 1.0]),
                      ref_log_probs=ref.log_prob(actions), ref_distribution=ref, group_size=2)
    config = GRPOConfig(num_generations=2, beta=0.5, kl_estimator="exact")
    grpo = get_algorithm("grpo")
    inputs, _ = batch.learned_by(grpo, config)
    groups, _, _ = grpo.prepare(inputs, config, ())
    _, metrics = grpo.loss(policy, groups, config)
    per_step = numpy_step_kl(policy, reference, obs)
    np.testing.assert_allclose(metrics["kl_penalty"], per_step.mean(), rtol=1e-4)


def numpy_step_kl(policy, reference, obs):
    """`[B, K]` closed-form KL of each step's two diagonal Gaussians, from the models' outputs."""
    mine, theirs = policy(obs).distribution, reference(obs).distribution
    s1, s2 = np.exp(np.asarray(mine.log_std)), np.exp(np.asarray(theirs.log_std))
    m1, m2 = np.asarray(mine.mean), np.asarray(theirs.mean)
    return np.sum(np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5, axis=-1)


def numpy_chain_kl(policy, reference, obs):
    """`[B]` sum over a chain's steps of the closed-form KL."""
    return numpy_step_kl(policy, reference, obs).sum(-1)


@pytest.mark.parametrize("name, config", [
    ("reinforce", {"kl_coeff": 0.3, "entropy_coeff": 0.0}), ("rloo", {"beta": 0.3, "num_generations": 2}),
    ("dpo", {"kl_coeff": 0.3, "num_generations": 2})])
def test_the_closed_form_anchor_of_the_other_algorithms(name, config):
    """With the reference's distributions in the batch, REINFORCE, RLOO and DPO add
    coeff * mean over chains of the summed step KL to the loss (DPOK's anchor)."""
    sampler = FlowSampler(4)
    _, policy = tiny_policy(sampler)
    _, reference = tiny_policy(sampler, seed=3)
    obs = chain_observations(4, 4, RNG)
    actions = policy(obs).distribution.sample(jax.random.key(0))
    ref = reference(obs).distribution
    rewards = jnp.asarray([1.0, 0.0, 0.5, 2.0])
    batch = Sequences(obs, actions, jnp.ones((4, 4), bool), rewards,
                      policy(obs).distribution.log_prob(actions), ref.log_prob(actions),
                      ref_distribution=ref, group_size=2)
    algorithm = get_algorithm(name)
    config = algorithm.config_class(**config)
    inputs, _ = batch.learned_by(algorithm, config)
    prepared, _, _ = algorithm.prepare(inputs, config, algorithm.init_state(config))
    loss, metrics = algorithm.loss(policy, prepared, config)
    kl = numpy_chain_kl(policy, reference, obs)
    if name == "dpo":  # both sides of each group's pair: rows (0 chosen, 1 rejected), (3, 2)
        want = np.mean([0.5 * (kl[0] + kl[1]), 0.5 * (kl[3] + kl[2])])
    else:
        want = kl.mean()
    np.testing.assert_allclose(metrics["kl_penalty"], want, rtol=1e-4)
    without = metrics["dpo_loss"] if name == "dpo" else metrics["policy_loss"]
    np.testing.assert_allclose(loss, without + 0.3 * want, rtol=1e-4, atol=1e-6)
