"""What an algorithm declares about itself (`AlgorithmSpec`), and the group samples that
group-relative algorithms learn from. Each algorithm module defines one `SPEC`; `registry.py`
lists them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax

from rollax.rl.trainer import sequence_sum


class GroupSamples(NamedTuple):
    """G one-step generations per prompt, contiguous rows `[p0g0, p0g1, ..., p1g0, ...]`.

    `reference_log_probs(observations, actions) -> [B]` scores actions under the frozen
    reference policy (the model at the start of training); for token sequences `[B, T]` per
    token at every position, which the caller masks (it may score a subset of the rows).
    """

    observations: jax.Array  # [B, ...]; token sequences: the tokens before each action [B, T]
    actions: jax.Array  # [B, ...]; token sequences: the next tokens [B, T]
    log_probs: jax.Array  # [B] under the sampling policy; token sequences: per token [B, T]
    rewards: jax.Array  # [B]
    group_size: int
    reference_log_probs: Callable[[jax.Array, jax.Array], jax.Array]
    mask: jax.Array | None = None  # token sequences: the completions' tokens [B, T]
    values: jax.Array | None = None  # token sequences, for a critic: V per token [B, T]


def generations_batch(samples: GroupSamples, with_reference: bool, per_sequence: bool = False) -> dict:
    """Every generation with its sampling log-prob (and the reference's when `with_reference`):
    the loop's batch for group-relative algorithms (GRPO, RLOO). Token sequences bring their
    `mask`; `per_sequence` sums their per-token log-probs into one per generation (RLOO)."""
    batch = {"observations": samples.observations, "actions": samples.actions,
             "rewards": samples.rewards, "log_probs": samples.log_probs}
    if with_reference:
        batch["ref_log_probs"] = samples.reference_log_probs(samples.observations, samples.actions)
    if samples.mask is not None:
        batch["mask"] = samples.mask
        if per_sequence:
            for key in ("log_probs", "ref_log_probs"):
                if key in batch:
                    batch[key] = sequence_sum(batch[key], samples.mask)
    return batch


def _no_check(config: Any, budget: Any, num_tasks: int) -> None:
    """Algorithms without extra plan checks."""


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """What the loop needs to know about an algorithm.

    - `update(graphdef, state: TrainState, batch, key, config, static) -> (state, metrics)`:
      the pure update both the trainer's `train_step` and the scanned loop run.
    - `batch_source`: "rollout" (time-major `Trajectory` batches from the collector) or
      "groups" (`group_size(config, budget)` one-step generations per prompt, turned into the
      algorithm's batch by `group_batch(samples: GroupSamples, config)`).
    - `check(config, budget, num_tasks)`: the algorithm's own plan checks (ValueError naming
      the key); `num_tasks` is the env's number of task keys (1 unless it has a `num_tasks` hook).
    - `init_state(config)`: algorithm-owned training state (e.g. REINFORCE's EMA baselines),
      carried and checkpointed with the model; `()` when it has none.
    - `uses_reference(config)`: a "rollout" algorithm whose batch needs `ref_log_probs`, the
      actions' log-probs under the frozen initial policy (a KL anchor).
    - `completion_batch(samples: GroupSamples, config)`: how a "rollout" algorithm learns from
      sampled completions of a token task (one per prompt, with per-token `values` when it
      `needs_critic`); None when it cannot. "groups" algorithms use `group_batch` there too.
    """

    name: str
    config_class: type
    update: Callable
    needs_critic: bool = False
    batch_source: Literal["rollout", "groups"] = "rollout"
    group_size: Callable[[Any, Any], int] | None = None
    group_batch: Callable[[GroupSamples, Any], dict] | None = None
    updates_per_iteration: Callable[[Any], int] = lambda config: 1
    check: Callable[[Any, Any, int], None] = _no_check
    init_state: Callable[[Any], Any] = lambda config: ()
    uses_reference: Callable[[Any], bool] = lambda config: False
    completion_batch: Callable[[GroupSamples, Any], dict] | None = None

    @property
    def trains_on_completions(self) -> bool:
        """Whether it can learn from a token task's sampled completions."""
        return self.batch_source == "groups" or self.completion_batch is not None

    def __post_init__(self):
        if self.batch_source not in ("rollout", "groups"):
            raise ValueError(f"{self.name}: batch_source={self.batch_source!r}; expected rollout or groups")
        if self.batch_source == "groups" and (self.group_size is None or self.group_batch is None):
            raise ValueError(f"{self.name}: a 'groups' algorithm needs group_size and group_batch")
