"""GRPO: critic-free clipped policy gradient with advantages normalised within groups.

Rows are contiguous groups of `group_size` generations per prompt. Log-probs may be given per
sequence (`[B]`) or per token (`[B, L]` with a `mask`); the ratio, KL and entropy are taken
at that level and aggregated over tokens by `loss_type`: grpo (mean per sequence, then over
sequences), bnpo/dapo (mean over all valid tokens), dr_grpo (sum over tokens / (B * L)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rollax.rl.batch_checks import STEP, STEP_OR_TOKEN, BatchSpec, check_group_size
from rollax.rl.configs import GRPOConfig
from rollax.rl.spec import AlgorithmSpec, generations_batch
from rollax.rl.trainer import (
    Trainer,
    TrainState,
    evaluate_policy,
    sequence_sum,
    single_step_update,
)
from rollax.rl.utils import clipped_surrogate_terms, compute_group_advantages, estimate_kl


def sequence_rewards(rewards: jax.Array, gamma: float, mask: jax.Array | None) -> jax.Array:
    """`[B]` rewards pass through; per-token `[B, L]` rewards become discounted sums `[B]`."""
    if rewards.ndim == 1:
        return rewards
    discounts = gamma ** jnp.arange(rewards.shape[1], dtype=rewards.dtype)
    valid = jnp.ones(rewards.shape, bool) if mask is None else mask
    return jnp.sum(jnp.where(valid, rewards * discounts, 0.0), axis=1)


def prepare(batch: dict, config: GRPOConfig, group_size: int) -> dict:
    """Add group-normalised `advantages` and the `zero_std` flags to a flat `[B, ...]` batch."""
    rewards = sequence_rewards(batch["rewards"], config.gamma, batch.get("mask"))
    advantages, zero_std, _ = compute_group_advantages(rewards, group_size, config.scale_rewards)
    return {**batch, "rewards": rewards, "advantages": advantages, "zero_std": zero_std}


def aggregate(token_loss: jax.Array, mask: jax.Array, loss_type: str) -> jax.Array:
    """Reduce a `[B, L]` per-token loss to a scalar the way `loss_type` prescribes."""
    weights = mask.astype(token_loss.dtype)
    if loss_type == "grpo":
        per_sequence = jnp.sum(token_loss * weights, 1) / jnp.maximum(jnp.sum(weights, 1), 1.0)
        has_tokens = jnp.sum(weights, 1) > 0
        return jnp.sum(per_sequence) / jnp.maximum(jnp.sum(has_tokens), 1)
    if loss_type in ("bnpo", "dapo"):
        return jnp.sum(token_loss * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(token_loss * weights) / token_loss.size  # dr_grpo: constant normaliser


def loss_fn(model, batch: dict, config: GRPOConfig, static: dict):
    """GRPO loss on a flat batch with advantages; returns `(loss, metrics)`."""
    terms = evaluate_policy(model, batch["observations"], batch["actions"], batch.get("mask"))
    old = batch.get("log_probs")
    token_level = old is not None and old.ndim == 2
    if token_level:
        log_probs, mask, ent = terms.log_probs, terms.mask, terms.entropy
    else:  # sequence level: one ratio per generation
        log_probs = sequence_sum(terms.log_probs, terms.mask)[:, None]
        mask = jnp.ones_like(log_probs, bool)
        ent = (jnp.sum(jnp.where(terms.mask, terms.entropy, 0.0), 1)
               / jnp.maximum(jnp.sum(terms.mask, 1), 1))[:, None]
        old = None if old is None else old[:, None]
    if old is None:  # on-policy single step: ratio 1, gradient of log pi * A
        old = jax.lax.stop_gradient(log_probs)
    if config.mask_zero_std_groups:
        mask = mask & ~batch["zero_std"][:, None]
    surrogate, clipped = clipped_surrogate_terms(log_probs, old, batch["advantages"][:, None],
                                                 config.clip_param, config.epsilon_high)
    if "ref_log_probs" in batch:
        ref = batch["ref_log_probs"]
        ref = ref if token_level else ref[:, None]
        kl = estimate_kl(log_probs, ref, config.kl_estimator)
    else:
        kl = jnp.zeros_like(log_probs)
    token_loss = surrogate + config.beta * kl - config.entropy_coeff * ent
    log_ratio = log_probs - old
    metrics = {
        "policy_loss": aggregate(surrogate, mask, config.loss_type),
        "mean_reward": jnp.mean(batch["rewards"]),
        "group_advantage_std": jnp.std(batch["advantages"]),
        "kl_penalty": aggregate(kl, mask, config.loss_type),
        "approx_kl": aggregate(jnp.expm1(log_ratio) - log_ratio, mask, config.loss_type),
        "entropy": aggregate(ent, mask, config.loss_type),
        "frac_reward_zero_std": jnp.mean(batch["zero_std"].astype(jnp.float32)),
        "clip_ratio": aggregate(clipped.astype(jnp.float32), mask, config.loss_type),
    }
    return aggregate(token_loss, mask, config.loss_type), metrics


def update(graphdef, state: TrainState, batch, key, config: GRPOConfig, static=None):
    """Pure GRPO update (one gradient step) on a flat grouped batch."""
    del key
    static = static or {}
    group_size = static.get("group_size", config.num_generations)
    return single_step_update(loss_fn, graphdef, state, prepare(batch, config, group_size), config, static)


class GRPOTrainer(Trainer):
    """Group Relative Policy Optimization trainer (no value network)."""

    config_class = GRPOConfig
    update = staticmethod(update)

    batch_spec = BatchSpec(
        required=("observations", "actions", "rewards"),
        optional=("log_probs", "ref_log_probs", "mask", "group_size"), batch_ndim=1,
        shapes=dict.fromkeys(("rewards", "log_probs", "ref_log_probs"), STEP_OR_TOKEN))

    def validate(self, batch):
        arrays, static = super().validate(batch)
        if "ref_log_probs" in arrays:  # taken at the level (sequence or token) of log_probs
            ref, old = arrays["ref_log_probs"].shape, arrays.get("log_probs")
            expected = arrays["rewards"].shape[:1] if old is None else old.shape
            if ref != expected:
                raise ValueError(f"batch['ref_log_probs'] has shape {ref}; expected {expected}, "
                                 + ("as batch['log_probs']" if old is not None else
                                    f"one per sequence ({STEP}) without batch['log_probs']"))
        return arrays, check_group_size(arrays, static, self.config.num_generations)


SPEC = AlgorithmSpec(
    name="grpo", config_class=GRPOConfig, update=update,
    batch_source="groups", group_size=lambda config, budget: config.num_generations,
    group_batch=lambda samples, config: generations_batch(samples, config.beta > 0))
