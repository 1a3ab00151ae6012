"""DPO on preference pairs; `reference_free=True` is SimPO (length-normalised, with a margin).

The policy's log-probs must come from the model, so the batch carries the chosen and rejected
inputs (`chosen_observations`, `chosen_actions`, `rejected_...`, optional `..._mask` for token
models) plus `ref_chosen_log_probs`/`ref_rejected_log_probs`, or the trainer is given a
frozen `reference_model` that computes them. An optional boolean `pair_mask` `[B]` keeps the
pairs that carry a preference: the loss and metrics average over those alone, and
`tied_pairs` reports the share left out (the loop's pairs of equally rewarded samples). An
optional `preference` `[B]` is each pair's probability that the chosen side is preferred (a
soft label in place of `1 - label_smoothing`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.rl.batch_checks import STEP, BatchSpec, PolicyKeys
from rollax.rl.configs import DPOConfig
from rollax.rl.spec import AlgorithmSpec, GroupSamples
from rollax.rl.trainer import (
    Trainer,
    TrainState,
    check_reference,
    evaluate_policy,
    sequence_sum,
    single_step_update,
)
from rollax.rl.utils import compute_dpo_loss, masked_mean, tied_groups

SIDES = ("chosen", "rejected")
INPUTS = tuple(f"{side}_{part}" for side in SIDES for part in ("observations", "actions"))
REFS = tuple(f"ref_{side}_log_probs" for side in SIDES)


def sequence_log_probs(model, batch: dict, side: str, length_normalize: bool) -> jax.Array:
    """`[B]` log pi(y|x) of one side of the pairs (mean over tokens when length-normalised)."""
    terms = evaluate_policy(model, batch[f"{side}_observations"], batch[f"{side}_actions"],
                            batch.get(f"{side}_mask"))
    total = sequence_sum(terms.log_probs, terms.mask)
    return total / jnp.maximum(jnp.sum(terms.mask, 1), 1) if length_normalize else total


def loss_fn(model, batch: dict, config: DPOConfig, static: dict):
    """Preference loss on a batch of pairs; returns `(loss, metrics)`."""
    normalize = config.reference_free and config.length_normalize
    logps = {side: sequence_log_probs(model, batch, side, normalize) for side in SIDES}
    if config.reference_free:
        logratios, margin = logps, config.simpo_gamma
    else:
        logratios = {side: logps[side] - batch[f"ref_{side}_log_probs"] for side in SIDES}
        margin = 0.0
    smoothing = 1.0 - batch["preference"] if "preference" in batch else config.label_smoothing
    losses = compute_dpo_loss(logratios["chosen"], logratios["rejected"], config.beta,
                              smoothing, config.loss_type, margin)
    chosen_reward = config.beta * jax.lax.stop_gradient(logratios["chosen"])
    rejected_reward = config.beta * jax.lax.stop_gradient(logratios["rejected"])
    pairs = batch.get("pair_mask")  # the pairs that carry a preference (all without it)
    mean = lambda x: masked_mean(x, pairs)
    loss = mean(losses)
    metrics = {
        "dpo_loss": loss,
        "chosen_reward": mean(chosen_reward),
        "rejected_reward": mean(rejected_reward),
        "reward_margin": mean(chosen_reward - rejected_reward),
        "reward_accuracy": mean((chosen_reward > rejected_reward).astype(jnp.float32)),
        "logps_chosen": mean(logps["chosen"]),
        "logps_rejected": mean(logps["rejected"]),
    }
    if pairs is not None:
        metrics["tied_pairs"] = 1.0 - jnp.mean(pairs.astype(jnp.float32))
    return loss, metrics


def update(graphdef, state: TrainState, batch, key, config: DPOConfig, static=None):
    """Pure DPO update (one gradient step) on a batch of preference pairs."""
    del key
    return single_step_update(loss_fn, graphdef, state, batch, config, static or {})


def group_batch(samples: GroupSamples, config: DPOConfig) -> dict:
    """The loop's DPO batch: per prompt, its best generation (chosen) and worst (rejected);
    `pair_mask` drops the prompts whose generations all scored the same (no preference), and
    with `preference_temperature` T the chosen side wins with probability sigmoid(gap / T)."""
    size = samples.group_size
    prompts = samples.rewards.shape[0] // size
    grouped = samples.rewards.reshape(prompts, size)
    first = jnp.arange(prompts) * size
    pairs = {"chosen": first + jnp.argmax(grouped, 1), "rejected": first + jnp.argmin(grouped, 1)}
    batch = {"pair_mask": ~tied_groups(samples.rewards, size)}
    if config.preference_temperature > 0:
        gap = grouped.max(1) - grouped.min(1)
        batch["preference"] = jax.nn.sigmoid(gap / config.preference_temperature)
    for side, index in pairs.items():
        observations, actions = samples.observations[index], samples.actions[index]
        batch[f"{side}_observations"], batch[f"{side}_actions"] = observations, actions
        reference = samples.reference_log_probs(observations, actions)
        if samples.mask is not None:  # token completions: their masks, sequence log-probs
            batch[f"{side}_mask"] = samples.mask[index]
            reference = sequence_sum(reference, samples.mask[index])
        batch[f"ref_{side}_log_probs"] = reference
    return batch


class DPOTrainer(Trainer):
    """Direct Preference Optimization trainer (SimPO with `reference_free=True`)."""

    config_class = DPOConfig
    update = staticmethod(update)

    def __init__(self, model, optimizer, config: DPOConfig | None = None, reference_model=None, *,
                 check_batches: bool = True):
        super().__init__(model, optimizer, config, check_batches=check_batches)
        self.reference_model = reference_model
        if reference_model is not None:
            check_reference(model, reference_model)
            graphdef, state = nnx.split(reference_model)

            @jax.jit
            def reference_log_probs(batch):
                frozen = nnx.merge(graphdef, state)
                return {f"ref_{side}_log_probs": sequence_log_probs(frozen, batch, side, False)
                        for side in SIDES}

            self._reference_log_probs = reference_log_probs
        # the reference log-probs are inputs unless a reference model computes them (or SimPO
        # needs none); config and reference are fixed, so the spec is built once
        needs_refs = not self.config.reference_free and reference_model is None
        self.batch_spec = BatchSpec(
            required=INPUTS + (REFS if needs_refs else ()),
            optional=("chosen_mask", "rejected_mask", "pair_mask", "preference") + REFS,
            leading_key="chosen_actions", batch_ndim=1,
            shapes=dict.fromkeys((*REFS, "pair_mask", "preference"), STEP),
            policies=tuple(PolicyKeys(f"{side}_observations", f"{side}_actions", f"{side}_mask")
                           for side in SIDES))

    def validate(self, batch):
        if "chosen_log_probs" in batch or "rejected_log_probs" in batch:
            raise ValueError(
                "DPO computes the policy's log-probs from the model, so precomputed "
                "'chosen_log_probs'/'rejected_log_probs' cannot be trained on; pass "
                f"{list(INPUTS)} (and the reference log-probs) instead")
        arrays, static = super().validate(batch)
        if not self.config.reference_free and self.reference_model is not None:
            arrays = {**arrays, **self._reference_log_probs(arrays)}
        if self.config.reference_free:
            arrays = {k: v for k, v in arrays.items() if k not in REFS}
        return arrays, static


def check_plan(config: DPOConfig, budget, num_tasks: int) -> None:
    """A pair needs two samples of a prompt to rank."""
    if budget.group_size < 2:
        raise ValueError(f"budget.group_size={budget.group_size} must be >= 2 (DPO ranks that many "
                         "samples per prompt into a best/worst pair)")


SPEC = AlgorithmSpec(
    name="dpo", config_class=DPOConfig, update=update, check=check_plan,
    batch_source="groups", group_size=lambda config, budget: budget.group_size,
    group_batch=group_batch)
