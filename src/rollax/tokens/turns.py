"""Multi-turn token episodes with a tool: the policy writes until EOS or a call, the tool's
answer joins the context, and the policy goes on with its key/value cache.

The layout of an episode after its prompt (`[`, `]`, `{`, `}` are `toolbox.MARKERS`):

    [352*78]{27456}27456<EOS>
    ^ policy ^ tool  ^ policy

The policy's tokens are its actions (the `mask` of a `Generation`, so the loss, the entropy
and every KL run over them only); the tool's answer, markers included, is observation. The
call is what the policy wrote between `[` and `]`; a call without `[`, longer than the tool
reads, or that the tool rejects is answered with the tool's error text. The episode ends at the
policy's EOS (terminated), or truncated at the length limit or at a call that would start turn
`max_turns + 1`. The answer that is judged is what the policy wrote after the last `}`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rollax.rollout.sources import FAULT
from rollax.tokens.generation import Generation, check_sampling, decoder, pick
from rollax.tokens.tasks import TokenTask, pack
from rollax.tokens.tokenizer import EOS, PAD, CharTokenizer
from rollax.tokens.toolbox import (
    CALL_CLOSE,
    CALL_OPEN,
    MARKERS,
    RESULT_CLOSE,
    RESULT_OPEN,
    Tool,
    tool,
)

MAX_TURNS = 16
DEMONSTRATION_HASH = 7919  # a prime: which prompts' demonstrations call the tool


@dataclasses.dataclass(frozen=True)
class ToolTurns:
    """How an episode of a task with `tool` is sampled (see the module docstring)."""

    tool: Tool
    max_turns: int
    tokenizer: CharTokenizer

    def id(self, char: str) -> int:
        return self.tokenizer.encode(char)[0]

    def answer(self, call: jax.Array, prompt: jax.Array, valid: jax.Array):
        """`(answer ids [result_length + 2] between the answer markers, ok, bad)`: the tool's
        answer to `call` (ids, PAD after), its error text unless the call is `valid` and the
        tool accepts it; `bad` when it wrote a character outside its `chars`."""
        to_code = jnp.array([0, 0] + [ord(c) for c in self.tokenizer.chars], jnp.int32)
        writes = self.tool.chars
        to_id = jnp.full(max(map(ord, writes)) + 1, -1, jnp.int32)
        to_id = to_id.at[jnp.array([ord(c) for c in writes])].set(
            jnp.array(self.tokenizer.encode(writes), jnp.int32))
        result, ok = self.tool.fn(to_code[call], to_code[prompt])
        ok = jnp.asarray(ok, bool) & valid
        error = jnp.zeros(self.tool.result_length, jnp.int32).at[:len(self.tool.error)].set(
            jnp.array([ord(c) for c in self.tool.error], jnp.int32))
        result = jnp.where(ok, result, error)
        known = (result >= 0) & (result < to_id.shape[0])
        ids = jnp.where(known, to_id[jnp.clip(result, 0, to_id.shape[0] - 1)], -1)
        bad = jnp.any((result != 0) & (ids < 0))
        ids = jnp.where((result == 0) | (ids < 0), PAD, ids)
        framed = jnp.concatenate([jnp.array([self.id(RESULT_OPEN)]), ids,
                                  jnp.array([self.id(RESULT_CLOSE)])])
        keep = jnp.concatenate([jnp.array([True]), ids != PAD, jnp.array([True])])
        return pack(framed, keep, self.tool.result_length + 2, left=False), ok, bad

    def generate(self, model, prompts: jax.Array, key: jax.Array, max_new_tokens: int, *,
                 temperature: float = 1.0, top_k: int = 0, greedy: bool = False) -> Generation:
        """Episodes of `max_new_tokens` tokens after `prompts [B, P]` (PAD after their end),
        with `stats`: per episode its `calls` answered, `good_calls` (well-formed ones) and
        `bad_results` (answers with characters outside the tool's `chars`)."""
        check_sampling(model, prompts, max_new_tokens, temperature, top_k)
        b = prompts.shape[0]
        width = self.tool.call_length
        call_open, call_close = self.id(CALL_OPEN), self.id(CALL_CLOSE)
        answer = jax.vmap(self.answer)
        logits, state, advance = decoder(model, prompts, max_new_tokens)
        zeros = jnp.zeros((b,), jnp.int32)
        no = jnp.zeros((b,), bool)

        def step(carry, inputs):
            logits, state, done, queue, call, length, in_call, overflow, calls, good, bad = carry
            position, step_key = inputs
            forced = ~done & (queue[:, 0] != PAD)  # the tool's answer, one token a step
            acting = ~done & ~forced
            token = jnp.where(done, PAD, jnp.where(forced, queue[:, 0],
                                                   pick(logits, step_key, temperature, top_k, greedy)))
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], 1)[:, 0]
            queue = jnp.where(forced[:, None], jnp.pad(queue[:, 1:], ((0, 0), (0, 1))), queue)
            opens, closes = acting & (token == call_open), acting & (token == call_close)
            inside = acting & in_call & ~opens & ~closes
            call = jnp.where(opens[:, None], PAD, call)
            length, overflow = jnp.where(opens, 0, length), overflow & ~opens
            fits = inside & (length < width)
            call = jnp.where(fits[:, None] & (jnp.arange(width) == length[:, None]), token[:, None], call)
            overflow = overflow | (inside & (length >= width))
            length = length + fits
            answered = closes & (calls + 1 < self.max_turns)
            reply, ok, wrong = answer(call, prompts, in_call & ~overflow)
            queue = jnp.where(answered[:, None], reply, queue)
            calls, good, bad = calls + answered, good + (answered & ok), bad + (answered & wrong)
            in_call = (in_call | opens) & ~closes
            done = done | (acting & (token == EOS)) | (closes & ~answered)
            logits, state = advance(state, token, position)
            return (logits, state, done, queue, call, length, in_call, overflow, calls, good, bad), \
                (token, jnp.where(acting, log_prob, 0.0), acting)

        queue = jnp.full((b, self.tool.result_length + 2), PAD, jnp.int32)
        carry = (logits, state, no, queue, jnp.full((b, width), PAD, jnp.int32), zeros, no, no,
                 zeros, zeros, zeros)
        p = prompts.shape[1]
        carry, (tokens, log_probs, mask) = jax.lax.scan(
            step, carry, (p + jnp.arange(max_new_tokens), jax.random.split(key, max_new_tokens)))
        completions = tokens.T
        stats = {"calls": carry[-3], "good_calls": carry[-2], "bad_results": carry[-1]}
        return Generation(jnp.concatenate([prompts, completions], axis=1), completions,
                          log_probs.T, mask.T, stats)

    def step(self, tokens: jax.Array, start: int, time: jax.Array, action: jax.Array):
        """An env step (`TokenEnv`): the action written at `start + time`; a call there is
        answered after it, as `generate` does, or, past the turn limit, cuts the episode.
        Returns `(tokens, time after them, cut)`."""
        at = start + time
        tokens = tokens.at[at].set(action)
        completion = tokens[start:]
        position = jnp.arange(completion.shape[0])
        close = self.id(CALL_CLOSE)
        closes = action == close
        calls = jnp.sum((completion == close) & (position <= time))  # the tool never writes "]"
        opened = jnp.max(jnp.where((completion == self.id(CALL_OPEN)) & (position < time), position, -1))
        length = time - opened - 1
        valid = (opened >= 0) & (length <= self.tool.call_length) & \
            ~jnp.any((completion == close) & (position > opened) & (position < time))
        call = jnp.where(jnp.arange(self.tool.call_length) < length,
                         jnp.take(completion, opened + 1 + jnp.arange(self.tool.call_length),
                                  mode="clip"), PAD)
        reply = self.answer(call, tokens[:start], valid)[0]
        answered = closes & (calls < self.max_turns)
        written = jnp.where(answered, jnp.sum(reply != PAD), 0)
        index = jnp.where(reply != PAD, at + 1 + jnp.arange(reply.shape[0]), tokens.shape[0])
        tokens = jnp.where(answered, tokens.at[index].set(reply, mode="drop"), tokens)
        return tokens, jnp.minimum(time + 1 + written, completion.shape[0]), closes & ~answered

    def observed(self, completion: jax.Array) -> jax.Array:
        """`[L]`: the tokens of a (demonstration) episode that a tool wrote, markers included."""
        opened = jnp.cumsum(completion == self.id(RESULT_OPEN))
        is_close = completion == self.id(RESULT_CLOSE)
        return opened > jnp.cumsum(is_close) - is_close

    def final_answer(self, completion: jax.Array) -> jax.Array:
        """`[L]`: what the episode wrote after its last `}`, left-aligned."""
        closes = completion == self.id(RESULT_CLOSE)
        after = jnp.cumsum(closes[::-1])[::-1] - closes == 0
        return pack(completion, after & ~closes & (completion != PAD), completion.shape[0],
                    left=False)

    def metrics(self, generation: Generation, rewards: jax.Array) -> dict[str, jax.Array]:
        """Tool calls and turns per episode, the share of well-formed calls and of episodes that
        called the tool, the reward of those that did and did not (NaN where there are none)."""
        stats = generation.stats
        calls = stats["calls"].astype(jnp.float32)
        used = calls > 0
        mean_where = lambda x, m: jnp.sum(jnp.where(m, x, 0.0)) / jnp.where(jnp.any(m), jnp.sum(m), jnp.nan)
        return {
            "tool_calls": jnp.mean(calls),
            "well_formed_calls": jnp.sum(stats["good_calls"]) / jnp.where(jnp.sum(calls) > 0, jnp.sum(calls), jnp.nan),
            "frac_used_tool": jnp.mean(used.astype(jnp.float32)),
            "reward_with_tool": mean_where(rewards, used),
            "reward_without_tool": mean_where(rewards, ~used),
            "turns": jnp.mean(1.0 + calls),
            f"{FAULT}tool {self.tool.name!r} answered with characters outside its chars "
            f"{self.tool.chars!r}": jnp.sum(stats["bad_results"]),
        }


