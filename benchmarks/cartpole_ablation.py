"""CartPole-v1 PPO ablation: greedy-solved seeds (mean return over 10 episodes >= 475) of 10,
on seeds 0-9 and 10-19, for variants of the shipped preset. Each (variant, seed set) trains
its 10 seeds as one program, in its own process (a stuck run is reported, not waited on).

    python benchmarks/cartpole_ablation.py [VARIANT ...] [--first-seeds 0 10]
"""

from __future__ import annotations

import argparse
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
    "rejax (gae 0.95, constant lr)": ["agent.config.gae_lambda=0.95", "agent.optimizer.anneal_lr=false"],
    "constant lr": ["agent.optimizer.anneal_lr=false"],
    "gae_lambda 0.95": ["agent.config.gae_lambda=0.95"],
    "entropy 0": ["agent.config.entropy_coeff=0.0"],
    "value clipping": ["agent.config.clip_value_loss=true"],
    "no advantage normalisation": ["agent.config.normalize_advantages=false"],
    "target_kl 0.02": ["agent.config.target_kl=0.02"],
    "8 envs x 64 steps, 4 minibatches": ["budget.num_envs=8", "budget.num_steps=64",
                                         "agent.config.num_minibatches=4"],
    "budget 2e5": ["budget.total_steps=200000"],
    "rl_zoo (no clip schedule)": RL_ZOO,
    "rl_zoo + value clipping": [*RL_ZOO, "agent.config.clip_value_loss=true"],
    "rl_zoo + value clipping, 10 epochs": [*RL_ZOO, "agent.config.clip_value_loss=true",
                                           "agent.config.num_epochs=10"],
    "rl_zoo + value clipping, 5 epochs": [*RL_ZOO, "agent.config.clip_value_loss=true",
                                          "agent.config.num_epochs=5"],
    "rl_zoo, 2 minibatches": [*RL_ZOO, "agent.config.num_minibatches=2"],
    "rl_zoo, 10 epochs": [*RL_ZOO, "agent.config.num_epochs=10"],
    "rl_zoo, gamma 0.99": [*RL_ZOO, "agent.config.gamma=0.99"],
    "rl_zoo, budget 1.5e5": [*RL_ZOO, "budget.total_steps=150000"],
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


def main(names: list[str], first_seeds: list[int]) -> None:
    sets_header = " ".join(f"{f'seeds {f}-{f + 9}':>11}" for f in first_seeds)
    print(f"{'variant':<34} {sets_header} {'mean':>7} {'worst':>7} {'wall s':>7}")
    for name in names or list(VARIANTS):
        start = time.perf_counter()
        sets = [seed_set(VARIANTS[name], first) for first in first_seeds]
        cells = ["stuck" if s is None else f"{sum(m >= 475.0 for m in s)}/10" for s in sets]
        means = [m for s in sets if s for m in s]
        summary = (f"{sum(means) / len(means):>7.1f} {min(means):>7.1f}" if means else f"{'-':>7} {'-':>7}")
        print(f"{name:<34} {' '.join(f'{c:>11}' for c in cells)} {summary} "
              f"{time.perf_counter() - start:>7.1f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT",
                        help=f"any of: {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--first-seeds", type=int, nargs="+", default=[0, 10],
                        help="each seed set is FIRST..FIRST+9 (default: 0 10)")
    args = parser.parse_args()
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    main(args.variants, args.first_seeds)
