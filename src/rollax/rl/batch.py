"""`train_step`'s batch dict: its documented layouts, checked on the host with NumPy before
anything is traced, then built into the typed batch an algorithm learns from.

Each algorithm lists its layouts as `BatchFormat`s (PPO: time-major steps, or token completions
with a `mask`); the first whose required keys are all present, with no key it does not know,
is the batch's. `check_arrays` rejects, with a `ValueError` naming the key and its shape or
value: missing or unknown keys, values that are not numbers, empty arrays, NaN/inf in any float
key, rewards and values beyond `MAX_MAGNITUDE` (their returns, advantages and squares would
overflow float32), flags (`dones`, `terminated`, `truncated`) and masks (`*mask`) that are not
booleans or 0/1, a mask that leaves nothing to learn from, leading (batch) axes that disagree across keys, keys whose exact shape would broadcast (a
`[B, 1]` next to `[B]`), observations the model does not accept, and actions the model's policy
cannot score (wrong dtype or shape, a discrete action outside `0 <= a < n`). The model's output
shapes come from one abstract evaluation (`jax.eval_shape`, no computation) per observation
shape, cached by the trainer. `build` runs inside the compiled update, so turning the documented
keys into the typed batch (defaults, the episode flags) costs no extra programs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from flax import nnx

from rollax.networks.distributions import Categorical, DiagGaussian
from rollax.networks.policy import policy_output

ALIASES = {"states": "observations"}
MAGNITUDE_KEYS = ("rewards", "values", "bootstrap_values")
MAX_MAGNITUDE = 1e9  # |rewards|, |values|: returns over 10^6 steps and their squares stay finite
FLAG_KEYS = ("dones", "terminated", "truncated")  # and every key ending in "mask"

# How a key's exact shape relates to the batch shape S (see `BatchFormat.shapes`).
STEP = "S"  # exactly S
STEP_OR_NEXT = "S or one more step"  # S, or one more entry on the first axis (PPO's values)
PER_PART = "per part"  # the policy's parts of each step [*S, L]; S too when L = 1
STEP_OR_PART = "S or per part"  # one per sample, or one per part (per-token rewards)


@dataclasses.dataclass(frozen=True)
class PolicyKeys:
    """The keys the model is evaluated on: observations, the actions it scores, a parts mask."""

    observations: str = "observations"
    actions: str = "actions"
    mask: str = "mask"


@dataclasses.dataclass(frozen=True)
class BatchFormat:
    """One documented layout of a batch.

    The batch shape S is the first `batch_ndim` axes of `batch[leading_key]` (all of them when
    None: time-major `[T, N]` rollouts); every key starts with S. `shapes` gives the exact shape
    of the keys that are neither observations, actions nor masks. `check(arrays, static, parts,
    config)` adds the algorithm's own checks; `build(arrays, static, parts, config, reference)`
    (traced) makes the typed batch: `parts` is the policy's per-part shape `[*S, L]`, `static`
    the batch's Python ints (`group_size`), `reference` the trainer's reference model or None.
    """

    required: tuple[str, ...]
    build: Callable[..., Any]
    optional: tuple[str, ...] = ()
    leading_key: str = "rewards"
    batch_ndim: int | None = None
    shapes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    policies: tuple[PolicyKeys, ...] = (PolicyKeys(),)
    integer_keys: tuple[str, ...] = ()
    needs_values: bool = False  # an actor-critic model: a value per observation
    check: Callable[..., None] = lambda arrays, static, parts, config: None

    def admits(self, keys: set[str]) -> bool:
        return set(self.required) <= keys <= set(self.required) | set(self.optional)


def resolve_keys(batch: Mapping[str, Any], formats: tuple[BatchFormat, ...]
                 ) -> tuple[BatchFormat, dict[str, Any], dict[str, int]]:
    """`(the batch's format, values by canonical key, static Python ints such as group_size)`;
    with no format admitting the keys, the first one names what is unknown or missing (nothing
    is silently dropped)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"a batch is a dict of arrays, got {type(batch).__name__}")
    resolved: dict[str, Any] = {}
    for key, value in batch.items():
        name = ALIASES.get(key, key)
        if name in resolved:
            raise ValueError(f"batch has both {key!r} and its alias {name!r}")
        resolved[name] = value
    keys = set(resolved)
    chosen = next((f for f in formats if f.admits(keys)), None)
    if chosen is None:
        default = formats[0]
        allowed = set().union(*(set(f.required) | set(f.optional) for f in formats))
        unknown = sorted(keys - allowed, key=str)
        if unknown:
            raise ValueError(f"unknown batch keys {unknown}; valid keys: {sorted(allowed)}")
        missing = [k for k in default.required if k not in keys]
        raise ValueError(f"batch is missing required keys {missing}; required: {list(default.required)}")
    static = {k: int(v) for k, v in resolved.items()
              if isinstance(v, (int, np.integer)) and not isinstance(v, bool)}
    return chosen, {k: v for k, v in resolved.items() if k not in static}, static


