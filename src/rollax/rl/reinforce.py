"""REINFORCE: -E[log pi(a|s) G] - c_H H(pi), with discounted (optionally normalised) returns."""

from __future__ import annotations

import jax.numpy as jnp

from rollax.rl.configs import REINFORCEConfig
from rollax.rl.trainer import (
    EPISODE_KEYS,
    Trainer,
    check_batch,
    episode_flags,
    evaluate_policy,
    flatten_batch,
    gradient_step,
    sequence_sum,
)
from rollax.rl.utils import compute_discounted_returns, masked_mean, normalize_advantages


def prepare(batch: dict, config: REINFORCEConfig) -> dict:
    """Time-major batch -> flat batch with (normalised) returns."""
    rewards = batch["rewards"]
    returns = compute_discounted_returns(rewards, config.gamma, **episode_flags(batch))
    if config.normalize_returns:
        returns = normalize_advantages(returns)
    flat = {"observations": batch["observations"], "actions": batch["actions"],
            "returns": returns, "rewards": rewards}
    if "mask" in batch:
        flat["mask"] = batch["mask"]
    return flatten_batch(flat, rewards.ndim)


def loss_fn(model, batch: dict, config: REINFORCEConfig, static: dict):
    """Policy-gradient loss on a flat batch; returns `(loss, metrics)`."""
    terms = evaluate_policy(model, batch["observations"], batch["actions"], batch.get("mask"))
    log_probs = sequence_sum(terms.log_probs, terms.mask)
    policy_loss = -jnp.mean(log_probs * batch["returns"])
    entropy = masked_mean(terms.entropy, terms.mask)
    loss = policy_loss - config.entropy_coeff * entropy
    metrics = {"policy_loss": policy_loss, "entropy": entropy,
               "mean_reward": jnp.mean(batch["rewards"]), "reward_std": jnp.std(batch["rewards"])}
    return loss, metrics


def update(graphdef, state, batch, key, config: REINFORCEConfig, static=None):
    """Pure REINFORCE update of `(model, optimizer)` state on a time-major batch."""
    del key
    return gradient_step(loss_fn, graphdef, state, prepare(batch, config), config, static or {},
                         config.max_grad_norm)


class REINFORCETrainer(Trainer):
    """REINFORCE policy-gradient trainer (`train_step(batch) -> metrics`)."""

    config_class = REINFORCEConfig
    update = staticmethod(update)

    def validate(self, batch):
        return check_batch(batch, required=("observations", "actions", "rewards"),
                           optional=(*EPISODE_KEYS, "mask"))

