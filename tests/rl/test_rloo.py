"""RLOO: leave-one-out advantages, KL shaping, the clipped path, metrics, bad input, a bandit probe.

Every reference quantity is recomputed here with NumPy and plain Python loops from the tiny
model's raw parameters, never with the code under test.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax import RLOOConfig, RLOOTrainer
from rollax.rl import rloo
from rollax.rl.registry import get_algorithm
from rollax.rollout.batches import Sequences

OBS_DIM, NUM_ACTIONS, GROUP, BATCH = 3, 3, 3, 6  # two prompts x three generations
VOCAB, SEQ_LEN = 4, 3
RNG = np.random.default_rng(0)
OBSERVATIONS = RNG.normal(size=(BATCH, OBS_DIM)).astype(np.float32)
ACTIONS = np.array([0, 1, 2, 2, 0, 1], np.int32)
REWARDS = np.array([1.0, 0.0, 0.5, -1.0, 2.0, 0.25], np.float32)
REF_LOG_PROBS = np.array([-1.2, -0.9, -1.5, -0.7, -1.1, -1.3], np.float32)


class LinearSoftmax(nnx.Module):
    """Observations `[B, D]` -> logits `[B, A]`."""

    def __init__(self, seed: int = 0):
        self.linear = nnx.Linear(OBS_DIM, NUM_ACTIONS, rngs=nnx.Rngs(seed))

    def __call__(self, observations):
        return self.linear(observations)


class TokenTable(nnx.Module):
    """Tokens `[B, T]` -> logits `[B, T, V]` from a lookup table."""

    def __init__(self, seed: int = 0):
        self.table = nnx.Param(0.5 * jax.random.normal(jax.random.key(seed), (VOCAB, VOCAB)))

    def __call__(self, tokens):
        return self.table[...][tokens]


# ----------------------------------------------------------------- NumPy references


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_policy(model, observations):
    """`(log_softmax [B, A], W [D, A], b [A])` of the linear-softmax model, in float64."""
    kernel = np.asarray(model.linear.kernel[...], np.float64)
    bias = np.asarray(model.linear.bias[...], np.float64)
    return np_log_softmax(np.asarray(observations, np.float64) @ kernel + bias), kernel, bias


def np_log_probs(model, observations, actions):
    log_softmax, _, _ = np_policy(model, observations)
    return log_softmax[np.arange(len(actions)), actions]


def loop_rloo_advantages(rewards, group_size):
    """A_i = r_i - mean of the other rewards of its group, one group at a time."""
    rewards = [float(r) for r in rewards]
    advantages = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        for i, r in enumerate(group):
            others = [group[j] for j in range(group_size) if j != i]
            advantages.append(r - sum(others) / len(others))
    return np.array(advantages)


def np_normalize(x):
    return (x - x.mean()) / (x.std() + 1e-8)


def np_reference(model, config, batch):
    """Advantages (raw and used), policy loss, entropy, KL and clip terms of one RLOO loss."""
    log_softmax, _, _ = np_policy(model, batch["observations"])
    probs = np.exp(log_softmax)
    log_probs = log_softmax[np.arange(BATCH), batch["actions"]]
    entropy = -np.sum(probs * log_softmax, -1)
    old = batch.get("log_probs")
    sampling = log_probs if old is None else np.asarray(old, np.float64)
    ref = batch.get("ref_log_probs")
    kl = np.zeros(BATCH) if ref is None else sampling - np.asarray(ref, np.float64)
    rewards = np.asarray(batch["rewards"], np.float64)
    raw = loop_rloo_advantages(rewards - config.beta * kl, batch.get("group_size", config.num_generations))
    used = np_normalize(raw) if config.normalize_advantages else raw
    if old is None:
        surrogate, clipped = -log_probs * used, np.zeros(BATCH, bool)
    else:
        ratio = np.exp(log_probs - sampling)
        clipped_ratio = np.clip(ratio, 1 - config.clip_param, 1 + config.clip_param)
        surrogate = -np.minimum(ratio * used, clipped_ratio * used)
        clipped = ratio * used > clipped_ratio * used
    policy_loss = surrogate.mean()
    return {
        "raw": raw, "used": used, "probs": probs, "log_softmax": log_softmax, "entropy": entropy,
        "policy_loss": policy_loss, "loss": policy_loss - config.entropy_coeff * entropy.mean(),
        "mean_reward": rewards.mean(), "reward_std": rewards.std(), "advantage_mean": raw.mean(),
        "kl_penalty": kl.mean(), "clip_ratio": clipped.mean(),
    }


def base_batch(**extra):
    return {"observations": OBSERVATIONS, "actions": ACTIONS, "rewards": REWARDS, "group_size": GROUP,
            **extra}


def call_loss(model, config, batch):
    """RLOO's loss on the documented batch, built as its trainer builds it."""
    arrays = {k: jnp.asarray(v) for k, v in batch.items() if k != "group_size"}
    static = {"group_size": batch["group_size"]} if "group_size" in batch else {}
    parts = arrays["mask"].shape if "mask" in arrays else (len(arrays["rewards"]), 1)
    return rloo.ALGORITHM.loss(model, rloo.build(arrays, static, (parts,), config, None), config)


