"""The supervised warm start of a token policy, cached like the pretrained digit models.

Cross-entropy on a token task's demonstrations until the greedy exact-match success on
held-out prompts reaches `target_success` (checked every `eval_every` steps), so that the model
starts RL at a moderate success rate and the improvement measured afterwards is RL's. The
warm-started model is also the frozen reference of the KL anchor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rollax.cache import models_dir
from rollax.checks import check_int, check_number
from rollax.envs.registry import make
from rollax.networks.policy import policy_output
from rollax.tokens.source import evaluate_completions, held_out_prompts
from rollax.tokens.tasks import TokenTask, through_first_eos
from rollax.tokens.transformer import TransformerPolicy
from rollax.weights import cached_or_trained

# bump when a task's prompts or the model change (2: addition's operands in their own slots)
CACHE_FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    """Supervised warm start of a token policy (`warm_start`): the transformer's
    size, then cross-entropy on demonstrations until greedy exact match on held-out prompts
    reaches `target_success` (checked every `eval_every` steps) or `max_steps` pass."""

    width: int = 64
    layers: int = 2
    heads: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-4
    max_steps: int = 5000
    eval_every: int = 10
    eval_prompts: int = 500
    target_success: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "layers", "heads", "batch_size", "max_steps", "eval_every", "eval_prompts"):
            check_int(f"WarmStartConfig.{name}", getattr(self, name), 1)
        check_number("WarmStartConfig.learning_rate", self.learning_rate, 0.0, 1.0, low_open=True)
        check_number("WarmStartConfig.target_success", self.target_success, 0.0, 1.0, low_open=True)


def token_policy(task: TokenTask, config: WarmStartConfig, value_head: bool = False,
                 rngs: nnx.Rngs | None = None) -> TransformerPolicy:
    """An untrained transformer sized for `task` (prompt plus completion)."""
    return TransformerPolicy(task.tokenizer.vocab_size, task.prompt_length + task.completion_length,
                             width=config.width, layers=config.layers, heads=config.heads,
                             value_head=value_head, rngs=rngs or nnx.Rngs(config.seed))


def demonstration_loss(model, prompts: jax.Array, task: TokenTask) -> jax.Array:
    """Mean cross-entropy of the demonstrations' tokens (up to and including EOS) that the
    policy writes (a tool's answers are context, not targets)."""
    demos = jax.vmap(task.demonstrate)(prompts)
    tokens = jnp.concatenate([prompts, demos], axis=1)
    logits = policy_output(model(tokens[:, :-1]), True).distribution.logits[:, task.prompt_length - 1:]
    counted = jax.vmap(through_first_eos)(demos) & ~jax.vmap(task.turns.observed)(demos)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, demos)
    return jnp.sum(nll * counted) / jnp.sum(counted)


def warm_start(env_id: str, config: WarmStartConfig | None = None, *,
               build: Callable[[TokenTask, nnx.Rngs], nnx.Module] | None = None,
               model_id: dict[str, Any] | None = None, **env_params: Any
               ) -> tuple[nnx.Module, dict[str, Any]]:
    """`(model, report)`: the warm-started policy for the token env `env_id` (trained on first
    use, then read from the cache); the report has its held-out `success` and `steps`. The
    model is config's transformer, or `build(task, rngs)` (a registered token model, cached
    by its `model_id`)."""
    config = config or WarmStartConfig()
    if build is None:
        build = lambda task, rngs: token_policy(task, config, rngs=rngs)
    env, _ = make(env_id, **env_params)
    task = getattr(env, "task", None)
    if not isinstance(task, TokenTask):
        raise ValueError(f"{env_id!r} is not a token-task env (rollax/Tokens-<Task>-v0)")
    payload = {"format": CACHE_FORMAT_VERSION, "env": env_id, "params": env_params,
               **dataclasses.asdict(config)}
    if fingerprint := getattr(task, "fingerprint", None):  # a data set's rows, not its id
        payload["data"] = fingerprint
    if model_id is not None:
        payload["model"] = model_id
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    path = models_dir() / f"tokens-{task.name}-{digest}.npz"
    fresh = lambda: build(task, nnx.Rngs(config.seed))

    def train():
        model = fresh()
        return model, _train(model, task, config)

    return cached_or_trained(path, fresh, train, f"a token policy on {env_id} (warm start)")


def _train(model: nnx.Module, task: TokenTask, config: WarmStartConfig) -> dict[str, Any]:
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    count = config.eval_prompts if task.held_out is None else min(config.eval_prompts,
                                                                   len(task.held_out))
    evaluation_prompts = held_out_prompts(task, count, config.seed)
    training_keys = jax.random.fold_in(jax.random.key(config.seed), 0)

    @jax.jit
    def chunk(state, first_step):
        def one_step(state, step):
            model, optimizer = nnx.merge(graphdef, state)
            key = jax.random.fold_in(training_keys, step)
            prompts = jax.vmap(task.sample)(jax.random.split(key, config.batch_size))
            loss, grads = nnx.value_and_grad(demonstration_loss)(model, prompts, task)
            optimizer.update(model, grads)
            return nnx.split((model, optimizer))[1], loss

        state, losses = jax.lax.scan(one_step, state, first_step + jnp.arange(config.eval_every))
        model = nnx.merge(graphdef, state)[0]
        return state, losses[-1], jnp.mean(evaluate_completions(model, task, evaluation_prompts)[0])

    steps, success, loss = 0, 0.0, float("nan")
    while steps < config.max_steps and success < config.target_success:
        state, loss, success = jax.device_get(chunk(state, steps))
        steps += config.eval_every
    nnx.update((model, optimizer), state)
    print(f"warm start: greedy success {success:.3f} on {count} held-out prompts "
          f"after {steps} steps", file=sys.stderr, flush=True)
    if success < config.target_success:
        warnings.warn(f"warm start reached greedy success {success:.3f} < target "
                      f"{config.target_success} in max_steps={config.max_steps}", stacklevel=3)
    return {"success": float(success), "steps": steps, "loss": float(loss)}
