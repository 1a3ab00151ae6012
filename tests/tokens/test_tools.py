"""Multi-turn episodes with a tool: the shipped tools against Python's arithmetic and dicts,
the episode layout against transcripts written out by hand (a scripted policy), the cached and
recomputed samplers against each other, the warm start's loss against NumPy, a user's tool,
a short run with its metrics, transcripts and `load_agent(run).generate`, and the bad inputs."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rollax
from rollax.envs.registry import make
from rollax.tokens import register_tool
from rollax.tokens.source import cut_without_eos, turns_of
from rollax.tokens.tasks import multiply_task
from rollax.tokens.tokenizer import EOS, PAD
from rollax.tokens.tools import CALCULATOR, LOOKUP
from rollax.tokens.transformer import TransformerPolicy
from rollax.tokens.turns import with_tool
from rollax.tokens.warm_start import demonstration_loss


def codes(text, length):
    return jnp.array([ord(c) for c in text] + [0] * (length - len(text)), jnp.int32)


def text_of(points):
    return "".join(chr(int(c)) for c in points if c)


def python_calculator(call):
    match = re.fullmatch(r"(\d{1,4})([+*-])(\d{1,4})", call)
    if match is None:
        return None
    a, op, b = int(match[1]), match[2], int(match[3])
    return str(a + b if op == "+" else a - b if op == "-" else a * b)


def test_calculator_is_python_arithmetic_and_rejects_malformed_calls():
    rng = np.random.default_rng(0)
    calls = [f"{rng.integers(0, 10 ** rng.integers(1, 5))}{rng.choice(list('+-*'))}"
             f"{rng.integers(0, 10 ** rng.integers(1, 5))}" for _ in range(200)]
    calls += ["12+", "+3", "1+2+3", "12345*6", "7*", "", "9999*9999", "0-9999", "12e3", "5--2"]
    run = jax.jit(jax.vmap(lambda c: CALCULATOR.fn(c, jnp.zeros(7, jnp.int32))))
    results, ok = run(jnp.stack([codes(c, CALCULATOR.call_length) for c in calls]))
    for call, result, accepted in zip(calls, np.asarray(results), np.asarray(ok), strict=True):
        want = python_calculator(call)
        assert bool(accepted) == (want is not None), call
        if want is not None:
            assert text_of(result) == want, call


def test_lookup_reads_the_prompt_s_table():
    rng = np.random.default_rng(1)
    for _ in range(50):
        keys = rng.permutation(list("abcdefgh"))[:4]
        table = {k: f"{rng.integers(0, 100):02d}" for k in keys}
        prompt = "".join(k + v for k, v in table.items()) + f"{keys[0]}="
        for key in [*keys, "z", ""]:
            result, ok = LOOKUP.fn(codes(key, 1), codes(prompt, len(prompt)))
            assert bool(ok) == (key in table)
            if key in table:
                assert text_of(result) == table[key]


class Scripted:
    """A policy that puts all its probability on `script[t + 1]` at position t: the tokens it
    would write there, whatever a tool answered (so a tool's answer must come from the tool)."""

    def __init__(self, task, scripts):
        ids = [task.encode_prompt(prompt).tolist() + task.tokenizer.encode(text) + [EOS]
               for prompt, text in scripts]
        self.vocab_size = task.tokenizer.vocab_size
        self.max_length = task.prompt_length + task.completion_length
        padded = [row + [PAD] * (self.max_length + 1 - len(row)) for row in ids]
        self.script = jnp.array(padded)

    def __call__(self, tokens):
        following = self.script[:, 1:tokens.shape[1] + 1]
        return 20.0 * jax.nn.one_hot(following, self.vocab_size)


CALCULATOR_TASK = with_tool(multiply_task(), "calculator", max_turns=3)


def episodes(task, scripts):
    prompts = jnp.stack([jnp.asarray(task.encode_prompt(p)) for p, _ in scripts])
    generation = task.turns.generate(Scripted(task, scripts), prompts, jax.random.key(0),
                                     task.completion_length, greedy=True)
    return prompts, generation


def test_an_episode_alternates_the_policy_s_turns_and_the_tool_s_answers():
    """The scripted policy writes '9's where the tool answers: the episode holds the tool's
    answer there, outside the mask, with log-prob 0."""
    scripts = [("352*78=", "[352*78]9999999" + "27456"),  # call, then the answer
               ("352*78=", "27456"),  # no call
               ("352*78=", "[352*78]9999999" + "[2745*10]9999999" + "27456"),  # two calls
               ("352*78=", "[352*78]9999999" + "27457")]  # called, answered wrong
    prompts, generation = episodes(CALCULATOR_TASK, scripts)
    tokenizer = CALCULATOR_TASK.tokenizer
    texts = [tokenizer.decode(c) for c in np.asarray(generation.completions)]
    assert texts == ["[352*78]{27456}27456", "27456", "[352*78]{27456}[2745*10]{27450}27456",
                     "[352*78]{27456}27457"]
    for text, completion, mask, log_probs in zip(texts, *(np.asarray(x) for x in (
            generation.completions, generation.mask, generation.log_probs)), strict=True):
        tool = np.zeros(len(mask), bool)
        for match in re.finditer(r"\{[^}]*\}", text):
            tool[match.start():match.end()] = True
        n = len(text) + 1  # its EOS is the policy's
        assert mask.tolist() == [i < n and not tool[i] for i in range(len(mask))]
        assert np.all(log_probs[~mask] == 0.0)
        assert completion[n - 1] == EOS
    stats = {k: np.asarray(v).tolist() for k, v in generation.stats.items()}
    assert stats == {"calls": [1, 0, 2, 1], "good_calls": [1, 0, 2, 1], "bad_results": [0] * 4}
    rewards = jax.vmap(CALCULATOR_TASK.verify, in_axes=(0, 0, None))(prompts, generation.completions, False)
    assert np.asarray(rewards).tolist() == [1.0, 1.0, 1.0, 0.0]
    metrics = {k: float(v) for k, v in CALCULATOR_TASK.turns.metrics(generation, rewards).items()}
    assert metrics["tool_calls"] == 1.0 and metrics["frac_used_tool"] == 0.75
    assert metrics["reward_with_tool"] == pytest.approx(2 / 3) and metrics["reward_without_tool"] == 1.0
    assert metrics["turns"] == 2.0 and metrics["well_formed_calls"] == 1.0
    assert turns_of(tokenizer, np.asarray(generation.completions[2]), np.asarray(generation.mask[2])) == [
        {"role": "policy", "text": "[352*78]"}, {"role": "tool", "text": "27456"},
        {"role": "policy", "text": "[2745*10]"}, {"role": "tool", "text": "27450"},
        {"role": "policy", "text": "27456"}]


def test_malformed_calls_are_answered_with_the_tool_s_error_text():
    scripts = [("352*78=", "[352*]99999" + "1"), ("352*78=", "352]99999" + "1"),
               ("352*78=", "[12345*6]99999" + "1"), ("352*78=", "[1234*56789]99999" + "1")]
    _, generation = episodes(CALCULATOR_TASK, scripts)
    texts = [CALCULATOR_TASK.tokenizer.decode(c) for c in np.asarray(generation.completions)]
    assert texts == ["[352*]{err}1", "352]{err}1", "[12345*6]{err}1", "[1234*56789]{err}1"]
    assert np.asarray(generation.stats["calls"]).tolist() == [1] * 4
    assert np.asarray(generation.stats["good_calls"]).tolist() == [0] * 4


@pytest.mark.parametrize("max_turns, text", [(1, "[1+1]"), (2, "[1+1]{2}[1+1]")])
def test_a_call_past_the_turn_limit_ends_the_episode_truncated(max_turns, text):
    task = with_tool(multiply_task(), "calculator", max_turns=max_turns)
    _, generation = episodes(task, [("352*78=", "[1+1]999" + "[1+1]999" * 3)])
    completion = np.asarray(generation.completions[0])
    assert task.tokenizer.decode(completion) == text
    assert np.all(completion[len(text):] == PAD)
    actions = generation.completions
    assert bool(cut_without_eos(actions, generation.mask)[0])  # truncated, not terminated


def test_stepping_the_env_with_the_policy_s_tokens_gives_the_sampled_episodes():
    """The gymnax interface runs the tool too: fed the policy's tokens of sampled episodes one
    step at a time, the env holds the same episode, rewards it on its last step and ends it the
    same way (terminated at EOS, truncated at the turn limit)."""
    task = with_tool(multiply_task(), "calculator", max_turns=2)
    env, params = make("rollax/Tokens-Multiply-v0", tool="calculator")
    scripts = [("352*78=", "[352*78]9999999" + "27456"), ("352*78=", "[352*]99999" + "1"),
               ("352*78=", "[1+1]999" + "[1+1]999"), ("352*78=", "27456")]
    prompts, generation = episodes(task, scripts)
    step = jax.jit(lambda state, action: env.step_env(jax.random.key(0), state, action, params))
    for prompt, completion, mask in zip(*(np.asarray(x) for x in (prompts, generation.completions,
                                                                   generation.mask)), strict=True):
        _, state = env.reset_env(jax.random.key(0), params)
        state = state.replace(tokens=state.tokens.at[:len(prompt)].set(prompt))
        for i, action in enumerate(completion[mask]):
            obs, state, reward, terminated, _ = step(state, action)
            truncated = env.is_truncated(state, params)
            last = i == mask.sum() - 1
            assert bool(terminated | truncated) == last
        np.testing.assert_array_equal(obs[len(prompt):], completion)
        assert bool(terminated) == (EOS in completion)
        want = task.verify(jnp.asarray(prompt), jnp.asarray(completion), False)
        assert float(reward) == float(want)


def test_cached_and_recomputed_sampling_agree_on_episodes():
    task = with_tool(multiply_task(), "calculator")
    model = TransformerPolicy(task.tokenizer.vocab_size, task.prompt_length + task.completion_length,
                              width=16, layers=1, heads=2, rngs=nnx.Rngs(3))

    class WithoutCache:  # the same model, recomputing the prefix for every token
        vocab_size, max_length = model.vocab_size, model.max_length

        def __call__(self, tokens):
            return model(tokens)

    prompts = jax.vmap(task.sample)(jax.random.split(jax.random.key(0), 8))
    sample = lambda m: jax.jit(lambda p: task.turns.generate(m, p, jax.random.key(1), 16))(prompts)
    cached, recomputed = sample(model), sample(WithoutCache())
    tool_tokens = (np.asarray(cached.completions) != PAD) & ~np.asarray(cached.mask)
    assert tool_tokens.any()  # some random "]" was answered (with "{err}" or a result)
    np.testing.assert_array_equal(cached.completions, recomputed.completions)
    np.testing.assert_array_equal(cached.mask, recomputed.mask)
    np.testing.assert_allclose(cached.log_probs, recomputed.log_probs, atol=1e-5)


def test_the_warm_start_learns_the_policy_s_tokens_only():
    """Its loss is NumPy's cross-entropy over the demonstration tokens the policy writes (the
    tool's answers, markers included, are context)."""
    task = CALCULATOR_TASK
    model = TransformerPolicy(task.tokenizer.vocab_size, task.prompt_length + task.completion_length,
                              width=16, layers=1, heads=2, rngs=nnx.Rngs(0))
    prompts = jax.jit(jax.vmap(task.sample))(jax.random.split(jax.random.key(2), 32))
    demos = np.asarray(jax.jit(jax.vmap(task.demonstrate))(prompts))
    tokens = np.concatenate([np.asarray(prompts), demos], 1)
    logits = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(tokens[:, :-1])).distribution.logits,
                        np.float64)
    logits = logits[:, task.prompt_length - 1:]
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_softmax, demos[..., None], -1)[..., 0]
    counted = np.zeros(demos.shape, bool)
    for row, demo in enumerate(demos):
        text = task.tokenizer.decode(demo)
        counted[row, :len(text) + 1] = True  # through EOS
        for match in re.finditer(r"\{[^}]*\}", text):
            counted[row, match.start():match.end()] = False
    assert 0 < counted.sum() < (demos != PAD).sum()  # some demonstrations call the tool
    want = (nll * counted).sum() / counted.sum()
    loss = nnx.jit(demonstration_loss, static_argnums=2)(model, prompts, task)
    assert float(loss) == pytest.approx(want, rel=1e-5)


