"""PPO: GAE advantages, clipped surrogate, (optionally clipped) value loss, entropy bonus."""

from __future__ import annotations

import jax.numpy as jnp

from rollax.rl.batch_checks import STEP, STEP_OR_NEXT, BatchSpec
from rollax.rl.configs import PPOConfig
from rollax.rl.spec import AlgorithmSpec
from rollax.rl.trainer import (
    EPISODE_KEYS,
    Trainer,
    TrainState,
    episode_flags,
    evaluate_policy,
    flatten_batch,
    minibatch_update,
    require_reference,
    sequence_sum,
)
from rollax.rl.utils import (
    clipped_surrogate_terms,
    compute_gae_advantages,
    explained_variance,
    kl_shaped_rewards,
    masked_mean,
    normalize_advantages,
)


def prepare(batch: dict, config: PPOConfig) -> dict:
    """Time-major batch -> `(flat batch with advantages and value targets, KL-anchor metrics)`.

    `values` holds V(s_t) for T steps (then V(s_T) comes from `bootstrap_values[-1]`, or is
    0 when there is none: the batch ends an episode) or T+1 entries as in the GAE call.
    """
    rewards, anchor_metrics = kl_shaped_rewards(batch, config.kl_coeff)
    values = batch["values"]
    flags = episode_flags(batch)
    if values.shape[0] == rewards.shape[0] + 1:
        extended = values
    else:
        last = flags["bootstrap_values"]
        last = jnp.zeros_like(values[-1:]) if last is None else last[-1:]
        extended = jnp.concatenate([values, last])
    advantages = compute_gae_advantages(rewards, extended, gamma=config.gamma,
                                        gae_lambda=config.gae_lambda, **flags)
    flat = {"observations": batch["observations"], "actions": batch["actions"],
            "old_log_probs": batch["log_probs"], "old_values": extended[:-1],
            "returns": advantages + extended[:-1], "rewards": batch["rewards"],
            "raw_advantages": advantages,
            "advantages": normalize_advantages(advantages) if config.normalize_advantages else advantages}
    return flatten_batch(flat, rewards.ndim), anchor_metrics


def loss_fn(model, batch: dict, config: PPOConfig, static: dict):
    """Clipped PPO loss on a flat (mini)batch; returns `(loss, metrics)`."""
    terms = evaluate_policy(model, batch["observations"], batch["actions"])
    if terms.values is None:
        raise ValueError("PPO needs an actor-critic model returning (policy_output, value)")
    log_probs = sequence_sum(terms.log_probs, terms.mask)
    old_log_probs = batch["old_log_probs"]
    surrogate, clipped = clipped_surrogate_terms(log_probs, old_log_probs, batch["advantages"],
                                                 config.clip_param)
    policy_loss = jnp.mean(surrogate)
    values, returns, old_values = terms.values, batch["returns"], batch["old_values"]
    value_error = (values - returns) ** 2
    if config.clip_value_loss:
        clipped_values = old_values + jnp.clip(values - old_values, -config.clip_param, config.clip_param)
        value_error = jnp.maximum(value_error, (clipped_values - returns) ** 2)
    value_loss = 0.5 * jnp.mean(value_error)
    entropy = masked_mean(terms.entropy, terms.mask)
    loss = policy_loss + config.vf_coeff * value_loss - config.entropy_coeff * entropy
    log_ratio = log_probs - old_log_probs
    metrics = {
        "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
        "mean_reward": jnp.mean(batch["rewards"]),
        "advantage_mean": jnp.mean(batch["raw_advantages"]),
        "kl_divergence": jnp.mean(-log_ratio),  # k1 estimate of KL(old || new)
        "approx_kl": jnp.mean(jnp.expm1(log_ratio) - log_ratio),  # k3, non-negative
        "clip_fraction": jnp.mean(clipped.astype(jnp.float32)),
        "explained_variance": explained_variance(values, returns),
    }
    return loss, metrics


def update(graphdef, state: TrainState, batch, key, config: PPOConfig, static=None):
    """Pure PPO update: epochs x shuffled minibatches over the time-major batch."""
    flat, anchor_metrics = prepare(batch, config)
    model_optimizer, metrics = minibatch_update(
        loss_fn, graphdef, state.model_optimizer, flat, key, config, static or {},
        num_epochs=config.num_epochs, num_minibatches=config.num_minibatches,
        max_grad_norm=config.max_grad_norm, target_kl=config.target_kl)
    return state._replace(model_optimizer=model_optimizer), {**metrics, **anchor_metrics}


def check_plan(config: PPOConfig, budget, num_tasks: int) -> None:
    """Every iteration's `num_envs * num_steps` steps split into equal minibatches."""
    steps = budget.num_envs * budget.num_steps
    if steps % config.num_minibatches:
        raise ValueError(f"budget.num_envs * budget.num_steps = {steps} does not split into "
                         f"agent.config.num_minibatches={config.num_minibatches}")


class PPOTrainer(Trainer):
    """Proximal Policy Optimization trainer for actor-critic models."""

    config_class = PPOConfig
    update = staticmethod(update)

    batch_spec = BatchSpec(
        required=("observations", "actions", "rewards", "values", "log_probs"),
        optional=(*EPISODE_KEYS, "ref_log_probs"),
        shapes={**dict.fromkeys(("rewards", "log_probs", "ref_log_probs", *EPISODE_KEYS), STEP),
                "values": STEP_OR_NEXT},
        needs_values=True)

    def validate(self, batch):
        require_reference(batch, self.config)
        arrays, static = super().validate(batch)
        size = arrays["rewards"].size
        if size % self.config.num_minibatches:
            raise ValueError(f"batch of {size} steps does not split into "
                             f"num_minibatches={self.config.num_minibatches}")
        return arrays, static


SPEC = AlgorithmSpec(
    name="ppo", config_class=PPOConfig, update=update, needs_critic=True,
    updates_per_iteration=lambda config: config.num_epochs * config.num_minibatches,
    check=check_plan, uses_reference=lambda config: config.kl_coeff > 0)
