"""PPO: GAE advantages, clipped surrogate, (optionally clipped) value loss, entropy bonus.

Batches are time-major steps `[T, N]`, or completions of a token model `[B, L]` with a
`mask` over each completion's tokens (token-level PPO): there every token is a step, the
value head gives V per token, the sequence's reward arrives on its last token, GAE runs over
the tokens of each completion, and the losses are means over valid tokens.
"""

from __future__ import annotations

import jax.numpy as jnp

from rollax.rl.batch_checks import STEP, STEP_NEXT_OR_TOKEN, STEP_OR_TOKEN, BatchSpec
from rollax.rl.configs import PPOConfig
from rollax.rl.spec import AlgorithmSpec, GroupSamples
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
    NORMALIZE_EPS,
    clipped_surrogate_terms,
    compute_gae_advantages,
    explained_variance,
    kl_shaped_rewards,
    masked_mean,
    normalize_advantages,
)


def prepare(batch: dict, config: PPOConfig) -> dict:
    """Time-major (or token) batch -> `(flat batch with advantages and value targets, KL-anchor metrics)`.

    `values` holds V(s_t) for T steps (then V(s_T) comes from `bootstrap_values[-1]`, or is
    0 when there is none: the batch ends an episode) or T+1 entries as in the GAE call.
    """
    if "mask" in batch:
        return prepare_tokens(batch, config)
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


def prepare_tokens(batch: dict, config: PPOConfig) -> tuple[dict, dict]:
    """Completions `[B, L]` -> per-token advantages and value targets (see the module
    docstring); the KL anchor shapes each token's reward by kl_coeff * (log pi - log pi_ref)."""
    mask = batch["mask"]
    last = mask & ~jnp.pad(mask[:, 1:], ((0, 0), (0, 1)))  # each completion's final token
    rewards = jnp.where(last, batch["rewards"][:, None], 0.0)
    anchor_metrics = {}
    if "ref_log_probs" in batch:
        kl = jnp.where(mask, batch["log_probs"] - batch["ref_log_probs"], 0.0)
        rewards = rewards - config.kl_coeff * kl
        anchor_metrics["kl_to_reference"] = jnp.mean(jnp.sum(kl, 1))  # per completion
    values = jnp.where(mask, batch["values"], 0.0)
    extended = jnp.pad(values, ((0, 0), (0, 1)))
    advantages = compute_gae_advantages(rewards.T, extended.T, last.T, config.gamma,
                                        config.gae_lambda).T
    normalized = advantages
    if config.normalize_advantages:
        mean = masked_mean(advantages, mask)
        std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
        normalized = (advantages - mean) / (std + NORMALIZE_EPS)
    flat = {"observations": batch["observations"], "actions": batch["actions"], "mask": mask,
            "old_log_probs": batch["log_probs"], "old_values": values,
            "returns": advantages + values, "rewards": batch["rewards"],
            "raw_advantages": advantages, "advantages": normalized}
    return flat, anchor_metrics


def loss_fn(model, batch: dict, config: PPOConfig, static: dict):
    """Clipped PPO loss on a flat (mini)batch of steps or of completions' tokens; returns
    `(loss, metrics)`."""
    tokens = "mask" in batch
    terms = evaluate_policy(model, batch["observations"], batch["actions"], batch.get("mask"))
    if terms.values is None:
        raise ValueError("PPO needs an actor-critic model returning (policy_output, value)")
    # a step's log-prob sums its action's parts; a token is its own step
    log_probs = terms.log_probs if tokens else sequence_sum(terms.log_probs, terms.mask)
    steps = terms.mask if tokens else None  # what the means run over
    old_log_probs = batch["old_log_probs"]
    surrogate, clipped = clipped_surrogate_terms(log_probs, old_log_probs, batch["advantages"],
                                                 config.clip_param)
    policy_loss = masked_mean(surrogate, steps)
    values, returns, old_values = terms.values, batch["returns"], batch["old_values"]
    value_error = (values - returns) ** 2
    if config.clip_value_loss:
        clipped_values = old_values + jnp.clip(values - old_values, -config.clip_param, config.clip_param)
        value_error = jnp.maximum(value_error, (clipped_values - returns) ** 2)
    value_loss = 0.5 * masked_mean(value_error, steps)
    entropy = masked_mean(terms.entropy, terms.mask)
    loss = policy_loss + config.vf_coeff * value_loss - config.entropy_coeff * entropy
    log_ratio = log_probs - old_log_probs
    metrics = {
        "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
        "mean_reward": jnp.mean(batch["rewards"]),
        "advantage_mean": masked_mean(batch["raw_advantages"], steps),
        "kl_divergence": masked_mean(-log_ratio, steps),  # k1 estimate of KL(old || new)
        "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, steps),  # k3, non-negative
        "clip_fraction": masked_mean(clipped.astype(jnp.float32), steps),
        "explained_variance": explained_variance(values, returns, steps),
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


def _check_token_batch(arrays: dict) -> None:
    """A token batch (with `mask`): completions `[B, L]`, one reward each, per-token log-probs
    and values; a step batch has neither a mask nor per-token entries."""
    rewards = arrays["rewards"].shape
    if "mask" not in arrays:
        for key in ("log_probs", "ref_log_probs", "values"):
            if key in arrays and arrays[key].ndim > len(rewards):
                raise ValueError(f"batch[{key!r}] has per-token shape {arrays[key].shape}: "
                                 "token-level PPO needs batch['mask'] over the completions' tokens")
        return
    mask = arrays["mask"].shape
    if len(rewards) != 1:
        raise ValueError(f"token-level PPO takes one reward per completion: batch['rewards'] has "
                         f"shape {rewards}, expected ({mask[0]},)")
    for key in ("log_probs", "ref_log_probs", "values"):
        if key in arrays and arrays[key].shape != mask:
            raise ValueError(f"batch[{key!r}] has shape {arrays[key].shape}; token-level PPO "
                             f"takes one per token, as batch['mask'] {mask}")


def completion_batch(samples: GroupSamples, config: PPOConfig) -> dict:
    """Sampled completions as a token-level batch (see the module docstring)."""
    batch = {"observations": samples.observations, "actions": samples.actions, "mask": samples.mask,
             "rewards": samples.rewards, "log_probs": samples.log_probs, "values": samples.values}
    if config.kl_coeff > 0:
        batch["ref_log_probs"] = samples.reference_log_probs(samples.observations, samples.actions)
    return batch


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
        optional=(*EPISODE_KEYS, "ref_log_probs", "mask"),
        shapes={**dict.fromkeys(("rewards", *EPISODE_KEYS), STEP),
                **dict.fromkeys(("log_probs", "ref_log_probs"), STEP_OR_TOKEN),
                "values": STEP_NEXT_OR_TOKEN},
        needs_values=True)

    def validate(self, batch):
        require_reference(batch, self.config)
        arrays, static = super().validate(batch)
        _check_token_batch(arrays)
        size = arrays["rewards"].size
        if size % self.config.num_minibatches:
            raise ValueError(f"batch of {size} steps does not split into "
                             f"num_minibatches={self.config.num_minibatches}")
        return arrays, static


SPEC = AlgorithmSpec(
    name="ppo", config_class=PPOConfig, update=update, needs_critic=True,
    updates_per_iteration=lambda config: config.num_epochs * config.num_minibatches,
    check=check_plan, uses_reference=lambda config: config.kl_coeff > 0,
    completion_batch=completion_batch)
