"""Your own causal language model as a policy kind: `register_token_model(name, factory,
**options)` makes `[agent.network] kind = "<name>"` build it for any token task.

The protocol, for a Flax NNX module `factory(vocab_size, max_length, *, value_head, rngs,
**options)` returns:

- attributes `vocab_size` and `max_length` (the longest prompt plus completion it takes);
- `model(tokens [B, T] int32)` -> next-token logits `[B, T, vocab_size]` (or a `PolicyOutput`),
  and with `value_head=True` the pair `(logits, values [B, T])` for PPO. Id 0 is PAD: prompts
  are left-padded with it, and the model must not let real positions attend to it;
- optionally a key/value cache, `init_cache(batch)` and `decode(tokens [B, S], position,
  cache) -> (output for those S positions, cache)`; without them sampling runs the whole
  prefix once per new token (`rollax.tokens.generation.generate_without_cache`).

The kind's `[agent.network]` keys are `options` (with their defaults) plus `warm_start` and
`warm_start_success`: the supervised warm start trains the model itself on the task's
demonstrations, cached by the kind's name and options. Registering imports no jax.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from rollax.networks.kinds import PolicyContext, PolicyKind, register_policy_kind

RESERVED = ("kind", "warm_start", "warm_start_success")


def register_token_model(name: str, factory: Callable[..., Any], **options: Any) -> None:
    """Make `factory` the policy kind `name` (see the module docstring); `options` are its
    `[agent.network]` keys and their defaults."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"token model name {name!r} must be an identifier")
    if not callable(factory):
        raise ValueError(f"token model {name!r}: factory {factory!r} is not callable")
    if clash := sorted(set(options) & set(RESERVED)):
        raise ValueError(f"token model {name!r}: options {clash} are reserved keys of "
                         "[agent.network]")
    # annotations as names ("int"): what rollax.checks.check_types reads
    fields = [("kind", "str", dataclasses.field(default=name)),
              *((key, type(value).__name__, dataclasses.field(default=value))
                for key, value in options.items()),
              ("warm_start", "bool", dataclasses.field(default=True)),
              ("warm_start_success", "float", dataclasses.field(default=0.3))]
    config_class = dataclasses.make_dataclass(f"{name}_network", fields, frozen=True,
                                              namespace={"__post_init__": _check})
    register_policy_kind(name, token_model_kind(name, config_class, factory))


def _check(config: Any) -> None:
    """Each `[agent.network]` value has its default's type; `warm_start_success` in (0, 1]."""
    from rollax.checks import check_number, check_types

    check_types(config, "agent.network")
    check_number("agent.network.warm_start_success", config.warm_start_success, 0.0, 1.0,
                 low_open=True)


def options_of(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.name not in RESERVED}


def token_model_kind(name: str, config_class: type, factory: Callable[..., Any]) -> PolicyKind:
    """The policy kind of a token model `factory` configured by `config_class`."""

    def make(task: Any, config: Any, value_head: bool, rngs: Any):
        return factory(task.tokenizer.vocab_size, task.prompt_length + task.completion_length,
                       value_head=value_head, rngs=rngs, **options_of(config))

    def build(config: Any, context: PolicyContext, rngs: Any):
        return make(task_of(context, name), config, context.critic, rngs)

    def initial_params(config: Any, context: PolicyContext):
        from flax import nnx

        from rollax.tokens.warm_start import WarmStartConfig, warm_start

        task_of(context, name)
        if not config.warm_start:
            return None
        model, _ = warm_start(context.env_id, WarmStartConfig(target_success=config.warm_start_success),
                              build=lambda task, rngs: make(task, config, False, rngs),
                              model_id={"kind": name, **options_of(config)}, **context.env_settings)
        return nnx.state(model, nnx.Param)

    return PolicyKind(name, config_class, build, initial_params)


def task_of(context: PolicyContext, kind: str) -> Any:
    """The token task of the run's env, or a ValueError naming the kind."""
    task = getattr(context.env, "task", None)
    if task is None or not hasattr(task, "tokenizer"):
        raise ValueError(f"agent.network.kind={kind!r} is for token tasks (rollax/Tokens-*), "
                         f"not {context.env_id!r}")
    return task