# ----------------------------------------------------------------- advantages


@pytest.mark.parametrize("group_size", [2, 4, 8])
def test_leave_one_out_advantages_match_a_python_loop(group_size):
    rewards = np.random.default_rng(group_size).normal(size=8).astype(np.float32)
    got = np.asarray(rloo.rloo_advantages(jnp.asarray(rewards), group_size))
    np.testing.assert_allclose(got, loop_rloo_advantages(rewards, group_size), rtol=1e-5, atol=1e-6)


def test_equal_rewards_in_a_group_give_zero_advantage():
    rewards = jnp.array([0.5, 0.5, 0.5, 1.0, 0.0, 2.0])
    got = np.asarray(rloo.rloo_advantages(rewards, 3))
    np.testing.assert_allclose(got[:3], 0.0, atol=1e-7)


LOSS_CASES = [  # (normalize_advantages, beta, with reference log-probs)
    (False, 0.0, False), (True, 0.0, False), (False, 0.5, True), (True, 0.5, True), (False, 0.0, True),
]


@pytest.mark.parametrize(("normalize", "beta", "with_ref"), LOSS_CASES)
def test_loss_metrics_and_gradient_match_numpy(normalize, beta, with_ref):
    """Without `log_probs`: loss = -mean(logp * A) - c H, A from KL-shaped rewards, no gradient
    through the advantage (checked against the closed-form gradient of a linear softmax)."""
    model = LinearSoftmax()
    config = RLOOConfig(num_generations=GROUP, beta=beta, normalize_advantages=normalize, entropy_coeff=0.1)
    batch = base_batch(**({"ref_log_probs": REF_LOG_PROBS} if with_ref else {}))
    ref = np_reference(model, config, batch)
    if beta > 0:  # the KL shaping changes the advantages
        unshaped = loop_rloo_advantages(REWARDS, GROUP)
        assert not np.allclose(ref["raw"], unshaped)

    loss, metrics = call_loss(model, config, batch)
    assert set(metrics) == {"policy_loss", "mean_reward", "reward_std", "advantage_mean", "kl_penalty",
                            "entropy", "clip_ratio"}
    assert float(loss) == pytest.approx(ref["loss"], rel=1e-5, abs=1e-6)
    for key in ("policy_loss", "mean_reward", "reward_std", "advantage_mean", "kl_penalty", "clip_ratio"):
        assert float(metrics[key]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key
    assert float(metrics["entropy"]) == pytest.approx(ref["entropy"].mean(), rel=1e-5)
    if normalize:
        assert ref["used"].std() == pytest.approx(1.0, rel=1e-6)

    # d/dz of -mean(logp A) - c mean(H) for logits z = x W + b
    probs, log_softmax, entropy = ref["probs"], ref["log_softmax"], ref["entropy"]
    onehot = np.eye(NUM_ACTIONS)[ACTIONS]
    d_logits = (-(onehot - probs) * ref["used"][:, None]
                + config.entropy_coeff * probs * (log_softmax + entropy[:, None])) / BATCH
    grads = nnx.grad(lambda m: call_loss(m, config, batch)[0])(model)
    np.testing.assert_allclose(np.asarray(grads.linear.kernel[...]), OBSERVATIONS.astype(np.float64).T @ d_logits,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads.linear.bias[...]), d_logits.sum(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_clipped_ratio_with_sampling_log_probs(beta):
    """With `log_probs`: PPO's clipped surrogate on the sequence ratio; the KL shaping uses the
    sampling policy's log-probs."""
    model = LinearSoftmax()
    config = RLOOConfig(num_generations=GROUP, beta=beta, clip_param=0.2)
    current = np_log_probs(model, OBSERVATIONS, ACTIONS)
    offsets = np.array([0.5, -0.5, 0.0, 0.1, -0.3, 0.25])
    batch = base_batch(log_probs=(current + offsets).astype(np.float32), ref_log_probs=REF_LOG_PROBS)
    ref = np_reference(model, config, batch)
    assert 0 < ref["clip_ratio"] < 1  # the case exercises both branches
    _, metrics = call_loss(model, config, batch)
    for key in ("policy_loss", "clip_ratio", "kl_penalty", "advantage_mean", "mean_reward"):
        assert float(metrics[key]) == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key


def test_per_token_rewards_are_summed_under_the_mask():
    model = TokenTable()
    tokens = np.array([[0, 1, 2], [1, 2, 3], [3, 0, 1], [2, 2, 0]], np.int32)
    actions = np.array([[1, 2, 3], [2, 3, 0], [0, 1, 1], [2, 0, 3]], np.int32)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], bool)
    token_rewards = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 9.0], [0.25, 9.0, 9.0], [0.0, 1.0, 1.0]], np.float32)
    config = RLOOConfig(num_generations=2)
    batch = {"observations": tokens, "actions": actions, "rewards": token_rewards, "mask": mask, "group_size": 2}
    _, metrics = call_loss(model, config, batch)

    sums = np.where(mask, token_rewards, 0.0).sum(1)
    log_softmax = np_log_softmax(np.asarray(model.table[...])[tokens])
    token_log_probs = np.take_along_axis(log_softmax, actions[..., None], -1)[..., 0]
    log_probs = np.where(mask, token_log_probs, 0.0).sum(1)
    expected = -np.mean(log_probs * loop_rloo_advantages(sums, 2))
    assert float(metrics["mean_reward"]) == pytest.approx(sums.mean(), rel=1e-6)
    assert float(metrics["policy_loss"]) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------- one train_step on a bandit probe

