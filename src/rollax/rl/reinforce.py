"""REINFORCE (Williams, 1992): -E[log pi(a|s) A] - c_H H(pi), with A the discounted return,
optionally minus a moving baseline, optionally normalised.

`baseline="ema"` keeps one exponential moving average of the returns per task key (the
batch's integer `task_ids`, e.g. the condition class; absent = key 0) as algorithm state, as
in rolling advantage estimation. Per update, in this order:

1. returns `G` from the rewards (discounted, reset at episode ends);
2. advantage `A = G - b[task_id]` with the baseline *before* this batch;
3. `normalize_returns` normalises `A` over the batch (so the default config, without a
   baseline, normalises the returns exactly as the documented trainer does);
4. each key present in the batch moves `b <- decay * b + (1 - decay) * mean(G of that key)`;
   the first batch of a key sets `b` to that mean (no bias towards the initial 0). `count`
   holds how many batches have updated each key.

A sampled sequence (a token completion, a denoising chain) is one step of an episode of its
own: its return is its reward, its log-prob the sum over its parts.

The KL anchor (`kl_coeff`) shapes the reward with the sampled log-ratio, except where the batch
carries the reference's distributions (a denoising chain's Gaussian steps): then it is their
closed-form KL summed over the parts, added to the loss (DPOK, Fan et al., 2023).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rollax.networks.policy import score_actions
from rollax.rl.algorithm import Algorithm
from rollax.rl.batch import STEP, BatchFormat, require_reference
from rollax.rl.config import Config, algorithm_config, traced
from rollax.rl.formats import EPISODE_KEYS, build_steps, check_episode_keys
from rollax.rl.utils import (
    compute_discounted_returns,
    kl_shaped_rewards,
    masked_mean,
    normalize_advantages,
    sequence_sum,
)
from rollax.rollout.batches import Sequences, Steps


@algorithm_config
class REINFORCEConfig(Config):
    """REINFORCE: discounted returns, optional return normalisation, entropy bonus."""

    gamma: float = traced(0.99)
    normalize_returns: bool = True
    entropy_coeff: float = traced(0.01)
    max_grad_norm: float | None = None  # extra: global-norm gradient clip, off by default
    # extra: moving baseline subtracted from the returns, one per task key (batch `task_ids`)
    baseline: str = "none"  # none | ema
    ema_decay: float = traced(0.95)  # b <- decay * b + (1 - decay) * mean(returns of the key)
    num_baseline_keys: int = 1  # task keys (e.g. condition classes), ids in [0, num_baseline_keys)
    # extra: KL anchor, reward - kl_coeff * (log pi - log pi_ref) per step (the batch then
    # needs `log_probs` and `ref_log_probs`; the training loop scores the initial policy's)
    kl_coeff: float = 0.0

    def _check_values(self):
        self._range("gamma", 0.0, 1.0)
        self._range("entropy_coeff", 0.0)
        self._optional_positive("max_grad_norm")
        self._range("kl_coeff", 0.0)
        self._choice("baseline", ("none", "ema"))
        self._range("ema_decay", 0.0, 1.0, high_open=True)
        self._int("num_baseline_keys")


@struct.dataclass
class Returns:
    """The loss's rows: one step each, its action of `mask [R, L]` parts, and its advantage."""

    observations: jax.Array
    actions: jax.Array
    mask: jax.Array
    returns: jax.Array  # [R]: the advantage (return, minus the baseline, normalised)
    rewards: jax.Array  # [R]
    ref_distribution: Any = None  # per part `[R, L]`, for the closed-form KL


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


