"""CartPole-v1 PPO ablation: greedy-solved seeds (mean return over 10 episodes >= 475) of 10,
on seeds 0-9 and 10-19, for variants of the shipped preset. Each (variant, seed set) trains
its 10 seeds as one program, in its own process (a stuck run is reported, not waited on).

    python benchmarks/cartpole_ablation.py [VARIANT ...] [--first-seeds 0 10]
"""

from __future__ import annotations

import argparse
import subprocess
import time

from cartpole_ppo import run

# name -> overrides of the shipped cartpole_ppo experiment (RL Zoo's CartPole settings plus
# value clipping), each at the classic 1e5 steps (the preset now trains 1.5e5: docs/baselines.md);
# PREVIOUS is the preset before it (rejax's settings with gae_lambda 0.8 and an annealed rate)
AT_1E5 = ["budget.total_steps=100000"]
NO_VALUE_CLIP = ["agent.config.clip_value_loss=false"]
PREVIOUS = ["budget.num_envs=5", "budget.num_steps=100", "agent.config.num_epochs=5",
            "agent.config.num_minibatches=5", "agent.config.gamma=0.99",
            "agent.config.entropy_coeff=0.01", "agent.config.clip_value_loss=false",
            "agent.optimizer.learning_rate=7.5e-4"]
REJAX = [*AT_1E5, *PREVIOUS, "agent.config.gae_lambda=0.95",
         "agent.optimizer.anneal_lr=false"]  # published
VARIANTS: dict[str, list[str]] = {
    "preset (rl_zoo + value clipping)": [],
    "preset, 10 epochs": ["agent.config.num_epochs=10"],
    "preset, 5 epochs": ["agent.config.num_epochs=5"],
    "rl_zoo (no value clipping)": NO_VALUE_CLIP,
    "rl_zoo, 2 minibatches": [*NO_VALUE_CLIP, "agent.config.num_minibatches=2"],
    "rl_zoo, 10 epochs": [*NO_VALUE_CLIP, "agent.config.num_epochs=10"],
    "rl_zoo, gamma 0.99": [*NO_VALUE_CLIP, "agent.config.gamma=0.99"],
    "rl_zoo, budget 1.5e5": [*NO_VALUE_CLIP, "budget.total_steps=150000"],
    "previous preset": PREVIOUS,
    "rejax (gae 0.95, constant lr)": REJAX,
    "previous, constant lr": [*PREVIOUS, "agent.optimizer.anneal_lr=false"],
    "previous, gae_lambda 0.95": [*PREVIOUS, "agent.config.gae_lambda=0.95"],
    "previous, entropy 0": [*PREVIOUS, "agent.config.entropy_coeff=0.0"],
    "previous, value clipping": [*PREVIOUS, "agent.config.clip_value_loss=true"],
    "previous, no advantage normalisation": [*PREVIOUS, "agent.config.normalize_advantages=false"],
    "previous, target_kl 0.02": [*PREVIOUS, "agent.config.target_kl=0.02"],
    "previous, 8 envs x 64 steps, 4 minibatches": [*PREVIOUS, "budget.num_envs=8",
                                                   "budget.num_steps=64",
                                                   "agent.config.num_minibatches=4"],
    "previous, budget 2e5": [*PREVIOUS, "budget.total_steps=200000"],
}


def seed_set(overrides: list[str], first_seed: int, timeout: float = 240.0) -> list[float] | None:
    """Greedy mean return per seed of FIRST..FIRST+9 trained as one program; None if stuck."""
    try:
        return run(10, [*AT_1E5, *overrides, f"seed={first_seed}"], timeout=timeout)["eval"]
    except subprocess.TimeoutExpired:
        return None


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
