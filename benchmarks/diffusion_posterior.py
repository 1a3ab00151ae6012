"""What the base models allow: the class-conditional samples an ideal fine-tuning would give,
drawn from many unconditional base samples and judged like a run's evaluation.

Two kinds of ideal, per class c, reachable here exactly by resampling 20 of `--samples` base
samples:
- **kept, p >= threshold**: the base model restricted to the samples the reward classifier
  gives class c with p >= the threshold (a capped reward's optimum);
- **tilted, beta**: the KL-regularised optimum of the shipped saturating reward at a KL
  coefficient beta, p_base(x) exp(p(c | x) / beta) / Z, which a memoryless chain's fine-tuning
  converges to (Adjoint Matching, Domingo-Enrich et al., 2025); drawn with weights
  exp(p(c | x) / beta).
Each figure is judged by the independent judge as an evaluation does (20 per class), averaged
over `--trials` draws. A fine-tuned policy's success and diversity can be read against them.

    python benchmarks/diffusion_posterior.py [--samples 40000] [--thresholds 0 0.5 0.9 0.99]
        [--betas 0.005 0.01 0.02 0.1]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from rollax.diffusion.env import to_images
from rollax.diffusion.pretrained import denoiser_config, load_denoiser
from rollax.diffusion.samplers import sample
from rollax.generative.judge import load_digit_judge
from rollax.generative.pretrained import load_pretrained

PER_CLASS, CLASSES = 20, 10


def judged(judge, images, weights, rng, trials):
    """Mean judge success, per-class diversity and realistic share of `trials` draws of 20
    samples per class c, drawn without replacement with probabilities `weights[:, c]`."""
    figures = []
    for _ in range(trials):
        picks, classes = [], []
        for c in range(CLASSES):
            picks += list(rng.choice(len(images), PER_CLASS, replace=False,
                                     p=weights[:, c] / weights[:, c].sum()))
            classes += [c] * PER_CLASS
        metrics = judge(images[np.array(picks)], jax.nn.one_hot(jnp.array(classes), CLASSES))
        figures.append([float(jnp.mean(metrics[k])) for k in ("judge_success", "diversity",
                                                              "realistic")])
    return np.mean(figures, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.5, 0.9, 0.99])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.1])
    args = parser.parse_args()
    classifier, _ = load_pretrained("classifier")
    judge = load_digit_judge()
    rng = np.random.default_rng(0)
    print("| base model | sampler noise | ideal | judge success | diversity | realistic |\n"
          "| --- | ---: | --- | ---: | ---: | ---: |")
    for model, noises in (("ddpm", (1.0,)), ("flow", (2**0.5, 0.7))):
        config = denoiser_config({"model": model})
        denoiser, _ = load_denoiser(config)
        for noise in noises:
            sampler = config.sampler(args.steps, noise)
            images = to_images(sample(denoiser, sampler, jax.random.key(1), args.samples, 64))
            probs = np.asarray(jax.nn.softmax(classifier(images), -1), np.float64)
            ideals = [(f"kept, p >= {t}" if t else "kept, the classifier's class",
                       ((probs >= t) & (probs == probs.max(1, keepdims=True))).astype(float))
                      for t in args.thresholds]
            ideals += [(f"tilted, beta {b}", np.exp((probs - 1) / b)) for b in args.betas]
            for name, weights in ideals:
                success, diversity, realistic = judged(judge, images, weights, rng, args.trials)
                print(f"| {model} | {noise:.3g} | {name} | {success:.3f} | {diversity:.3f} | "
                      f"{realistic:.3f} |", flush=True)


if __name__ == "__main__":
    main()
