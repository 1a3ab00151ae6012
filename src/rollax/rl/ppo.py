"""PPO (Schulman et al., 2017): GAE advantages (Schulman et al., 2016), clipped surrogate,
(optionally clipped) value loss, entropy bonus, epochs of shuffled minibatches.

From env steps `[T, N]`: GAE over time, then every step is a row of its own. From sampled
sequences (token completions): every part (token) is a step, the critic gives V per part, the
sequence's reward arrives on its last part, GAE runs over each sequence's parts, a row is a
whole sequence (its parts are scored together) and the losses are means over valid parts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from rollax.networks.policy import score_actions
from rollax.rl.algorithm import Algorithm, check_minibatches, minibatch_update
from rollax.rl.batch import PER_PART, STEP, STEP_OR_NEXT, BatchFormat, require_reference
from rollax.rl.config import Config, algorithm_config, traced
from rollax.rl.formats import EPISODE_KEYS, build_sequences, build_steps, check_episode_keys
from rollax.rl.utils import (
    clipped_surrogate_terms,
    compute_gae_advantages,
    explained_variance,
    kl_shaped_rewards,
    masked_mean,
    normalize_advantages,
)
from rollax.rollout.batches import Sequences, Steps


@algorithm_config
class PPOConfig(Config):
    """PPO: GAE advantages, clipped surrogate, value loss, entropy bonus, grad clipping."""

    gamma: float = traced(0.99)
    gae_lambda: float = traced(0.95)
    clip_param: float = traced(0.2)
    vf_coeff: float = traced(0.5)
    entropy_coeff: float = traced(0.01)
    max_grad_norm: float = traced(0.5)
    # extras
    num_epochs: int = 1
    num_minibatches: int = 1
    normalize_advantages: bool = True
    clip_value_loss: bool = False  # clip V around the rollout's values by clip_param
    target_kl: float | None = None  # skip remaining updates once approx KL exceeds it
    kl_coeff: float = 0.0  # KL anchor to a reference policy, as REINFORCEConfig's

    def _check_values(self):
        self._range("gamma", 0.0, 1.0)
        self._range("gae_lambda", 0.0, 1.0)
        self._range("clip_param", 0.0, low_open=True)
        self._range("vf_coeff", 0.0)
        self._range("entropy_coeff", 0.0)
        self._range("max_grad_norm", 0.0, low_open=True)
        self._int("num_epochs")
        self._int("num_minibatches")
        self._optional_positive("target_kl")
        self._range("kl_coeff", 0.0)


@struct.dataclass
class Rows:
    """The loss's rows: `[R]` steps, or `[R, L]` parts of R sequences (`mask`: which count; None
    when every row is one step)."""

    observations: jax.Array
    actions: jax.Array
    old_log_probs: jax.Array
    old_values: jax.Array
    returns: jax.Array
    rewards: jax.Array  # [R]
    raw_advantages: jax.Array
    advantages: jax.Array
    mask: jax.Array | None = None


class PPO(Algorithm):
    name, title, config_class = "ppo", "PPO", PPOConfig
    learns_from = (Steps, Sequences)
    needs_critic = True

    def uses_reference(self, config: PPOConfig) -> bool:
        return config.kl_coeff > 0

    def updates_per_iteration(self, config: PPOConfig) -> int:
        return config.num_epochs * config.num_minibatches

    def check_plan(self, config: PPOConfig, budget, num_tasks: int) -> None:
        """Every iteration's `num_envs * num_steps` rows split into equal minibatches."""
        check_minibatches(budget.num_envs * budget.num_steps, config.num_minibatches,
                          "budget.num_envs * budget.num_steps")

    def from_steps(self, steps: Steps, config: PPOConfig):
        """GAE over time `[T, N]`, then one row per step."""
        rewards, metrics = kl_shaped_rewards(steps.rewards, steps.log_probs, steps.ref_log_probs,
                                             config.kl_coeff)
        extended = jnp.concatenate([steps.values, steps.last_values[None]])
        advantages = compute_gae_advantages(rewards, extended, steps.dones, config.gamma,
                                            config.gae_lambda, truncated=steps.truncated,
                                            bootstrap_values=steps.bootstrap_values)
        normalized = normalize_advantages(advantages) if config.normalize_advantages else advantages
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # [T, N, ...] -> [T * N, ...]
        return Rows(flat(steps.observations), flat(steps.actions), flat(steps.log_probs),
                    flat(steps.values), flat(advantages + steps.values), flat(steps.rewards),
                    flat(advantages), flat(normalized)), metrics

    def from_sequences(self, sequences: Sequences, config: PPOConfig):
        """GAE over each sequence's parts under `mask` (the policy's tokens: parts outside it,
        such as a tool's answer, are skipped, so V of the next counted part bootstraps), the
        reward on its last one; with a reference, each part's reward is shaped by
        kl_coeff * (log pi - log pi_ref)."""
        mask = sequences.mask
        # the counted parts moved to the front of each row, in order
        order = jnp.argsort(~mask, axis=1, stable=True)
        packed = lambda x: jnp.take_along_axis(x, order, axis=1)
        packed_mask = packed(mask)
        last = packed_mask & ~jnp.pad(packed_mask[:, 1:], ((0, 0), (0, 1)))  # the final part
        rewards = jnp.where(last, sequences.rewards[:, None], 0.0)
        metrics = {}
        if sequences.ref_log_probs is not None:
            kl = jnp.where(mask, sequences.log_probs - sequences.ref_log_probs, 0.0)
            rewards = rewards - config.kl_coeff * packed(kl)
            metrics["kl_to_reference"] = jnp.mean(jnp.sum(kl, 1))  # per sequence
        values = jnp.where(mask, sequences.values, 0.0)
        extended = jnp.pad(packed(values), ((0, 0), (0, 1)))
        advantages = compute_gae_advantages(rewards.T, extended.T, last.T, config.gamma,
                                            config.gae_lambda).T
        rows = jnp.arange(mask.shape[0])[:, None]
        advantages = jnp.zeros_like(advantages).at[rows, order].set(advantages)  # back in place
        normalized = normalize_advantages(advantages, mask=mask) if config.normalize_advantages \
            else advantages
        return Rows(sequences.observations, sequences.actions, sequences.log_probs, values,
                    advantages + values, sequences.rewards, advantages, normalized, mask), metrics

    def loss(self, model, rows: Rows, config: PPOConfig):
        """Clipped PPO loss on a (mini)batch of rows; returns `(loss, metrics)`."""
        terms = score_actions(model, rows.observations, rows.actions, rows.advantages.shape)
        if terms.values is None:
            raise ValueError("PPO needs an actor-critic model returning (policy_output, value)")
        steps = rows.mask  # what the means run over
        surrogate, clipped = clipped_surrogate_terms(terms.log_probs, rows.old_log_probs,
                                                     rows.advantages, config.clip_param)
        policy_loss = masked_mean(surrogate, steps)
        values, returns, old_values = terms.values.reshape(rows.returns.shape), rows.returns, rows.old_values
        value_error = (values - returns) ** 2
        if config.clip_value_loss:
            clipped_values = old_values + jnp.clip(values - old_values, -config.clip_param,
                                                   config.clip_param)
            value_error = jnp.maximum(value_error, (clipped_values - returns) ** 2)
        value_loss = 0.5 * masked_mean(value_error, steps)
        entropy = masked_mean(terms.entropy, steps)
        loss = policy_loss + config.vf_coeff * value_loss - config.entropy_coeff * entropy
        log_ratio = terms.log_probs - rows.old_log_probs
        metrics = {
            "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
            "mean_reward": jnp.mean(rows.rewards),
            "advantage_mean": masked_mean(rows.raw_advantages, steps),
            "kl_divergence": masked_mean(-log_ratio, steps),  # k1 estimate of KL(old || new)
            "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, steps),  # k3, non-negative
            "clip_fraction": masked_mean(clipped.astype(jnp.float32), steps),
            "explained_variance": explained_variance(values, returns, steps),
        }
        return loss, metrics

    def optimize(self, graphdef, model_optimizer, rows: Rows, key, config: PPOConfig):
        return minibatch_update(self.loss, graphdef, model_optimizer, rows, key, config,
                                num_epochs=config.num_epochs, num_minibatches=config.num_minibatches,
                                max_grad_norm=config.max_grad_norm, target_kl=config.target_kl)


