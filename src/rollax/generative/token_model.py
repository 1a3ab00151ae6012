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
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rollax.checks import check_int, check_number
from rollax.envs.registry import make
from rollax.envs.token_tasks import EOS, TokenTask
from rollax.generative.pretrained import cache_dir, read_weights, write_weights
from rollax.networks.transformer import TransformerPolicy
from rollax.rollout.generation import generate
from rollax.rollout.sequences import held_out_prompts

CACHE_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WarmStartConfig:
    width: int = 64
    layers: int = 2
    heads: int = 4
    batch_size: int = 64
    learning_rate: float = 3e-4
    max_steps: int = 5000
    eval_every: int = 10
    eval_prompts: int = 500
    target_success: float = 0.3  # stop at the first check at or above it
    seed: int = 0

    def __post_init__(self):
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


def greedy_success(model, task: TokenTask, prompts: jax.Array) -> jax.Array:
    """Mean exact-match reward of the greedy completions of `prompts`."""
    completions = generate(model, prompts, jax.random.key(0), task.completion_length,
                           greedy=True).completions
    return jnp.mean(jax.vmap(task.verify, in_axes=(0, 0, None))(prompts, completions, False))


def demonstration_loss(model, prompts: jax.Array, task: TokenTask) -> jax.Array:
    """Mean cross-entropy of the demonstrations' tokens (up to and including EOS)."""
    demos = jax.vmap(task.demonstrate)(prompts)
    tokens = jnp.concatenate([prompts, demos], axis=1)
    logits = model(tokens[:, :-1]).logits[:, task.prompt_length - 1:]
    counted = (jnp.cumsum(demos == EOS, axis=1) - (demos == EOS)) == 0
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, demos)
    return jnp.sum(nll * counted) / jnp.sum(counted)


def warm_start(env_id: str, config: WarmStartConfig | None = None, **env_params: Any
               ) -> tuple[TransformerPolicy, dict[str, Any]]:
    """`(model, report)`: the warm-started policy for the token env `env_id` (trained on first
    use, then read from the cache); the report has its held-out `success` and `steps`."""
    config = config or WarmStartConfig()
    env, _ = make(env_id, **env_params)
    task = getattr(env, "task", None)
    if not isinstance(task, TokenTask):
        raise ValueError(f"{env_id!r} is not a token-task env (rollax/Tokens-<Task>-v0)")
    payload = {"format": CACHE_FORMAT_VERSION, "env": env_id, "params": env_params,
               **dataclasses.asdict(config)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"tokens-{task.name}-{digest}.npz"
    model = token_policy(task, config)
    if path.exists():
        try:
            return model, {**read_weights(path, model), "source": "cache", "path": str(path)}
        except Exception as error:  # noqa: BLE001  (any unreadable file is retrained)
            warnings.warn(f"cached warm start at {path} is unreadable ({error}); retraining", stacklevel=2)
    print(f"warm-starting a token policy on {env_id} (first use; cached afterwards in "
          f"{path.parent})...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    report = _train(model, task, config)
    report["train_seconds"] = round(time.perf_counter() - start, 2)
    print(f"warm start: greedy success {report['success']:.3f} on {config.eval_prompts} held-out "
          f"prompts after {report['steps']} steps ({report['train_seconds']:.1f} s)",
          file=sys.stderr, flush=True)
    write_weights(path, model, report)
    return model, {**report, "source": "trained", "path": str(path)}


def _train(model: TransformerPolicy, task: TokenTask, config: WarmStartConfig) -> dict[str, Any]:
    optimizer = nnx.Optimizer(model, optax.adam(config.learning_rate), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    evaluation_prompts = held_out_prompts(task, config.eval_prompts, config.seed)
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
        return state, losses[-1], greedy_success(model, task, evaluation_prompts)

    steps, success, loss = 0, 0.0, float("nan")
    while steps < config.max_steps and success < config.target_success:
        state, loss, success = jax.device_get(chunk(state, steps))
        steps += config.eval_every
    nnx.update((model, optimizer), state)
    if success < config.target_success:
        warnings.warn(f"warm start reached greedy success {success:.3f} < target "
                      f"{config.target_success} in max_steps={config.max_steps}", stacklevel=3)
    return {"success": float(success), "steps": steps, "loss": float(loss)}
