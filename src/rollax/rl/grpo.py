"""GRPO (Shao et al., 2024, DeepSeekMath): critic-free clipped policy gradient with advantages
normalised within groups of samples of the same prompt.

Rows are contiguous groups of `group_size` samples per prompt. The ratio, KL and entropy are
taken per part (a completion's token, a chain's step; a one-step generation is one part) with
the sample's advantage, and aggregated over parts by `loss_type` (TRL's names): grpo (mean per
sample, then over samples), bnpo/dapo (mean over all valid parts; DAPO, Yu et al., 2025),
dr_grpo (sum over parts / (B * L); Liu et al., 2025).

TRL's further options: `num_iterations` (mu in the GRPO paper: that many gradient steps on one
generation batch, every ratio to the sampling policy), `importance_sampling_level="sequence"`
(GSPO, Zheng et al., 2025: one ratio per sample, exp of the mean per-part log-ratio, clipped as
a whole and shared by its parts) and `mask_truncated_completions` (DAPO: samples cut at the
length limit leave the loss; their rewards still count in their group's advantages).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct

from rollax.networks.policy import score_actions
from rollax.rl.algorithm import Algorithm, minibatch_update, sampling_log_probs
from rollax.rl.batch import PER_PART, STEP, STEP_OR_PART, BatchFormat, check_group_options
from rollax.rl.config import Config, algorithm_config, traced
from rollax.rl.formats import build_sequences
from rollax.rl.utils import clipped_surrogate_terms, compute_group_advantages, estimate_kl
from rollax.rollout.batches import Sequences


@algorithm_config
class GRPOConfig(Config):
    """GRPO: critic-free, advantages normalised within groups of generations per prompt."""

    num_generations: int = 4
    clip_param: float = traced(0.2)
    beta: float = 0.01
    entropy_coeff: float = traced(0.01)
    gamma: float = traced(0.99)  # discounts per-part rewards into a sample's reward
    # extras
    epsilon_high: float | None = None  # DAPO clip-higher upper bound; None = clip_param
    loss_type: str = "grpo"  # part aggregation: grpo | bnpo | dr_grpo | dapo
    scale_rewards: str = "group"  # group | batch | none
    kl_estimator: str = "k3"  # k1 | k2 | k3 (Schulman's estimators) | exact (closed form)
    mask_zero_std_groups: bool = False  # drop groups with equal rewards from the loss average
    num_iterations: int = 1  # gradient steps per generation batch (TRL's; mu in the paper)
    importance_sampling_level: str = "token"  # token | sequence (GSPO)
    mask_truncated_completions: bool = False  # samples cut at the length limit leave the loss
    max_grad_norm: float | None = None

    def _check_values(self):
        self._int("num_generations", 2)
        self._range("clip_param", 0.0, low_open=True)
        self._range("beta", 0.0)
        self._range("entropy_coeff", 0.0)
        self._range("gamma", 0.0, 1.0)
        self._optional_positive("epsilon_high")
        self._choice("loss_type", ("grpo", "bnpo", "dr_grpo", "dapo"))
        self._choice("scale_rewards", ("group", "batch", "none"))
        self._choice("kl_estimator", ("k1", "k2", "k3", "exact"))
        self._int("num_iterations")
        self._choice("importance_sampling_level", ("token", "sequence"))
        self._optional_positive("max_grad_norm")


@struct.dataclass
class Groups:
    """The samples with their group-normalised advantages and tied-group flags `[B]`."""

    samples: Sequences
    advantages: jax.Array
    zero_std: jax.Array


def aggregate(part_loss: jax.Array, mask: jax.Array, loss_type: str,
              samples: jax.Array | None = None) -> jax.Array:
    """Reduce a `[B, L]` per-part loss to a scalar the way `loss_type` prescribes; `grpo`
    averages over `samples` samples (default: those with parts in `mask`)."""
    weights = mask.astype(part_loss.dtype)
    if loss_type == "grpo":
        per_sample = jnp.sum(part_loss * weights, 1) / jnp.maximum(jnp.sum(weights, 1), 1.0)
        if samples is None:
            samples = jnp.sum(jnp.sum(weights, 1) > 0)
        return jnp.sum(per_sample) / jnp.maximum(samples, 1)
    if loss_type in ("bnpo", "dapo"):
        return jnp.sum(part_loss * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return jnp.sum(part_loss * weights) / part_loss.size  # dr_grpo: constant normaliser


class GRPO(Algorithm):
    name, title, config_class = "grpo", "GRPO", GRPOConfig
    learns_from = (Sequences,)

    def group_size(self, config: GRPOConfig) -> int:
        return config.num_generations

    def uses_reference(self, config: GRPOConfig) -> bool:
        return config.beta > 0

    def updates_per_iteration(self, config: GRPOConfig) -> int:
        return config.num_iterations

    def from_sequences(self, sequences: Sequences, config: GRPOConfig):
        return sequences, {}

    def prepare(self, samples: Sequences, config: GRPOConfig, algorithm_state):
        advantages, zero_std, _ = compute_group_advantages(samples.rewards, samples.group_size,
                                                           config.scale_rewards)
        return Groups(samples, advantages, zero_std), algorithm_state, {}

    def optimize(self, graphdef, model_optimizer, groups: Groups, key, config: GRPOConfig):
        """`num_iterations` gradient steps on the whole batch; their ratios are to the sampling
        policy, scored here before the first step when the batch did not bring its log-probs."""
        if config.num_iterations > 1 and groups.samples.log_probs is None:
            samples = groups.samples
            log_probs = sampling_log_probs(graphdef, model_optimizer, samples.observations,
                                           samples.actions, samples.mask)
            groups = groups.replace(samples=samples.replace(log_probs=log_probs))
        return minibatch_update(self.loss, graphdef, model_optimizer, groups, key, config,
                                num_epochs=config.num_iterations, max_grad_norm=config.max_grad_norm,
                                shuffle=False)

    def loss(self, model, groups: Groups, config: GRPOConfig):
        """GRPO loss; returns `(loss, metrics)`. Without the sampling policy's log-probs the
        step is on-policy (ratio 1); without the reference's there is no KL term."""
        samples = groups.samples
        exact = config.kl_estimator == "exact" and samples.ref_distribution is not None
        terms = score_actions(model, samples.observations, samples.actions, samples.mask.shape,
                              samples.ref_distribution if exact else None)
        log_probs, mask = terms.log_probs, samples.mask
        old = jax.lax.stop_gradient(log_probs) if samples.log_probs is None else samples.log_probs
        if config.mask_zero_std_groups:
            mask = mask & ~groups.zero_std[:, None]
        counted = jnp.sum(jnp.any(mask, 1))  # TRL: a truncated sample adds 0 to the mean
        if config.mask_truncated_completions and samples.truncated is not None:
            mask = mask & ~samples.truncated[:, None]  # (a source that never truncates: None)
        log_ratio = log_probs - old
        if config.importance_sampling_level == "sequence":  # GSPO: one ratio per sample
            parts = samples.mask.astype(log_ratio.dtype)
            per_sample = jnp.sum(log_ratio * parts, 1) / jnp.maximum(jnp.sum(parts, 1), 1.0)
            weight = jnp.broadcast_to(per_sample[:, None], log_ratio.shape)
        else:
            weight = log_ratio
        surrogate, clipped = clipped_surrogate_terms(weight, jnp.zeros_like(weight),
                                                     groups.advantages[:, None],
                                                     config.clip_param, config.epsilon_high)
        if exact:  # the reference's distributions came with the batch: KL(pi || pi_ref) itself
            kl = terms.kl
        elif samples.ref_log_probs is None:
            kl = jnp.zeros_like(log_probs)
        else:
            kl = estimate_kl(log_probs, samples.ref_log_probs, config.kl_estimator)
        part_loss = surrogate + config.beta * kl - config.entropy_coeff * terms.entropy
        reduce = partial(aggregate, mask=mask, loss_type=config.loss_type, samples=counted)
        metrics = {
            "policy_loss": reduce(surrogate),
            "mean_reward": jnp.mean(samples.rewards),
            "group_advantage_std": jnp.std(groups.advantages),
            "kl_penalty": reduce(kl),
            "approx_kl": reduce(jnp.expm1(log_ratio) - log_ratio),
            "entropy": reduce(terms.entropy),
            "frac_reward_zero_std": jnp.mean(groups.zero_std.astype(jnp.float32)),
            "clip_ratio": reduce(clipped.astype(jnp.float32)),
        }
        return reduce(part_loss), metrics


GRPO.formats = (BatchFormat(
    required=("observations", "actions", "rewards"),
    optional=("log_probs", "ref_log_probs", "mask", "group_size", "truncated"), batch_ndim=1,
    shapes={"rewards": STEP_OR_PART, "log_probs": PER_PART, "ref_log_probs": PER_PART,
            "truncated": STEP},
    check=lambda arrays, static, parts, config: check_group_options(arrays, static, config),
    build=lambda arrays, static, parts, config, reference: build_sequences(
        arrays, static, parts, group_size=config.num_generations, gamma=config.gamma)),)
ALGORITHM = GRPO()
