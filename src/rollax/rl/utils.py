"""Shared RL math: returns, GAE, normalisation, entropy, KL estimators, surrogate and DPO losses.

Every function is pure and jittable. Sequences are time-major: axis 0 is time, any further
axes (`[T, N]`) are independent environments. `dones[t]` means the episode ended after step
`t`; where `truncated[t]` is also true the episode was cut, not finished, so the tail is
bootstrapped from `bootstrap_values[t]` = V(true next observation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# a documented utility of this module, defined with the distributions that use it
from rollax.networks.distributions import compute_policy_entropy  # noqa: F401

NORMALIZE_EPS = 1e-8


def episode_flags(
    rewards: jax.Array,
    dones: jax.Array | None = None,
    truncated: jax.Array | None = None,
    bootstrap_values: jax.Array | None = None,
    terminated: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(dones, truncated, bootstrap_values)` shaped like `rewards` from any documented mix of
    episode flags: the one place they are reconciled.

    Without `dones`, an episode ends where `terminated` or `truncated` says; without
    `truncated`, an end that is not a termination is a truncation. A step both terminated and
    truncated (a time limit on the terminal step) ended, so it is not bootstrapped. Truncation
    needs `bootstrap_values` (V of the true next observation); missing flags are all false.
    """
    zeros = jnp.zeros_like(rewards, dtype=bool)
    if dones is None:
        dones = zeros
        for flag in (terminated, truncated):
            dones = dones if flag is None else dones | jnp.asarray(flag, bool)
    dones = jnp.asarray(dones, bool)
    if terminated is not None:
        ended = dones if truncated is None else jnp.asarray(truncated, bool)
        truncated = ended & ~jnp.asarray(terminated, bool)
    if truncated is None:
        truncated = zeros
    else:
        if bootstrap_values is None:
            raise ValueError("`truncated` episodes need `bootstrap_values` (V of the final observation)")
        truncated = jnp.asarray(truncated, bool)
        dones = dones | truncated
    boot = jnp.zeros_like(rewards) if bootstrap_values is None else jnp.asarray(bootstrap_values)
    for name, x in (("dones", dones), ("truncated", truncated), ("bootstrap_values", boot)):
        if x.shape != rewards.shape:
            raise ValueError(f"`{name}` has shape {x.shape}, expected the rewards' {rewards.shape}")
    return dones, truncated, boot


def compute_discounted_returns(
    rewards: jax.Array,
    gamma: float = 0.99,
    dones: jax.Array | None = None,
    *,
    truncated: jax.Array | None = None,
    bootstrap_values: jax.Array | None = None,
) -> jax.Array:
    """G_t = r_t + gamma * G_{t+1}, reset at episode ends; `[T, ...]` -> `[T, ...]`.

    Without `dones` the batch is one episode. A truncated step (and the last step of a
    batch that did not end, when `bootstrap_values` is given) continues from V(s').
    """
    rewards = jnp.asarray(rewards)
    dones, truncated, boot = episode_flags(rewards, dones, truncated, bootstrap_values)

    def backward(next_return, step):
        reward, done, trunc, value = step
        tail = jnp.where(done, jnp.where(trunc, value, 0.0), next_return)
        ret = reward + gamma * tail
        return ret, ret

    last = boot[-1] if bootstrap_values is not None else jnp.zeros_like(rewards[0])
    _, returns = lax.scan(backward, last, (rewards, dones, truncated, boot), reverse=True)
    return returns


