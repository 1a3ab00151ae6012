"""The token domain: verifiable token tasks over a character tokenizer, their env, a small
transformer with a key/value cache, sampling, the supervised warm start, and the batch source
of sampled completions. Importing the package registers its env ids, its policy kind and its
batch source (no jax); `register_task` adds a task, `register_tool` a tool its episodes
may call."""

from rollax.tokens.ids import (
    register_task,
    register_text_task,
    register_token_model,
    token_env_id,
)
from rollax.tokens.rewards import register_reward
from rollax.tokens.toolbox import register_tool

__all__ = ["TextTask", "register_reward", "register_task", "register_text_task",
           "register_token_model", "register_tool", "token_env_id"]


def __getattr__(name: str):
    if name == "TextTask":  # imports jax: only when asked for
        from rollax.tokens.text import TextTask

        return TextTask
    raise AttributeError(f"module 'rollax.tokens' has no attribute {name!r}")