def check_arrays(values: Mapping[str, Any], spec: BatchFormat, model: Any, cache: dict
                 ) -> tuple[dict[str, Any], tuple[tuple[int, ...], ...]]:
    """Check `values` against `spec` and the model; return `(arrays, the parts shape [*S, L]
    of each of the format's policies)`: the caller's device arrays as given (not uploaded
    twice), others as NumPy in the dtypes JAX will use."""
    arrays = {key: host_array(key, value) for key, value in values.items()}
    for key, array in arrays.items():
        check_numbers(key, array)
    lead = arrays[spec.leading_key].shape[:spec.batch_ndim]
    if not lead:
        raise ValueError(f"batch[{spec.leading_key!r}] must have at least one (batch) axis")
    for key, array in arrays.items():
        leads = [lead, (lead[0] + 1, *lead[1:])] if spec.shapes.get(key) == STEP_OR_NEXT else [lead]
        if not any(array.shape[:len(ld)] == ld for ld in leads):
            raise ValueError(f"batch[{key!r}] has shape {array.shape}; its leading axes must match "
                             f"batch[{spec.leading_key!r}] {lead}")
    for key in spec.integer_keys:
        if key in arrays and not np.issubdtype(arrays[key].dtype, np.integer):
            raise ValueError(f"batch[{key!r}] must hold integers, got {arrays[key].dtype}")
    parts = tuple(check_policy(model, arrays, keys, lead, spec.needs_values, cache)
                  for keys in spec.policies)
    for key, kind in spec.shapes.items():
        if key in arrays:
            check_shape(key, arrays[key].shape, kind, lead, parts[0])
    return {key: values[key] if isinstance(values[key], jax.Array) else array
            for key, array in arrays.items()}, parts


def parts_shape(values: Mapping[str, Any], spec: BatchFormat, model: Any, cache: dict
                ) -> tuple[tuple[int, ...], ...]:
    """Each policy's parts shape `[*S, L]`, checking nothing (`check_batches=False`)."""
    lead = np.shape(values[spec.leading_key])[:spec.batch_ndim]

    def parts(keys: PolicyKeys) -> tuple[int, ...]:
        observations, actions = values[keys.observations], values[keys.actions]
        distribution, _ = _abstract(model, keys.observations, np.shape(observations), lead,
                                    np.result_type(observations), _integer(actions), cache)
        return _parts(distribution, lead)

    return tuple(parts(keys) for keys in spec.policies)


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


def check_numbers(key: str, array: np.ndarray) -> None:
    """Rewards and values within `MAX_MAGNITUDE`; flags and masks booleans (or 0/1), a mask
    with something left to learn from."""
    if key in MAGNITUDE_KEYS and np.issubdtype(array.dtype, np.number):
        largest = float(np.abs(array.astype(np.float64)).max())
        if largest > MAX_MAGNITUDE:
            raise ValueError(f"batch[{key!r}] holds a value of magnitude {largest:.3g}, beyond "
                             f"{MAX_MAGNITUDE:.0e} (its sums and squares overflow float32); "
                             "rescale the rewards")
    if key in FLAG_KEYS or key.endswith("mask"):
        if array.dtype != np.bool_:
            outside = (array != 0) & (array != 1)
            if outside.any():
                where = tuple(int(i) for i in np.argwhere(outside)[0])
                raise ValueError(f"batch[{key!r}] must hold booleans (or 0/1), got {array[where].item()!r} "
                                 f"at index {where}")
        if key.endswith("mask") and not array.any():
            raise ValueError(f"batch[{key!r}] is False everywhere: nothing in the batch is left "
                             "to learn from")


