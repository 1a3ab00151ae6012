"""Names a package exports but imports only on first use, so importing the package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: dict[str, Any], names: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for a package's namespace `package`: `names` maps an exported
    name to the module defining it, imported the first time the name is looked up."""

    def getattr_(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            package[name] = value  # later lookups skip this function
            return value
        raise AttributeError(f"module {package['__name__']!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(package) | set(names))

    return getattr_, dir_
