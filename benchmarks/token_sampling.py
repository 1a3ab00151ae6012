"""Token throughput, side by side in one run:

1. sampled tokens/s of the transformer policy with its key/value cache against recomputing the
   whole prefix for every token, at several completion lengths (`generate` and
   `generate_without_cache`, one jitted program each, after a warm-up call, best of `--repeats`);
2. training tokens/s of each algorithm's shipped `tokens_<task>_<algo>` preset: the run's own
   compiled chunk (sample, score, update), timed after a warm-up chunk, counting the completion
   tokens it sampled (EOS included).

Usage: python benchmarks/token_sampling.py [--lengths 8,32,128] [--batch 64] [--repeats 3]
       [--task reverse] [--algorithms grpo,rloo,dpo,reinforce,ppo] [--iterations 20]
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
from flax import nnx
from timing import best_seconds

from rollax.presets import load_experiment
from rollax.run.program import make_program
from rollax.tokens.generation import generate, generate_without_cache
from rollax.tokens.transformer import TransformerPolicy

PROMPT, VOCAB = 8, 14


def tokens_per_second(sample, model, prompts, repeats: int) -> float:
    run = jax.jit(lambda key: sample(model, prompts, key).completions)
    keys = map(jax.random.key, itertools.count())
    out = jax.block_until_ready(run(next(keys)))  # compile
    return out.size / best_seconds(lambda: run(next(keys)), repeats)


def training_throughput(name: str, iterations: int) -> tuple[float, float]:
    """`(completions/s, completion tokens/s)` of one seed of preset `name` over `iterations`
    training iterations in one compiled chunk."""
    experiment = load_experiment(name, [f"budget.iterations_per_chunk={iterations}",
                                        "logging.enabled=false"])
    steps = experiment.budget.num_envs * experiment.budget.num_steps
    experiment = experiment.replace(budget={"total_steps": 2 * iterations * steps})
    plan, program = make_program(experiment)
    chunk_job, _ = program.compile([0])
    state = program.init([0])
    chunk = chunk_job.result()
    state, _ = jax.block_until_ready(chunk(state))  # warm-up: the same program, first run
    start = time.perf_counter()
    state, (metrics, _) = jax.block_until_ready(chunk(state))
    elapsed = time.perf_counter() - start
    tokens = float(metrics["completion_length"].sum()) * plan.num_envs
    return iterations * plan.num_envs / elapsed, tokens / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="8,32,128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task", default="reverse")
    parser.add_argument("--algorithms", default="grpo,rloo,dpo,reinforce,ppo")
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    print(f"batch {args.batch}, prompt {PROMPT} tokens, width {args.width}, {args.layers} layers, "
          f"{jax.devices()[0].platform}")
    print(f"{'new tokens':>10} {'cached tok/s':>13} {'recompute tok/s':>16} {'ratio':>6}")
    prompts = jax.random.randint(jax.random.key(0), (args.batch, PROMPT), 2, VOCAB)
    for length in map(int, args.lengths.split(",")):
        model = TransformerPolicy(VOCAB, PROMPT + length, width=args.width, layers=args.layers,
                                  rngs=nnx.Rngs(0))
        samplers = {name: (lambda m, p, k, f=f, n=length: f(m, p, k, n))
                    for name, f in (("cached", generate), ("recompute", generate_without_cache))}
        cached = tokens_per_second(samplers["cached"], model, prompts, args.repeats)
        recompute = tokens_per_second(samplers["recompute"], model, prompts, args.repeats)
        print(f"{length:>10} {cached:>13,.0f} {recompute:>16,.0f} {cached / recompute:>5.1f}x", flush=True)
    print(f"\ntraining, tokens_{args.task}_<algorithm> presets, 1 seed, {args.iterations} iterations")
    print(f"{'algorithm':>10} {'completions/s':>14} {'tokens/s':>9}")
    for algorithm in args.algorithms.split(","):
        completions, tokens = training_throughput(f"tokens_{args.task}_{algorithm}", args.iterations)
        print(f"{algorithm:>10} {completions:>14,.0f} {tokens:>9,.0f}", flush=True)


if __name__ == "__main__":
    main()
