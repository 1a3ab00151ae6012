"""rollax and rejax 0.1.3 side by side on PPO CartPole-v1 at rejax's published hyperparameters
(1e5 steps, 5 envs x 100 steps, 5 epochs x 5 minibatches, gae_lambda 0.95, constant lr 7.5e-4),
evaluated only at the end. Each round runs, in alternation and each in a fresh process: rollax
with a cold compile cache, rollax with a warm one, and rejax. Printed: whole-process wall
seconds, compile and training seconds as each framework reports them, training env-steps/s, and
the rollax/rejax ratios per round (medians over the rounds at the bottom).

    pip install -e '.[bench]'
    python benchmarks/peers.py [--rounds 3] [--seeds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from cartpole_ablation import REJAX
from cartpole_ppo import run, run_code

HERE = Path(__file__).resolve().parent
TOTAL_STEPS = 100_000
REJAX_SETTINGS = [*REJAX, "eval.every_steps=0"]  # the shipped experiment at rejax's settings
REJAX_CHILD = f"""
import json, sys, time
import jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[1])
from rejax_side_by_side import rejax_ppo
algo = rejax_ppo(eval_every={TOTAL_STEPS})  # evaluates before training and at the end only
keys = jnp.stack([jax.random.PRNGKey(s) for s in range(int(sys.argv[2]))])
start = time.perf_counter()
compiled = jax.jit(jax.vmap(algo.train)).lower(keys).compile()
compile_seconds = time.perf_counter() - start
start = time.perf_counter()
_, (_, returns) = jax.block_until_ready(compiled(keys))
print(json.dumps({{"compile": compile_seconds, "train": time.perf_counter() - start,
                  "steps": {TOTAL_STEPS}, "eval": returns[:, -1].mean(axis=-1).tolist()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one program")
    args = parser.parse_args()
    def rollax(cache_dir: str) -> dict:
        return run(args.seeds, REJAX_SETTINGS, cache_dir)

    rejax = [REJAX_CHILD, str(HERE), str(args.seeds)]
    print(f"PPO CartPole-v1 at rejax's published settings, 1e5 steps, {args.seeds} seed(s); "
          "seconds per fresh process")
    print(f"{'round':>5} {'run':<12} {'process':>8} {'compile':>8} {'train':>7} {'env-steps/s':>12}"
          "  greedy eval")
    ratios: dict[str, list[float]] = {"cold process": [], "warm process": [], "train throughput": []}
    with tempfile.TemporaryDirectory() as warm_cache:
        rollax(warm_cache)  # fills the warm cache; not counted
        for round_ in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory() as cold_cache:
                rows = {"rollax cold": rollax(cold_cache), "rollax warm": rollax(warm_cache),
                        "rejax": run_code(rejax, cold_cache)}
            for name, r in rows.items():
                rate = r["steps"] * args.seeds / r["train"]
                print(f"{round_:>5} {name:<12} {r['process']:>8.2f} {r['compile']:>8.2f} "
                      f"{r['train']:>7.2f} {rate:>12,.0f}  {' '.join(f'{v:.0f}' for v in r['eval'])}")
            peer = rows["rejax"]
            ratios["cold process"].append(rows["rollax cold"]["process"] / peer["process"])
            ratios["warm process"].append(rows["rollax warm"]["process"] / peer["process"])
            ratios["train throughput"].append(peer["train"] / rows["rollax cold"]["train"])
    print("rollax / rejax, median over rounds (per round):")
    for name, values in ratios.items():
        what = "rollax env-steps/s / rejax's" if name == "train throughput" else "wall time ratio"
        print(f"  {name:<17} {statistics.median(values):.2f}  ({what}; "
              f"{', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
