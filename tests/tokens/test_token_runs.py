"""Token tasks through the training loop: the sampled batch against the verifier and the
trainers' own log-probs, every algorithm's run end to end (metrics, text samples), bad
agent/env pairs, and (slow) the learning checks."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from readback import texts as logged_texts

import rollax
from rollax import load_experiment, train
from rollax.networks.policy import score_actions
from rollax.tokens.source import held_out_prompts, sample_completions
from rollax.tokens.tasks import DIGITS
from rollax.tokens.warm_start import WarmStartConfig, token_policy

TINY = ["budget.total_steps=64", "budget.num_envs=32", "eval.episodes=16", "eval.every_steps=0",
        "agent.network.width=16", "agent.network.layers=1", "agent.network.heads=2",
        "env.params={min_digits = 2, max_digits = 3}", "logging.plot=false"]
GROUPS = {"grpo": ["agent.config.num_generations=4"], "rloo": ["agent.config.num_generations=4"],
          "dpo": ["agent.config.num_generations=4"], "reinforce": [], "ppo": []}


def tiny(algorithm: str, *changes: str) -> list[str]:
    return [*TINY, *GROUPS[algorithm], *changes]


def test_sampled_groups_are_scored_by_the_verifier_and_the_trainers():
    env, params = rollax.make("rollax/Tokens-Sort-v0", min_digits=2, max_digits=4)
    model = token_policy(env.task, WarmStartConfig(width=16, layers=1, heads=2), rngs=nnx.Rngs(0))
    samples, _ = jax.jit(lambda key: sample_completions(model, env, params, key, 6, 4))(jax.random.key(0))
    tokens = np.concatenate([np.asarray(samples.observations[:, :1]), np.asarray(samples.actions)], 1)
    prompts, completions = tokens[:, :env.prompt_length], tokens[:, env.prompt_length:]
    assert (prompts.reshape(6, 4, -1) == prompts.reshape(6, 4, -1)[:, :1]).all()  # contiguous groups
    for prompt, completion, reward in zip(prompts, completions, np.asarray(samples.rewards), strict=True):
        text = DIGITS.decode(prompt)
        right = DIGITS.decode(completion) == "".join(sorted(text[:-1])) and 1 in completion.tolist()
        assert reward == float(right)
    terms = nnx.jit(score_actions, static_argnums=3)(model, samples.observations, samples.actions,
                                                     samples.mask.shape)
    np.testing.assert_allclose(np.where(samples.mask, terms.log_probs, 0.0), samples.log_probs, atol=1e-4)
    ends = [list(c).index(1) + 1 if 1 in list(c) else len(c) for c in completions]  # EOS included
    assert np.asarray(samples.mask.sum(1)).tolist() == ends
    assert np.asarray(samples.truncated).tolist() == [1 not in list(c) for c in completions]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "dpo", "reinforce", "ppo"])
def test_token_experiment_trains_and_logs_its_metrics(algorithm, shared_cache, tmp_path):
    experiment = load_experiment(f"tokens_reverse_{algorithm}", tiny(algorithm, f"logging.root={tmp_path}"))
    result = train(experiment, progress=False)
    rows = (result.run_dir / "seed_0" / "metrics.jsonl").read_text().splitlines()
    logged = set().union(*(set(json.loads(row)) for row in rows))
    for name in ("train/completion_length", "train/completion_length_min", "train/completion_length_max",
                 "train/frac_truncated", "train/kl_to_reference", "train/loss", "eval/mean_reward"):
        assert name in logged, name
    assert ("train/frac_reward_zero_std" in logged) == (algorithm in ("grpo", "rloo", "dpo"))
    first = json.loads(rows[0])
    assert first["step"] == 32 and abs(first["train/kl_to_reference"]) < 1e-4  # sampled by the reference
    assert result.eval_returns.shape == (1, 16) and set(np.unique(result.eval_returns)) <= {0.0, 1.0}
    assert 1 <= result.eval_metrics["completion_length"][0] <= 4
    texts = logged_texts(result.run_dir / "seed_0", "samples")
    assert sorted(texts) == [0, 64]  # before training and at the final evaluation
    header, _, *rows = texts[64].splitlines()
    assert header == "| prompt | greedy | reward | sampled | reward |" and len(rows) == 8
    for row in rows:  # each shown reward is the verifier's on the shown texts
        prompt, greedy, greedy_reward, sampled, sampled_reward = (c.strip(" `") for c in row.strip("|").split("|"))
        assert prompt.endswith("=")
        for completion, reward in ((greedy, greedy_reward), (sampled, sampled_reward)):
            assert float(reward) == float(completion == prompt[:-1][::-1])


def test_partial_credit_rewards_training_but_evaluation_stays_exact_match(shared_cache, tmp_path):
    experiment = load_experiment("tokens_reverse_reinforce", tiny("reinforce", f"logging.root={tmp_path}",
                                 "env.params={min_digits = 2, max_digits = 3, partial_credit = true}"))
    result = train(experiment, progress=False)
    rows = [json.loads(row) for row in (result.run_dir / "seed_0" / "metrics.jsonl").read_text().splitlines()]
    rewards = [row["train/mean_reward"] for row in rows if "train/mean_reward" in row]
    assert any(0 < 32 * r % 1 for r in rewards)  # a fraction of the answer's tokens earns reward
    assert set(np.unique(result.eval_returns)) <= {0.0, 1.0}


def test_loaded_agent_generates_the_greedy_completions(shared_cache, tmp_path):
    """`load_agent(run).generate(texts)` against a Python loop of argmax over the model's
    full forward pass (no cache), decoded by hand."""
    experiment = load_experiment("tokens_reverse_rloo", tiny("rloo", f"logging.root={tmp_path}"))
    agent = rollax.load_agent(train(experiment, progress=False).run_dir, checkpoint="last")
    prompts = ["21=", "907=", "5=", "33="]
    task = agent.env.task
    length = task.prompt_length + task.completion_length
    # the whole sequence so far, padded to one length (PAD is never attended to): one program
    forward = jax.jit(lambda tokens: agent.model(tokens).distribution.logits[0])
    expected = []
    for text in prompts:
        tokens = list(task.encode_prompt(text))
        completion = ""
        for _ in range(task.completion_length):
            padded = jnp.asarray([tokens + [0] * (length - len(tokens))])
            token = int(np.argmax(forward(padded)[len(tokens) - 1]))
            if token == 1:
                break
            completion += "??0123456789+="[token] if token > 1 else ""
            tokens.append(token)
        expected.append(completion)
    assert agent.generate(prompts) == expected
    assert all(len(text) <= 4 for text in agent.generate(prompts, greedy=False))
    with pytest.raises(ValueError, match=r"\['a'\]"):
        agent.generate(["1a="])
    with pytest.raises(ValueError, match="list of strings"):
        agent.generate("12=")


def test_token_runs_start_from_the_warm_start(shared_cache, tmp_path):
    """Before any update, the run's greedy success is the warm start's on the same prompts."""
    from rollax.run.program import make_program
    from rollax.run.seeds import eval_keys
    from rollax.tokens.source import evaluate_completions
    from rollax.tokens.warm_start import warm_start

    experiment = load_experiment("tokens_reverse_grpo", tiny("grpo", f"logging.root={tmp_path}"))
    _, program = make_program(experiment)
    returns, _ = jax.device_get(program.evaluate(program.init([0]), eval_keys([0], 0)))
    config = WarmStartConfig(width=16, layers=1, heads=2)
    model, _ = warm_start("rollax/Tokens-Reverse-v0", config, min_digits=2, max_digits=3)
    env, _ = rollax.make("rollax/Tokens-Reverse-v0", min_digits=2, max_digits=3)
    success, _ = evaluate_completions(model, env.task, held_out_prompts(env.task, 16))
    assert returns.mean() == pytest.approx(float(success.mean()))


def test_an_out_of_vocabulary_prompt_met_in_training_stops_the_run_naming_the_task(
        monkeypatch, tmp_path):
    import rollax.tokens.env
    from rollax.errors import RunFailed
    from rollax.tokens import register_task
    from rollax.tokens.tasks import TokenTask
    from rollax.tokens.tokenizer import EOS

    # the held-out prompts' keys, as `held_out_prompts` draws them: those prompts stay valid
    held_out = jax.random.key_data(jax.random.split(jax.random.fold_in(jax.random.key(0), 1), 16))

    def sample(key):  # a training prompt carries id 99 in a vocabulary of 14
        prompt = jnp.append(2 + jax.random.randint(key, (3,), 0, 10), DIGITS.encode("=")[0])
        evaluated = jnp.any(jnp.all(jax.random.key_data(key) == held_out, axis=-1))
        return jnp.where(evaluated, prompt, prompt.at[0].set(99))

    # the check when the env is made would name it first; here training meets it
    monkeypatch.setattr(rollax.tokens.env, "check_task_outputs", lambda task: None)
    register_task("oovprompts", lambda: TokenTask("oovprompts", DIGITS, 4, 4, sample,
                                                  lambda prompt: jnp.append(prompt[:3], EOS)))
    experiment = load_experiment("tokens_reverse_grpo", tiny(
        "grpo", "env.id='rollax/Tokens-Oovprompts-v0'", "env.params={}",
        "agent.network.warm_start=false", f"logging.root={tmp_path}"))
    with pytest.raises(RunFailed, match=r"task 'oovprompts': sample\(key\) gave token ids outside "
                       r"the vocabulary \[0, 14\) at iteration 1 \(env step 32\) for seed 0"):
        train(experiment, progress=False)


def test_algorithms_that_cannot_learn_from_completions_are_named(tmp_path):
    from rollax.rl.ppo import PPO
    from rollax.rl.registry import register_algorithm
    from rollax.rollout.batches import Steps

    class StepsOnly(PPO):
        name, learns_from = "ppo_steps_only", (Steps,)

    register_algorithm(StepsOnly())
    with pytest.raises(ValueError, match=r"'ppo_steps_only' cannot learn from .*batch sources \['Completions'\]"):
        train(load_experiment("tokens_reverse_ppo", ["agent.algorithm=ppo_steps_only",
                                                     f"logging.root={tmp_path}"]), progress=False)


def test_token_runs_sample_one_completion_per_env_and_iteration(tmp_path):
    with pytest.raises(ValueError, match="budget.num_steps=4: ppo here samples one whole completion"):
        train(load_experiment("tokens_reverse_ppo", ["budget.num_steps=4", f"logging.root={tmp_path}"]),
              progress=False)


@pytest.mark.parametrize("change, message", [
    (["agent.network={kind = 'mlp'}"], "samples completions with a token model .*kind = 'transformer'"),
    (["agent.network.kind=mlp"], r"unknown key\(s\) \['heads', 'layers', 'warm_start', 'width'\] for kind 'mlp'"),
    (["agent.network.width=30"], "width=30 must be a multiple of agent.network.heads=4"),
    (["agent.network.warm_start_success=0"], r"warm_start_success=0 is outside the allowed range \(0.0, 1.0\]"),
])
def test_bad_token_agents_are_named(change, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train(load_experiment("tokens_reverse_grpo", [*change, f"logging.root={tmp_path}"]), progress=False)


def test_transformer_only_fits_token_tasks(tmp_path):
    with pytest.raises(ValueError, match="kind='transformer' is for token tasks .*, not 'CartPole-v1'"):
        train(load_experiment("cartpole_ppo", ["agent.network={kind = 'transformer'}",
                                               f"logging.root={tmp_path}"]), progress=False)


# GRPO and RLOO must reach 0.9 and gain 0.3; DPO, REINFORCE and PPO must gain 0.2 (issue targets)
TARGETS = {"grpo": (0.9, 0.3), "rloo": (0.9, 0.3), "dpo": (0.0, 0.2), "reinforce": (0.0, 0.2),
           "ppo": (0.0, 0.2)}
EXPERIMENTS = [f"tokens_{task}_{algorithm}" for task in ("reverse", "sort", "addition")
               for algorithm in TARGETS]


@pytest.mark.slow
# measured on seeds 0-4 in docs/language.md
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_rl_lifts_greedy_success_on_held_out_prompts(name, shared_cache, tmp_path):
    """5 seeds: greedy exact match on 500 held-out prompts reaches the algorithm's target and
    rises by its margin above the warm start, on every seed."""
    from held_out import before_and_after

    floor, rise = TARGETS[name.rsplit("_", 1)[1]]
    before, after, _ = before_and_after(name, tmp_path)
    assert (after >= floor).all() and (after - before >= rise).all(), (before, after)
