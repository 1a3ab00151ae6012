"""A token task as a gymnax environment: `rollax/Tokens-<Task>-v0`.

Observation: the prompt and the tokens generated so far, `[prompt_length + completion_length]`
ids, PAD after them. Action: the next token. The episode terminates when the action is EOS and
is truncated (not terminated) after `completion_length` tokens without one (or, with a tool, at
a call past the turn limit); the verifier's reward comes on that last step, 0 on the others.
With a tool (`turns.with_tool`), the step of a call writes the tool's answer after it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from rollax.tokens.tasks import TokenTask
from rollax.tokens.tokenizer import EOS, PAD


@struct.dataclass
class TokenEnvState(environment.EnvState):
    tokens: jax.Array  # [prompt_length + completion_length]
    time: int  # tokens written so far (the policy's and a tool's)
    cut: bool = False  # ended by a turn limit


@struct.dataclass
class TokenEnvParams(environment.EnvParams):
    max_steps_in_episode: int = 1  # the task's completion_length (set by the env)
    partial_credit: bool = False  # reward = share of the answer's tokens right, not exact match


class TokenEnv(environment.Environment[TokenEnvState, TokenEnvParams]):
    def __init__(self, task: TokenTask):
        super().__init__()
        self.task = task
        self.prompt_length, self.completion_length = task.prompt_length, task.completion_length
        self.length = task.prompt_length + task.completion_length

    @property
    def default_params(self) -> TokenEnvParams:
        return TokenEnvParams(max_steps_in_episode=self.completion_length)

    @property
    def name(self) -> str:
        return f"Tokens-{self.task.name.capitalize()}-v0"

    @property
    def num_actions(self) -> int:
        return self.task.tokenizer.vocab_size

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(0, self.num_actions - 1, (self.length,), jnp.int32)

    def reset_env(self, key: jax.Array, params: TokenEnvParams):
        prompt = self.task.sample(key).astype(jnp.int32)
        tokens = jnp.concatenate([prompt, jnp.full((self.completion_length,), PAD, jnp.int32)])
        state = TokenEnvState(tokens=tokens, time=jnp.int32(0))
        return tokens, state

    def get_obs(self, state: TokenEnvState, params: Any = None, key: Any = None) -> jax.Array:
        return state.tokens

    def step_env(self, key: jax.Array, state: TokenEnvState, action: Any, params: TokenEnvParams):
        action = jnp.asarray(action, jnp.int32)
        tokens, time, cut = self.task.turns.step(state.tokens, self.prompt_length, state.time, action)
        state = TokenEnvState(tokens=tokens, time=time, cut=cut)
        terminated = action == EOS
        finished = terminated | cut | (state.time >= params.max_steps_in_episode)
        prompt, completion = tokens[:self.prompt_length], tokens[self.prompt_length:]
        reward = jnp.where(finished, self.task.verify(prompt, completion, params.partial_credit), 0.0)
        return tokens, state, reward.astype(jnp.float32), terminated, {"discount": 1.0 - terminated}

    def is_truncated(self, state: TokenEnvState, params: TokenEnvParams) -> jax.Array:
        """Out of room without an EOS: a time limit, not a terminal state."""
        last = state.tokens[self.prompt_length + jnp.maximum(state.time, 1) - 1]
        return state.cut | ((state.time >= params.max_steps_in_episode) & (last != EOS))


def make_token_env(task: TokenTask, partial_credit: bool = False) -> tuple[TokenEnv, TokenEnvParams]:
    """`(env, params)` for `task` (checked by `check_task`); `partial_credit` as in
    `TokenEnvParams`."""
    if not isinstance(partial_credit, bool):
        raise ValueError(f"partial_credit must be true or false, got {partial_credit!r}")
    check_task(task)
    env = TokenEnv(task)
    return env, env.default_params.replace(partial_credit=partial_credit)


CHECKED_PROMPTS = 1024  # vmapped: a sampler that breaks on 1% of prompts shows here


def check_task(task: TokenTask) -> None:
    """A ValueError naming the function of `task` whose output has the wrong shape or dtype;
    abstract (`eval_shape`), so every env pays nothing for it."""
    prompt = jax.eval_shape(task.sample, jax.random.key(0))
    _check_ids_shape(f"task {task.name!r}: sample(key)", prompt, (task.prompt_length,))
    completion = jax.eval_shape(task.demonstrate, prompt)
    _check_ids_shape(f"task {task.name!r}: demonstrate(prompt)", completion, (task.completion_length,))
    reward = jax.eval_shape(task.verify, prompt, completion, False)
    if reward.shape != ():
        raise ValueError(f"task {task.name!r}: verify(prompt, completion, partial) must return one "
                         f"reward (shape ()), got shape {reward.shape}")


def check_task_outputs(task: TokenTask) -> None:
    """A ValueError when, on a few sampled prompts, `task` gives token ids outside its
    vocabulary or non-finite rewards (for the demonstrations and for an empty answer). It
    compiles the task's functions (~1 s), so it runs for users' registered tasks; the built-in
    ones are tested."""
    vocab = task.tokenizer.vocab_size
    prompts, answers, rewards = (np.asarray(x) for x in _on_samples(task))
    for what, ids in (("sample(key)", prompts), ("demonstrate(prompt)", answers)):
        outside = ids[(ids < 0) | (ids >= vocab)]
        if outside.size:
            raise ValueError(f"task {task.name!r}: {what} gave token id {int(outside[0])} outside "
                             f"the vocabulary [0, {vocab})")
    bad = rewards[~np.isfinite(rewards)]
    if bad.size:
        raise ValueError(f"task {task.name!r}: verify(prompt, completion, partial) returned "
                         f"{float(bad[0])} on sampled prompts; rewards must be finite")


def _check_ids_shape(what: str, value: Any, shape: tuple[int, ...]) -> None:
    if value.shape != shape or not jnp.issubdtype(value.dtype, jnp.integer):
        raise ValueError(f"{what} must return token ids {list(shape)} (integers), got "
                         f"{value.dtype}{list(value.shape)}")


@jax.jit(static_argnums=0)
def _on_samples(task: TokenTask):
    """`(prompts, demonstrations, rewards of both demonstrations and empty answers under
    exact match and partial credit)` on `CHECKED_PROMPTS` sampled prompts."""
    prompts = jax.vmap(task.sample)(jax.random.split(jax.random.key(0), CHECKED_PROMPTS))
    answers = jax.vmap(task.demonstrate)(prompts)
    empty = jnp.full_like(answers, PAD).at[:, 0].set(EOS)
    rewards = [jax.vmap(task.verify, in_axes=(0, 0, None))(prompts, completions, partial)
               for completions in (answers, empty) for partial in (False, True)]
    return prompts, answers, jnp.stack(rewards)
