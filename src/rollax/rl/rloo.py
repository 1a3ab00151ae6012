"""RLOO (Ahmadian et al., 2024; TRL's formulas): REINFORCE with a leave-one-out baseline over G
samples per prompt.

Rows are contiguous groups of `group_size` samples per prompt (`[p0g0, p0g1, ..., p1g0, ...]`).
Each sample's advantage is its reward minus the mean reward of the other G-1 samples of its
group: `A_i = r_i - (sum_j r_j - r_i) / (G - 1)`. Everything is per sample: its log-prob is
the sum over its parts (a completion's tokens), and `log_probs`/`ref_log_probs` are sample
log-probs `[B]`.

With `beta > 0` the reward is KL-shaped before the baseline, `r_i - beta * (logp_i - ref_logp_i)`
(k1, constant for the gradient). `logp_i` is the sampling policy's `log_probs` when the batch has
them (the KL of the rollout, as TRL), else the current policy's log-prob (the same policy for an
on-policy step). With `log_probs` the loss is PPO's clipped surrogate on the sample ratio;
without them the ratio is 1 and the loss is `-mean(logp * A)`.

When the batch carries the reference's distributions (a denoising chain's Gaussian steps), the
anchor is their closed-form KL in the loss instead, `+ beta * mean_i sum_parts KL(pi || pi_ref)`
(DPOK, Fan et al., 2023): exact and differentiable, where the sampled log-ratio of 640
Gaussian dimensions is too noisy to hold the policy near its start.

TRL's `num_iterations` (gradient steps per generation batch, each sample's ratio to the sampling
policy) and `mask_truncated_completions` (samples cut at the length limit leave the loss, the
KL and the entropy, which average over the samples kept; their rewards still count in the
leave-one-out baselines).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rollax.networks.policy import score_actions
from rollax.rl.algorithm import Algorithm, minibatch_update, sampling_log_probs
from rollax.rl.batch import STEP, STEP_OR_PART, BatchFormat, check_group_options
from rollax.rl.config import Config, algorithm_config, traced
from rollax.rl.formats import build_sequences
from rollax.rl.utils import clipped_surrogate_terms, masked_mean, normalize_advantages, sequence_sum
from rollax.rollout.batches import Sequences


@algorithm_config
class RLOOConfig(Config):
    """RLOO: each sample's baseline is the mean reward of the other G-1 in its group.

    With `beta > 0` the reward is KL-shaped, r - beta * (log pi - log pi_ref) on sample
    log-probs (k1, no gradient through it). The clipped ratio applies only when the batch
    carries the sampling policy's `log_probs`.
    """

    num_generations: int = 4
    beta: float = 0.0
    normalize_advantages: bool = False
    clip_param: float = traced(0.2)
    entropy_coeff: float = traced(0.0)
    num_iterations: int = 1  # gradient steps per generation batch (TRL's)
    mask_truncated_completions: bool = False  # samples cut at the length limit leave the loss
    max_grad_norm: float | None = None

    def _check_values(self):
        self._int("num_generations", 2)
        self._range("beta", 0.0)
        self._range("clip_param", 0.0, low_open=True)
        self._range("entropy_coeff", 0.0)
        self._int("num_iterations")
        self._optional_positive("max_grad_norm")


@struct.dataclass
class SampleLogProbs:
    """RLOO's batch: samples scored on `mask [B, L]`, with whole-sample log-probs `[B]`."""

    observations: jax.Array
    actions: jax.Array
    mask: jax.Array
    rewards: jax.Array
    log_probs: jax.Array | None = None
    ref_log_probs: jax.Array | None = None
    ref_distribution: Any = None  # per part, for the closed-form KL
    truncated: jax.Array | None = None  # `[B]`, cut at the length limit
    group_size: int = struct.field(pytree_node=False, default=2)

    def learned_by(self, algorithm, config) -> tuple[SampleLogProbs, dict]:
        return self, {}


def rloo_advantages(rewards: jax.Array, group_size: int) -> jax.Array:
    """Leave-one-out advantages `[B]`: each reward minus the mean of the rest of its group."""
    grouped = rewards.reshape(-1, group_size)
    others = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
    return (grouped - others).reshape(-1)