class REINFORCE(Algorithm):
    name, title, config_class = "reinforce", "REINFORCE", REINFORCEConfig
    learns_from = (Steps, Sequences)

    def uses_reference(self, config: REINFORCEConfig) -> bool:
        return config.kl_coeff > 0

    def init_state(self, config: REINFORCEConfig):
        """The EMA baselines `{"baseline": [K] float32, "count": [K] int32}`, or `()` without one."""
        if config.baseline != "ema":
            return ()
        keys = config.num_baseline_keys
        return {"baseline": jnp.zeros((keys,), jnp.float32), "count": jnp.zeros((keys,), jnp.int32)}

    def check_plan(self, config: REINFORCEConfig, budget, num_tasks: int) -> None:
        """An EMA baseline needs a key for each of the env's tasks (ids past the table would be
        silently merged inside the jitted update)."""
        if config.baseline == "ema" and config.num_baseline_keys < num_tasks:
            raise ValueError(f"agent.config.num_baseline_keys={config.num_baseline_keys} is smaller "
                             f"than the env's {num_tasks} task keys; set it to {num_tasks}")

    def from_steps(self, steps: Steps, config: REINFORCEConfig):
        return steps, {}

    def from_sequences(self, sequences: Sequences, config: REINFORCEConfig):
        """Each sample is one step `[1, B]` of its own episode (see the module docstring)."""
        mask, rewards = sequences.mask, sequences.rewards
        log_probs = ref_log_probs = ref_distribution = None
        if self.uses_reference(config) and sequences.ref_distribution is not None:
            ref_distribution = jax.tree.map(lambda x: x[None], sequences.ref_distribution)
        elif self.uses_reference(config):
            log_probs = sequence_sum(sequences.log_probs, mask)[None]
            ref_log_probs = sequence_sum(sequences.ref_log_probs, mask)[None]
        zeros = jnp.zeros((1, rewards.shape[0]), rewards.dtype)
        task_ids = jnp.zeros(zeros.shape, jnp.int32) if sequences.task_ids is None else \
            sequences.task_ids[None]
        return Steps(observations=sequences.observations[None], actions=sequences.actions[None],
                     mask=mask[None], rewards=rewards[None], dones=jnp.ones(zeros.shape, bool),
                     truncated=jnp.zeros(zeros.shape, bool), values=zeros, last_values=zeros[0],
                     bootstrap_values=zeros, task_ids=task_ids,
                     log_probs=log_probs, ref_log_probs=ref_log_probs,
                     ref_distribution=ref_distribution), {}

    def prepare(self, steps: Steps, config: REINFORCEConfig, baseline_state):
        rewards, metrics = kl_shaped_rewards(steps.rewards, steps.log_probs, steps.ref_log_probs,
                                             config.kl_coeff)
        returns = compute_discounted_returns(rewards, config.gamma, steps.dones,
                                             truncated=steps.truncated,
                                             bootstrap_values=steps.bootstrap_values)
        advantages = returns
        if config.baseline == "ema":
            subtracted = baseline_state["baseline"][steps.task_ids]
            advantages = returns - subtracted.astype(returns.dtype)
            metrics["baseline_mean"] = jnp.mean(subtracted)
            baseline_state = update_baseline(baseline_state, returns, steps.task_ids, config.ema_decay)
        if config.normalize_returns:
            advantages = normalize_advantages(advantages)
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # [T, N, ...] -> [T * N, ...]
        return Returns(flat(steps.observations), flat(steps.actions), flat(steps.mask),
                       flat(advantages), flat(steps.rewards),
                       jax.tree.map(flat, steps.ref_distribution)), baseline_state, metrics

    def loss(self, model, batch: Returns, config: REINFORCEConfig):
        """Policy-gradient loss on the rows; returns `(loss, metrics)`."""
        terms = score_actions(model, batch.observations, batch.actions, batch.mask.shape,
                              batch.ref_distribution)
        log_probs = sequence_sum(terms.log_probs, batch.mask)
        policy_loss = -jnp.mean(log_probs * batch.returns)
        entropy = masked_mean(terms.entropy, batch.mask)
        loss = policy_loss - config.entropy_coeff * entropy
        metrics = {"policy_loss": policy_loss, "entropy": entropy,
                   "mean_reward": jnp.mean(batch.rewards), "reward_std": jnp.std(batch.rewards)}
        if terms.kl is not None:  # the closed-form anchor
            metrics["kl_penalty"] = jnp.mean(sequence_sum(terms.kl, batch.mask))
            loss = loss + config.kl_coeff * metrics["kl_penalty"]
        return loss, metrics


def check(arrays: dict, static: dict, parts: tuple, config: REINFORCEConfig) -> None:
    require_reference(arrays, config.kl_coeff)
    check_episode_keys(arrays)
    keys = config.num_baseline_keys
    if "task_ids" in arrays and config.baseline == "ema":
        low, high = int(np.min(arrays["task_ids"])), int(np.max(arrays["task_ids"]))
        if low < 0 or high >= keys:
            raise ValueError(f"batch['task_ids'] must lie in [0, num_baseline_keys={keys}), got "
                             f"[{low}, {high}]")


REINFORCE.formats = (BatchFormat(
    required=("observations", "actions", "rewards"),
    optional=(*EPISODE_KEYS, "mask", "task_ids", "log_probs", "ref_log_probs"),
    shapes=dict.fromkeys(("rewards", *EPISODE_KEYS, "task_ids", "log_probs", "ref_log_probs"), STEP),
    integer_keys=("task_ids",), check=check, build=build_steps),)
ALGORITHM = REINFORCE()
