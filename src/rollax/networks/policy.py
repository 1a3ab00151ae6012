"""The one policy output, the one adapter to it, and the one way actions are scored.

Every rollax policy returns a `PolicyOutput`: the action distribution for its observations and,
for actor-critics, the value of each. A model written to the documented raw conventions (a
user's model in the trainer API) is read by `policy_output`: logits `[..., A]` (discrete),
`(mean, log_std)` (continuous), `(policy_output, value)` (actor-critic). A pair of plain
arrays is ambiguous between `(logits, value)` and `(mean, log_std)`; the caller says which
with `discrete` (the action space, or the actions' dtype).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rollax.networks.distributions import Categorical, DiagGaussian, Distribution


class PolicyOutput(NamedTuple):
    """A policy's answer to a batch of observations `[*B, ...]`: a distribution of batch shape
    `B`, and the value of each observation `[*B]` (None without a critic)."""

    distribution: Distribution
    value: jax.Array | None = None


def policy_output(output: Any, discrete: bool) -> PolicyOutput:
    """`output` as a `PolicyOutput` (see the module docstring); the value loses a trailing axis
    of size 1."""
    if isinstance(output, PolicyOutput):
        return output
    if isinstance(output, Distribution):
        return PolicyOutput(output)
    if not isinstance(output, (tuple, list)):
        return PolicyOutput(Categorical(output))
    if len(output) != 2:
        raise ValueError(f"a policy returns a PolicyOutput, a distribution, logits, "
                         f"(mean, log_std) or (policy_output, value); got a {len(output)}-tuple")
    first, second = output
    if isinstance(first, (Distribution, tuple, list)):  # (policy output, value)
        inner = False if isinstance(first, (tuple, list)) else discrete  # ((mean, log_std), value)
        return PolicyOutput(policy_output(first, inner).distribution, _squeeze(second))
    if discrete:
        return PolicyOutput(Categorical(first), _squeeze(second))
    return PolicyOutput(DiagGaussian(first, second))


def _squeeze(value: jax.Array) -> jax.Array:
    return value[..., 0] if value.ndim >= 1 and value.shape[-1] == 1 else value


def is_discrete(actions: jax.Array) -> bool:
    """Integer actions are choices (or tokens); float actions are continuous."""
    return bool(jnp.issubdtype(jnp.asarray(actions).dtype, jnp.integer))


class PolicyTerms(NamedTuple):
    """The policy's log-probabilities and entropies of scored actions on the batch's grid, and
    its values `[R, ...]` (None without a critic), and its closed-form KL to a reference's
    distributions on the grid (None without one)."""

    log_probs: jax.Array
    entropy: jax.Array
    values: jax.Array | None
    kl: jax.Array | None = None


def score_actions(model: Any, observations: jax.Array, actions: jax.Array,
                  grid: tuple[int, ...], reference: Distribution | None = None) -> PolicyTerms:
    """Run `model(observations)` once and score `actions`, laid out on `grid`: `[R]` for one
    action per row, `[R, L]` for rows of L parts (a completion's tokens, a chain's steps), which
    a sequence model scores in one pass. Values come as `[R, -1]`; with `reference` (the frozen
    reference's distributions for the same observations), the closed-form KL per part."""
    output = policy_output(model(observations), is_discrete(actions))
    distribution = output.distribution
    values = None if output.value is None else output.value.reshape(grid[0], -1)
    kl = None if reference is None else distribution.kl(reference).reshape(grid)
    return PolicyTerms(distribution.log_prob(actions).reshape(grid),
                       distribution.entropy().reshape(grid), values, kl)
