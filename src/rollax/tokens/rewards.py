"""Reward functions in Python on texts, TRL's `reward_funcs` convention:
`f(prompts: list[str], completions: list[str], **columns) -> list[float]`, one value per
completion, with the data set's other columns (the answer's included) as lists aligned with
the prompts.

They run on the host inside the compiled training chunk, through `jax.pure_callback`, once per
iteration on every seed's completions together. The reward is the weighted sum of the functions'
values. A function that raises, returns the wrong number of values or a value that is not a
finite number does not raise inside the compiled chunk (which would lose its records): its
values become NaN, the batch source reports a fault, and the run stops with the message kept
here, naming the function and one offending prompt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jax

_REWARDS: dict[str, Callable[..., Sequence[float]]] = {}


def register_reward(name: str, function: Callable[..., Sequence[float]]) -> None:
    """Make `function` reachable by `name` (in `register_text_task` and in presets, which reach
    user code only through `--import-module`)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"reward name {name!r} must be an identifier (it names metrics)")
    if not callable(function):
        raise ValueError(f"reward {name!r}: {function!r} is not callable")
    if _REWARDS.get(name, function) is not function:
        raise ValueError(f"a different reward function is already registered as {name!r}")
    _REWARDS[name] = function


def reward_function(name: str) -> Callable[..., Sequence[float]]:
    if name not in _REWARDS:
        raise ValueError(f"reward {name!r} is not registered; registered: {sorted(_REWARDS)} "
                         "(rollax.tokens.register_reward, from a module passed with "
                         "--import-module)")
    return _REWARDS[name]


