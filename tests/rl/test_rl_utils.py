"""The shared RL math against step-by-step NumPy loops and hand-computed closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rollax.rl.utils import (
    clipped_surrogate_terms,
    compute_clipped_surrogate_loss,
    compute_discounted_returns,
    compute_dpo_loss,
    compute_gae_advantages,
    compute_group_advantages,
    compute_kl_divergence,
    compute_policy_entropy,
    estimate_kl,
    explained_variance,
    masked_mean,
    normalize_advantages,
)

# ----------------------------------------------------------------- independent references


def reference_returns(rewards, terminated, truncated, bootstrap, gamma, bootstrap_last):
    """G_t for each env by a backward loop; truncation and an unfinished last step bootstrap."""
    num_steps, num_envs = rewards.shape
    returns = np.zeros_like(rewards, dtype=np.float64)
    for n in range(num_envs):
        following = 0.0
        for t in reversed(range(num_steps)):
            if terminated[t, n]:
                tail = 0.0
            elif truncated[t, n]:
                tail = bootstrap[t, n]
            elif t == num_steps - 1:
                tail = bootstrap[t, n] if bootstrap_last else 0.0
            else:
                tail = following
            following = rewards[t, n] + gamma * tail
            returns[t, n] = following
    return returns


def reference_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam):
    """GAE for each env by a backward loop; `values` has T+1 rows."""
    num_steps, num_envs = rewards.shape
    advantages = np.zeros_like(rewards, dtype=np.float64)
    for n in range(num_envs):
        following = 0.0
        for t in reversed(range(num_steps)):
            if terminated[t, n]:
                next_value, carry = 0.0, 0.0
            elif truncated[t, n]:
                next_value, carry = bootstrap[t, n], 0.0
            else:
                next_value, carry = values[t + 1, n], following
            delta = rewards[t, n] + gamma * next_value - values[t, n]
            following = delta + gamma * lam * carry
            advantages[t, n] = following
    return advantages


def random_episode_batch(seed, num_steps=7, num_envs=3):
    """Rewards, T+1 values, exclusive terminated/truncated flags and bootstrap values `[T, N]`."""
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    values = rng.normal(size=(num_steps + 1, num_envs)).astype(np.float32)
    kind = rng.choice(3, size=(num_steps, num_envs), p=[0.6, 0.2, 0.2])
    terminated, truncated = kind == 1, kind == 2
    bootstrap = rng.normal(size=(num_steps, num_envs)).astype(np.float32)
    return rewards, values, terminated, truncated, bootstrap


GAMMAS_LAMBDAS = [(0.99, 0.95), (0.9, 0.0), (0.5, 1.0), (1.0, 0.7), (0.0, 0.9)]

# ----------------------------------------------------------------- returns and GAE


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gamma", [0.0, 0.9, 0.99, 1.0])
def test_returns_match_loop_with_mixed_flags(seed, gamma):
    rewards, _, terminated, truncated, bootstrap = random_episode_batch(seed)
    got = compute_discounted_returns(rewards, gamma, terminated, truncated=truncated,
                                     bootstrap_values=bootstrap)
    want = reference_returns(rewards, terminated, truncated, bootstrap, gamma, bootstrap_last=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_returns_dones_may_include_the_truncated_steps():
    rewards, _, terminated, truncated, bootstrap = random_episode_batch(3)
    a = compute_discounted_returns(rewards, 0.9, terminated, truncated=truncated, bootstrap_values=bootstrap)
    b = compute_discounted_returns(rewards, 0.9, terminated | truncated, truncated=truncated,
                                   bootstrap_values=bootstrap)
    np.testing.assert_allclose(a, b)


def test_returns_with_dones_only_do_not_bootstrap():
    rewards, _, terminated, _, _ = random_episode_batch(4)
    no_trunc = np.zeros_like(terminated)
    got = compute_discounted_returns(rewards, 0.95, terminated)
    want = reference_returns(rewards, terminated, no_trunc, None, 0.95, bootstrap_last=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_returns_without_dones_are_one_episode():
    rewards = np.array([1.0, 0.0, 2.0, -1.0], np.float32)
    gamma = 0.5
    want = [sum(gamma**k * rewards[t + k] for k in range(len(rewards) - t)) for t in range(len(rewards))]
    np.testing.assert_allclose(compute_discounted_returns(rewards, gamma), want, rtol=1e-6)
    np.testing.assert_allclose(compute_discounted_returns(rewards, gamma=gamma), [1.375, 0.75, 1.5, -1.0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("gamma", "lam"), GAMMAS_LAMBDAS)
def test_gae_matches_loop_with_mixed_flags(seed, gamma, lam):
    rewards, values, terminated, truncated, bootstrap = random_episode_batch(seed)
    got = compute_gae_advantages(rewards, values, terminated, gamma, lam, truncated=truncated,
                                 bootstrap_values=bootstrap)
    want = reference_gae(rewards, values, terminated, truncated, bootstrap, gamma, lam)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gae_documented_one_dimensional_call():
    rewards = np.array([1.0, 0.5, -1.0, 2.0, 0.0], np.float32)
    values = np.array([0.3, -0.2, 0.8, 0.1, 0.5, 0.9], np.float32)  # T+1, last is V(s_T)
    dones = np.array([False, True, False, False, False])
    got = compute_gae_advantages(rewards=rewards, values=values, dones=dones, gamma=0.9, gae_lambda=0.8)
    no_flags = np.zeros((5, 1), bool)
    want = reference_gae(rewards[:, None], values[:, None], dones[:, None], no_flags, None, 0.9, 0.8)
    np.testing.assert_allclose(got, want[:, 0], rtol=1e-5, atol=1e-6)
    # by hand for the first episode (ends after step 1): delta_1 = 0.5 - (-0.2), delta_0 = 1 + 0.9*(-0.2) - 0.3
    assert got[1] == pytest.approx(0.7, abs=1e-6)
    assert got[0] == pytest.approx(0.52 + 0.72 * 0.7, abs=1e-6)


def test_gae_lambda_one_equals_returns_minus_values():
    rewards, values, terminated, truncated, bootstrap = random_episode_batch(5)
    gae = compute_gae_advantages(rewards, values, terminated, 0.9, 1.0, truncated=truncated,
                                 bootstrap_values=bootstrap)
    boot_last = bootstrap.copy()
    boot_last[-1] = values[-1]
    returns = compute_discounted_returns(rewards, 0.9, terminated, truncated=truncated,
                                         bootstrap_values=boot_last)
    np.testing.assert_allclose(gae, np.asarray(returns) - values[:-1], rtol=1e-5, atol=1e-5)


def test_returns_and_gae_under_jit():
    rewards, values, terminated, truncated, bootstrap = random_episode_batch(6)

    @jax.jit
    def both(rewards, values, terminated, truncated, bootstrap, gamma):
        returns = compute_discounted_returns(rewards, gamma, terminated, truncated=truncated,
                                             bootstrap_values=bootstrap)
        gae = compute_gae_advantages(rewards, values, terminated, gamma, 0.9, truncated=truncated,
                                     bootstrap_values=bootstrap)
        return returns, gae

    for gamma in (0.9, 0.99):  # gamma traced: one compile serves both
        returns, gae = both(rewards, values, terminated, truncated, bootstrap, gamma)
        np.testing.assert_allclose(
            returns, reference_returns(rewards, terminated, truncated, bootstrap, gamma, True), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            gae, reference_gae(rewards, values, terminated, truncated, bootstrap, gamma, 0.9), rtol=1e-5, atol=1e-5)


def test_gae_rejects_values_without_the_final_entry():
    with pytest.raises(ValueError, match="values"):
        compute_gae_advantages(np.ones(4), np.ones(4), None, 0.99, 0.95)


def test_truncated_without_bootstrap_values_is_rejected():
    with pytest.raises(ValueError, match="bootstrap_values"):
        compute_discounted_returns(np.ones(3), 0.9, np.zeros(3, bool), truncated=np.ones(3, bool))


def test_mismatched_flag_shape_is_rejected():
    with pytest.raises(ValueError, match="dones"):
        compute_discounted_returns(np.ones((3, 2)), 0.9, np.zeros((3,), bool))


# ----------------------------------------------------------------- normalisation, entropy, KL


def test_normalize_uses_population_std_and_eps():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    want = (x - x.mean()) / (x.std(ddof=0) + 1e-8)
    np.testing.assert_allclose(normalize_advantages(jnp.asarray(x, jnp.float32)), want, rtol=1e-6)
    # eps matters at tiny spread: std = 5e-9, so each entry is +-5e-9 / (5e-9 + 1e-8) = +-1/3
    tiny = normalize_advantages(jnp.array([0.0, 1e-8]))
    np.testing.assert_allclose(tiny, [-1 / 3, 1 / 3], rtol=1e-4)
    assert np.all(normalize_advantages(jnp.full(5, 3.0)) == 0.0)


def test_entropy_and_exact_kl_match_numpy():
    rng = np.random.default_rng(0)
    logits_p, logits_q = rng.normal(size=(2, 3, 5))
    log_p = logits_p - np.log(np.exp(logits_p).sum(-1, keepdims=True))
    log_q = logits_q - np.log(np.exp(logits_q).sum(-1, keepdims=True))
    p = np.exp(log_p)
    np.testing.assert_allclose(compute_policy_entropy(jnp.asarray(log_p)), -(p * log_p).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(compute_kl_divergence(jnp.asarray(log_p), jnp.asarray(log_q)),
                               (p * (log_p - log_q)).sum(-1), rtol=1e-5)
    assert compute_kl_divergence(jnp.asarray(log_p), jnp.asarray(log_p)) == pytest.approx([0, 0, 0], abs=1e-6)
    assert compute_policy_entropy(jnp.log(jnp.full(4, 0.25))) == pytest.approx(math.log(4), rel=1e-6)


def test_kl_estimators_match_their_formulas():
    log_p = np.array([-0.5, -1.2, -2.0, -0.1])
    log_ref = np.array([-0.7, -0.9, -2.0, -1.5])
    for estimator, want in {
        "k1": [0.2, -0.3, 0.0, 1.4],
        "k2": [0.02, 0.045, 0.0, 0.98],
        "k3": [math.exp(-0.2) - 1 + 0.2, math.exp(0.3) - 1 - 0.3, 0.0, math.exp(-1.4) - 1 + 1.4],
    }.items():
        got = estimate_kl(jnp.asarray(log_p), jnp.asarray(log_ref), estimator)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=estimator)
    with pytest.raises(ValueError, match="k4"):
        estimate_kl(jnp.zeros(2), jnp.zeros(2), "k4")


def test_k3_is_non_negative_and_k1_k3_are_unbiased():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.2, 0.2, 0.6])
    true_kl = float(np.sum(p * np.log(p / q)))
    actions = jax.random.categorical(jax.random.key(0), jnp.log(jnp.asarray(p)), shape=(200_000,))
    log_p, log_q = jnp.log(jnp.asarray(p))[actions], jnp.log(jnp.asarray(q))[actions]
    k1, k3 = estimate_kl(log_p, log_q, "k1"), estimate_kl(log_p, log_q, "k3")
    assert float(jnp.min(k3)) >= 0.0
    assert float(jnp.min(k1)) < 0.0  # k1 per sample can be negative; only its mean is the KL
    assert float(jnp.mean(k1)) == pytest.approx(true_kl, abs=0.01)
    assert float(jnp.mean(k3)) == pytest.approx(true_kl, abs=0.01)
    rng = np.random.default_rng(1)
    random_k3 = estimate_kl(jnp.asarray(rng.normal(size=1000)), jnp.asarray(rng.normal(size=1000)), "k3")
    assert float(jnp.min(random_k3)) >= 0.0


def test_masked_mean_and_explained_variance():
    x = jnp.array([1.0, 2.0, 3.0, 10.0])
    assert float(masked_mean(x, jnp.array([True, True, True, False]))) == pytest.approx(2.0)
    assert float(masked_mean(x)) == pytest.approx(4.0)
    assert float(masked_mean(x, jnp.zeros(4, bool))) == 0.0
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    predictions = np.array([1.5, 2.0, 2.5, 4.0])
    want = 1 - np.var(targets - predictions) / np.var(targets)
    assert float(explained_variance(jnp.asarray(predictions), jnp.asarray(targets))) == pytest.approx(want)
    assert float(explained_variance(jnp.ones(3), jnp.full(3, 2.0))) == 0.0


# ----------------------------------------------------------------- PPO clipped surrogate

# (ratio, advantage, loss) with clip 0.2, worked by hand: loss = -min(r A, clip(r, 0.8, 1.2) A)
SURROGATE_CASES = [
    (1.1, 2.0, -2.2, False),  # inside the clip, A > 0
    (1.1, -2.0, 2.2, False),  # inside the clip, A < 0
    (1.5, 1.0, -1.2, True),  # above, A > 0: clipped, no incentive to go further
    (1.5, -1.0, 1.5, False),  # above, A < 0: unclipped (pessimistic)
    (0.5, 1.0, -0.5, False),  # below, A > 0: unclipped
    (0.5, -1.0, 0.8, True),  # below, A < 0: clipped
]


def test_clipped_surrogate_closed_form():
    ratios, advantages, losses, clipped = map(np.array, zip(*SURROGATE_CASES))
    log_probs = jnp.log(jnp.asarray(ratios, jnp.float32))
    terms, active = clipped_surrogate_terms(log_probs, jnp.zeros(6), jnp.asarray(advantages), 0.2)
    np.testing.assert_allclose(terms, losses, rtol=1e-5)
    np.testing.assert_array_equal(active, clipped)
    mean_loss = compute_clipped_surrogate_loss(
        log_probs=log_probs + 0.3, old_log_probs=jnp.full(6, 0.3), advantages=jnp.asarray(advantages),
        clip_param=0.2)
    assert float(mean_loss) == pytest.approx(losses.mean(), rel=1e-5)


def test_clipped_surrogate_gradient_vanishes_where_clipped():
    ratios, advantages, _, clipped = map(np.array, zip(*SURROGATE_CASES))

    def total(log_probs):
        return jnp.sum(clipped_surrogate_terms(log_probs, jnp.zeros(6), jnp.asarray(advantages), 0.2)[0])

    grads = jax.grad(total)(jnp.log(jnp.asarray(ratios, jnp.float32)))
    np.testing.assert_allclose(grads, np.where(clipped, 0.0, -ratios * advantages), rtol=1e-5)


def test_clip_higher_bound():
    # upper bound 0.28 (DAPO), lower 0.2: r = 1.25 is inside, r = 1.3 is clipped at 1.28
    terms, _ = clipped_surrogate_terms(jnp.log(jnp.array([1.25, 1.3, 0.7])), jnp.zeros(3),
                                       jnp.array([1.0, 1.0, -1.0]), 0.2, 0.28)
    np.testing.assert_allclose(terms, [-1.25, -1.28, 0.8], rtol=1e-5)


# ----------------------------------------------------------------- group advantages


def test_group_advantages_scalings():
    rewards = np.array([1.0, 0.0, 0.0, 2.0, 4.0, 6.0], np.float32)  # groups of 3, contiguous
    groups = rewards.reshape(2, 3)
    centred = groups - groups.mean(1, keepdims=True)
    for scale, divisor in {
        "group": groups.std(1, keepdims=True) + 1e-8,
        "batch": rewards.std() + 1e-8,
        "none": 1.0,
    }.items():
        adv, zero_std, group_std = compute_group_advantages(jnp.asarray(rewards), 3, scale)
        np.testing.assert_allclose(adv, (centred / divisor).ravel(), rtol=1e-5, err_msg=scale)
        assert not np.any(zero_std)
    np.testing.assert_allclose(group_std, np.repeat(groups.std(1), 3), rtol=1e-6)
    # contiguity: first group [1, 0, 0] by hand, mean 1/3, std sqrt(2)/3
    adv, _, _ = compute_group_advantages(jnp.asarray(rewards), 3, "group")
    np.testing.assert_allclose(adv[:3], [2 / math.sqrt(2), -1 / math.sqrt(2), -1 / math.sqrt(2)], rtol=1e-5)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_zero_std_group_gives_exact_zero(scale):
    rewards = jnp.array([0.7, 0.7, 0.7, 1.0, 0.0, 0.5])
    adv, zero_std, _ = compute_group_advantages(rewards, 3, scale)
    assert np.all(np.isfinite(adv))
    assert np.all(np.asarray(adv[:3]) == 0.0)
    np.testing.assert_array_equal(zero_std, [True] * 3 + [False] * 3)
    all_equal, _, _ = compute_group_advantages(jnp.ones(4), 2, scale)
    assert np.all(np.asarray(all_equal) == 0.0)


def test_group_advantages_rejects_unknown_scaling():
    with pytest.raises(ValueError, match="scale_rewards"):
        compute_group_advantages(jnp.ones(4), 2, "global")


# ----------------------------------------------------------------- DPO losses


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_dpo_losses_closed_form():
    chosen, rejected = jnp.array([0.5, -1.0, 2.0]), jnp.array([-0.5, 1.0, 2.0])
    h = [1.0, -2.0, 0.0]  # chosen - rejected
    beta = 0.5
    cases = {
        ("sigmoid", 0.0, 0.0): [-log_sigmoid(beta * x) for x in h],
        ("sigmoid", 0.2, 0.0): [-0.8 * log_sigmoid(beta * x) - 0.2 * log_sigmoid(-beta * x) for x in h],
        ("sigmoid", 0.0, 0.3): [-log_sigmoid(beta * x - 0.3) for x in h],  # SimPO margin
        ("ipo", 0.0, 0.0): [(x - 1 / (2 * beta)) ** 2 for x in h],
        ("hinge", 0.0, 0.0): [max(0.0, 1 - beta * x) for x in h],
        ("hinge", 0.0, 0.3): [max(0.0, 1 - (beta * x - 0.3)) for x in h],
    }
    for (loss_type, smoothing, margin), want in cases.items():
        got = compute_dpo_loss(chosen, rejected, beta, smoothing, loss_type, margin)
        np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"{loss_type} {smoothing} {margin}")
    # no preference information at h = 0: the sigmoid loss is log 2
    assert float(compute_dpo_loss(jnp.zeros(1), jnp.zeros(1))[0]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="loss_type"):
        compute_dpo_loss(chosen, rejected, loss_type="kto")