def halve(call, prompt):
    """A user's tool: half of an even number of up to 6 digits."""
    digit = (call >= ord("0")) & (call <= ord("9"))
    used = call != 0
    place = jnp.cumsum(used[::-1])[::-1] - 1
    value = jnp.sum(jnp.where(used, (call - ord("0")) * 10 ** jnp.maximum(place, 0), 0))
    ok = jnp.any(used) & jnp.all(digit | ~used) & (value % 2 == 0)
    half = value // 2
    powers = 10 ** jnp.arange(5, -1, -1)
    digits = (half // powers) % 10
    keep = (jnp.cumsum(digits > 0) > 0) | (jnp.arange(6) == 5)
    order = jnp.argsort(~keep, stable=True)
    return jnp.where(keep[order], ord("0") + digits[order], 0), ok


def test_a_user_s_tool_is_registered_by_name_and_answers_in_episodes():
    register_tool("test_halve", halve, call_length=6, result_length=6, chars="0123456789?",
                  error="?")
    env, _ = make("rollax/Tokens-Multiply-v0", tool="test_halve")
    task = env.task
    _, generation = episodes(task, [("352*78=", "[54912]9999999" + "27456"), ("352*78=", "[7]999" + "1")])
    texts = [task.tokenizer.decode(c) for c in np.asarray(generation.completions)]
    assert texts == ["[54912]{27456}27456", "[7]{?}1"]
    with pytest.raises(ValueError, match="tool 'test_halve' is already registered"):
        register_tool("test_halve", halve, call_length=6, result_length=6, chars="0123456789?")


def too_long(call, prompt):
    return jnp.zeros(4, jnp.int32), jnp.array(True)


def writes_z(call, prompt):
    return jnp.full(2, ord("z"), jnp.int32), jnp.array(True)


def test_bad_tools_and_settings_are_errors_naming_them():
    with pytest.raises(ValueError, match=r"tool 'nope' is not registered; registered tools: \[.*'calculator'"):
        make("rollax/Tokens-Multiply-v0", tool="nope")
    with pytest.raises(ValueError, match=r"max_turns=0 must be an int in \[1, 16\]"):
        make("rollax/Tokens-Multiply-v0", tool="calculator", max_turns=0)
    register_tool("test_too_long", too_long, call_length=3, result_length=3, chars="0123456789",
                  error="0")
    with pytest.raises(ValueError, match=r"tool 'test_too_long': its result must be 3 code points"):
        make("rollax/Tokens-Multiply-v0", tool="test_too_long")
    with pytest.raises(ValueError, match=r"chars may not hold the call and answer markers"):
        register_tool("test_markers", too_long, call_length=3, result_length=3, chars="1[", error="1")
    with pytest.raises(ValueError, match=r"error='oops' must be a non-empty text of its chars"):
        register_tool("test_error", too_long, call_length=3, result_length=3, chars="123",
                      error="oops")
    with pytest.raises(ValueError, match=r"task 'reverse' has no demonstrate_call"):
        make("rollax/Tokens-Reverse-v0", tool="calculator")
    # a tool writing a character it did not declare: the batch's fault count names it
    register_tool("test_writes_z", writes_z, call_length=6, result_length=2, chars="0123456789",
                  error="0")
    task = with_tool(multiply_task(), "test_writes_z")
    _, generation = episodes(task, [("352*78=", "[3]99" + "1")])
    faults = {k: float(v) for k, v in task.turns.metrics(generation, jnp.ones(1)).items()
              if k.startswith("fault")}
    assert list(faults.values()) == [1.0] and "tool 'test_writes_z'" in next(iter(faults))


TINY = ["budget.total_steps=64", "budget.num_envs=32", "eval.episodes=4", "eval.every_steps=32",
        "agent.network.width=16", "agent.network.layers=1", "agent.network.heads=2",
        "agent.config.num_generations=4", "agent.network.warm_start=false", "logging.plot=false"]


def test_a_tool_run_logs_tool_metrics_and_transcripts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = rollax.train(rollax.load_experiment("tools_multiply_grpo", TINY), progress=False)
    records = [json.loads(r) for r in (result.run_dir / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "train/tool_calls" in r]
    assert trained
    for name in ("well_formed_calls", "frac_used_tool", "reward_with_tool", "reward_without_tool", "turns"):
        assert f"train/{name}" in trained[-1]
    agent = rollax.load_agent(result.run_dir)
    prompt = "352*78="
    answers = agent.generate([prompt, prompt])
    turns = agent.generate([prompt], transcript=True)[0]
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert all(t["role"] in ("policy", "tool") for t in turns)
    if turns and turns[-1]["role"] == "policy":  # the answer: what follows the last "}"
        assert answers[0] == turns[-1]["text"].rsplit("}", 1)[-1]
    with pytest.raises(ValueError, match=r"prompt '\[1\]=' holds the tool marker '\['"):
        agent.generate(["[1]="])


@pytest.mark.slow
@pytest.mark.parametrize("name, at_least, at_most", [
    ("tools_multiply_grpo", 0.9, 1.0), ("tools_multiply_rloo", 0.9, 1.0),
    ("tokens_multiply_grpo", 0.0, 0.5),  # the same model and budget without the tool
])
def test_the_calculator_is_learned_on_every_seed(name, at_least, at_most, shared_cache, tmp_path,
                                                 capsys):
    """5 seeds, greedy exact match on 500 held-out prompts: with the calculator >= 0.9 on
    every seed; without it (the same model, warm-start settings and budget) <= 0.5."""
    from held_out import before_and_after

    before, after, seconds = before_and_after(name, tmp_path)
    with capsys.disabled():
        print(f"\n{name} ({seconds:.0f} s): warm start {np.round(before, 3).tolist()}, after "
              f"{np.round(after, 3).tolist()}")
    assert np.all((after >= at_least) & (after <= at_most)), after
