"""REINFORCE: -E[log pi(a|s) A] - c_H H(pi), with A the discounted return, optionally minus a
moving baseline, optionally normalised.

`baseline="ema"` keeps one exponential moving average of the returns per task key (the
batch's integer `task_ids`, e.g. the condition class; absent = key 0) as algorithm state, as
in rolling advantage estimation (reference/004). Per update, in this order:

1. returns `G` from the rewards (discounted, reset at episode ends);
2. advantage `A = G - b[task_id]` with the baseline *before* this batch;
3. `normalize_returns` normalises `A` over the batch (so the default config, without a
   baseline, normalises the returns exactly as before);
4. each key present in the batch moves `b <- decay * b + (1 - decay) * mean(G of that key)`;
   the first batch of a key sets `b` to that mean (no bias towards the initial 0). `count`
   holds how many batches have updated each key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rollax.rl.batch_checks import STEP, BatchSpec
from rollax.rl.configs import REINFORCEConfig
from rollax.rl.spec import AlgorithmSpec, GroupSamples
from rollax.rl.trainer import (
    EPISODE_KEYS,
    Trainer,
    TrainState,
    episode_flags,
    evaluate_policy,
    flatten_batch,
    gradient_step,
    require_reference,
    sequence_sum,
)
from rollax.rl.utils import (
    compute_discounted_returns,
    kl_shaped_rewards,
    masked_mean,
    normalize_advantages,
)


def init_state(config: REINFORCEConfig):
    """The EMA baselines `{"baseline": [K] float32, "count": [K] int32}`, or `()` without one."""
    if config.baseline != "ema":
        return ()
    keys = config.num_baseline_keys
    return {"baseline": jnp.zeros((keys,), jnp.float32), "count": jnp.zeros((keys,), jnp.int32)}


def update_baseline(baseline_state: dict, returns: jax.Array, task_ids: jax.Array, decay: float) -> dict:
    """Move each present key's baseline towards the mean of its returns in this batch."""
    baseline, count = baseline_state["baseline"], baseline_state["count"]
    ids, values = task_ids.reshape(-1), returns.reshape(-1).astype(baseline.dtype)
    totals = jnp.zeros_like(baseline).at[ids].add(values)
    hits = jnp.zeros_like(baseline).at[ids].add(1.0)
    present = hits > 0
    batch_mean = totals / jnp.maximum(hits, 1.0)
    moved = jnp.where(count > 0, decay * baseline + (1.0 - decay) * batch_mean, batch_mean)
    return {"baseline": jnp.where(present, moved, baseline),
            "count": count + present.astype(count.dtype)}


def prepare(batch: dict, config: REINFORCEConfig, baseline_state=()) -> tuple[dict, object, dict]:
    """Time-major batch -> `(flat batch with advantages, new baseline state, baseline metrics)`."""
    rewards, extra_metrics = kl_shaped_rewards(batch, config.kl_coeff)
    returns = compute_discounted_returns(rewards, config.gamma, **episode_flags(batch))
    advantages = returns
    if config.baseline == "ema":
        task_ids = batch.get("task_ids")
        task_ids = jnp.zeros(returns.shape, jnp.int32) if task_ids is None else task_ids.astype(jnp.int32)
        subtracted = baseline_state["baseline"][task_ids]
        advantages = returns - subtracted.astype(returns.dtype)
        extra_metrics["baseline_mean"] = jnp.mean(subtracted)
        baseline_state = update_baseline(baseline_state, returns, task_ids, config.ema_decay)
    if config.normalize_returns:
        advantages = normalize_advantages(advantages)
    flat = {"observations": batch["observations"], "actions": batch["actions"],
            "returns": advantages, "rewards": batch["rewards"]}
    if "mask" in batch:
        flat["mask"] = batch["mask"]
    return flatten_batch(flat, rewards.ndim), baseline_state, extra_metrics


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


def update(graphdef, state: TrainState, batch, key, config: REINFORCEConfig, static=None):
    """Pure REINFORCE update of `(model, optimizer)` state on a time-major batch."""
    del key
    flat, algorithm_state, extra_metrics = prepare(batch, config, state.algorithm)
    model_optimizer, metrics = gradient_step(loss_fn, graphdef, state.model_optimizer, flat, config,
                                             static or {}, config.max_grad_norm)
    return TrainState(model_optimizer, algorithm_state), {**metrics, **extra_metrics}


def completion_batch(samples: GroupSamples, config: REINFORCEConfig) -> dict:
    """Sampled completions as one-step episodes `[1, B]`: a completion's return is its reward,
    its log-prob the sum over its tokens (with the reference's, for the KL anchor)."""
    batch = {"observations": samples.observations[None], "actions": samples.actions[None],
             "mask": samples.mask[None], "rewards": samples.rewards[None],
             "dones": jnp.ones((1, samples.rewards.shape[0]), bool)}
    if config.kl_coeff > 0:
        reference = samples.reference_log_probs(samples.observations, samples.actions)
        batch["log_probs"] = sequence_sum(samples.log_probs, samples.mask)[None]
        batch["ref_log_probs"] = sequence_sum(reference, samples.mask)[None]
    return batch


class REINFORCETrainer(Trainer):
    """REINFORCE policy-gradient trainer (`train_step(batch) -> metrics`)."""

    config_class = REINFORCEConfig
    update = staticmethod(update)
    init_state = staticmethod(init_state)

    batch_spec = BatchSpec(
        required=("observations", "actions", "rewards"),
        optional=(*EPISODE_KEYS, "mask", "task_ids", "log_probs", "ref_log_probs"),
        shapes=dict.fromkeys(("rewards", *EPISODE_KEYS, "task_ids", "log_probs", "ref_log_probs"),
                             STEP),
        integer_keys=("task_ids",))

    def validate(self, batch):
        require_reference(batch, self.config)
        arrays, static = super().validate(batch)
        keys = self.config.num_baseline_keys
        if "task_ids" in arrays and arrays["task_ids"].size and self.config.baseline == "ema":
            low, high = int(arrays["task_ids"].min()), int(arrays["task_ids"].max())
            if low < 0 or high >= keys:
                raise ValueError(f"batch['task_ids'] must lie in [0, num_baseline_keys={keys}), got "
                                 f"[{low}, {high}]")
        return arrays, static


def check_plan(config: REINFORCEConfig, budget, num_tasks: int) -> None:
    """An EMA baseline needs a key for each of the env's tasks (ids past the table would be
    silently merged inside the jitted update)."""
    if config.baseline == "ema" and config.num_baseline_keys < num_tasks:
        raise ValueError(f"agent.config.num_baseline_keys={config.num_baseline_keys} is smaller "
                         f"than the env's {num_tasks} task keys; set it to {num_tasks}")


SPEC = AlgorithmSpec(
    name="reinforce", config_class=REINFORCEConfig, update=update, check=check_plan,
    init_state=init_state, uses_reference=lambda config: config.kl_coeff > 0,
    completion_batch=completion_batch)

