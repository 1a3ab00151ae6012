"""How the token domain joins the engine: its env ids `rollax/Tokens-<Task>-v0` (tasks in
`tasks.py`), its policy kind "transformer" and its batch source (sampled completions). Nothing
here imports jax: a task's module loads when its env is made."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rollax.envs.registry import EnvFactory, register, registered_ids
from rollax.networks.kinds import register_policy_kind
from rollax.rollout.sources import register_batch_sources

# name -> factory(**params) -> TokenTask; None: the built-in `tasks.<name>_task`
_TASKS: dict[str, Callable[..., Any] | None] = dict.fromkeys(
    ("reverse", "sort", "addition", "multiply", "lookup"))


def token_env_id(task: str) -> str:
    return f"rollax/Tokens-{task.capitalize()}-v0"


def register_task(name: str, factory: Callable[..., Any]) -> None:
    """Make `factory(**params) -> TokenTask` available as `rollax/Tokens-<Name>-v0`."""
    if name in _TASKS or token_env_id(name) in registered_ids():
        raise ValueError(f"token task {name!r} is already registered ({token_env_id(name)})")
    _TASKS[name] = factory
    register(token_env_id(name), _factory(name))


def register_token_model(name: str, factory: Callable[..., Any], **options: Any) -> None:
    """Your own causal language model as `[agent.network] kind = name` (the protocol:
    `rollax.tokens.models`)."""
    from rollax.tokens.models import register_token_model as register_model

    register_model(name, factory, **options)


def register_text_task(task: Any, reward_funcs: Sequence[str | Callable] | None = None,
                       reward_weights: Sequence[float] | None = None) -> str:
    """Make a `TextTask` (`TextTask.from_jsonl`, `from_csv`) the env `rollax/Tokens-<Name>-v0`
    and return that id. `reward_funcs` (registered names or callables) train it with their
    `reward_weights`-weighted sum; without them, with exact match to the answers."""
    from rollax.tokens.text import TextTask, with_rewards

    if not isinstance(task, TextTask):
        raise ValueError(f"register_text_task takes a TextTask (TextTask.from_jsonl or "
                         f"from_csv), got {type(task).__name__}")
    task = with_rewards(task, reward_funcs, reward_weights)
    register_task(task.name, lambda: task)
    return token_env_id(task.name)


def make_text_env(data: str, name: str = "text", rewards: Sequence[str] | None = None,
                  reward_weights: Sequence[float] | None = None, partial_credit: bool = False,
                  **options: Any):
    """`rollax/Tokens-Text-v0`: the task of a data file (`TextTask.from_file(data, name,
    **options)`) trained with the registered `rewards`, as a preset names it."""
    from rollax.tokens.env import make_token_env
    from rollax.tokens.text import TextTask, with_rewards

    if not isinstance(data, str):
        raise ValueError(f"rollax/Tokens-Text-v0: data={data!r} must be a file path")
    try:
        task = TextTask.from_file(data, name, **options)
    except TypeError as err:  # an unknown option: say which env it was for
        raise ValueError(f"rollax/Tokens-Text-v0: {err}") from None
    return make_token_env(with_rewards(task, rewards, reward_weights), partial_credit)


def make_edits_env(partial_credit: bool = False, test_fraction: float = 0.1, seed: int = 0):
    """`rollax/Tokens-Edits-v0`: the shipped word-edit data set (`tools/make_edits_data.py`),
    trained with correctness (`exact_answer`, weight 1) and format (`word_count`, 0.1)."""
    from importlib.resources import files

    data = str(files("rollax.tokens") / "data" / "edits.jsonl")
    return make_text_env(data, "edits", ["exact_answer", "word_count"], [1.0, 0.1],
                         partial_credit, test_fraction=test_fraction, seed=seed)


def _factory(task: str) -> EnvFactory:
    def make(partial_credit: bool = False, tool: str | None = None, max_turns: int = 2,
             demonstration_share: float = 0.5, **task_params: Any):
        """Task params (e.g. `min_digits`, `max_digits`, `max_operand`) build the task; with a
        registered `tool`, its episodes may call it (`turns.with_tool`)."""
        from rollax.tokens import tasks
        from rollax.tokens.env import check_task_outputs, make_token_env

        factory = _TASKS[task] or getattr(tasks, f"{task}_task")
        try:
            built = factory(**task_params)
        except TypeError as err:  # an unknown keyword: say which env it was for
            raise ValueError(f"{token_env_id(task)}: {err}") from None
        if tool is not None:
            from rollax.tokens.turns import with_tool

            built = with_tool(built, tool, max_turns, demonstration_share)
        env = make_token_env(built, partial_credit)
        if _TASKS[task] is not None:  # a user's task: run it once before anything trains
            check_task_outputs(built)
        return env

    return make


for _task in _TASKS:
    register(token_env_id(_task), _factory(_task))
register("rollax/Tokens-Text-v0", make_text_env)
register("rollax/Tokens-Edits-v0", make_edits_env)
register_policy_kind("transformer", "rollax.tokens.policy:TRANSFORMER_KIND")
register_batch_sources("rollax.tokens.env:TokenEnv", "rollax.tokens.source:Completions")
