"""Tools a token policy may call mid-completion, registered by name (no jax here).

A tool is a jittable function on Unicode code points, so it does not depend on a task's
tokenizer: `fn(call [call_length], prompt [P]) -> (result [result_length], ok)`, each an int32
array of code points with 0 where there is no character (the call and the result left-aligned,
the prompt's padding 0). `ok` is False for a malformed call; the episode then reads the tool's
`error` text as its answer, as a real tool's caller would. `chars` are every character the tool
reads or writes: a task that uses the tool gets them in its vocabulary. The episode layout that
carries calls and answers is in `rollax.tokens.turns`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

# the markers of a tool call (the policy writes them) and of its answer (the env writes them)
CALL_OPEN, CALL_CLOSE, RESULT_OPEN, RESULT_CLOSE = "[", "]", "{", "}"
MARKERS = CALL_OPEN + CALL_CLOSE + RESULT_OPEN + RESULT_CLOSE
MAX_TOOL_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[[Any, Any], tuple[Any, Any]]
    call_length: int  # the longest call it reads
    result_length: int  # the longest answer it writes
    chars: str  # every character it reads or writes
    error: str = "error"  # its answer to a malformed call

    def __post_init__(self):
        for key in ("call_length", "result_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or \
                    not 1 <= value <= MAX_TOOL_LENGTH:
                raise ValueError(f"tool {self.name!r}: {key}={value!r} must be an int in "
                                 f"[1, {MAX_TOOL_LENGTH}]")
        if not isinstance(self.chars, str) or not self.chars:
            raise ValueError(f"tool {self.name!r}: chars={self.chars!r} must be a non-empty "
                             "string of the characters it reads and writes")
        if markers := sorted(set(self.chars) & set(MARKERS)):
            raise ValueError(f"tool {self.name!r}: chars may not hold the call and answer "
                             f"markers {MARKERS!r}, got {markers}")
        if not isinstance(self.error, str) or not self.error or \
                len(self.error) > self.result_length or set(self.error) - set(self.chars):
            raise ValueError(f"tool {self.name!r}: error={self.error!r} must be a non-empty "
                             f"text of its chars of at most result_length={self.result_length}")
        if not callable(self.fn):
            raise ValueError(f"tool {self.name!r}: fn={self.fn!r} is not callable")


# name -> Tool, or "module:attribute" of a shipped one (loaded with jax on first use)
_TOOLS: dict[str, Tool | str] = {"calculator": "rollax.tokens.tools:CALCULATOR",
                                 "lookup": "rollax.tokens.tools:LOOKUP"}


def register_tool(name: str, fn: Callable, *, call_length: int, result_length: int, chars: str,
                  error: str = "error") -> None:
    """Make the jittable `fn` (module docstring) the tool `name`, for `tool = name` in a token
    env's params."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"tool name {name!r} must be an identifier")
    if name in _TOOLS:
        raise ValueError(f"tool {name!r} is already registered")
    _TOOLS[name] = Tool(name, fn, call_length, result_length, chars, error)


def tool(name: str) -> Tool:
    """The registered tool `name`; a ValueError listing the registered ones otherwise."""
    found = _TOOLS.get(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"tool {name!r} is not registered; registered tools: {sorted(_TOOLS)} "
                         "(rollax.tokens.register_tool, from a module given to --import-module)")
    if isinstance(found, str):
        module, attribute = found.split(":")
        found = _TOOLS[name] = getattr(importlib.import_module(module), attribute)
    return found
