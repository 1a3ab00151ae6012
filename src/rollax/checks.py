"""Value checks shared by the typed experiment (`run/experiment.py`) and the algorithm configs
(`rl/config.py`). Each raises `ValueError` naming the key and the bad value, so a preset, a
run's `config.json` and a Python caller all get the same message, never a JAX-internal one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

_KINDS = {"int": "an integer", "float": "a number", "bool": "a boolean (true or false)",
          "str": "a string"}


def check_number(key: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A finite number (an int or a float, not a boolean) in the interval; NaN and inf never are."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if (too_low or too_high) and high == math.inf:
        raise ValueError(f"{key}={value!r} must be {'>' if low_open else '>='} {low}")
    if too_low or too_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{key}={value!r} is outside the allowed range {lo}{low}, {high}{hi}")


def check_int(key: str, value: Any, low: int, high: int | None = None, why: str = "") -> None:
    """An integer (not a boolean) in `[low, high]`; `why` says where `high` comes from."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{key}={value!r} is too large: at most {high}{why}")


def check_choice(key: str, value: Any, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key}={value!r}; expected one of {list(choices)}")


def check_types(instance: Any, prefix: str) -> None:
    """Every field of a dataclass against its annotation (`int`, `float`, `bool`, `str`,
    `X | None`, `tuple[X, ...]` (a list or a tuple), `Mapping[...]`; others are left to the
    class): the message names `prefix.field` and the value."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        kind = str(field.type)
        key = f"{prefix}.{field.name}" if prefix else field.name
        if kind.endswith(" | None"):
            if value is None:
                continue
            kind = kind.removesuffix(" | None")
        if kind in _KINDS and not _is_kind(value, kind):
            raise ValueError(f"{key} must be {_KINDS[kind]}, got {value!r}")
        if kind == "float" and not math.isfinite(value):
            raise ValueError(f"{key}={value!r} must be a finite number")
        if kind.startswith("tuple[") and kind.endswith(", ...]"):
            item = kind.removeprefix("tuple[").removesuffix(", ...]")
            if not isinstance(value, (tuple, list)) or not all(_is_kind(v, item) for v in value):
                raise ValueError(f"{key} must be a list of {_KINDS[item].split(' ', 1)[1]}s, "
                                 f"got {value!r}")
        if kind.startswith("Mapping[") and not isinstance(value, Mapping):
            raise ValueError(f"{key} must be a table, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "float":
        return _is_number(value)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"bool": bool, "str": str}[kind])
