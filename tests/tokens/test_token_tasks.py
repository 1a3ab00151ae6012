"""Token tasks and their envs against plain Python: string reversal, `sorted`, `int` addition,
and an episode loop written out by hand."""

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import rollax
from rollax.tokens import register_task
from rollax.tokens.tasks import DIGITS, EOS, PAD, TokenTask

N = 300  # prompts per task
ANSWERS = {
    "reverse": lambda prompt: prompt[:-1][::-1],
    "sort": lambda prompt: "".join(sorted(prompt[:-1])),
    "addition": lambda prompt: str(sum(int(x) for x in prompt[:-1].split("+"))),
}


def env_of(task: str, **params):
    return rollax.make(f"rollax/Tokens-{task.capitalize()}-v0", **params)


def sample_prompts(env, n=N, seed=0):
    return np.asarray(jax.vmap(env.task.sample)(jax.random.split(jax.random.key(seed), n)))


def test_tokenizer_round_trips_and_names_bad_input():
    rng = np.random.default_rng(0)
    for _ in range(50):
        text = "".join(rng.choice(list("0123456789+="), size=rng.integers(1, 12)))
        assert DIGITS.decode(DIGITS.encode(text)) == text
    assert DIGITS.decode([PAD, PAD, *DIGITS.encode("12"), EOS, *DIGITS.encode("9")]) == "12"
    with pytest.raises(ValueError, match=r"\['a'\]"):
        DIGITS.encode("1a2")
    with pytest.raises(ValueError, match="token id 14 is outside the vocabulary"):
        DIGITS.decode([2, 14])


@pytest.mark.parametrize("task", sorted(ANSWERS))
def test_demonstrations_answer_the_prompt(task):
    env, _ = env_of(task)
    prompts = sample_prompts(env)
    demos = np.asarray(jax.vmap(env.task.demonstrate)(jnp.asarray(prompts)))
    for prompt, demo in zip(prompts, demos, strict=True):
        text = DIGITS.decode(prompt)
        assert DIGITS.decode(demo) == ANSWERS[task](text), text
        assert list(demo).count(EOS) == 1 and prompt[-1] == DIGITS.encode("=")[0]


def test_prompts_cover_the_documented_ranges():
    reverse, _ = env_of("reverse")
    lengths = {len(DIGITS.decode(p)) - 1 for p in sample_prompts(reverse)}
    assert lengths == {3, 4, 5, 6}
    short, _ = env_of("sort", min_digits=2, max_digits=2)
    assert {len(DIGITS.decode(p)) - 1 for p in sample_prompts(short)} == {2}
    addition, _ = env_of("addition")
    operands = [int(x) for p in sample_prompts(addition) for x in DIGITS.decode(p)[:-1].split("+")]
    assert min(operands) >= 0 and max(operands) <= 999 and max(operands) > 900 and min(operands) < 100
    small, _ = env_of("addition", max_operand=9)
    assert small.task.prompt_length == 4 and small.task.completion_length == 3


def test_addition_aligns_each_operand_and_encodes_texts_the_same_way():
    """Operand digits sit right-aligned in their own 3 slots, written out by hand, for sampled
    prompts and for texts a user passes."""
    env, _ = env_of("addition")

    def by_hand(text):
        a, b = text[:-1].split("+")
        slots = lambda x: [PAD] * (3 - len(x)) + DIGITS.encode(x)
        return slots(a) + DIGITS.encode("+") + slots(b) + DIGITS.encode("=")

    for prompt in sample_prompts(env, n=50):
        assert list(prompt) == by_hand(DIGITS.decode(prompt))
    for text in ("352+78=", "5+0=", "78+352=", "999+999="):
        assert list(env.task.encode_prompt(text)) == by_hand(text)
    for bad in ("352+78", "1000+1=", "1+2+3=", "+5="):
        with pytest.raises(ValueError, match="must read 'a\\+b='"):
            env.task.encode_prompt(bad)


def test_verifier_exact_match_and_partial_credit():
    env, _ = env_of("reverse")
    prompt = env.task.encode_prompt("3142=")
    target = [int(t) for t in DIGITS.encode("2413")] + [EOS]

    def completion(ids):
        return jnp.asarray(ids + [PAD] * (env.task.completion_length - len(ids)))

    def python_partial(ids):
        return sum(a == b for a, b in zip(ids, target, strict=False)) / len(target)

    right = target + [5]  # what follows the EOS does not count
    wrong = [target[0], 9, *target[2:]]
    no_eos = target[:-1] + [2]
    for ids in (right, wrong, no_eos):
        exact = float(env.task.verify(prompt, completion(ids), False))
        assert exact == float(ids[:len(target)] == target)
        assert float(env.task.verify(prompt, completion(ids), True)) == pytest.approx(python_partial(ids))


