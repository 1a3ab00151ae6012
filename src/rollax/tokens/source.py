"""Sampled completions of a token task: the batch source of every algorithm on
`rollax/Tokens-*` envs, and their greedy evaluation on held-out prompts.

Each prompt is repeated G times in contiguous rows (G = 1 for algorithms that compare no
samples); the policy samples a whole completion per row with its key/value cache
(`generation.generate`), and the task's verifier scores it. The batch is `Sequences` in the
token-model convention: `observations = tokens[:, :-1]`, `actions = tokens[:, 1:]`, with
per-token log-probs and a `mask` over the completion's tokens (its EOS included), so every
algorithm scores it with one `model(observations)`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.networks.policy import score_actions
from rollax.rl.utils import sequence_sum, tied_groups
from rollax.rollout.batches import Sequences
from rollax.rollout.sources import FAULT, BatchSource, check_whole_samples
from rollax.tokens.generation import Generation
from rollax.tokens.tokenizer import EOS, PAD
from rollax.tokens.toolbox import RESULT_CLOSE, RESULT_OPEN

HELD_OUT = 1  # the key stream of held-out prompts; training draws from others
TEXT_SAMPLES = 8  # held-out prompts whose completions a run shows as text


class Completions(BatchSource):
    """`num_envs / group_size` prompts, `group_size` completions each, per iteration; evaluated
    by greedy exact match on `eval_episodes` held-out prompts (the warm start's)."""

    batch_type = Sequences

    def __init__(self, env: Any, env_params: Any, settings: Any):
        super().__init__(env, env_params, settings)
        self.task = env.task
        if self.task.rewards is not None:
            self.task.rewards.failure = None  # a new run: no earlier run's message
        held_out = self.task.held_out
        if held_out is not None and settings.eval_episodes > len(held_out):
            raise ValueError(f"eval.episodes={settings.eval_episodes} is more than task "
                             f"{self.task.name!r}'s {len(held_out)} held-out prompts")
        self.eval_prompts = np.asarray(held_out_prompts(self.task, settings.eval_episodes))
        vocab = self.task.tokenizer.vocab_size
        if outside := [int(i) for i in self.eval_prompts.ravel() if not 0 <= i < vocab]:
            raise ValueError(f"task {self.task.name!r}: sample(key) gave token id {outside[0]} "
                             f"outside the vocabulary [0, {vocab}) on a held-out prompt")

    def check(self, algorithm_name: str) -> None:
        check_whole_samples(self.settings, algorithm_name, "completion")

    def check_policy(self, model: Any) -> None:
        check_model_fits(model, self.task)

    def sample(self, policy: Any, reference: Any, state: Any, key: jax.Array):
        settings, group_size = self.settings, self.settings.group_size
        samples, reward_metrics = sample_completions(
            policy, self.env, self.env_params, key, settings.num_envs // group_size, group_size)
        samples = settings.shard(samples)
        mask = samples.mask
        # every algorithm's KL to the reference, measured the same way
        reference_log_probs = score_actions(reference, samples.observations, samples.actions,
                                            mask.shape).log_probs
        metrics = {**completion_metrics(samples.actions, mask), **reward_metrics,
                   "kl_to_reference": sequence_kl(samples.log_probs, reference_log_probs, mask)}
        if group_size > 1:  # prompts whose completions all scored the same
            metrics["frac_reward_zero_std"] = jnp.mean(tied_groups(samples.rewards, group_size)
                                                       .astype(jnp.float32))
        if settings.needs_reference:
            samples = samples.replace(ref_log_probs=reference_log_probs)
        if settings.needs_values:  # V per token, under the sampling parameters
            samples = samples.replace(values=score_actions(
                policy, samples.observations, samples.actions, mask.shape).values)
        rewards = samples.rewards
        metrics.update(task_faults(self.task, samples.observations, rewards))
        episodes = (rewards, jnp.sum(mask, 1).astype(jnp.int32), jnp.ones_like(rewards, bool))
        return state, samples, episodes, metrics

    def evaluate(self, policy: Any, key: jax.Array):
        return evaluate_completions(policy, self.task, self.eval_prompts)

    def fault_detail(self, description: str) -> str:
        rewards = self.task.rewards
        if rewards is not None and rewards.failure and \
                description == python_reward_fault(self.task).removeprefix(FAULT):
            return rewards.failure
        return description

    @property
    def shows_texts(self) -> bool:
        return True

    def text_samples(self, policy: Any, key: jax.Array) -> dict:
        return completion_samples(policy, self.env, self.env_params,
                                  self.eval_prompts[:TEXT_SAMPLES], key)

    def format_texts(self, samples: dict) -> str:
        return samples_table(self.task, samples)

    def generate_texts(self, model: nnx.Module, prompts: list[str], key: jax.Array,
                       greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
                       transcript: bool = False) -> list[str] | list[list[dict[str, str]]]:
        """The answers to `prompts` (without the prompt and the end token; with a tool, what the
        policy wrote after the tool's last answer), or with `transcript` each episode's turns
        `[{"role": "policy" | "tool", "text": ...}]`."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings, got {prompts!r}")
        if not prompts:
            raise ValueError("prompts is empty: give at least one prompt")
        if empty := [i for i, prompt in enumerate(prompts) if not prompt.strip()]:
            raise ValueError(f"prompts[{empty[0]}] is empty: a prompt of task "
                             f"{self.task.name!r} has text to complete")
        if not (isinstance(temperature, (int, float)) and 0 < temperature < float("inf")):
            raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or \
                not 0 <= top_k <= self.task.tokenizer.vocab_size:
            raise ValueError(f"top_k={top_k!r} must be an integer in [0, "
                             f"{self.task.tokenizer.vocab_size}] (0: no limit)")
        ids = jnp.asarray(np.stack([self.task.encode_prompt(p) for p in prompts]))
        graphdef, state = nnx.split(model)
        completions, mask, answers = (np.asarray(x) for x in _generate(
            graphdef, state, ids, key, self.task, greedy, temperature, top_k))
        if transcript:
            return [turns_of(self.task.tokenizer, c, m) for c, m in zip(completions, mask, strict=True)]
        return [self.task.tokenizer.decode(a) for a in answers]


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7))
def _generate(graphdef, state, prompts, key, task, greedy, temperature, top_k):
    generation = task.turns.generate(nnx.merge(graphdef, state), prompts, key,
                                     task.completion_length, temperature=temperature,
                                     top_k=top_k, greedy=greedy)
    return generation.completions, generation.mask, \
        jax.vmap(task.turns.final_answer)(generation.completions)


def turns_of(tokenizer: Any, completion: np.ndarray, mask: np.ndarray) -> list[dict[str, str]]:
    """An episode's turns `[{"role": "policy" | "tool", "text": ...}]`: the runs of the
    policy's tokens (`mask`) and of a tool's (its answer's markers dropped), without EOS."""
    turns: list[dict[str, str]] = []
    for token, acting in zip(map(int, completion), map(bool, mask), strict=True):
        if token in (PAD, EOS):
            continue
        role = "policy" if acting else "tool"
        if not turns or turns[-1]["role"] != role:
            turns.append({"role": role, "text": ""})
        char = tokenizer.chars[token - 2]
        if acting or char not in (RESULT_OPEN, RESULT_CLOSE):
            turns[-1]["text"] += char
    return turns


def check_model_fits(model: Any, task: Any) -> None:
    """A ValueError when `model` is not a token model of `task`'s vocabulary."""
    vocab = getattr(model, "vocab_size", None)
    if vocab is None or getattr(model, "max_length", None) is None:
        raise ValueError(f"task {task.name!r} samples completions with a token model (with "
                         "vocab_size and max_length attributes; rollax.tokens.models): "
                         "agent.network.kind = 'transformer' or a registered token model")
    if vocab != task.tokenizer.vocab_size:
        raise ValueError(f"the model's vocab_size={vocab} does not match task {task.name!r}'s "
                         f"vocabulary of {task.tokenizer.vocab_size} tokens")


def held_out_prompts(task: Any, count: int, seed: int = 0) -> jax.Array:
    """`[count, prompt_length]` prompts of `task` from a key stream training never draws from:
    what the warm start and every evaluation of a token run are judged on. A task with fixed
    `held_out` prompts (a data set's test rows) gives those, in order, repeated to `count`."""
    if task.held_out is not None:
        return jnp.asarray(np.resize(task.held_out, (count, task.prompt_length)))
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), HELD_OUT), count)
    return jax.vmap(task.sample)(keys)


