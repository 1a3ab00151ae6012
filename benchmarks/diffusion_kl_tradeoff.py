"""Reward hacking on a denoising chain, over the strength of the KL anchor to the base model.

Trains one diffusion experiment at several anchor strengths (`agent.config.beta` for GRPO and
RLOO, `kl_coeff` for REINFORCE and DPO; all seeds in one vmapped run each) and prints, per
strength, the reward model's score against what it cannot see: the independent judge's success,
the per-class diversity against real digits and the realistic share. With `--figure` it draws
the four against the strength.

    python benchmarks/diffusion_kl_tradeoff.py diffusion_reinforce --kl 0 0.001 0.01 0.1 \\
        --set env.params.class_reward=log_prob --figure docs/diffusion_kl_tradeoff.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from rollax.api import train
from rollax.presets import load_experiment

SHOWN = ("mean_reward", "judge_success", "diversity", "diversity_min", "realistic", "realism")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="a shipped diffusion experiment, e.g. diffusion_grpo")
    parser.add_argument("--kl", type=float, nargs="+", default=[0.0, 0.0003, 0.001, 0.003, 0.01])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="PNG to write")
    parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                        help="override a preset value for every strength (repeatable)")
    args = parser.parse_args()

    anchor = load_experiment(args.experiment).agent.config
    key = "kl_coeff" if hasattr(anchor, "kl_coeff") else "beta"
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for kl in args.kl:
            sets = [f"logging.root='{root}'", "logging.checkpoint=false", "logging.plot=false",
                    f"agent.config.{key}={kl}", *args.set]
            if args.total_steps:
                sets.append(f"budget.total_steps={args.total_steps}")
            start = time.perf_counter()
            result = train(load_experiment(args.experiment, seeds=args.seeds, overrides=sets),
                           progress=False)
            metrics = {name: np.asarray(values) for name, values in result.eval_metrics.items()}
            metrics["mean_reward"] = np.asarray(result.eval_returns).mean(axis=1)  # per seed
            rows.append((kl, metrics))
            cells = "  ".join(f"{name} {metrics[name].mean():.3f} (worst {metrics[name].min():.3f})"
                              for name in SHOWN if name in metrics)
            print(f"{key} {kl:<7g} {cells}  [{time.perf_counter() - start:.0f} s]", flush=True)
    if args.figure:
        _draw(args.experiment, key, rows, args.figure)
        print(f"wrote {args.figure}")


def _draw(experiment: str, key: str, rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strengths = [max(kl, 1e-5) for kl, _ in rows]  # 0 drawn at the left edge of the log axis
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].plot(strengths, [m["mean_reward"].mean() for _, m in rows], "o-", color="tab:red",
                 label="reward (what is optimised)")
    axes[0].set_ylabel("evaluation reward")
    for name, colour in (("judge_success", "tab:blue"), ("diversity", "tab:green"),
                         ("realistic", "tab:gray")):
        axes[1].plot(strengths, [m[name].mean() for _, m in rows], "o-", color=colour, label=name)
    axes[1].set_ylim(0, 1.1)
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xlabel(f"agent.config.{key} (0 at the left edge)")
        axis.legend(fontsize=8)
    figure.suptitle(f"{experiment}: the KL anchor against reward hacking (the judge's view)",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
