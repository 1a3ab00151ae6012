"""rollax's GRPO against TRL's `GRPOTrainer` on the CPU, in one program: seconds per iteration
and completions per second with the same model size, prompts, group size, prompts per step,
completion length, temperature and Python reward function, one update per generation batch.
Also the cost of a Python reward against the jitted verifier inside rollax (same task).

Needs TRL and torch beside rollax (see `trl_grpo_peer.py` for the virtualenv):

    /work/trl-venv/bin/python benchmarks/trl_side_by_side.py [--iterations 20] [--threads 1 2]

The setting: the shipped word-edit prompts as text (`rollax/Tokens-Edits-v0`), a character
vocabulary, rollax's `grpo_tokens` transformer size (width 64, 2 layers, 4 heads) and a GPT-2
configuration of the same width, layers, heads, vocabulary and context, both randomly
initialised (rollax's warm start off); 16 prompts x 8 completions per iteration, every
completion the full completion length (TRL through `min_new_tokens`; rollax's sampler always
runs it), temperature 1, KL coefficient 0 and no entropy bonus (no reference model on either
side), Adam at 3e-4.

It also prints the model arithmetic per completion (the standard count: 2 FLOPs per weight
per token, the attention's products, backward = 2 x forward) and the machine's float32 matrix
multiply rate through JAX, so that a speed-up goal can be checked against what the cores can
do at all.
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.resources import files

from trl_grpo_peer import trl_grpo_timing

GENERATIONS = 8


def distinct_words(prompts: list[str], completions: list[str], **_) -> list[float]:
    """The reward both sides call: the share of a completion's words that differ, a plain
    Python function on text (TRL's `reward_funcs` convention)."""
    out = []
    for completion in completions:
        words = completion.split()
        out.append(len(set(words)) / max(len(words), 1))
    return out


def flops_per_completion(width: int, layers: int, vocab: int, prompt: int, completion: int
                         ) -> float:
    """Sampling (the prompt once, then one token at a time through a key/value cache) plus
    one training pass (forward and backward, 3x a forward) over prompt and completion: 2 FLOPs
    per weight per token (12 width^2 per block, the unembedding), 4 x context x width per
    block for the attention's two products."""
    tokens = prompt + completion
    per_token = 2 * (12 * layers * width**2 + width * vocab) + 4 * layers * tokens * width
    return 4 * tokens * per_token


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matrix multiply rate through JAX on large matrices: more than
    any trainer of a width-64 model reaches on it."""
    import jax

    a = jax.random.normal(jax.random.key(0), (size, size))
    product = jax.jit(lambda x: x @ a)
    x = jax.block_until_ready(product(a))
    start = time.perf_counter()
    for _ in range(repeats):
        x = product(x / size)
    jax.block_until_ready(x)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def rollax_timing(iterations: int, prompts: int, python_reward: bool) -> dict:
    """One seed's compiled training chunk of `iterations` iterations (sample, reward, update),
    timed on its second run (the first compiles and warms up), as `token_sampling.py` does."""
    import jax

    from rollax.presets import load_experiment
    from rollax.run.program import make_program
    from rollax.tokens import register_reward

    register_reward("distinct_words", distinct_words)
    completions = prompts * GENERATIONS
    data = files("rollax.tokens") / "data" / "edits.jsonl"
    rewards = ", rewards = ['distinct_words']" if python_reward else ""  # else exact match
    experiment = load_experiment("tokens_edits_grpo", [
        "logging.enabled=false", "env.id=rollax/Tokens-Text-v0",
        f"env.params={{data = '{data}', name = 'edits'{rewards}}}", "agent.config.beta=0.0",
        "agent.config.entropy_coeff=0.0", "agent.network.warm_start=false",
        f"agent.config.num_generations={GENERATIONS}",
        f"budget.num_envs={completions}", f"budget.total_steps={2 * iterations * completions}",
        f"budget.iterations_per_chunk={iterations}", "eval.episodes=16"], seeds=1)
    _, program = make_program(experiment)
    chunk_job, _ = program.compile([0])
    state = program.init([0])
    chunk = chunk_job.result()
    state, _ = jax.block_until_ready(chunk(state))  # compiled, warmed up
    start = time.perf_counter()
    jax.block_until_ready(chunk(state))
    seconds = (time.perf_counter() - start) / iterations
    return {"seconds_per_iteration": seconds, "completions_per_second": completions / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per iteration")
    args = parser.parse_args()

    import jax

    import rollax

    env, _ = rollax.make("rollax/Tokens-Edits-v0")
    task = env.task
    prompts = [task.rows.prompts[row] for row in task.rows.train]
    print(f"jax {jax.__version__} on {jax.devices()}, {os.cpu_count()} CPUs; vocabulary "
          f"{task.tokenizer.vocab_size}, context {task.prompt_length + task.completion_length}, "
          f"completion length {task.completion_length}, {args.prompts} prompts x {GENERATIONS}")
    rows = []
    for python_reward in (True, False):
        timing = rollax_timing(args.iterations, args.prompts, python_reward)
        reward = "Python reward" if python_reward else "jitted verifier"
        rows.append((f"rollax GRPO ({reward})", timing))
    for threads in args.threads:
        timing = trl_grpo_timing(
            vocab=list(task.tokenizer.chars), width=64, layers=2, heads=4,
            context=task.prompt_length + task.completion_length, prompts=prompts,
            reward_func=distinct_words, num_generations=GENERATIONS, prompts_per_step=args.prompts,
            completion_length=task.completion_length, temperature=1.0,
            iterations=args.iterations, warmup=args.warmup, torch_threads=threads)
        rows.append((f"TRL {timing['trl_version']} GRPOTrainer, torch {threads} thread(s)", timing))
    print("\n| | s / iteration | completions / s | vs TRL (best) |\n| --- | ---: | ---: | ---: |")
    best_trl = max(t["completions_per_second"] for name, t in rows if name.startswith("TRL"))
    for name, timing in rows:
        print(f"| {name} | {timing['seconds_per_iteration']:.4f} | "
              f"{timing['completions_per_second']:,.0f} | "
              f"{timing['completions_per_second'] / best_trl:.1f}x |")
    flops = flops_per_completion(64, 2, task.tokenizer.vocab_size, task.prompt_length,
                                 task.completion_length)
    peak = matmul_gflops()
    print(f"\nmodel arithmetic {flops / 1e6:.1f} MFLOP per completion; rollax runs "
          f"{rows[0][1]['completions_per_second'] * flops / 1e9:.0f} GFLOP/s, TRL (best) "
          f"{best_trl * flops / 1e9:.0f}; 20x TRL would need {20 * best_trl * flops / 1e9:.0f} "
          f"GFLOP/s; this machine multiplies {peak:.0f} GFLOP/s (float32, {os.cpu_count()} CPUs, "
          f"1024 x 1024 matrices)")
    python, jitted = rows[0][1], rows[1][1]
    print(f"\nPython reward cost inside rollax: "
          f"{1e3 * (python['seconds_per_iteration'] - jitted['seconds_per_iteration']):.2f} ms "
          f"per iteration ({args.prompts * GENERATIONS} completions)")


if __name__ == "__main__":
    main()
