"""Algorithm configs: frozen dataclasses whose fields say whether they may differ between the runs
of one compiled program.

A field is static (part of the program: it decides shapes or Python control flow, such as
`num_epochs` or whether a reference policy is scored) unless declared with `traced(default)`:
a number the program only computes with, such as `clip_param`. `@algorithm_config` registers
the class as a pytree whose leaves are its traced fields (rejax's `pytree_node`), so a sweep
`vmap`s one config per run over them; `with_traced` builds such a copy. Construction checks
every value (`ValueError` naming `XConfig.field`); a traced copy is built by pytree unflattening,
from values that were checked when each run's experiment was built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from rollax.checks import check_choice, check_int, check_number, check_types

INF = float("inf")


def traced(default: Any) -> Any:
    """A config field that may differ between the runs of one compiled program."""
    return dataclasses.field(default=default, metadata={"traced": True})


def algorithm_config(cls: type) -> type:
    """Make `cls` a frozen dataclass registered as a pytree of its `traced` fields."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    cls.traced_fields = tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("traced"))
    static = tuple(name for name in fields if name not in cls.traced_fields)

    def flatten(config):
        return ([getattr(config, name) for name in cls.traced_fields],
                tuple(getattr(config, name) for name in static))

    def unflatten(static_values, leaves):
        config = object.__new__(cls)  # not __init__: leaves may be tracers or placeholders
        for name, value in (*zip(static, static_values), *zip(cls.traced_fields, leaves)):
            object.__setattr__(config, name, value)
        return config

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    return cls


class Config:
    """Base of the algorithm configs (see the module docstring)."""

    traced_fields: tuple[str, ...] = ()

    def __post_init__(self):
        check_types(self, type(self).__name__)  # booleans are booleans, numbers finite
        self._check_values()

    def _check_values(self) -> None:
        """Each subclass's range and choice checks."""

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_traced(self, values: Mapping[str, Any]) -> Config:
        """A copy whose traced fields named in `values` hold these (traced) numbers."""
        if not values:
            return self
        wrong = sorted(set(values) - set(self.traced_fields))
        if wrong:
            raise ValueError(f"{type(self).__name__} fields {wrong} are static; traced fields: "
                             f"{list(self.traced_fields)}")
        leaves = [values.get(name, getattr(self, name)) for name in self.traced_fields]
        return jax.tree.unflatten(jax.tree.structure(self), leaves)

    # checks naming `XConfig.field`
    def _range(self, name: str, low: float, high: float = INF, *, low_open: bool = False,
               high_open: bool = False) -> None:
        check_number(f"{type(self).__name__}.{name}", getattr(self, name), low, high,
                     low_open=low_open, high_open=high_open)

    def _choice(self, name: str, choices: tuple[str, ...]) -> None:
        check_choice(f"{type(self).__name__}.{name}", getattr(self, name), choices)

    def _int(self, name: str, low: int = 1) -> None:
        check_int(f"{type(self).__name__}.{name}", getattr(self, name), low)

    def _optional_positive(self, name: str) -> None:
        if getattr(self, name) is not None:
            self._range(name, 0.0, low_open=True)