def compute_gae_advantages(
    rewards: jax.Array,
    values: jax.Array,
    dones: jax.Array | None = None,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    *,
    truncated: jax.Array | None = None,
    bootstrap_values: jax.Array | None = None,
) -> jax.Array:
    """Generalised advantage estimates `[T, ...]`.

    `values` holds T+1 entries, the last being V(s_T). The TD error uses V(s_{t+1}),
    the bootstrap value on truncation, and 0 after termination; the lambda-sum stops at
    every episode end.
    """
    rewards, values = jnp.asarray(rewards), jnp.asarray(values)
    if values.shape != (rewards.shape[0] + 1, *rewards.shape[1:]):
        raise ValueError(
            f"`values` must hold T+1 entries (the last is V(s_T)): rewards {rewards.shape}, "
            f"values {values.shape}"
        )
    dones, truncated, boot = episode_flags(rewards, dones, truncated, bootstrap_values)
    next_values = jnp.where(truncated, boot, values[1:])
    terminal = dones & ~truncated
    deltas = rewards + gamma * jnp.where(terminal, 0.0, next_values) - values[:-1]

    def backward(next_advantage, step):
        delta, done = step
        advantage = delta + gamma * gae_lambda * jnp.where(done, 0.0, next_advantage)
        return advantage, advantage

    _, advantages = lax.scan(backward, jnp.zeros_like(deltas[0]), (deltas, dones), reverse=True)
    return advantages


def normalize_advantages(advantages: jax.Array, eps: float = NORMALIZE_EPS,
                         mask: jax.Array | None = None) -> jax.Array:
    """(x - mean) / (std + eps) over all entries (those `mask` keeps), population std."""
    if mask is None:
        return (advantages - jnp.mean(advantages)) / (jnp.std(advantages) + eps)
    mean = masked_mean(advantages, mask)
    std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
    return (advantages - mean) / (std + eps)


