"""The token domain: verifiable token tasks over a character tokenizer, their env, a small
transformer with a key/value cache, sampling, the supervised warm start, and the batch source
of sampled completions. Importing the package registers its env ids, its policy kind and its
batch source (no jax); `register_task` adds a task."""

from rollax.tokens.ids import register_task, token_env_id

__all__ = ["register_task", "token_env_id"]
