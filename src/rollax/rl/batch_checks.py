"""A trainer's batch, checked on the host with NumPy before anything is traced.

Each trainer declares its batch in a `BatchSpec`; `check_batch` then rejects, with a
`ValueError` naming the key and its shape or value: missing or unknown keys, values that are
not numbers, empty arrays, NaN/inf in any float key, leading (batch) axes that disagree across
keys, keys whose exact shape would broadcast (a `[B, 1]` next to `[B]`), observations the model
does not accept, and actions the model's policy cannot score (wrong dtype or shape, a discrete
action outside `0 <= a < n`). The model's output shapes come from one abstract evaluation
(`jax.eval_shape`, no computation) per observation shape, cached by the trainer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from rollax.networks.distributions import Categorical, DiagGaussian, as_distribution

ALIASES = {"states": "observations"}

# How a key's exact shape relates to the batch shape S (see `BatchSpec.shapes`).
STEP = "S"  # exactly S
STEP_OR_TOKEN = "S or per token"  # S, or the policy's per-token shape [*S, L]
STEP_OR_NEXT = "S or one more step"  # S, or S with one more entry on its first axis (values)
STEP_NEXT_OR_TOKEN = "S, one more step, or per token"  # values of a step or a token policy


@dataclasses.dataclass(frozen=True)
class PolicyKeys:
    """The keys the model is evaluated on: observations, the actions it scores, a token mask."""

    observations: str = "observations"
    actions: str = "actions"
    mask: str = "mask"


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """What a trainer's batch holds.

    The batch shape S is the first `batch_ndim` axes of `batch[leading_key]` (all of them when
    None: time-major `[T, N]` rollouts); every key starts with S. `shapes` gives the exact
    shape of the keys that are neither observations, actions nor masks.
    """

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    leading_key: str = "rewards"
    batch_ndim: int | None = None
    shapes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    policies: tuple[PolicyKeys, ...] = (PolicyKeys(),)
    integer_keys: tuple[str, ...] = ()
    needs_values: bool = False  # an actor-critic model: `(policy_output, value)`


def resolve_keys(batch: Mapping[str, Any], spec: BatchSpec) -> tuple[dict[str, Any], dict[str, int]]:
    """`(values by canonical key, static Python ints such as group_size)`; unknown and missing
    keys are errors (nothing is silently dropped)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"a batch is a dict of arrays, got {type(batch).__name__}")
    resolved: dict[str, Any] = {}
    for key, value in batch.items():
        name = ALIASES.get(key, key)
        if name in resolved:
            raise ValueError(f"batch has both {key!r} and its alias {name!r}")
        resolved[name] = value
    allowed = set(spec.required) | set(spec.optional)
    unknown = sorted(set(resolved) - allowed, key=str)
    if unknown:
        raise ValueError(f"unknown batch keys {unknown}; valid keys: {sorted(allowed)}")
    missing = [k for k in spec.required if k not in resolved]
    if missing:
        raise ValueError(f"batch is missing required keys {missing}; required: {list(spec.required)}")
    static = {k: int(v) for k, v in resolved.items()
              if isinstance(v, (int, np.integer)) and not isinstance(v, bool)}
    return {k: v for k, v in resolved.items() if k not in static}, static


