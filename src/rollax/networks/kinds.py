"""The policy-kind registry: `[agent.network] kind = "<name>"` -> its typed config section and
its builder.

A kind is a `PolicyKind`: a frozen config dataclass (the keys its `[agent.network]` table
takes, with their defaults and checks, and a `kind` field holding its name) and
`build(config, context, rngs) -> nnx.Module`, a policy returning a `PolicyOutput`. A kind
may start every seed from fixed parameters (a supervised warm start): `initial_params(config,
context)`. Kinds register by name and module path, so listing and checking presets imports
a kind's module only when a preset names it; your own kind joins with one
`register_policy_kind("name", "yourpackage.module:KIND")`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # registering a kind imports no jax
    from flax import nnx


@dataclasses.dataclass(frozen=True)
class PolicyContext:
    """What a builder may read about the run it builds a policy for."""

    env: Any  # a jittable env, or None for a Gymnasium env stepped on the host
    env_params: Any
    observation_space: Any  # gymnax spaces
    action_space: Any
    critic: bool  # the algorithm needs a value per observation
    env_id: str = ""
    env_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # preset params


@dataclasses.dataclass(frozen=True)
class PolicyKind:
    name: str
    config_class: type
    build: Callable[[Any, PolicyContext, nnx.Rngs], nnx.Module]
    initial_params: Callable[[Any, PolicyContext], nnx.State | None] = lambda config, context: None


_KINDS: dict[str, str | PolicyKind] = {}  # name -> "module:attribute", resolved on first use


def register_policy_kind(name: str, kind: str | PolicyKind) -> None:
    """Register a `PolicyKind` (or the "module:attribute" path of one) under `name`."""
    if name in _KINDS and _KINDS[name] != kind:
        raise ValueError(f"policy kind {name!r} is already registered")
    _KINDS[name] = kind


def policy_kind_names() -> list[str]:
    return sorted(_KINDS)


def policy_kind(name: str) -> PolicyKind:
    """The registered kind, or a ValueError listing the known ones."""
    if not isinstance(name, str) or name not in _KINDS:
        raise ValueError(f"agent.network.kind={name!r}; expected one of {policy_kind_names()}")
    entry = _KINDS[name]
    if isinstance(entry, str):
        module, attribute = entry.split(":")
        entry = _KINDS[name] = getattr(importlib.import_module(module), attribute)
        if entry.name != name:
            raise ValueError(f"{module}:{attribute} is the policy kind {entry.name!r}, not {name!r}")
    return entry


def network_config(table: Mapping[str, Any] | Any) -> Any:
    """The typed `[agent.network]` section for a table (its `kind` picks the config class; "mlp"
    by default); unknown keys are a ValueError listing the kind's keys."""
    if not isinstance(table, Mapping):
        return table  # already typed
    kind = policy_kind(table.get("kind", "mlp"))
    fields = {f.name for f in dataclasses.fields(kind.config_class)}
    unknown = sorted(set(table) - fields)
    if unknown:
        raise ValueError(f"agent.network: unknown key(s) {unknown} for kind {kind.name!r}; "
                         f"valid keys: {sorted(fields)}")
    return kind.config_class(**{**table, "kind": kind.name})


register_policy_kind("mlp", "rollax.networks.mlp:MLP_KIND")
