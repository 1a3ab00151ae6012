"""DPO (Rafailov et al., 2023) on preference pairs; `reference_free=True` is SimPO (Meng et al.,
2024: length-normalised, with a margin).

The policy's log-probs must come from the model, so a pair carries the chosen and rejected
inputs (observations, actions, a parts mask) plus the reference policy's sample log-probs, or
the trainer is given a frozen `reference_model` that computes them. From sampled groups, a
prompt's pair is its best sample (chosen) and its worst (rejected). An optional boolean
`pair_mask` `[B]` keeps the pairs that carry a preference: the loss and metrics average over
those alone, and `tied_pairs` reports the share left out (groups of equally rewarded samples).
An optional `preference` `[B]` is each pair's probability that the chosen side is preferred (a
soft label in place of `1 - label_smoothing`).

`kl_coeff > 0` (an extra, for sampled pairs whose batch carries the reference's distributions,
such as denoising chains) adds the closed-form KL of both sides' parts to the reference, summed
over the parts, to the loss: DPO constrains only the gap between the two sides, and on a
640-dimensional Gaussian chain both sides otherwise drift off together.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from rollax.networks.policy import score_actions
from rollax.rl.algorithm import Algorithm
from rollax.rl.batch import STEP, BatchFormat, PolicyKeys
from rollax.rl.config import Config, algorithm_config, traced
from rollax.rl.utils import compute_dpo_loss, masked_mean, sequence_sum, tied_groups
from rollax.rollout.batches import Sequences

SIDES = ("chosen", "rejected")
INPUTS = tuple(f"{side}_{part}" for side in SIDES for part in ("observations", "actions"))
REFS = tuple(f"ref_{side}_log_probs" for side in SIDES)


@algorithm_config
class DPOConfig(Config):
    """DPO on preference pairs; `reference_free=True` is SimPO (no reference model)."""

    beta: float = traced(0.1)
    label_smoothing: float = traced(0.0)
    reference_free: bool = False
    # extras
    loss_type: str = "sigmoid"  # sigmoid | ipo | hinge
    simpo_gamma: float = traced(0.0)  # SimPO target margin (reference-free mode)
    length_normalize: bool = True  # SimPO averages token log-probs (reference-free mode)
    # > 0: the loop's pairs carry Bradley-Terry soft labels, p(chosen preferred) =
    # sigmoid(reward gap / T); DPO's optimum is then finite, pi ~ pi_ref exp(r / (beta T)),
    # where hard labels (0) keep pushing towards one best sample
    preference_temperature: float = 0.0
    max_grad_norm: float | None = None
    num_generations: int = 4  # the training loop's samples per prompt, ranked into a pair
    kl_coeff: float = 0.0  # extra: closed-form KL anchor of both sides (see the module docstring)

    def _check_values(self):
        self._range("beta", 0.0, low_open=True)
        self._range("label_smoothing", 0.0, 0.5)
        self._range("preference_temperature", 0.0)
        self._choice("loss_type", ("sigmoid", "ipo", "hinge"))
        if self.preference_temperature > 0 and self.loss_type != "sigmoid":
            raise ValueError(f"preference_temperature={self.preference_temperature} gives soft "
                             f"labels, which only loss_type='sigmoid' takes (got "
                             f"{self.loss_type!r})")
        self._range("simpo_gamma", 0.0)
        self._optional_positive("max_grad_norm")
        self._int("num_generations", 2)
        self._range("kl_coeff", 0.0)


@struct.dataclass
class Side:
    """One side of B pairs: what the policy scores, on the grid `mask [B, L]`."""

    observations: jax.Array
    actions: jax.Array
    mask: jax.Array
    reference: Any = None  # the reference's distributions per part (for `kl_coeff`)


@struct.dataclass
class Pairs:
    chosen: Side
    rejected: Side
    ref_chosen_log_probs: jax.Array | None = None  # [B]; None in reference-free mode
    ref_rejected_log_probs: jax.Array | None = None
    pair_mask: jax.Array | None = None  # [B] the pairs that carry a preference (None: all)
    preference: jax.Array | None = None  # [B] p(chosen preferred) (None: 1 - label_smoothing)

    def learned_by(self, algorithm, config) -> tuple[Pairs, dict]:
        return self, {}


def log_probs(model, side: Side, length_normalize: bool = False) -> tuple[jax.Array, Any]:
    """`[B]` log pi(y|x) of one side of the pairs (mean over parts when length-normalised), and
    the closed-form KL to `side.reference` summed over the parts `[B]` (None without one)."""
    terms = score_actions(model, side.observations, side.actions, side.mask.shape, side.reference)
    total = sequence_sum(terms.log_probs, side.mask)
    kl = None if terms.kl is None else sequence_sum(terms.kl, side.mask)
    return (total / jnp.maximum(jnp.sum(side.mask, 1), 1) if length_normalize else total), kl


class DPO(Algorithm):
    name, title, config_class = "dpo", "DPO", DPOConfig
    learns_from = (Sequences,)
    refused_keys = dict.fromkeys(
        ("chosen_log_probs", "rejected_log_probs"),
        "DPO computes the policy's log-probs from the model, so precomputed "
        "'chosen_log_probs'/'rejected_log_probs' cannot be trained on; pass "
        f"{list(INPUTS)} (and the reference log-probs) instead")

    def group_size(self, config: DPOConfig) -> int:
        return config.num_generations

    def uses_reference(self, config: DPOConfig) -> bool:
        return not config.reference_free

    def from_sequences(self, samples: Sequences, config: DPOConfig):
        """Per prompt, its best sample (chosen) and its worst (rejected); `pair_mask` drops the
        prompts whose samples all scored the same, and with `preference_temperature` T the
        chosen side wins with probability sigmoid(gap / T)."""
        size = samples.group_size
        prompts = samples.rewards.shape[0] // size
        grouped = samples.rewards.reshape(prompts, size)
        first = jnp.arange(prompts) * size
        index = {"chosen": first + jnp.argmax(grouped, 1), "rejected": first + jnp.argmin(grouped, 1)}
        anchored = config.kl_coeff > 0 and samples.ref_distribution is not None
        sides = {side: Side(samples.observations[rows], samples.actions[rows], samples.mask[rows],
                            jax.tree.map(lambda x, r=rows: x[r], samples.ref_distribution)
                            if anchored else None)
                 for side, rows in index.items()}
        refs = {side: None if samples.ref_log_probs is None else
                sequence_sum(samples.ref_log_probs[rows], samples.mask[rows])
                for side, rows in index.items()}
        preference = None
        if config.preference_temperature > 0:
            preference = jax.nn.sigmoid((grouped.max(1) - grouped.min(1)) / config.preference_temperature)
        return Pairs(sides["chosen"], sides["rejected"], refs["chosen"], refs["rejected"],
                     ~tied_groups(samples.rewards, size), preference), {}

    def loss(self, model, pairs: Pairs, config: DPOConfig):
        """Preference loss on a batch of pairs; returns `(loss, metrics)`."""
        normalize = config.reference_free and config.length_normalize
        scored = {side: log_probs(model, getattr(pairs, side), normalize) for side in SIDES}
        logps = {side: logp for side, (logp, _) in scored.items()}
        if config.reference_free:
            logratios, margin = logps, config.simpo_gamma
        else:
            logratios = {"chosen": logps["chosen"] - pairs.ref_chosen_log_probs,
                         "rejected": logps["rejected"] - pairs.ref_rejected_log_probs}
            margin = 0.0
        smoothing = config.label_smoothing if pairs.preference is None else 1.0 - pairs.preference
        losses = compute_dpo_loss(logratios["chosen"], logratios["rejected"], config.beta,
                                  smoothing, config.loss_type, margin)
        chosen_reward = config.beta * jax.lax.stop_gradient(logratios["chosen"])
        rejected_reward = config.beta * jax.lax.stop_gradient(logratios["rejected"])
        mean = lambda x: masked_mean(x, pairs.pair_mask)
        loss = mean(losses)
        anchor = {}
        if pairs.chosen.reference is not None:  # the extra closed-form KL anchor
            kl = 0.5 * (scored["chosen"][1] + scored["rejected"][1])
            anchor = {"kl_penalty": jnp.mean(kl)}
            loss = loss + config.kl_coeff * anchor["kl_penalty"]
        metrics = {
            "dpo_loss": mean(losses),
            **anchor,
            "chosen_reward": mean(chosen_reward),
            "rejected_reward": mean(rejected_reward),
            "reward_margin": mean(chosen_reward - rejected_reward),
            "reward_accuracy": mean((chosen_reward > rejected_reward).astype(jnp.float32)),
            "logps_chosen": mean(logps["chosen"]),
            "logps_rejected": mean(logps["rejected"]),
        }
        if pairs.pair_mask is not None:
            metrics["tied_pairs"] = 1.0 - jnp.mean(pairs.pair_mask.astype(jnp.float32))
        return loss, metrics

    def batch_formats(self, config: DPOConfig, reference_model: bool) -> tuple[BatchFormat, ...]:
        """The reference log-probs are inputs unless a reference model computes them (or SimPO
        needs none)."""
        needs_refs = not config.reference_free and not reference_model
        return (BatchFormat(
            required=INPUTS + (REFS if needs_refs else ()),
            optional=("chosen_mask", "rejected_mask", "pair_mask", "preference") + REFS,
            leading_key="chosen_actions", batch_ndim=1,
            shapes=dict.fromkeys((*REFS, "pair_mask", "preference"), STEP),
            policies=tuple(PolicyKeys(f"{side}_observations", f"{side}_actions", f"{side}_mask")
                           for side in SIDES), build=build),)


def build(arrays: dict, static: dict, parts: tuple, config: DPOConfig, reference) -> Pairs:
    """The documented pairs; a trainer's `reference_model` scores the reference log-probs."""
    sides = {side: Side(arrays[f"{side}_observations"], arrays[f"{side}_actions"],
                        jnp.asarray(arrays.get(f"{side}_mask", jnp.ones(shape, bool)), bool))
             for side, shape in zip(SIDES, parts, strict=True)}
    refs = {side: arrays.get(f"ref_{side}_log_probs") for side in SIDES}
    if config.reference_free:
        refs = dict.fromkeys(SIDES)
    elif reference is not None:
        refs = {side: log_probs(reference, sides[side])[0] for side in SIDES}
    pair_mask = arrays.get("pair_mask")
    return Pairs(sides["chosen"], sides["rejected"], refs["chosen"], refs["rejected"],
                 None if pair_mask is None else jnp.asarray(pair_mask, bool), arrays.get("preference"))


ALGORITHM = DPO()