def with_tool(task: TokenTask, tool_name: str, max_turns: int = 2,
              demonstration_share: float = 0.5) -> TokenTask:
    """`task` answered in episodes that may call the registered tool `tool_name` (at most
    `max_turns - 1` calls). Its demonstrations (the warm start's) call the tool as
    `task.demonstrate_call` says on a fixed `demonstration_share` of the prompts and answer
    directly on the others, so that RL has to learn when calling pays."""
    if not isinstance(max_turns, int) or isinstance(max_turns, bool) or \
            not 1 <= max_turns <= MAX_TURNS:
        raise ValueError(f"max_turns={max_turns!r} must be an int in [1, {MAX_TURNS}] (1: a "
                         "call ends the episode unanswered)")
    if not isinstance(demonstration_share, (int, float)) or not 0 <= demonstration_share <= 1:
        raise ValueError(f"demonstration_share={demonstration_share!r} must be in [0, 1]")
    used = tool(tool_name)
    if task.demonstrate_call is None:
        raise ValueError(f"task {task.name!r} has no demonstrate_call, so its warm start cannot "
                         f"show a call to tool {tool_name!r}")
    if clash := sorted(set(task.tokenizer.chars) & set(MARKERS)):
        raise ValueError(f"task {task.name!r}: its vocabulary holds the tool markers {clash}, so a "
                         "prompt could hold a tool call")
    chars = task.tokenizer.chars + "".join(dict.fromkeys(
        c for c in used.chars + MARKERS if c not in task.tokenizer.chars))
    turns = ToolTurns(used, max_turns, CharTokenizer(chars))
    width, reply = used.call_length, used.result_length + 2
    _check_tool(turns, task)
    answer_length = task.completion_length
    length = answer_length + (max_turns - 1) * (width + 2 + reply)
    marker = lambda c: jnp.array([turns.id(c)])

    def demonstrate(prompt):
        call = task.demonstrate_call(prompt)
        call = jnp.pad(call, (0, width - call.shape[0]), constant_values=PAD)
        result = turns.answer(call, prompt, jnp.array(True))[0]
        answer = task.demonstrate(prompt)
        use = jnp.sum(prompt * (jnp.arange(prompt.shape[0]) + 1)) * DEMONSTRATION_HASH % 1000 \
            < demonstration_share * 1000
        pieces = jnp.concatenate([marker(CALL_OPEN), call, marker(CALL_CLOSE), result, answer])
        keep = jnp.concatenate([jnp.array([use]), use & (call != PAD), jnp.array([use]),
                                use & (result != PAD), answer != PAD])
        return pack(pieces, keep, length, left=False)

    def verify(prompt, completion, partial):
        return task.verify(prompt, turns.final_answer(completion)[:answer_length], partial)

    def layout(text):
        if markers := [c for c in MARKERS if c in text]:
            raise ValueError(f"prompt {text!r} holds the tool marker {markers[0]!r}: only the "
                             "policy writes calls and only the tool answers")
        return (task.layout or task.tokenizer.encode)(text)

    return dataclasses.replace(task, tokenizer=turns.tokenizer, completion_length=length,
                               demonstrate=demonstrate, verify=verify, turns=turns, layout=layout)


