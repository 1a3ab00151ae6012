"""The trainers' token-level formulas against plain NumPy loops of the published ones, on a
small transformer with random per-token inputs and ragged completion masks: token-level PPO
(GAE over each completion's tokens, reward on its last token, per-token KL shaping), GRPO's
k1/k2/k3 estimators, RLOO's leave-one-out advantages on sequence log-probs, and DPO's losses
over the pairs that carry a preference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax.rl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    RLOOConfig,
    RLOOTrainer,
    dpo,
    ppo,
)
from rollax.rollout.batches import Sequences
from rollax.tokens.transformer import TransformerPolicy

VOCAB, LENGTH, PROMPT = 14, 9, 3  # tokens [B, 8]: prompt positions 0-2, completions after
COMPLETION_LENGTHS = [1, 4, 5, 2]  # ragged; a completion starts at position PROMPT - 1


@pytest.fixture(scope="module")
def model():
    return TransformerPolicy(VOCAB, LENGTH, width=16, layers=1, heads=2, value_head=True,
                             rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def batch(model):
    rng = np.random.default_rng(1)
    b, t = len(COMPLETION_LENGTHS), LENGTH - 1
    observations = rng.integers(2, VOCAB, size=(b, t)).astype(np.int32)
    actions = np.concatenate([observations[:, 1:], rng.integers(1, VOCAB, size=(b, 1))], 1).astype(np.int32)
    mask = np.zeros((b, t), bool)
    for row, n in enumerate(COMPLETION_LENGTHS):
        mask[row, PROMPT - 1:PROMPT - 1 + n] = True
    log_probs, entropy = np_token_terms(model, observations, actions)
    return {"observations": observations, "actions": actions, "mask": mask,
            "current": log_probs, "entropy": entropy,
            "old": (log_probs + rng.uniform(-0.4, 0.4, log_probs.shape)).astype(np.float32),
            "ref": (log_probs + rng.uniform(-0.5, 0.5, log_probs.shape)).astype(np.float32),
            "values": rng.normal(size=(b, t)).astype(np.float32),
            "rewards": np.array([1.0, 0.0, 1.0, 0.5], np.float32)}


def np_token_terms(model, observations, actions):
    """Per-token log-probs and entropies `[B, T]` from the model's logits, in float64."""
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(observations))[0].logits,
                        np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    log_probs = np.take_along_axis(log_softmax, actions[..., None], -1)[..., 0]
    return log_probs, -np.sum(np.exp(log_softmax) * log_softmax, -1)


def trainer(trainer_class, model, config):
    """A trainer whose optimizer does not move the parameters: its metrics describe `model`."""
    return trainer_class(model, nnx.Optimizer(model, optax.sgd(0.0), wrt=nnx.Param), config)


# ----------------------------------------------------------------- PPO at token level


def np_token_gae(batch, gamma, lam, kl_coeff):
    """Per completion, a loop over its tokens (the positions under `mask`; a tool's tokens
    between them are skipped): r_t = -kl_coeff * (log pi - log ref) plus the reward on the
    last token; delta_t = r_t + gamma V_{t+1} (the next counted token's; 0 after the last) -
    V_t; A_t = delta_t + gamma lam A_{t+1}."""
    advantages = np.zeros(batch["mask"].shape)
    for row in range(len(batch["mask"])):
        positions = list(np.flatnonzero(batch["mask"][row]))
        n = len(positions)
        following = 0.0
        for i in reversed(range(n)):
            t = positions[i]
            reward = -kl_coeff * (batch["old"][row, t] - batch["ref"][row, t])
            reward += batch["rewards"][row] if i == n - 1 else 0.0
            next_value = batch["values"][row, positions[i + 1]] if i < n - 1 else 0.0
            delta = reward + gamma * next_value - batch["values"][row, t]
            following = delta + gamma * lam * following
            advantages[row, t] = following
    return advantages


