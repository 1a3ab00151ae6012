"""How the token domain joins the engine: its env ids `rollax/Tokens-<Task>-v0` (tasks in
`tasks.py`), its policy kind "transformer" and its batch source (sampled completions). Nothing
here imports jax: a task's module loads when its env is made."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rollax.envs.registry import EnvFactory, register
from rollax.networks.kinds import register_policy_kind
from rollax.rollout.sources import register_batch_sources

# name -> factory(**params) -> TokenTask; None: the built-in `tasks.<name>_task`
_TASKS: dict[str, Callable[..., Any] | None] = dict.fromkeys(("reverse", "sort", "addition"))


def token_env_id(task: str) -> str:
    return f"rollax/Tokens-{task.capitalize()}-v0"


def register_task(name: str, factory: Callable[..., Any]) -> None:
    """Make `factory(**params) -> TokenTask` available as `rollax/Tokens-<Name>-v0`."""
    if name in _TASKS:
        raise ValueError(f"token task {name!r} is already registered")
    _TASKS[name] = factory
    register(token_env_id(name), _factory(name))


def _factory(task: str) -> EnvFactory:
    def make(partial_credit: bool = False, **task_params: Any):
        """Task params (e.g. `min_digits`, `max_digits`, `max_operand`) build the task."""
        from rollax.tokens import tasks
        from rollax.tokens.env import check_task_outputs, make_token_env

        factory = _TASKS[task] or getattr(tasks, f"{task}_task")
        try:
            built = factory(**task_params)
        except TypeError as err:  # an unknown keyword: say which env it was for
            raise ValueError(f"{token_env_id(task)}: {err}") from None
        env = make_token_env(built, partial_credit)
        if _TASKS[task] is not None:  # a user's task: run it once before anything trains
            check_task_outputs(built)
        return env

    return make


for _task in _TASKS:
    register(token_env_id(_task), _factory(_task))
register_policy_kind("transformer", "rollax.tokens.policy:TRANSFORMER_KIND")
register_batch_sources("rollax.tokens.env:TokenEnv", "rollax.tokens.source:Completions")