def _check_tool(turns: ToolTurns, task: TokenTask) -> None:
    """A ValueError when the tool's or the task's call has the wrong shape (abstract)."""
    used = turns.tool
    prompt = jax.ShapeDtypeStruct((task.prompt_length,), jnp.int32)
    call = jax.ShapeDtypeStruct((used.call_length,), jnp.int32)
    try:
        result, ok = jax.eval_shape(used.fn, call, prompt)
    except (TypeError, ValueError) as err:
        raise ValueError(f"tool {used.name!r}: fn(call, prompt) must return (result, ok): {err}") from None
    if result.shape != (used.result_length,) or not jnp.issubdtype(result.dtype, jnp.integer):
        raise ValueError(f"tool {used.name!r}: its result must be {used.result_length} code points "
                         f"(its result_length), got {result.dtype}{list(result.shape)}")
    if getattr(ok, "shape", None) != ():
        raise ValueError(f"tool {used.name!r}: ok must be one boolean, got shape {ok.shape}")
    demo = jax.eval_shape(task.demonstrate_call, prompt)
    if demo.ndim != 1 or demo.shape[0] > used.call_length:
        raise ValueError(f"task {task.name!r}: demonstrate_call(prompt) must give at most "
                         f"{used.call_length} ids (tool {used.name!r}'s call_length), got "
                         f"shape {list(demo.shape)}")