def shifted(generation: Generation, prompt_length: int) -> tuple[jax.Array, ...]:
    """`(observations, actions, mask, log_probs)` `[B, P + L - 1]` of a generation."""
    observations, actions = generation.tokens[:, :-1], generation.tokens[:, 1:]
    place = lambda x, fill: jnp.full(actions.shape, fill, x.dtype).at[:, prompt_length - 1:].set(x)
    return observations, actions, place(generation.mask, False), place(generation.log_probs, 0.0)


def sample_completions(model: Callable, env: Any, env_params: Any, key: jax.Array,
                       num_prompts: int, group_size: int) -> tuple[Sequences, dict[str, jax.Array]]:
    """`num_prompts * group_size` completions `[p0g0, p0g1, ..., p1g0, ...]` with their rewards,
    in the token-model convention (see the module docstring), and the metrics of the task's
    Python rewards (each one's mean and std; none for a verifier)."""
    prompt_key, sample_key = jax.random.split(key)
    task = env.task
    check_model_fits(model, task)
    prompts = jnp.repeat(jax.vmap(task.sample)(jax.random.split(prompt_key, num_prompts)), group_size, axis=0)
    generation = task.turns.generate(model, prompts, sample_key, task.completion_length)
    rewards, metrics = completion_rewards(task, env_params, prompts, generation.completions)
    metrics.update(task.turns.metrics(generation, rewards))
    observations, actions, mask, log_probs = shifted(generation, task.prompt_length)
    return Sequences(observations, actions, mask, rewards, log_probs,
                     truncated=cut_without_eos(actions, mask), group_size=group_size), metrics