BANDIT_OBS = np.tile(np.array([[0.3, -0.2, 0.5]], np.float32), (8, 1))
BANDIT_ACTIONS = np.array([0, 1, 2, 1, 2, 0, 1, 2], np.int32)  # two prompts x four generations


@pytest.fixture(scope="module")
def bandit_step():
    """One `train_step` on a one-step bandit where action 0 pays 1 and the others 0."""
    model = LinearSoftmax(seed=1)
    trainer = RLOOTrainer(model, nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param), RLOOConfig(num_generations=4))
    batch = {"observations": BANDIT_OBS, "actions": BANDIT_ACTIONS,
             "rewards": (BANDIT_ACTIONS == 0).astype(np.float32)}
    before = np.exp(np_policy(model, BANDIT_OBS[:1])[0])[0]
    metrics = trainer.train_step(batch)
    after = np.exp(np_policy(model, BANDIT_OBS[:1])[0])[0]
    return {"trainer": trainer, "batch": batch, "metrics": metrics, "before": before, "after": after}


def test_one_step_raises_the_probability_of_the_paying_action(bandit_step):
    assert bandit_step["after"][0] > bandit_step["before"][0] + 1e-3


def test_train_step_returns_exactly_the_documented_metrics(bandit_step):
    metrics = bandit_step["metrics"]
    assert set(metrics) == {"loss", "policy_loss", "mean_reward", "reward_std", "advantage_mean",
                            "kl_penalty", "entropy", "clip_ratio", "grad_norm"}
    for key, value in metrics.items():
        assert np.ndim(value) == 0 and np.isfinite(float(value)), key
    assert float(metrics["mean_reward"]) == pytest.approx(0.25)
    assert float(metrics["reward_std"]) == pytest.approx(math.sqrt(3) / 4, rel=1e-5)
    assert float(metrics["advantage_mean"]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["kl_penalty"]) == 0.0 and float(metrics["clip_ratio"]) == 0.0