def ppo_batch(batch):
    return {key: batch[source] for key, source in (
        ("observations", "observations"), ("actions", "actions"), ("mask", "mask"),
        ("rewards", "rewards"), ("log_probs", "old"), ("values", "values"), ("ref_log_probs", "ref"))}


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.5)])
def test_token_ppo_advantages_are_gae_over_each_completions_tokens(batch, gamma, lam):
    config = PPOConfig(gamma=gamma, gae_lambda=lam, kl_coeff=0.05)
    arrays = {k: jnp.asarray(v) for k, v in ppo_batch(batch).items()}
    samples = Sequences(arrays["observations"], arrays["actions"], arrays["mask"], arrays["rewards"],
                        arrays["log_probs"], arrays["ref_log_probs"], arrays["values"])
    rows, metrics = samples.learned_by(ppo.ALGORITHM, config)
    want = np_token_gae(batch, gamma, lam, 0.05)
    mask = batch["mask"]
    np.testing.assert_allclose(np.asarray(rows.raw_advantages)[mask], want[mask], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rows.returns)[mask], (want + batch["values"])[mask], rtol=1e-5)
    kept = want[mask]
    np.testing.assert_allclose(np.asarray(rows.advantages)[mask],
                               (kept - kept.mean()) / (kept.std() + 1e-8), rtol=1e-4, atol=1e-5)
    per_completion_kl = np.where(mask, batch["old"] - batch["ref"], 0.0).sum(1).mean()
    assert float(metrics["kl_to_reference"]) == pytest.approx(per_completion_kl, rel=1e-5)