def completion_rewards(task: Any, env_params: Any, prompts: jax.Array, completions: jax.Array
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training rewards `[B]`: the task's Python rewards (weighted sum) where it has them,
    else its verifier; with each Python reward's `rewards/<name>/mean` and `.../std`."""
    if task.rewards is None:
        return jax.vmap(task.verify, in_axes=(0, 0, None))(
            prompts, completions, env_params.partial_credit).astype(jnp.float32), {}
    values = task.rewards.score(prompts, completions)
    metrics = {}
    for i, name in enumerate(task.rewards.names):
        metrics[f"rewards/{name}/mean"] = jnp.mean(values[:, i])
        metrics[f"rewards/{name}/std"] = jnp.std(values[:, i])
    return task.rewards.total(values), metrics


def cut_without_eos(actions: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B]`: the completion `actions [B, T]` (under `mask`) reached the length limit without
    an EOS."""
    return ~jnp.any((actions == EOS) & mask, axis=1)


def completion_metrics(actions: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Lengths (tokens, EOS included) of completions `actions [B, T]` under `mask`, and the
    share cut at the maximum length without an EOS."""
    lengths = jnp.sum(mask, axis=1).astype(jnp.float32)
    return {"completion_length": jnp.mean(lengths), "completion_length_min": jnp.min(lengths),
            "completion_length_max": jnp.max(lengths),
            "frac_truncated": jnp.mean(cut_without_eos(actions, mask).astype(jnp.float32))}


def completion_samples(model: Callable, env: Any, env_params: Any, prompts: jax.Array,
                       key: jax.Array) -> dict[str, jax.Array]:
    """Greedy and sampled completions `[N, L]` of `prompts` with their rewards `[N]`: what
    `samples_table` shows."""
    out = {"prompts": prompts}
    rewards = env.task.rewards
    for name, greedy in (("greedy", True), ("sampled", False)):
        completions = env.task.turns.generate(model, prompts, key, env.task.completion_length,
                                              greedy=greedy).completions
        out[name] = completions
        if rewards is None:
            out[f"{name}_reward"] = jax.vmap(env.task.verify, in_axes=(0, 0, None))(
                prompts, completions, env_params.partial_credit)
        else:  # each Python reward's value, shown beside their weighted sum
            out[f"{name}_rewards"] = values = rewards.score(prompts, completions)
            out[f"{name}_reward"] = rewards.total(values)
    return out


def samples_table(task: Any, samples: dict) -> str:
    """`completion_samples` (host arrays) as a Markdown table of texts: TensorBoard's text tab
    renders it (with a task's Python rewards, each one's value after the sum, and the texts as
    those rewards read them: a PAD inside a completion shown as U+FFFD)."""
    prompt_text = task.tokenizer.decode
    text = prompt_text if task.rewards is None else task.rewards.text

    def reward(kind, i):
        cell = f"{float(samples[f'{kind}_reward'][i]):.2f}"
        if task.rewards is None:
            return cell
        parts = ", ".join(f"{name} {float(value):.2f}" for name, value in
                          zip(task.rewards.names, samples[f"{kind}_rewards"][i], strict=True))
        return f"{cell} ({parts})"

    rows = ["| prompt | greedy | reward | sampled | reward |", "|---|---|---|---|---|"]
    for i, prompt in enumerate(samples["prompts"]):
        rows.append(f"| `{prompt_text(prompt)}` | `{text(samples['greedy'][i])}` | {reward('greedy', i)} "
                    f"| `{text(samples['sampled'][i])}` | {reward('sampled', i)} |")
    return "\n".join(rows)


def sequence_kl(log_probs: jax.Array, reference_log_probs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over completions of sum over their tokens of log pi - log pi_ref: under samples of
    pi, the k1 estimate of KL(pi || pi_ref) per completion."""
    return jnp.mean(sequence_sum(log_probs - reference_log_probs, mask))


def task_faults(task: Any, tokens: jax.Array, rewards: jax.Array) -> dict[str, jax.Array]:
    """Counts of the batch's breaks of the task's contract, which the loop turns into an error
    naming the task: prompt ids outside the vocabulary (the embedding would give NaN logits for
    them) and rewards that are not finite (from the verifier, or a failed Python reward)."""
    vocab = task.tokenizer.vocab_size
    not_finite = python_reward_fault(task) if task.rewards is not None else (
        f"{FAULT}task {task.name!r}: verify(prompt, completion, partial) gave a reward that "
        "is not finite")
    return {
        f"{FAULT}task {task.name!r}: sample(key) gave token ids outside the vocabulary "
        f"[0, {vocab})": jnp.sum((tokens < 0) | (tokens >= vocab)),
        not_finite: jnp.sum(~jnp.isfinite(rewards)),
    }


def python_reward_fault(task: Any) -> str:
    """The fault a failed Python reward reports; `Completions.fault_detail` says which."""
    return f"{FAULT}task {task.name!r}: a Python reward function failed"


def evaluate_completions(model: Callable, task: Any, prompts: jax.Array
                         ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Greedy completions of `prompts`: their success `[N]` (exact match, also when training
    rewards partial credit: evaluations stay comparable across runs, and with the warm start's)
    and length metrics."""
    check_model_fits(model, task)
    generation = task.turns.generate(model, prompts, jax.random.key(0), task.completion_length,
                                     greedy=True)
    success = jax.vmap(task.verify, in_axes=(0, 0, None))(prompts, generation.completions, False)
    return success, completion_metrics(generation.completions, generation.mask)
