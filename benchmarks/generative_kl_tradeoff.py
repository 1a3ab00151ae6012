"""Reward against diversity over the KL anchor's strength, for the generative experiments.

Trains one experiment at several strengths of its KL anchor (`agent.config.kl_coeff` for PPO
and REINFORCE, `agent.config.beta` for GRPO, RLOO and DPO; all seeds in one vmapped run each),
prints the judge's metrics on samples of the sampling policy (mean and worst seed) and draws the
trade-off. The diversity of the env's VAE's own prior samples, grouped by the judge's class, is
printed too: what the untrained generator draws; for the GAN, the mean logit of held-out real
digits under the env's discriminator: samples scoring above it have found its blind spots.

    python benchmarks/generative_kl_tradeoff.py vae_ppo_diverse --kl 0 0.005 0.015 0.05 0.15
    python benchmarks/generative_kl_tradeoff.py gan_reinforce_diverse --kl 0 0.02 0.05 0.1 0.3
    python benchmarks/generative_kl_tradeoff.py gan_reinforce_generator --kl 0 0.02 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rollax.api import train
from rollax.presets import load_experiment

ROOT = Path(__file__).resolve().parents[1]
# (y axis, x axis) of the figure; metrics of the sampling policy
AXES = {"vae": ("sampled_judge_success", "sampled_diversity"),
        "gan": ("sampled_mean_reward", "sampled_class_entropy")}
SHOWN = ("sampled_mean_reward", "sampled_judge_success", "sampled_diversity",
         "sampled_diversity_min", "sampled_realistic", "sampled_classes_covered",
         "sampled_class_entropy")


def vae_ceiling(vae_config: dict, samples: int = 4000, per_class: int = 100
                ) -> tuple[float, float]:
    """Mean and worst per-class diversity ratio of VAE prior samples grouped by the judge."""
    import jax
    import jax.numpy as jnp

    from rollax.generative import load_digit_judge, load_pretrained
    from rollax.generative.judge import mean_pairwise_distance

    vae, _ = load_pretrained("vae", **vae_config)
    judge = load_digit_judge()
    images = vae.decoder(jax.random.normal(jax.random.key(0), (samples, vae.latent_dim)))
    classes = np.asarray(judge.judge(images).argmax(-1))
    real = np.asarray(judge.real_class_diversity[...])
    ratios = []
    for c, reference in enumerate(real):
        members = np.flatnonzero(classes == c)[:per_class]
        ratios.append(float(mean_pairwise_distance(images[members], jnp.ones(len(members)))) / reference)
    return float(np.mean(ratios)), float(np.min(ratios))


def real_digit_logit(gan_config: dict) -> float:
    """Mean discriminator logit of the held-out real digits."""
    import jax.numpy as jnp

    from rollax.generative import load_digits_split, load_pretrained

    gan, _ = load_pretrained("gan", **gan_config)
    return float(np.mean(gan.discriminator(jnp.asarray(load_digits_split().test_images))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="a shipped experiment, e.g. vae_ppo_diverse")
    parser.add_argument("--kl", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.1, 0.3])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--total-steps", type=int, default=None)
    parser.add_argument("--figure", type=Path, default=None, help="PNG to write")
    args = parser.parse_args()

    rows = []
    path = ROOT / "experiments" / f"{args.experiment}.toml"
    anchor = load_experiment(path).agent.config
    key = "kl_coeff" if hasattr(anchor, "kl_coeff") else "beta"
    with tempfile.TemporaryDirectory() as root:
        for kl in args.kl:
            sets = [f"logging.root='{root}'", "logging.checkpoint=false", "logging.plot=false",
                    f"agent.config.{key}={kl}"]
            if args.total_steps:
                sets.append(f"budget.total_steps={args.total_steps}")
            experiment = load_experiment(path, seeds=args.seeds, overrides=sets)
            result = train(experiment, progress=False)
            metrics = {k: np.asarray(v) for k, v in result.eval_metrics.items()}
            rows.append((kl, metrics))
            cells = "  ".join(f"{name.removeprefix('sampled_')} {metrics[name].mean():.3f} "
                              f"(worst {metrics[name].min():.3f})"
                              for name in SHOWN if name in metrics)
            print(f"{key} {kl:<6g} {cells}", flush=True)
    real_logit = None
    if args.experiment.startswith("vae"):
        mean, worst = vae_ceiling(dict(experiment.env.params.get("vae", {})))
        print(f"the VAE's prior samples grouped by the judge: diversity {mean:.3f}, "
              f"worst class {worst:.3f}")
    else:
        real_logit = real_digit_logit(dict(experiment.env.params.get("gan", {})))
        print(f"held-out real digits' mean discriminator logit: {real_logit:.3f}")
    if args.figure:
        _draw(args.experiment, key, rows, args.figure, real_logit)
        print(f"wrote {args.figure}")


def _draw(experiment: str, key: str, rows: list, path: Path, real_logit: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_name, x_name = AXES[experiment[:3]]
    figure, axis = plt.subplots(figsize=(5, 4))
    xs = [metrics[x_name].mean() for _, metrics in rows]
    ys = [metrics[y_name].mean() for _, metrics in rows]
    axis.plot(xs, ys, "o-")
    for (kl, _), x, y in zip(rows, xs, ys):
        axis.annotate(f"{kl:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if real_logit is not None:  # the GAN: class entropy from 0 to uniform, real digits' score
        axis.axhline(real_logit, color="gray", linestyle="--", label="held-out real digits")
        axis.set_xlim(0.0, np.log(10) + 0.05)
        axis.legend(fontsize=8, loc="lower left")
    axis.set_xlabel(x_name.replace("sampled_", "") + " (sampling policy)")
    axis.set_ylabel(y_name.replace("sampled_", "") + " (sampling policy)")
    axis.set_title(f"{experiment}: KL anchor trade-off (points: {key})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