def test_token_ppo_gae_skips_a_tool_s_tokens(batch):
    """Tokens a tool wrote (outside `mask`, between the policy's) carry no reward and no
    value: the GAE runs over the policy's tokens as if they were adjacent."""
    holed = dict(batch, mask=batch["mask"].copy())
    holed["mask"][1, PROMPT] = holed["mask"][2, PROMPT:PROMPT + 2] = False  # inside completions
    arrays = {k: jnp.asarray(v) for k, v in ppo_batch(holed).items()}
    samples = Sequences(arrays["observations"], arrays["actions"], arrays["mask"], arrays["rewards"],
                        arrays["log_probs"], arrays["ref_log_probs"], arrays["values"])
    rows, _ = samples.learned_by(ppo.ALGORITHM, PPOConfig(gamma=0.9, gae_lambda=0.8, kl_coeff=0.05))
    want = np_token_gae(holed, 0.9, 0.8, 0.05)
    np.testing.assert_allclose(np.asarray(rows.raw_advantages), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(want, np_token_gae(batch, 0.9, 0.8, 0.05))  # the holes matter


def test_token_ppo_losses_are_means_over_valid_tokens(model, batch):
    config = PPOConfig(num_epochs=1, num_minibatches=1, clip_param=0.2, vf_coeff=0.5,
                       entropy_coeff=0.01, clip_value_loss=False, kl_coeff=0.05)
    metrics = trainer(PPOTrainer, model, config).train_step(ppo_batch(batch))
    mask = batch["mask"]
    advantages = np_token_gae(batch, config.gamma, config.gae_lambda, 0.05)[mask]
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = np.exp(batch["current"][mask] - batch["old"][mask])
    surrogate = -np.minimum(ratio * advantages, np.clip(ratio, 0.8, 1.2) * advantages)
    values = np.asarray(model(jnp.asarray(batch["observations"]))[1], np.float64)[mask]
    returns = np_token_gae(batch, config.gamma, config.gae_lambda, 0.05)[mask] + batch["values"][mask]
    log_ratio = batch["current"][mask] - batch["old"][mask]
    assert float(metrics["policy_loss"]) == pytest.approx(surrogate.mean(), rel=1e-4)
    assert float(metrics["value_loss"]) == pytest.approx(0.5 * np.mean((values - returns) ** 2), rel=1e-4)
    assert float(metrics["entropy"]) == pytest.approx(batch["entropy"][mask].mean(), rel=1e-4)
    assert float(metrics["approx_kl"]) == pytest.approx(np.mean(np.expm1(log_ratio) - log_ratio), rel=1e-3)
    assert float(metrics["clip_fraction"]) == pytest.approx(
        np.mean(ratio * advantages > np.clip(ratio, 0.8, 1.2) * advantages))


@pytest.mark.parametrize("drop, message", [
    ("mask", r"batch\['log_probs'\] has shape \(4, 8\); expected \(4,\)"),
    ("values", r"batch\['values'\] has shape \(4,\); expected \(4, 8\) \(per part"),
])
def test_token_ppo_batches_are_checked(model, batch, drop, message):
    bad = ppo_batch(batch)
    if drop == "mask":
        del bad["mask"]
    else:
        bad["values"] = bad["values"][:, 0]
    with pytest.raises(ValueError, match=message):
        trainer(PPOTrainer, model, PPOConfig(num_minibatches=1, kl_coeff=0.05)).train_step(bad)


# ----------------------------------------------------------------- GRPO's KL estimators, RLOO


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_grpo_kl_estimators_on_ragged_tokens(model, batch, estimator):
    """k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r with r = pi_ref / pi per token;
    the `grpo` loss type averages each completion's tokens, then the completions."""
    config = GRPOConfig(beta=0.1, kl_estimator=estimator, entropy_coeff=0.0)
    metrics = trainer(GRPOTrainer, model, config).train_step(
        {"observations": batch["observations"], "actions": batch["actions"], "mask": batch["mask"],
         "rewards": batch["rewards"], "log_probs": batch["old"], "ref_log_probs": batch["ref"],
         "group_size": 2})
    log_r = batch["ref"] - batch["current"]
    kl = {"k1": -log_r, "k2": log_r**2 / 2, "k3": np.exp(log_r) - 1 - log_r}[estimator]
    want = np.mean([kl[row][batch["mask"][row]].mean() for row in range(len(kl))])
    assert float(metrics["kl_penalty"]) == pytest.approx(want, rel=1e-4)


def test_rloo_leave_one_out_on_ragged_sequence_log_probs(model, batch):
    """A_i = r_i - mean of the other G-1 rewards; the loss -mean(log pi(y_i) A_i) with
    log pi(y_i) the sum over the completion's tokens."""
    metrics = trainer(RLOOTrainer, model, RLOOConfig(num_generations=2, entropy_coeff=0.0)).train_step(
        {"observations": batch["observations"], "actions": batch["actions"], "mask": batch["mask"],
         "rewards": batch["rewards"], "group_size": 2})
    rewards = batch["rewards"].reshape(2, 2)
    advantages = (rewards - (rewards.sum(1, keepdims=True) - rewards) / 1).reshape(-1)
    sequence = np.where(batch["mask"], batch["current"], 0.0).sum(1)
    assert float(metrics["policy_loss"]) == pytest.approx(-np.mean(sequence * advantages), rel=1e-4)


# ----------------------------------------------------------------- DPO


def np_dpo_losses(chosen, rejected, beta, loss_type):
    """sigmoid: -log sigmoid(beta h); ipo: (h - 1 / (2 beta))^2; h the log-ratio margin."""
    h = chosen - rejected
    if loss_type == "sigmoid":
        return np.log1p(np.exp(-beta * h))
    return (h - 1 / (2 * beta)) ** 2


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_over_ragged_pairs_skips_the_tied_ones(model, batch, loss_type):
    half = len(COMPLETION_LENGTHS) // 2
    sides = {"chosen": slice(0, half), "rejected": slice(half, None)}
    pairs = {f"{side}_{part}": batch[key][rows] for side, rows in sides.items()
             for part, key in (("observations", "observations"), ("actions", "actions"), ("mask", "mask"))}
    for side, rows in sides.items():
        pairs[f"ref_{side}_log_probs"] = np.where(batch["mask"][rows], batch["ref"][rows], 0.0).sum(1)
    pairs["pair_mask"] = np.array([True, False])
    metrics = trainer(DPOTrainer, model, DPOConfig(beta=0.5, loss_type=loss_type)).train_step(pairs)
    sequence = np.where(batch["mask"], batch["current"], 0.0).sum(1)
    ratios = {side: sequence[rows] - pairs[f"ref_{side}_log_probs"] for side, rows in sides.items()}
    losses = np_dpo_losses(ratios["chosen"], ratios["rejected"], 0.5, loss_type)
    assert float(metrics["dpo_loss"]) == pytest.approx(losses[0], rel=1e-4)  # the tied pair left out
    assert float(metrics["tied_pairs"]) == pytest.approx(0.5)
    assert float(metrics["reward_margin"]) == pytest.approx(0.5 * (ratios["chosen"] - ratios["rejected"])[0], rel=1e-4)


def _group_samples(batch, rewards) -> Sequences:
    """The batch's four completions as two prompts x 2, scored `rewards`, with their reference
    log-probs per token."""
    return Sequences(jnp.asarray(batch["observations"]), jnp.asarray(batch["actions"]),
                     jnp.asarray(batch["mask"]), jnp.asarray(rewards, jnp.float32),
                     jnp.asarray(batch["old"]), jnp.asarray(batch["ref"]), group_size=2)


def _pairs(samples, config) -> dict:
    """DPO's pairs of the samples as the documented batch dict."""
    pairs, _ = samples.learned_by(dpo.ALGORITHM, config)
    pairs = jax.device_get(pairs)
    out = {"ref_chosen_log_probs": pairs.ref_chosen_log_probs,
           "ref_rejected_log_probs": pairs.ref_rejected_log_probs, "pair_mask": pairs.pair_mask}
    if pairs.preference is not None:
        out["preference"] = pairs.preference
    for side in ("chosen", "rejected"):
        rows = getattr(pairs, side)
        out |= {f"{side}_observations": rows.observations, f"{side}_actions": rows.actions,
                f"{side}_mask": rows.mask}
    return out


def test_dpo_soft_preferences_follow_bradley_terry(model, batch):
    """With `preference_temperature` T the loop's pairs carry p = 1 / (1 + exp(-gap / T)) and
    the loss is the cross-entropy -p log s(beta h) - (1 - p) log s(-beta h) (Rafailov et al.,
    eq. 7, with soft targets)."""
    samples = _group_samples(batch, [0.2, 0.9, 0.7, 0.4])
    config = DPOConfig(beta=0.5, preference_temperature=0.25)
    pairs = _pairs(samples, config)
    gaps = np.array([0.9 - 0.2, 0.7 - 0.4])
    np.testing.assert_allclose(pairs["preference"], 1 / (1 + np.exp(-gaps / 0.25)), rtol=1e-6)
    metrics = trainer(DPOTrainer, model, config).train_step(pairs)
    sequence = np.where(batch["mask"], batch["current"], 0.0).sum(1)
    h = (sequence[[1, 2]] - pairs["ref_chosen_log_probs"]) - (sequence[[0, 3]] - pairs["ref_rejected_log_probs"])
    p = pairs["preference"]
    log_sigmoid = lambda x: -np.log1p(np.exp(-x))
    want = np.mean(-p * log_sigmoid(0.5 * h) - (1 - p) * log_sigmoid(-0.5 * h))
    assert float(metrics["dpo_loss"]) == pytest.approx(want, rel=1e-4)


def test_dpo_group_batch_pairs_best_with_worst_and_flags_ties(batch):
    """Per prompt (G = 2 here), the higher reward is chosen; a prompt whose completions score
    the same gives no preference; reference log-probs are summed over each side's mask."""
    samples = _group_samples(batch, [0.0, 1.0, 0.5, 0.5])
    pairs = _pairs(samples, DPOConfig())
    assert pairs["pair_mask"].tolist() == [True, False]
    np.testing.assert_array_equal(pairs["chosen_actions"][0], batch["actions"][1])
    np.testing.assert_array_equal(pairs["rejected_mask"][0], batch["mask"][0])
    for side, row in (("chosen", 1), ("rejected", 0)):
        want = batch["ref"][row][batch["mask"][row]].sum()
        assert float(pairs[f"ref_{side}_log_probs"][0]) == pytest.approx(want, rel=1e-5)
    assert not math.isnan(float(pairs["ref_chosen_log_probs"][1]))


# ----------------------------------------------------------------- TRL's GRPO and RLOO options


def group_batch(batch, per_sample=False, **extra):
    """The four completions as two prompts x 2 with the sampling log-probs per token (GRPO) or
    summed per sample (RLOO's documented batch)."""
    old = np.where(batch["mask"], batch["old"], 0.0).sum(1) if per_sample else batch["old"]
    return {"observations": batch["observations"], "actions": batch["actions"], "mask": batch["mask"],
            "rewards": batch["rewards"], "log_probs": old, "group_size": 2, **extra}


def np_group_advantages(rewards, eps=1e-8):
    grouped = rewards.reshape(-1, 2).astype(np.float64)
    centred = grouped - grouped.mean(1, keepdims=True)
    return (centred / (grouped.std(1, keepdims=True) + eps)).reshape(-1)


def test_grpo_sequence_importance_sampling_is_gspo(model, batch):
    """GSPO (Zheng et al., 2025, eq. 5-7): s_i = exp(mean over the sample's tokens of
    log pi - log pi_old), loss_i = -min(s_i A_i, clip(s_i, 1 - eps, 1 + eps) A_i)."""
    config = GRPOConfig(beta=0.0, entropy_coeff=0.0, clip_param=0.1,
                        importance_sampling_level="sequence")
    metrics = trainer(GRPOTrainer, model, config).train_step(group_batch(batch))
    advantages = np_group_advantages(batch["rewards"])
    losses = []
    for row, keep in enumerate(batch["mask"]):
        s = np.exp(np.mean(batch["current"][row][keep] - batch["old"][row][keep]))
        a = advantages[row]
        losses.append(-min(s * a, np.clip(s, 0.9, 1.1) * a))
    # the advantages of a pair cancel to a loss near 0: float32 error against terms of size 1
    assert float(metrics["policy_loss"]) == pytest.approx(np.mean(losses), abs=3e-5)
    token_level = trainer(GRPOTrainer, model, GRPOConfig(beta=0.0, entropy_coeff=0.0, clip_param=0.1)
                          ).train_step(group_batch(batch))["policy_loss"]
    assert abs(float(token_level) - np.mean(losses)) > 1e-3, float(token_level)


@pytest.mark.parametrize("trainer_class, config_class", [(GRPOTrainer, GRPOConfig),
                                                         (RLOOTrainer, RLOOConfig)])
def test_masked_truncated_completions_leave_the_loss_not_the_baseline(model, batch, trainer_class,
                                                                      config_class):
    """DAPO's overlong filtering as TRL's `mask_truncated_completions`: the truncated sample's
    terms leave the loss; every reward still shapes its group's advantages. GRPO's `grpo` loss
    still divides by all B samples (TRL's `.mean()` over sequences, the truncated adding 0);
    RLOO averages over the samples kept."""
    truncated = np.array([False, True, False, False])
    config = config_class(num_generations=2, entropy_coeff=0.0, mask_truncated_completions=True,
                          **({"beta": 0.0} if config_class is GRPOConfig else {}))
    rloo = config_class is RLOOConfig
    metrics = trainer(trainer_class, model, config).train_step(
        group_batch(batch, rloo, truncated=truncated))
    rewards = batch["rewards"].reshape(2, 2)
    if config_class is GRPOConfig:
        advantages = np_group_advantages(batch["rewards"])
        ratio = np.exp(batch["current"] - batch["old"])
        per_token = -np.minimum(ratio * advantages[:, None],
                                np.clip(ratio, 0.8, 1.2) * advantages[:, None])
        per_sample = [per_token[row][batch["mask"][row]].mean() for row in range(4)]
    else:
        advantages = (rewards - (rewards.sum(1, keepdims=True) - rewards)).reshape(-1)
        ratio = np.exp(np.where(batch["mask"], batch["current"] - batch["old"], 0.0).sum(1))
        per_sample = -np.minimum(ratio * advantages, np.clip(ratio, 0.8, 1.2) * advantages)
    kept = [per_sample[row] for row in range(4) if not truncated[row]]
    want = np.sum(kept) / 4 if config_class is GRPOConfig else np.mean(kept)
    assert float(metrics["policy_loss"]) == pytest.approx(want, rel=1e-4)
    with pytest.raises(ValueError, match="mask_truncated_completions=True needs the batch's 'truncated'"):
        trainer(trainer_class, model, config).train_step(group_batch(batch, rloo))


def np_free_reference_steps(model, batch, advantages, steps, learning_rate, per_sample_ratio):
    """`steps` plain SGD steps on the clipped surrogate written out here (TRL's GRPO/RLOO loss,
    ratios to the fixed sampling log-probs `batch['old']`), gradients by jax.grad on the
    model's own logits: the reference for `num_iterations`."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mask = jnp.asarray(batch["mask"])
    old = jnp.asarray(batch["old"])
    adv = jnp.asarray(advantages, jnp.float32)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest)(jnp.asarray(batch["observations"]))[0].logits
        log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), batch["actions"][..., None], -1)[..., 0]
        if per_sample_ratio:  # RLOO: the sample's ratio
            ratio = jnp.exp(jnp.sum(jnp.where(mask, log_probs - old, 0.0), 1))
            return jnp.mean(-jnp.minimum(ratio * adv, jnp.clip(ratio, 0.8, 1.2) * adv))
        ratio = jnp.exp(log_probs - old)
        per_token = -jnp.minimum(ratio * adv[:, None], jnp.clip(ratio, 0.8, 1.2) * adv[:, None])
        return jnp.mean(jnp.sum(jnp.where(mask, per_token, 0.0), 1) / mask.sum(1))

    for _ in range(steps):
        params = jax.tree.map(lambda p, g: p - learning_rate * g, params, jax.grad(loss)(params))
    return params


@pytest.mark.parametrize("given_log_probs", [True, False])
@pytest.mark.parametrize("trainer_class, config_class", [(GRPOTrainer, GRPOConfig),
                                                         (RLOOTrainer, RLOOConfig)])
def test_num_iterations_takes_that_many_steps_with_ratios_to_the_sampling_policy(
        batch, trainer_class, config_class, given_log_probs):
    """Without the sampling log-probs in the batch, the model before the first step is the
    sampling policy."""
    config = config_class(num_generations=2, entropy_coeff=0.0, num_iterations=3,
                          **({"beta": 0.0} if config_class is GRPOConfig else {}))
    fresh = lambda: TransformerPolicy(VOCAB, LENGTH, width=16, layers=1, heads=2, value_head=True,
                                      rngs=nnx.Rngs(0))
    learner = fresh()
    given = group_batch(batch, config_class is RLOOConfig)
    if not given_log_probs:
        del given["log_probs"]
        batch = {**batch, "old": batch["current"].astype(np.float32)}
    trainer_class(learner, nnx.Optimizer(learner, optax.sgd(0.5), wrt=nnx.Param),
                  config).train_step(given)
    rewards = batch["rewards"].reshape(2, 2)
    advantages = (np_group_advantages(batch["rewards"]) if config_class is GRPOConfig
                  else (rewards - (rewards.sum(1, keepdims=True) - rewards)).reshape(-1))
    want = np_free_reference_steps(fresh(), batch, advantages, 3, 0.5, config_class is RLOOConfig)
    got = nnx.state(learner, nnx.Param)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), want,
                         nnx.state(fresh(), nnx.Param))
    assert max(jax.tree.leaves(moved)) > 1e-3  # the steps did move the parameters
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
