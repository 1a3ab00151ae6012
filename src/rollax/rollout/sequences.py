"""Groups of sampled completions on a token task: the batch source of GRPO and RLOO on
`rollax/Tokens-*` envs, and their greedy evaluation on held-out prompts.

Each prompt is repeated G times in contiguous rows; the policy samples a whole completion per
row with its key/value cache (`generation.generate`), and the task's verifier scores it. The
batch is in the token-model convention: `observations = tokens[:, :-1]`,
`actions = tokens[:, 1:]`, with per-token log-probs and a `mask` over the completion's tokens
(its EOS included), so every trainer scores it with `model(observations)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rollax.rl.spec import GroupSamples
from rollax.rl.trainer import evaluate_policy, sequence_sum
from rollax.rollout.generation import EOS, Generation, generate

HELD_OUT = 1  # the key stream of held-out prompts; training draws from others


def check_model_fits(model: Any, task: Any) -> None:
    """A ValueError (at trace time, before compiling) when `model` is not a token model of
    `task`'s vocabulary."""
    vocab = getattr(model, "vocab_size", None)
    if vocab != task.tokenizer.vocab_size:
        raise ValueError(f"the model's vocab_size={vocab} does not match task {task.name!r}'s "
                         f"vocabulary of {task.tokenizer.vocab_size} tokens")


def held_out_prompts(task: Any, count: int, seed: int = 0) -> jax.Array:
    """`[count, prompt_length]` prompts of `task` from a key stream training never draws from:
    what the warm start and every evaluation of a token run are judged on."""
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), HELD_OUT), count)
    return jax.vmap(task.sample)(keys)


def shifted(generation: Generation, prompt_length: int) -> tuple[jax.Array, ...]:
    """`(observations, actions, mask, log_probs)` `[B, P + L - 1]` of a generation."""
    observations, actions = generation.tokens[:, :-1], generation.tokens[:, 1:]
    place = lambda x, fill: jnp.full(actions.shape, fill, x.dtype).at[:, prompt_length - 1:].set(x)
    return observations, actions, place(generation.mask, False), place(generation.log_probs, 0.0)


def sample_completions(model: Callable, reference: Callable, env: Any, env_params: Any,
                       key: jax.Array, num_prompts: int, group_size: int) -> GroupSamples:
    """`num_prompts * group_size` completions `[p0g0, p0g1, ..., p1g0, ...]` with the
    verifier's rewards, in the token-model convention (see the module docstring)."""
    prompt_key, sample_key = jax.random.split(key)
    task = env.task
    check_model_fits(model, task)
    prompts = jnp.repeat(jax.vmap(task.sample)(jax.random.split(prompt_key, num_prompts)), group_size, axis=0)
    generation = generate(model, prompts, sample_key, task.completion_length)
    rewards = jax.vmap(task.verify, in_axes=(0, 0, None))(prompts, generation.completions,
                                                        env_params.partial_credit)
    observations, actions, mask, log_probs = shifted(generation, task.prompt_length)

    def reference_log_probs(observations: jax.Array, actions: jax.Array) -> jax.Array:
        # per token, at every position: the caller masks (it may score a subset of the rows)
        return evaluate_policy(reference, observations, actions).log_probs

    return GroupSamples(observations, actions, log_probs, rewards.astype(jnp.float32), group_size,
                        reference_log_probs, mask)


def completion_metrics(actions: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Lengths (tokens, EOS included) of completions `actions [B, T]` under `mask`, and the
    share cut at the maximum length without an EOS."""
    lengths = jnp.sum(mask, axis=1).astype(jnp.float32)
    finished = jnp.any((actions == EOS) & mask, axis=1)
    return {"completion_length": jnp.mean(lengths), "completion_length_min": jnp.min(lengths),
            "completion_length_max": jnp.max(lengths),
            "frac_truncated": jnp.mean((~finished).astype(jnp.float32))}


def completion_samples(model: Callable, env: Any, env_params: Any, prompts: jax.Array,
                       key: jax.Array) -> dict[str, jax.Array]:
    """Greedy and sampled completions `[N, L]` of `prompts` with their rewards `[N]`: what
    `samples_table` shows."""
    out = {"prompts": prompts}
    for name, greedy in (("greedy", True), ("sampled", False)):
        completions = generate(model, prompts, key, env.task.completion_length, greedy=greedy).completions
        out[name] = completions
        out[f"{name}_reward"] = jax.vmap(env.task.verify, in_axes=(0, 0, None))(
            prompts, completions, env_params.partial_credit)
    return out


def samples_table(task: Any, samples: dict) -> str:
    """`completion_samples` (host arrays) as a Markdown table of texts: TensorBoard's text tab
    renders it."""
    text = task.tokenizer.decode
    rows = ["| prompt | greedy | reward | sampled | reward |", "|---|---|---|---|---|"]
    for i, prompt in enumerate(samples["prompts"]):
        rows.append(f"| `{text(prompt)}` | `{text(samples['greedy'][i])}` | "
                    f"{float(samples['greedy_reward'][i]):.2f} | `{text(samples['sampled'][i])}` | "
                    f"{float(samples['sampled_reward'][i]):.2f} |")
    return "\n".join(rows)


def sequence_kl(log_probs: jax.Array, reference_log_probs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over completions of sum over their tokens of log pi - log pi_ref: under samples of
    pi, the k1 estimate of KL(pi || pi_ref) per completion."""
    return jnp.mean(sequence_sum(log_probs - reference_log_probs, mask))


def evaluate_completions(model: Callable, task: Any, prompts: jax.Array
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Greedy completions of `prompts`: their success `[N]` (exact match, also when training
    rewards partial credit: evaluations stay comparable across runs, and with the warm start's)
    and length metrics."""
    check_model_fits(model, task)
    generation = generate(model, prompts, jax.random.key(0), task.completion_length, greedy=True)
    success = jax.vmap(task.verify, in_axes=(0, 0, None))(prompts, generation.completions, False)
    return success, completion_metrics(generation.completions, generation.mask)
