"""A 24-run hyperparameter sweep of PPO CartPole-v1 (the shipped preset, 1e5 steps per run):
3 learning rates x 2 clip ranges x 4 seeds, trained three ways, each from a cold compilation
cache of its own, one after another:

- `rollax sweep`: one process, the 24 runs side by side in one compiled program;
- 6 `rollax train --seeds 4` processes, one per combination;
- 24 `rollax train` processes, one per run (the compile cache shared between them, as the CLI
  keeps it).

Printed: whole-process wall seconds of each way (summed over its processes), their ratios to
the sweep, and the final greedy return per combination (mean over its 4 seeds) of each way.

    python benchmarks/sweep.py [--total-steps 100000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from timing import run_process

RATES = (1e-4, 3e-4, 1e-3)
CLIPS = (0.1, 0.2)
SEEDS = 4


def rollax(args: list[str], cache: str, root: str) -> float:
    """`rollax ARGS` in a fresh process writing under `root`; its wall seconds."""
    env = {**os.environ, "ROLLAX_CACHE_DIR": cache}
    argv = ["-m", "rollax", *args, "--quiet", "--set", f"logging.root='{root}'"]
    return run_process(argv, env=env)[0]


def final_returns(root: str) -> dict[tuple[float, float], list[float]]:
    """`{(learning rate, clip): [final greedy return per seed]}` of every run under `root`."""
    out: dict[tuple[float, float], list[float]] = {}
    for results in Path(root).rglob("results.json"):
        config = json.loads(next(results.parent.glob("seed_*/config.json")).read_text())
        key = (config["agent"]["optimizer"]["learning_rate"], config["agent"]["config"]["clip_param"])
        out.setdefault(key, []).extend(json.loads(results.read_text())["eval_mean_return"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-steps", type=int, default=100_000, help="env steps per run")
    args = parser.parse_args()
    budget = ["--set", f"budget.total_steps={args.total_steps}"]
    combos = list(itertools.product(RATES, CLIPS))

    def values(rate, clip):
        return ["--set", f"agent.optimizer.learning_rate={rate}", "--set", f"agent.config.clip_param={clip}"]

    ways = {
        "one sweep process": [["sweep", "cartpole_ppo", "--grid", f"agent.optimizer.learning_rate={','.join(map(str, RATES))}",
                               "--grid", f"agent.config.clip_param={','.join(map(str, CLIPS))}",
                               "--seeds", str(SEEDS), *budget]],
        "6 train processes x 4 seeds": [["train", "cartpole_ppo", "--seeds", str(SEEDS), *values(*c), *budget]
                                        for c in combos],
        "24 train processes x 1 seed": [["train", "cartpole_ppo", "--set", f"seed={s}", *values(*c), *budget]
                                        for c in combos for s in range(SEEDS)],
    }
    print(f"PPO CartPole-v1, {len(combos)} combinations x {SEEDS} seeds = {len(combos) * SEEDS} runs of "
          f"{args.total_steps} env steps; whole-process seconds, each way from a cold compile cache")
    walls, returns = {}, {}
    for name, commands in ways.items():
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as root:
            walls[name] = sum(rollax(command, cache, root) for command in commands)
            returns[name] = final_returns(root)
        print(f"{name:<28} {len(commands):>3} process(es) {walls[name]:>8.1f} s")
    sweep_wall = walls["one sweep process"]
    for name in list(ways)[1:]:
        print(f"one sweep process / {name}: {sweep_wall / walls[name]:.2f}")
    print("final greedy return per combination, mean over seeds: " + ", ".join(ways))
    for combo in combos:
        cells = "  ".join(f"{np.mean(returns[name][combo]):>7.1f}" for name in ways)
        print(f"  learning_rate={combo[0]:<7} clip_param={combo[1]:<4} {cells}")


if __name__ == "__main__":
    main()
