"""Sampled tokens/s of the transformer policy with its key/value cache against recomputing the
whole prefix for every token, at several completion lengths, side by side in one run.

Both are one jitted program each (`rollax.rollout.generation.generate` and
`generate_without_cache`), timed after a warm-up call, best of `--repeats`.
Usage: python benchmarks/token_sampling.py [--lengths 8,32,128] [--batch 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import jax
from flax import nnx

from rollax.networks.transformer import TransformerPolicy
from rollax.rollout.generation import generate, generate_without_cache

PROMPT, VOCAB = 8, 14


def tokens_per_second(sample, model, prompts, repeats: int) -> float:
    run = jax.jit(lambda key: sample(model, prompts, key).completions)
    run(jax.random.key(0)).block_until_ready()  # compile
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        out = run(jax.random.key(r + 1)).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return out.size / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", default="8,32,128")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
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


if __name__ == "__main__":
    main()