class RLOO(Algorithm):
    name, title, config_class = "rloo", "RLOO", RLOOConfig
    learns_from = (Sequences,)

    def group_size(self, config: RLOOConfig) -> int:
        return config.num_generations

    def uses_reference(self, config: RLOOConfig) -> bool:
        return config.beta > 0

    def updates_per_iteration(self, config: RLOOConfig) -> int:
        return config.num_iterations

    def optimize(self, graphdef, model_optimizer, batch: SampleLogProbs, key, config: RLOOConfig):
        """`num_iterations` gradient steps on the whole batch, ratios to the sampling policy
        (scored before the first step when the batch did not bring its log-probs)."""
        if config.num_iterations > 1 and batch.log_probs is None:
            per_part = sampling_log_probs(graphdef, model_optimizer, batch.observations,
                                          batch.actions, batch.mask)
            batch = batch.replace(log_probs=sequence_sum(per_part, batch.mask))
        return minibatch_update(self.loss, graphdef, model_optimizer, batch, key, config,
                                num_epochs=config.num_iterations, max_grad_norm=config.max_grad_norm,
                                shuffle=False)

    def from_sequences(self, sequences: Sequences, config: RLOOConfig):
        """Per-part log-probs summed into each sample's."""
        mask = sequences.mask
        total = lambda x: None if x is None else sequence_sum(x, mask)
        return SampleLogProbs(sequences.observations, sequences.actions, mask, sequences.rewards,
                              total(sequences.log_probs), total(sequences.ref_log_probs),
                              sequences.ref_distribution, sequences.truncated,
                              group_size=sequences.group_size), {}

    def loss(self, model, batch: SampleLogProbs, config: RLOOConfig):
        """RLOO loss on a grouped batch; returns `(loss, metrics)`."""
        exact = batch.ref_distribution if self.uses_reference(config) else None
        terms = score_actions(model, batch.observations, batch.actions, batch.mask.shape, exact)
        log_probs = sequence_sum(terms.log_probs, batch.mask)
        keep = jnp.ones_like(log_probs)  # the samples in the loss
        if config.mask_truncated_completions and batch.truncated is not None:
            keep = (~batch.truncated).astype(log_probs.dtype)
        mean = lambda x: jnp.sum(x * keep) / jnp.maximum(jnp.sum(keep), 1.0)
        entropy = masked_mean(terms.entropy, batch.mask & (keep[:, None] > 0))
        rewards = batch.rewards.astype(log_probs.dtype)
        old = batch.log_probs
        sampling_log_probs = jax.lax.stop_gradient(log_probs) if old is None else old
        if terms.kl is not None:  # closed form, in the loss
            kl, shaped = sequence_sum(terms.kl, batch.mask), rewards
        elif batch.ref_log_probs is None:
            kl, shaped = jnp.zeros_like(rewards), rewards
        else:
            kl = sampling_log_probs - batch.ref_log_probs
            shaped = rewards - config.beta * kl
        advantages = jax.lax.stop_gradient(rloo_advantages(shaped, batch.group_size))
        advantage_mean = jnp.mean(advantages)
        if config.normalize_advantages:
            advantages = normalize_advantages(advantages)
        if old is None:  # on-policy single step: ratio 1, gradient of log pi * A
            policy_loss = mean(-log_probs * advantages)
            clip_ratio = jnp.zeros((), log_probs.dtype)
        else:
            surrogate, clipped = clipped_surrogate_terms(log_probs, old, advantages, config.clip_param)
            policy_loss = mean(surrogate)
            clip_ratio = mean(clipped.astype(log_probs.dtype))
        loss = policy_loss - config.entropy_coeff * entropy
        if terms.kl is not None:
            loss = loss + config.beta * mean(kl)
        metrics = {"policy_loss": policy_loss, "mean_reward": jnp.mean(rewards),
                   "reward_std": jnp.std(rewards), "advantage_mean": advantage_mean,
                   "kl_penalty": mean(kl), "entropy": entropy, "clip_ratio": clip_ratio}
        return loss, metrics


def build(arrays: dict, static: dict, parts: tuple, config: RLOOConfig, reference) -> SampleLogProbs:
    """The documented batch: one reward per sample (per-part rewards are summed), sample
    log-probs `[B]`."""
    given = {key: value for key, value in arrays.items() if key not in ("log_probs", "ref_log_probs")}
    samples = build_sequences(given, static, parts, group_size=config.num_generations)
    return SampleLogProbs(samples.observations, samples.actions, samples.mask, samples.rewards,
                          arrays.get("log_probs"), arrays.get("ref_log_probs"),
                          truncated=samples.truncated, group_size=samples.group_size)


RLOO.formats = (BatchFormat(
    required=("observations", "actions", "rewards"),
    optional=("log_probs", "ref_log_probs", "mask", "group_size", "truncated"), batch_ndim=1,
    shapes={"rewards": STEP_OR_PART, "log_probs": STEP, "ref_log_probs": STEP, "truncated": STEP},
    check=lambda arrays, static, parts, config: check_group_options(arrays, static, config),
    build=build),)
ALGORITHM = RLOO()
