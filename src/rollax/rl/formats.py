"""The documented batch dicts as the typed batches algorithms learn from: `build_steps` for
time-major steps (REINFORCE, PPO), `build_sequences` for grouped samples and completions (GRPO,
PPO with a `mask`). They run inside the trainer's compiled update, on arrays already checked
(`rl/batch.py`), and fill what the documented batch may leave out with its documented meaning.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp

from rollax.rl.utils import episode_flags, sequence_rewards
from rollax.rollout.batches import Sequences, Steps

EPISODE_KEYS = ("dones", "terminated", "truncated", "bootstrap_values")


def check_episode_keys(arrays: dict) -> None:
    """Truncated episodes (given, or told apart from terminated ones) continue from V of their
    final observation, which the batch must then hold."""
    if ("truncated" in arrays or "terminated" in arrays) and "bootstrap_values" not in arrays:
        raise ValueError("batch has truncated episodes but no 'bootstrap_values' (V of the "
                         "final observation)")


def build_steps(arrays: dict, static: dict, parts: tuple, config: Any, reference: Any) -> Steps:
    """Steps `[T, N]` from a documented batch `[T, ...]` (`[T]` is one env's; further axes are
    more envs): without episode flags the batch is one episode per column; `values` holds V(s_t)
    for T steps (V(s_T) then comes from `bootstrap_values[-1]`, or is 0) or T+1 entries as in
    the documented GAE call; every part of an action counts unless `mask` says otherwise."""
    lead = arrays["rewards"].shape
    arrays = {"mask": jnp.ones(parts[0], bool), **arrays}
    arrays = {key: x.reshape(x.shape[0], math.prod(lead[1:]), *x.shape[len(lead):])
              for key, x in arrays.items()}
    rewards = jnp.asarray(arrays["rewards"], jnp.float32)
    dones, truncated, bootstrap = episode_flags(
        rewards, arrays.get("dones"), arrays.get("truncated"), arrays.get("bootstrap_values"),
        arrays.get("terminated"))
    values = arrays.get("values", jnp.zeros_like(rewards))
    steps = rewards.shape[0]
    last_values = values[steps] if values.shape[0] == steps + 1 else bootstrap[-1]
    return Steps(observations=arrays["observations"], actions=arrays["actions"],
                 mask=jnp.asarray(arrays["mask"], bool), rewards=rewards, dones=dones,
                 truncated=truncated, values=values[:steps], last_values=last_values,
                 bootstrap_values=bootstrap,
                 task_ids=jnp.asarray(arrays.get("task_ids", jnp.zeros(rewards.shape)), jnp.int32),
                 log_probs=arrays.get("log_probs"), ref_log_probs=arrays.get("ref_log_probs"))


def build_sequences(arrays: dict, static: dict, parts: tuple, *, group_size: int,
                    gamma: float = 1.0) -> Sequences:
    """Sequences `[B, L]` from a documented batch: one reward per sample (per-part rewards
    become their `gamma`-discounted sum), per-part log-probs and values (`[B]` when a sample is
    one part), contiguous groups of the batch's `group_size` (else `group_size`), and which
    samples were `truncated` `[B]` when the batch says."""
    mask = jnp.asarray(arrays.get("mask", jnp.ones(parts[0], bool)), bool)
    rewards = jnp.asarray(arrays["rewards"], jnp.float32)
    if rewards.shape != mask.shape[:1]:  # one per part
        rewards = sequence_rewards(rewards, mask, gamma)

    def per_part(key):
        return None if key not in arrays else arrays[key].reshape(mask.shape)

    truncated = arrays.get("truncated")
    return Sequences(arrays["observations"], arrays["actions"], mask, rewards,
                     per_part("log_probs"), per_part("ref_log_probs"), per_part("values"),
                     truncated=None if truncated is None else jnp.asarray(truncated, bool),
                     group_size=static.get("group_size", group_size))