def compute_kl_divergence(policy_log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """Exact KL(policy || reference) over the last axis of full log-probability vectors."""
    return jnp.sum(jnp.exp(policy_log_probs) * (policy_log_probs - ref_log_probs), axis=-1)


def estimate_kl(log_probs: jax.Array, ref_log_probs: jax.Array, estimator: str = "k3") -> jax.Array:
    """Per-sample KL(policy || reference) estimate from the log-probs of actions drawn from the policy.

    With r = ref/policy: k1 = -log r (unbiased, can be negative), k2 = (log r)^2 / 2,
    k3 = r - 1 - log r (unbiased and non-negative).
    """
    log_ratio = ref_log_probs - log_probs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return jnp.exp(log_ratio) - 1.0 - log_ratio
    if estimator == "exact":
        raise ValueError("kl_estimator='exact' needs the reference's distributions with the batch "
                         "(denoising-chain sources provide them); this batch has its log-probs only")
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of k1, k2, k3, exact")


def kl_shaped_rewards(rewards: jax.Array, log_probs: jax.Array | None,
                      ref_log_probs: jax.Array | None, kl_coeff: float) -> tuple[jax.Array, dict]:
    """`(rewards - kl_coeff * (log pi - log pi_ref), {"kl_to_reference": mean of it})` from the
    sampling policy's and the reference's log-probs of the actions; the rewards as they are
    without a reference.

    The KL anchor as a reward (InstructGPT's per-step penalty): under samples of the policy the
    k1 term is an unbiased KL(pi || pi_ref), and the policy gradient of the shaped return is
    the anchored objective's. A k3 term added to the loss instead has (for fixed actions) the
    gradient of KL(pi_ref || pi) weighted by pi_ref / pi, which vanishes once the policy has
    moved away: measured here, PPO's KL to its start then grew to 75 nats at kl_coeff 0.1.
    """
    if ref_log_probs is None:
        return rewards, {}
    kl = log_probs - ref_log_probs
    return rewards - kl_coeff * kl, {"kl_to_reference": jnp.mean(kl)}


def clipped_surrogate_terms(
    log_probs: jax.Array,
    old_log_probs: jax.Array,
    advantages: jax.Array,
    clip_param: float = 0.2,
    clip_param_high: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-element PPO loss -min(rA, clip(r)A) and whether the clip was active."""
    high = clip_param if clip_param_high is None else clip_param_high
    ratio = jnp.exp(log_probs - old_log_probs)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_param, 1.0 + high)
    loss = -jnp.minimum(ratio * advantages, clipped_ratio * advantages)
    clipped = (ratio * advantages) > (clipped_ratio * advantages)
    return loss, clipped


def compute_clipped_surrogate_loss(
    log_probs: jax.Array,
    old_log_probs: jax.Array,
    advantages: jax.Array,
    clip_param: float = 0.2,
) -> jax.Array:
    """Mean PPO clipped surrogate loss (negated objective, to minimise)."""
    loss, _ = clipped_surrogate_terms(log_probs, old_log_probs, advantages, clip_param)
    return jnp.mean(loss)


def tied_groups(rewards: jax.Array, group_size: int) -> jax.Array:
    """`[B / group_size]`: whether each contiguous group's rewards are all equal (no signal to
    compare its samples by)."""
    grouped = rewards.reshape(-1, group_size)
    return jnp.all(grouped == grouped[:, :1], axis=1)


def compute_group_advantages(
    rewards: jax.Array, group_size: int, scale_rewards: str = "group", eps: float = NORMALIZE_EPS
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GRPO advantages for contiguous groups `[p0g0, p0g1, ..., p1g0, ...]`.

    Returns `(advantages [B], zero_std [B], group_std [B])`: reward minus its group mean,
    divided by the group's std (`group`), the batch std (`batch`) or nothing (`none`). A
    group whose rewards are all equal gets exactly zero advantage and is flagged in `zero_std`.
    """
    grouped = rewards.reshape(-1, group_size)
    centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
    group_std = jnp.broadcast_to(jnp.std(grouped, axis=1, keepdims=True), grouped.shape)
    zero_std = jnp.broadcast_to(tied_groups(rewards, group_size)[:, None], grouped.shape)
    if scale_rewards == "group":
        scaled = centred / (group_std + eps)
    elif scale_rewards == "batch":
        scaled = centred / (jnp.std(rewards) + eps)
    elif scale_rewards == "none":
        scaled = centred
    else:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected group, batch or none")
    advantages = jnp.where(zero_std, 0.0, scaled)
    return advantages.reshape(-1), zero_std.reshape(-1), group_std.reshape(-1)


def compute_dpo_loss(
    chosen_logratios: jax.Array,
    rejected_logratios: jax.Array,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    margin: float = 0.0,
) -> jax.Array:
    """Per-pair preference loss from log pi(y|x) - log pi_ref(y|x) of the chosen and rejected sample.

    sigmoid (DPO, with conservative label smoothing): -(1-e) log s(z) - e log s(-z) with
    z = beta * h - margin and h the log-ratio difference; ipo: (h - 1/(2 beta))^2;
    hinge: max(0, 1 - z). In reference-free (SimPO) mode the log-ratios are the policy's own
    (length-normalised) log-probs and `margin` is SimPO's gamma.
    """
    h = chosen_logratios - rejected_logratios
    z = beta * h - margin
    if loss_type == "sigmoid":
        return -(1.0 - label_smoothing) * jax.nn.log_sigmoid(z) - label_smoothing * jax.nn.log_sigmoid(-z)
    if loss_type == "ipo":
        return (h - 1.0 / (2.0 * beta)) ** 2
    if loss_type == "hinge":
        return jax.nn.relu(1.0 - z)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected sigmoid, ipo or hinge")


def masked_mean(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean of `x` over entries where `mask` is true (all entries without a mask)."""
    if mask is None:
        return jnp.mean(x)
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def explained_variance(predictions: jax.Array, targets: jax.Array,
                       mask: jax.Array | None = None) -> jax.Array:
    """1 - Var[target - prediction] / Var[target] over the entries `mask` keeps (all without
    one); NaN-free (0 when the targets are constant)."""
    def variance(x):
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    target_var = variance(targets)
    return jnp.where(target_var > 0, 1.0 - variance(targets - predictions) / target_var, 0.0)


def sequence_sum(values: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B, L] -> [B]`: the masked sum over a sample's parts (its log-prob from per-part ones)."""
    return jnp.sum(jnp.where(mask, values, 0.0), axis=-1)


def sequence_rewards(rewards: jax.Array, mask: jax.Array, gamma: float = 1.0) -> jax.Array:
    """Per-part rewards `[B, L]` as one reward per sample `[B]`: the discounted sum over the
    parts `mask` keeps (gamma = 1: their sum)."""
    discounts = gamma ** jnp.arange(rewards.shape[1], dtype=rewards.dtype)
    return jnp.sum(jnp.where(mask, rewards * discounts, 0.0), axis=1)
