"""CartPole-v1 PPO ablation: greedy-solved seeds (mean return over 10 episodes >= 475) of 10,
on seeds 0-9 and 10-19, for variants of the shipped preset. Each (variant, seed set) trains
its 10 seeds as one program, in its own process (a stuck run is reported, not waited on).

    python benchmarks/cartpole_ablation.py [VARIANT ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# name -> overrides of the shipped cartpole_ppo experiment
RL_ZOO = ["budget.num_envs=8", "budget.num_steps=32", "agent.config.num_epochs=20",
          "agent.config.num_minibatches=1", "agent.config.gamma=0.98",
          "agent.optimizer.learning_rate=1e-3", "agent.config.entropy_coeff=0.0"]
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "rl_zoo (no clip schedule)": RL_ZOO,
    "gae_lambda 0.95": ["agent.config.gae_lambda=0.95"],
    "entropy 0": ["agent.config.entropy_coeff=0.0"],
    "8 envs x 64 steps, 4 minibatches": ["budget.num_envs=8", "budget.num_steps=64",
                                         "agent.config.num_minibatches=4"],
}
CHILD = """
import json, sys, rollax
from rollax.cache import enable_compilation_cache
enable_compilation_cache()
experiment = rollax.load_experiment("cartpole_ppo", json.loads(sys.argv[1]), seeds=10)
result = rollax.train(experiment, progress=False)
print(json.dumps(result.eval_returns.mean(axis=1).tolist()))
"""


def seed_set(overrides: list[str], first_seed: int, timeout: float = 240.0) -> list[float] | None:
    args = json.dumps([*overrides, "logging.enabled=false", f"seed={first_seed}"])
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True,
                             timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(names: list[str]) -> None:
    print(f"{'variant':<34} {'seeds 0-9':>9} {'seeds 10-19':>11} {'mean':>7} {'worst':>7} {'wall s':>7}")
    for name in names or list(VARIANTS):
        start = time.perf_counter()
        sets = [seed_set(VARIANTS[name], first) for first in (0, 10)]
        cells = ["stuck" if s is None else f"{sum(m >= 475.0 for m in s)}/10" for s in sets]
        means = [m for s in sets if s for m in s]
        summary = (f"{sum(means) / len(means):>7.1f} {min(means):>7.1f}" if means else f"{'-':>7} {'-':>7}")
        print(f"{name:<34} {cells[0]:>9} {cells[1]:>11} {summary} {time.perf_counter() - start:>7.1f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