def check_shape(key: str, shape: tuple, kind: str, lead: tuple, parts: tuple) -> None:
    allowed = [lead]
    if kind == STEP_OR_NEXT:
        allowed.append((lead[0] + 1, *lead[1:]))
    if kind == STEP_OR_PART or (kind == PER_PART and parts[-1] == 1):
        allowed.append(parts)
    elif kind == PER_PART:
        allowed = [parts]
    if shape not in allowed:
        raise ValueError(f"batch[{key!r}] has shape {shape}; expected "
                         f"{' or '.join(str(s) for s in allowed)} ({kind}, S = {lead})")


def check_policy(model, arrays: dict, keys: PolicyKeys, lead: tuple, needs_values: bool,
                 cache: dict) -> tuple[int, ...]:
    """Check observations, actions and mask against the model's policy; return its parts
    shape `[*S, L]` (L = 1 for one action per step)."""
    observations, actions = arrays[keys.observations], arrays[keys.actions]
    distribution, value = _abstract(model, keys.observations, observations.shape, lead,
                                    observations.dtype, _integer(actions), cache)
    size = math.prod(lead)
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
    elif isinstance(distribution, DiagGaussian):
        check_actions(keys.actions, actions, (*lead, *distribution.mean.shape[1:]), f"Gaussian {source}")
    parts = _parts(distribution, lead)
    mask = arrays.get(keys.mask)
    if mask is not None and mask.shape != parts:
        raise ValueError(f"batch[{keys.mask!r}] has shape {mask.shape}; the model's policy has "
                         f"per-part shape {parts}")
    return parts


def _integer(actions: Any) -> bool:
    return bool(np.issubdtype(np.result_type(actions), np.integer))


def _parts(distribution: Any, lead: tuple) -> tuple[int, ...]:
    """`[*S, L]`: the per-step parts of a distribution evaluated on `prod(S)` observations."""
    batch = distribution.logits.shape[:-1] if isinstance(distribution, Categorical) \
        else distribution.mean.shape[:-1]
    return (*lead, *(batch[1:] or (1,)))


def _abstract(model, key: str, shape: tuple, lead: tuple, dtype, discrete: bool, cache: dict):
    """`(distribution, value)` of `model` on observations `[prod(S), ...]`, shapes only, cached."""
    flat = ((math.prod(lead), *shape[len(lead):]), np.dtype(dtype), discrete)
    if flat not in cache:
        cache[flat] = abstract_policy(model, key, shape, *flat)
    return cache[flat]


def abstract_policy(model, key: str, shape: tuple, flat_shape: tuple, dtype, discrete: bool):
    """`(distribution, value)` of `model` on observations of `flat_shape`, with shapes only."""
    graphdef, state = nnx.split(model)

    def policy(state, observations):
        return policy_output(nnx.merge(graphdef, state)(observations), discrete)

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


def check_group_size(arrays: dict, static: dict, default: int) -> None:
    """A group size (the batch's `group_size`, else `default`) >= 2 dividing the batch, whose
    rows are contiguous groups of generations per prompt."""
    group_size = int(static.get("group_size", default))
    size = np.shape(arrays["rewards"])[0]
    if group_size < 2 or size % group_size:
        raise ValueError(f"group_size={group_size} must be >= 2 and divide the batch size {size} "
                         "(rows are contiguous groups of generations per prompt)")


def check_group_options(arrays: dict, static: dict, config: Any) -> None:
    """`check_group_size`, and `mask_truncated_completions` only with the batch's `truncated`."""
    check_group_size(arrays, static, config.num_generations)
    if config.mask_truncated_completions and "truncated" not in arrays:
        raise ValueError("mask_truncated_completions=True needs the batch's 'truncated' [B] "
                         "(which samples were cut at the length limit)")


def require_reference(arrays: Mapping[str, Any], kl_coeff: float) -> None:
    """A KL anchor (`kl_coeff > 0`) needs the actions' log-probs under the sampling policy and
    under the reference."""
    missing = [key for key in ("log_probs", "ref_log_probs") if key not in arrays]
    if kl_coeff > 0 and missing:
        raise ValueError(f"kl_coeff={kl_coeff} anchors the policy to a reference: the batch needs "
                         f"{missing} (the actions' log-probs under the sampling policy and under "
                         "the frozen reference policy)")