@dataclasses.dataclass(eq=False)
class PythonRewards:
    """Named Python reward functions and their weights on one task's texts."""

    task_name: str
    names: tuple[str, ...]
    functions: tuple[Callable[..., Sequence[float]], ...]
    weights: tuple[float, ...]
    chars: str  # the tokenizer's characters: id i + 2 is chars[i]
    columns: dict[str, tuple[Any, ...]]  # per data row
    row_of: dict[str, int]  # prompt text -> data row
    failure: str | None = None  # the first failure's message

    @classmethod
    def build(cls, task: Any, reward_funcs: Sequence[str | Callable], weights: Any) -> PythonRewards:
        if isinstance(reward_funcs, str | bytes) or not isinstance(reward_funcs, Sequence) \
                or not reward_funcs:
            raise ValueError(f"reward_funcs must be a non-empty list of registered names or "
                             f"callables, got {reward_funcs!r}")
        named = [(f, reward_function(f)) if isinstance(f, str) else (_name_of(f), f)
                 for f in reward_funcs]
        names = [name for name, _ in named]
        if len(set(names)) != len(names):
            raise ValueError(f"reward_funcs name one reward twice: {names}")
        if weights is None:
            weights = [1.0] * len(named)
        if isinstance(weights, str) or not isinstance(weights, Sequence) or \
                len(weights) != len(named):
            raise ValueError(f"reward_weights={weights!r} must hold one weight per reward "
                             f"function ({len(named)}: {names})")
        if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w)
                   for w in weights):
            raise ValueError(f"reward_weights={weights!r} must be finite numbers")
        rows = task.rows
        return cls(task.name, tuple(names), tuple(f for _, f in named),
                   tuple(float(w) for w in weights), task.tokenizer.chars,
                   dict(rows.columns), rows.row_of())

    def text(self, ids: Sequence[int], prompt: bool = False) -> str:
        """Token ids as the rewards see them: up to the first EOS; a prompt's left PAD
        dropped, a PAD inside a completion shown as U+FFFD (it is not the answer's text)."""
        out = []
        for i in map(int, ids):
            if i == 1:  # EOS
                break
            out.append("" if i == 0 and prompt else "\ufffd" if i < 2 or i - 2 >= len(self.chars)
                       else self.chars[i - 2])
        return "".join(out)

    def score(self, prompts: jax.Array, completions: jax.Array) -> jax.Array:
        """Each function's values `[B, n]` on `prompts [B, P]` and `completions [B, L]` (NaN
        where one failed); traceable, any leading axes."""
        import jax  # here: registering rewards imports no jax

        shape = jax.ShapeDtypeStruct(prompts.shape[:-1] + (len(self.names),), np.float32)
        return jax.pure_callback(self.host_values, shape, prompts, completions,
                                 vmap_method="broadcast_all")

    def total(self, values: jax.Array) -> jax.Array:
        """The reward `[B]`: the weighted sum of the values."""
        return values @ np.asarray(self.weights, np.float32)

    def host_values(self, prompts: np.ndarray, completions: np.ndarray) -> np.ndarray:
        """`score` on host arrays of token ids."""
        lead = prompts.shape[:-1]
        prompt_texts = [self.text(p, prompt=True)
                        for p in np.asarray(prompts).reshape(-1, prompts.shape[-1])]
        completion_texts = [self.text(c) for c in
                            np.asarray(completions).reshape(-1, completions.shape[-1])]
        rows = [self.row_of.get(p) for p in prompt_texts]
        columns = {key: [None if row is None else values[row] for row in rows]
                   for key, values in self.columns.items()}
        out = np.full((len(prompt_texts), len(self.names)), np.nan, np.float32)
        for i, (name, function) in enumerate(zip(self.names, self.functions, strict=True)):
            out[:, i] = self._call(name, function, prompt_texts, completion_texts, columns)
        return out.reshape(lead + (len(self.names),))

    def _call(self, name, function, prompts, completions, columns) -> np.ndarray:
        """The function's values, or NaN with the failure recorded."""
        where = f"reward function {name!r} of task {self.task_name!r}"
        try:
            values = list(function(prompts, completions, **columns))
        except Exception as err:  # noqa: BLE001 - any user error becomes the run's message
            return self._fail(f"{where} raised {type(err).__name__}: {err} (on a batch whose "
                              f"first prompt is {prompts[0]!r})", len(prompts))
        if len(values) != len(prompts):
            return self._fail(f"{where} returned {len(values)} values for {len(prompts)} "
                              f"completions (prompt {prompts[0]!r} among them)", len(prompts))
        with np.errstate(over="ignore"):  # 1e39 is finite, not as a float32
            bad = {i for i, v in enumerate(values)
                   if not _finite_number(v) or not np.isfinite(np.float32(v))}
        if bad:
            first = min(bad)
            self._fail(f"{where} returned {values[first]!r}, not a finite float32, for prompt "
                       f"{prompts[first]!r} and completion {completions[first]!r}", 0)
        # only the offending completions fault (and so only the seeds they belong to)
        return np.asarray([np.nan if i in bad else v for i, v in enumerate(values)], np.float32)

    def _fail(self, message: str, count: int) -> np.ndarray:
        if self.failure is None:
            self.failure = message
        return np.full(count, np.nan, np.float32)


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float | np.number) and not isinstance(value, bool) \
        and math.isfinite(value)


def _name_of(function: Callable) -> str:
    name = getattr(function, "__name__", "")
    if not name.isidentifier():
        raise ValueError(f"reward {function!r} has no usable __name__; register it with "
                         "rollax.tokens.register_reward(name, f) and pass the name")
    return name


def exact_answer(prompts: list[str], completions: list[str], answer: list[str], **_: Any
                 ) -> list[float]:
    """1 for a completion equal to its row's `answer` column, else 0: correctness."""
    return [float(c == a) for c, a in zip(completions, answer, strict=True)]


def word_count(prompts: list[str], completions: list[str], answer: list[str], **_: Any
               ) -> list[float]:
    """1 for a completion with as many single-space-separated words as its answer, else 0:
    format."""
    return [float(len(c.split(" ")) == len(a.split(" ")))
            for c, a in zip(completions, answer, strict=True)]


register_reward("exact_answer", exact_answer)
register_reward("word_count", word_count)
