"""CartPole-v1 PPO ablation: greedy-solved seeds (mean return over 10 episodes >= 475) of 10,
on seeds 0-9 and 10-19, for each variant of the shipped preset. Every variant trains its 10
seeds in one compiled program.

    python benchmarks/cartpole_ablation.py [VARIANT ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np

import rollax
from rollax.cache import enable_compilation_cache

# name -> overrides of experiments/cartpole_ppo.toml
VARIANTS: dict[str, list[str]] = {
    "preset": [],
}


def solved(overrides: list[str], first_seed: int) -> tuple[int, float, float, float]:
    experiment = rollax.load_experiment("cartpole_ppo", [*overrides, "logging.enabled=false",
                                                         f"seed={first_seed}"], seeds=10)
    start = time.perf_counter()
    result = rollax.train(experiment, progress=False)
    means = result.eval_returns.mean(axis=1)
    return int((means >= 475.0).sum()), float(means.mean()), float(means.min()), time.perf_counter() - start


def main(names: list[str]) -> None:
    enable_compilation_cache()
    print(f"{'variant':<28} {'seeds 0-9':>9} {'seeds 10-19':>11} {'mean':>7} {'worst':>7} {'wall s':>7}")
    for name in names or list(VARIANTS):
        a, mean_a, worst_a, wall_a = solved(VARIANTS[name], 0)
        b, mean_b, worst_b, wall_b = solved(VARIANTS[name], 10)
        print(f"{name:<28} {a:>7}/10 {b:>9}/10 {np.mean([mean_a, mean_b]):>7.1f} "
              f"{min(worst_a, worst_b):>7.1f} {wall_a + wall_b:>7.1f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
