"""RLOO: REINFORCE with a leave-one-out baseline over G generations per prompt (TRL's formulas).

Rows are contiguous groups of `group_size` generations per prompt (`[p0g0, p0g1, ..., p1g0, ...]`).
Each generation's advantage is its reward minus the mean reward of the other G-1 generations of
its group: `A_i = r_i - (sum_j r_j - r_i) / (G - 1)`. Everything is per sequence: token models
give `[B, L]` log-probs that are summed under `mask`, per-token `[B, L]` rewards are summed
(gamma = 1), and `log_probs`/`ref_log_probs` are sequence log-probs `[B]`.

With `beta > 0` the reward is KL-shaped before the baseline, `r_i - beta * (logp_i - ref_logp_i)`
(k1, constant for the gradient). `logp_i` is the sampling policy's `log_probs` when the batch has
them (the KL of the rollout, as TRL), else the current policy's log-prob (the same policy for an
on-policy step). With `log_probs` the loss is PPO's clipped surrogate on the sequence ratio;
without them the ratio is 1 and the loss is `-mean(logp * A)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rollax.rl.batch_checks import STEP, STEP_OR_TOKEN, BatchSpec, check_group_size
from rollax.rl.configs import RLOOConfig
from rollax.rl.spec import AlgorithmSpec, generations_batch
from rollax.rl.trainer import (
    Trainer,
    TrainState,
    evaluate_policy,
    sequence_sum,
    single_step_update,
)
from rollax.rl.utils import clipped_surrogate_terms, masked_mean, normalize_advantages


def sequence_rewards(rewards: jax.Array, mask: jax.Array | None) -> jax.Array:
    """`[B]` rewards pass through; per-token `[B, L]` rewards are summed over valid tokens."""
    if rewards.ndim == 1:
        return rewards
    return jnp.sum(rewards if mask is None else jnp.where(mask, rewards, 0.0), axis=1)


def rloo_advantages(rewards: jax.Array, group_size: int) -> jax.Array:
    """Leave-one-out advantages `[B]`: each reward minus the mean of the rest of its group."""
    grouped = rewards.reshape(-1, group_size)
    others = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


def loss_fn(model, batch: dict, config: RLOOConfig, static: dict):
    """RLOO loss on a flat grouped batch; returns `(loss, metrics)`."""
    group_size = static.get("group_size", config.num_generations)
    terms = evaluate_policy(model, batch["observations"], batch["actions"], batch.get("mask"))
    log_probs = sequence_sum(terms.log_probs, terms.mask)
    entropy = masked_mean(terms.entropy, terms.mask)

    rewards = sequence_rewards(batch["rewards"], batch.get("mask")).astype(log_probs.dtype)
    old = batch.get("log_probs")
    sampling_log_probs = jax.lax.stop_gradient(log_probs) if old is None else old
    if "ref_log_probs" in batch:
        kl = sampling_log_probs - batch["ref_log_probs"]
    else:
        kl = jnp.zeros_like(rewards)
    shaped = rewards - config.beta * kl
    advantages = jax.lax.stop_gradient(rloo_advantages(shaped, group_size))
    advantage_mean = jnp.mean(advantages)
    if config.normalize_advantages:
        advantages = normalize_advantages(advantages)

    if old is None:  # on-policy single step: ratio 1, gradient of log pi * A
        policy_loss = -jnp.mean(log_probs * advantages)
        clip_ratio = jnp.zeros((), log_probs.dtype)
    else:
        surrogate, clipped = clipped_surrogate_terms(log_probs, old, advantages, config.clip_param)
        policy_loss = jnp.mean(surrogate)
        clip_ratio = jnp.mean(clipped.astype(log_probs.dtype))
    loss = policy_loss - config.entropy_coeff * entropy
    metrics = {
        "policy_loss": policy_loss,
        "mean_reward": jnp.mean(rewards),
        "reward_std": jnp.std(rewards),
        "advantage_mean": advantage_mean,
        "kl_penalty": jnp.mean(kl),
        "entropy": entropy,
        "clip_ratio": clip_ratio,
    }
    return loss, metrics


def update(graphdef, state: TrainState, batch, key, config: RLOOConfig, static=None):
    """Pure RLOO update (one gradient step) on a flat grouped batch."""
    del key
    return single_step_update(loss_fn, graphdef, state, batch, config, static or {})


class RLOOTrainer(Trainer):
    """REINFORCE Leave-One-Out trainer (no value network)."""

    config_class = RLOOConfig
    update = staticmethod(update)

    batch_spec = BatchSpec(
        required=("observations", "actions", "rewards"),
        optional=("log_probs", "ref_log_probs", "mask", "group_size"), batch_ndim=1,
        shapes={"rewards": STEP_OR_TOKEN, "log_probs": STEP, "ref_log_probs": STEP})

    def validate(self, batch):
        arrays, static = super().validate(batch)
        return arrays, check_group_size(arrays, static, self.config.num_generations)


SPEC = AlgorithmSpec(
    name="rloo", config_class=RLOOConfig, update=update,
    batch_source="groups", group_size=lambda config, budget: config.num_generations,
    group_batch=lambda samples, config: generations_batch(samples, config.beta > 0, per_sequence=True))