def check_steps(arrays: dict, static: dict, parts: tuple, config: PPOConfig) -> None:
    if parts[0][-1] != 1:
        raise ValueError(f"the model's policy gives {parts[0][-1]} parts per step; PPO on steps "
                         "takes one action per step: pass a `mask` over the tokens of token "
                         "completions (token-level PPO)")
    check(arrays, static, parts, config)


def check(arrays: dict, static: dict, parts: tuple, config: PPOConfig) -> None:
    require_reference(arrays, config.kl_coeff)
    check_episode_keys(arrays)
    rows = arrays["rewards"].size
    check_minibatches(rows, config.num_minibatches, f"a batch of {rows} rows")


_REQUIRED = ("observations", "actions", "rewards", "values", "log_probs")
PPO.formats = (
    BatchFormat(  # time-major steps [T, N] (or one episode [T])
        required=_REQUIRED, optional=(*EPISODE_KEYS, "ref_log_probs"), needs_values=True,
        shapes={**dict.fromkeys(("rewards", "log_probs", "ref_log_probs", *EPISODE_KEYS), STEP),
                "values": STEP_OR_NEXT},
        check=check_steps, build=build_steps),
    BatchFormat(  # completions [B, L] of a token model, `mask` over their tokens
        required=(*_REQUIRED, "mask"), optional=("ref_log_probs",), batch_ndim=1, needs_values=True,
        shapes={"rewards": STEP, **dict.fromkeys(("log_probs", "ref_log_probs", "values"), PER_PART)},
        check=check, build=lambda arrays, static, parts, config, reference: build_sequences(
            arrays, static, parts, group_size=1)),
)
ALGORITHM = PPO()
