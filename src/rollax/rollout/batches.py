"""The two kinds of batch the batch sources produce, and what every algorithm learns from.

- `Steps`: time-major steps of N envs `[T, N]` (env rollouts), episodes ending anywhere.
- `Sequences`: B samples of L parts each `[B, L]` (one-step generations with L = 1, a token
  completion's tokens, a denoising chain's steps), contiguous groups of `group_size` samples of
  the same prompt, one reward per sample.

An algorithm declares which it learns from (`Algorithm.learns_from`) with one converter per
kind (`from_steps`, `from_sequences`); `learned_by` calls the right one, so no code asks a batch
what it is. Every field is present in the documented layout; the optional ones are None exactly
when the documented batch may leave them out (a reference policy's log-probs, a critic's values).
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class Steps:
    """T steps of N envs (every step array is `[T, N]`); the policy scores `observations
    [T, N, ...]` with its actions
    `[T, N, ...]`, one action per step, of `mask [T, N, L]` parts (L = 1 for an env step; a
    whole completion's tokens when a completion is one step).

    `dones[t]`: the episode ended after step t; `truncated[t]`: it ended by a time limit (also
    a step both terminated and truncated counts as terminated), so the return continues from
    `bootstrap_values[t]` = V(true next observation); `last_values [N]` = V(s_T), where the
    batch stops without an episode end. `task_ids`: the env's task key per step (0 without).
    """

    observations: jax.Array
    actions: jax.Array
    mask: jax.Array
    rewards: jax.Array
    dones: jax.Array
    truncated: jax.Array
    values: jax.Array
    last_values: jax.Array
    bootstrap_values: jax.Array
    task_ids: jax.Array
    log_probs: jax.Array | None = None  # the sampling policy's, per step
    ref_log_probs: jax.Array | None = None  # the frozen reference policy's, per step
    ref_distribution: Any = None  # the reference's distributions per step (closed-form KL)

    def learned_by(self, algorithm: Any, config: Any) -> tuple[Any, dict]:
        return algorithm.from_steps(self, config)


@struct.dataclass
class Sequences:
    """B samples `[p0g0, p0g1, ..., p1g0, ...]` (contiguous groups of `group_size` per prompt);
    the policy scores `observations [B, ...]` with `actions [B, ...]` on the grid `mask [B, L]`
    (which parts count: a completion's tokens, EOS included, not its prompt or padding).
    `log_probs`, `ref_log_probs` and `values` are per part `[B, L]`."""

    observations: jax.Array
    actions: jax.Array
    mask: jax.Array
    rewards: jax.Array
    log_probs: jax.Array | None = None
    ref_log_probs: jax.Array | None = None
    values: jax.Array | None = None
    ref_distribution: Any = None  # the reference's distributions on the grid (closed-form KL)
    task_ids: jax.Array | None = None  # the env's task key per sample `[B]` (e.g. its class)
    truncated: jax.Array | None = None  # `[B]`: cut at a length limit (a completion without EOS)
    group_size: int = struct.field(pytree_node=False, default=1)

    def learned_by(self, algorithm: Any, config: Any) -> tuple[Any, dict]:
        return algorithm.from_sequences(self, config)