def check_batch(
    batch: Mapping[str, Any], spec: BatchSpec, model: Any = None, cache: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Check `batch` against `spec` (and `model`, when given); return `(arrays, static)`: the
    caller's device arrays as given (not uploaded twice), others as NumPy in the dtypes JAX
    will use."""
    values, static = resolve_keys(batch, spec)
    arrays = {key: host_array(key, value) for key, value in values.items()}
    lead = arrays[spec.leading_key].shape[:spec.batch_ndim]
    if not lead:
        raise ValueError(f"batch[{spec.leading_key!r}] must have at least one (batch) axis")
    for key, array in arrays.items():
        leads = [lead, (lead[0] + 1, *lead[1:])] \
            if spec.shapes.get(key) in (STEP_OR_NEXT, STEP_NEXT_OR_TOKEN) else [lead]
        if not any(array.shape[:len(ld)] == ld for ld in leads):
            raise ValueError(f"batch[{key!r}] has shape {array.shape}; its leading axes must match "
                             f"batch[{spec.leading_key!r}] {lead}")
    for key in spec.integer_keys:
        if key in arrays and not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(f"batch[{key!r}] must hold integers, got {arrays[key].dtype}")
    token_shape = None
    if model is not None:
        for keys in spec.policies:
            token_shape = check_policy(model, arrays, keys, lead, spec.needs_values,
                                       {} if cache is None else cache)
    for key, kind in spec.shapes.items():
        if key in arrays:
            check_shape(key, arrays[key].shape, kind, lead, token_shape)
    return {key: values[key] if isinstance(values[key], jax.Array) else array
            for key, array in arrays.items()}, static


def host_array(key: str, value: Any) -> np.ndarray:
    """`value` as a non-empty, finite NumPy array of numbers in the dtype JAX will use."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise ValueError(f"batch[{key!r}] is not an array of numbers") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or \
            np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"batch[{key!r}] must hold real numbers or booleans, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"batch[{key!r}] is empty (shape {array.shape})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: reported below
        array = array.astype(jax.dtypes.canonicalize_dtype(array.dtype), copy=False)
    # min and max carry NaN and inf: the full mask is built only to name a bad value
    if np.issubdtype(array.dtype, np.floating) and not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(f"batch[{key!r}] has {int(bad.sum())} non-finite value(s) (NaN/inf), "
                             f"first at index {tuple(int(i) for i in np.argwhere(bad)[0])}")
    return array


def check_shape(key: str, shape: tuple, kind: str, lead: tuple, token_shape: tuple | None) -> None:
    allowed = [lead]
    if kind in (STEP_OR_NEXT, STEP_NEXT_OR_TOKEN):
        allowed.append((lead[0] + 1, *lead[1:]))
    if kind in (STEP_OR_TOKEN, STEP_NEXT_OR_TOKEN):
        allowed.append(token_shape or (*lead, shape[-1]))  # unknown policy: any one token axis
    if shape not in allowed:
        raise ValueError(f"batch[{key!r}] has shape {shape}; expected "
                         f"{' or '.join(str(s) for s in allowed)} ({kind}, S = {lead})")


def check_policy(model, arrays: dict, keys: PolicyKeys, lead: tuple, needs_values: bool,
                 cache: dict) -> tuple | None:
    """Check observations, actions and mask against the model's policy; return its per-token
    shape `[*S, L]` (L = 1 for one action per step), or None for a policy kind it cannot read."""
    observations, actions = arrays[keys.observations], arrays[keys.actions]
    discrete = bool(np.issubdtype(actions.dtype, np.integer))
    size = math.prod(lead)
    flat = ((size, *observations.shape[len(lead):]), observations.dtype, discrete)
    if flat not in cache:
        cache[flat] = abstract_policy(model, keys.observations, observations.shape, *flat)
    distribution, value = cache[flat]
    if needs_values and value is None:
        raise ValueError("this trainer needs an actor-critic model returning (policy_output, value); "
                         "the model returns no value")
    if needs_values and value.shape[:1] != (size,):
        raise ValueError(f"the model's value output has shape {value.shape} for {size} "
                         f"observations; expected ({size},), ({size}, 1) or one per token")
    source = f"policy on batch[{keys.observations!r}] {observations.shape}"
    if isinstance(distribution, Categorical):
        logits = distribution.logits.shape
        check_actions(keys.actions, actions, (*lead, *logits[1:-1]),
                      f"categorical {source} (over {logits[-1]} actions)", num_actions=logits[-1])
        per_token = logits[1:-1]
    elif isinstance(distribution, DiagGaussian):
        mean = distribution.mean.shape
        check_actions(keys.actions, actions, (*lead, *mean[1:]), f"Gaussian {source}")
        per_token = mean[1:-1]
    else:
        return None
    token_shape = (*lead, *(per_token or (1,)))
    mask = arrays.get(keys.mask)
    if mask is not None and mask.shape != token_shape:
        raise ValueError(f"batch[{keys.mask!r}] has shape {mask.shape}; the model's policy has "
                         f"per-token shape {token_shape}")
    return token_shape


def abstract_policy(model, key: str, shape: tuple, flat_shape: tuple, dtype, discrete: bool):
    """`(distribution, value)` of `model` on observations of `flat_shape`, with shapes only."""
    graphdef, state = nnx.split(model)

    def policy(state, observations):
        return as_distribution(nnx.merge(graphdef, state)(observations), discrete)

    try:
        return jax.eval_shape(policy, state, jax.ShapeDtypeStruct(flat_shape, dtype))
    except Exception as err:  # any failure inside the model: report the input, keep the cause
        built_for = getattr(model, "observation_shape", None)
        hint = "" if built_for is None else f" (it was built for observations [..., *{tuple(built_for)}])"
        raise ValueError(f"batch[{key!r}] has shape {shape} and dtype {dtype}, which the model "
                         f"does not accept{hint}") from err


def check_actions(key: str, actions: np.ndarray, expected: tuple, policy: str,
                  num_actions: int | None = None) -> None:
    """Actions the policy can score: its dtype, exactly its shape (nothing broadcast), and for a
    categorical policy every action in `[0, num_actions)` (masked tokens too: pad with 0)."""
    discrete = num_actions is not None
    if discrete != bool(np.issubdtype(actions.dtype, np.integer)):
        raise ValueError(f"batch[{key!r}] has dtype {actions.dtype}; the model's {policy} takes "
                         f"{'integer' if discrete else 'float'} actions")
    if actions.shape != expected:
        raise ValueError(f"batch[{key!r}] has shape {actions.shape}; the model's {policy} scores "
                         f"actions of shape {expected}")
    if discrete:
        low, high = int(actions.min()), int(actions.max())
        if low < 0 or high >= num_actions:
            raise ValueError(f"batch[{key!r}] holds action {low if low < 0 else high}, outside "
                             f"[0, {num_actions}) of the model's {policy}")


def check_group_size(arrays: dict, static: dict, default: int) -> dict:
    """`static` with a checked `group_size` (the batch's, else `default`): >= 2 and dividing the
    batch, whose rows are contiguous groups of generations per prompt."""
    group_size = int(static.get("group_size", default))
    size = arrays["rewards"].shape[0]
    if group_size < 2 or size % group_size:
        raise ValueError(f"group_size={group_size} must be >= 2 and divide the batch size {size} "
                         "(rows are contiguous groups of generations per prompt)")
    return {**static, "group_size": group_size} if "group_size" in static else static