@pytest.mark.parametrize("task", ["reverse", "addition"])
def test_episodes_match_a_python_loop(task):
    """Random tokens (EOS likely): terminated iff the action is EOS, truncated (and not
    terminated) after completion_length tokens without one, reward only on the last step."""
    env, params = env_of(task)
    step = jax.jit(env.step)
    rng = np.random.default_rng(1)
    obs, state = env.reset(jax.random.key(0), params)
    ends = {"terminated": 0, "truncated": 0}
    for episode in range(20):
        prompt_text = DIGITS.decode(np.asarray(obs[:env.prompt_length]))
        answer = ANSWERS[task](prompt_text)
        actions = []
        for t in range(env.completion_length):
            expect_done = episode % 2 == 1 and rng.random() < 0.5  # even episodes: no EOS
            action = EOS if (expect_done and t > 0) else int(rng.integers(2, 12))
            actions.append(action)
            before = np.asarray(obs)
            obs, state, reward, terminated, truncated, _ = step(jax.random.key(t), state, action, params)
            last = action == EOS or t == env.completion_length - 1
            assert bool(terminated) == (action == EOS)
            assert bool(truncated) == (t == env.completion_length - 1 and action != EOS)
            if not last:
                assert float(reward) == 0.0
                expected = before.copy()
                expected[env.prompt_length + t] = action
                np.testing.assert_array_equal(obs, expected)
                continue
            generated = DIGITS.decode(actions) if action == EOS else None
            assert float(reward) == float(generated == answer)
            ends["terminated" if action == EOS else "truncated"] += 1
            break
    assert ends["terminated"] > 0 and ends["truncated"] >= 10


def test_the_demonstration_earns_the_reward_in_the_env():
    env, params = env_of("sort")
    obs, state = env.reset(jax.random.key(5), params)
    for token in np.asarray(env.task.demonstrate(obs[:env.prompt_length])):
        obs, state, reward, terminated, truncated, _ = env.step(jax.random.key(0), state, token, params)
        if terminated:
            break
    assert float(reward) == 1.0 and not bool(truncated)


def test_bad_task_input_is_named():
    with pytest.raises(ValueError, match="min_digits"):
        env_of("reverse", min_digits=0)
    with pytest.raises(ValueError, match="Tokens-Reverse-v0.*max_operand"):
        env_of("reverse", max_operand=5)
    with pytest.raises(ValueError, match="partial_credit"):
        env_of("sort", partial_credit="yes")
    env, _ = env_of("reverse")
    with pytest.raises(ValueError, match="prompt_length=7"):
        env.task.encode_prompt("1234567=")


def test_gymnasium_sees_a_valid_env():
    check_env(gymnasium.make("rollax/Tokens-Sort-v0").unwrapped)


def test_a_task_defined_here_registers_as_an_env():
    """Copy the digits of the prompt: a new task in a dozen lines."""
    def sample(key):
        return jnp.append(2 + jax.random.randint(key, (3,), 0, 10), DIGITS.encode("=")[0])

    def demonstrate(prompt):
        return jnp.append(prompt[:3], EOS)

    register_task("copy", lambda: TokenTask("copy", DIGITS, 4, 4, sample, demonstrate))
    env, params = rollax.make("rollax/Tokens-Copy-v0")
    obs, state = env.reset(jax.random.key(0), params)
    for token in np.asarray(obs[:3]).tolist() + [EOS]:
        obs, state, reward, terminated, _, _ = env.step(jax.random.key(0), state, token, params)
    assert bool(terminated) and float(reward) == 1.0
    assert "rollax/Tokens-Copy-v0" in rollax.envs.registered_ids()


def copy_parts():
    """`(sample, demonstrate)` of a 3-digit copy task, for tasks broken one part at a time."""
    def sample(key):
        return jnp.append(2 + jax.random.randint(key, (3,), 0, 10), DIGITS.encode("=")[0])

    return sample, lambda prompt: jnp.append(prompt[:3], EOS)


@pytest.mark.parametrize("name, broken, message", [
    ("wide_verifier", {"verify": lambda p, c, partial: jnp.zeros(2)},
     r"'wide_verifier': verify\(prompt, completion, partial\) must return one reward \(shape \(\)\), got shape \(2,\)"),
    ("nan_verifier", {"verify": lambda p, c, partial: jnp.where(c[0] == EOS, jnp.nan, 1.0)},
     r"'nan_verifier': verify\(prompt, completion, partial\) returned nan on sampled prompts"),
    ("big_ids", {"sample": lambda key: jnp.full((4,), 20, jnp.int32)},
     r"'big_ids': sample\(key\) gave token id 20 outside the vocabulary \[0, 14\)"),
    ("rare_big_ids", {"sample": lambda key: jnp.where(  # 1% of prompts: more than 16 are tried
        jax.random.uniform(key) < 0.01, 20, copy_parts()[0](key))},
     r"'rare_big_ids': sample\(key\) gave token id 20 outside the vocabulary"),
    ("float_answer", {"demonstrate": lambda prompt: jnp.zeros(4)},
     r"'float_answer': demonstrate\(prompt\) must return token ids \[4\] \(integers\), got float32\[4\]"),
    ("short_prompt", {"sample": lambda key: jnp.zeros(3, jnp.int32)},
     r"'short_prompt': sample\(key\) must return token ids \[4\]"),
])
def test_a_broken_registered_task_is_named_when_its_env_is_made(name, broken, message):
    sample, demonstrate = copy_parts()
    parts = {"sample": sample, "demonstrate": demonstrate, "verify": None, **broken}
    register_task(name, lambda: TokenTask(name, DIGITS, 4, 4, parts["sample"], parts["demonstrate"],
                                          parts["verify"]))
    with pytest.raises(ValueError, match=message):
        rollax.make(f"rollax/Tokens-{name.capitalize()}-v0")


def test_a_model_of_another_vocabulary_is_named_before_compiling():
    from flax import nnx

    from rollax.tokens.source import sample_completions
    from rollax.tokens.transformer import TransformerPolicy

    env, params = env_of("reverse")
    model = TransformerPolicy(DIGITS.vocab_size + 3, 16, width=8, layers=1, heads=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="vocab_size=17 does not match task 'reverse'.s vocabulary of 14"):
        sample_completions(model, env, params, jax.random.key(0), 2, 2)