def test_train_step_reuses_the_compiled_update(bandit_step):
    trainer = bandit_step["trainer"]
    aliased = {("states" if k == "observations" else k): v for k, v in bandit_step["batch"].items()}
    trainer.train_step(aliased)
    assert trainer.trace_count == 1


# ----------------------------------------------------------------- the loop's side


def test_registered_as_an_algorithm_of_grouped_samples():
    algorithm = get_algorithm("rloo")
    assert algorithm.config_class is RLOOConfig and algorithm is rloo.ALGORITHM
    assert algorithm.learns_from == (Sequences,)
    assert algorithm.group_size(RLOOConfig(num_generations=6)) == 6
    assert algorithm.init_state(RLOOConfig()) == ()


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_sampled_groups_become_sample_log_probs_with_the_reference_when_given(beta):
    parts = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, 2)), jnp.float32)
    mask = jnp.asarray(np.tile([True, False], (BATCH, 1)))
    samples = Sequences(jnp.asarray(OBSERVATIONS), jnp.asarray(ACTIONS), mask, jnp.asarray(REWARDS),
                        log_probs=parts, ref_log_probs=jnp.full((BATCH, 2), -1.0) if beta else None,
                        group_size=GROUP)
    batch, metrics = samples.learned_by(get_algorithm("rloo"), RLOOConfig(num_generations=GROUP, beta=beta))
    np.testing.assert_allclose(np.asarray(batch.log_probs), np.asarray(parts)[:, 0])
    assert metrics == {} and batch.group_size == GROUP
    if beta:
        np.testing.assert_allclose(np.asarray(batch.ref_log_probs), -1.0)
    else:
        assert batch.ref_log_probs is None


# ----------------------------------------------------------------- config and bad input


def test_config_defaults():
    config = RLOOConfig()
    assert (config.num_generations, config.beta, config.normalize_advantages, config.clip_param,
            config.entropy_coeff, config.max_grad_norm) == (4, 0.0, False, 0.2, 0.0, None)


@pytest.mark.parametrize(("field", "value"), [
    ("num_generations", 1), ("num_generations", 0), ("num_generations", 4.0), ("beta", -0.1),
    ("clip_param", 0.0), ("entropy_coeff", -1.0), ("max_grad_norm", 0.0),
])
def test_invalid_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RLOOConfig(**{field: value})


@pytest.fixture(scope="module")
def fresh_trainer():
    model = LinearSoftmax()
    return RLOOTrainer(model, nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param), RLOOConfig(num_generations=4))


@pytest.mark.parametrize("batch", [
    base_batch(group_size=4),  # 6 rows do not split into groups of 4
    {k: v for k, v in base_batch().items() if k != "group_size"},  # default num_generations=4
    base_batch(group_size=1),
], ids=["explicit", "default", "one"])
def test_group_size_must_divide_the_batch(fresh_trainer, batch):
    with pytest.raises(ValueError, match="group_size"):
        fresh_trainer.train_step(batch)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards"])
def test_missing_required_key_is_named(fresh_trainer, key):
    with pytest.raises(ValueError, match=key):
        fresh_trainer.train_step({k: v for k, v in base_batch().items() if k != key})


@pytest.mark.parametrize(("key", "value"), [
    ("log_probs", np.zeros((BATCH, 2), np.float32)),
    ("ref_log_probs", np.zeros((BATCH, 2), np.float32)),
    ("log_probs", np.zeros(BATCH + 1, np.float32)),
    ("rewards", np.where(np.arange(BATCH) == 2, np.nan, REWARDS).astype(np.float32)),
    ("values", np.zeros(BATCH, np.float32)),  # unknown key
])
def test_bad_arrays_are_named(fresh_trainer, key, value):
    with pytest.raises(ValueError, match=key):
        fresh_trainer.train_step(base_batch(**{key: value}))
