"""What the base models allow: the class-conditional samples an ideal fine-tuning would give,
by rejection sampling of the unconditional base model, judged like a run's evaluation.

With the reward log p(class | x) and a KL coefficient of 1, the KL-regularised optimum is the
base model's posterior p_base(x) p(class | x) / p(class) (the reward classifier's class
probabilities tilt the base model); a capped reward gives the base model restricted to the
samples the classifier gives the class with p >= the cap. Both are reachable here exactly, by
drawing many base samples and keeping, per class, those the reward classifier gives that class
(with p >= a threshold): 20 per class, judged by the independent judge as an evaluation does,
averaged over `--trials` draws. A fine-tuned policy's success and diversity can be read
against these figures.

    python benchmarks/diffusion_posterior.py [--samples 20000] [--noise 1.0 0.7 0.5]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from rollax.diffusion.env import to_images
from rollax.diffusion.ids import NOISE
from rollax.diffusion.pretrained import denoiser_config, load_denoiser
from rollax.diffusion.samplers import sample
from rollax.generative.judge import load_digit_judge
from rollax.generative.pretrained import load_pretrained

PER_CLASS, CLASSES = 20, 10


def judged(judge, images, probs, threshold, rng, trials):
    """Mean judge success, per-class diversity and realistic share of `trials` draws of 20
    samples per class among those the classifier assigns to it with p >= `threshold`."""
    figures = []
    for _ in range(trials):
        picks, classes = [], []
        for c in range(CLASSES):
            kept = np.flatnonzero((probs.argmax(1) == c) & (probs[:, c] >= threshold))
            picks += list(rng.choice(kept, PER_CLASS, replace=False))
            classes += [c] * PER_CLASS
        metrics = judge(images[np.array(picks)], jax.nn.one_hot(jnp.array(classes), CLASSES))
        figures.append([float(jnp.mean(metrics[k])) for k in ("judge_success", "diversity",
                                                              "realistic")])
    return np.mean(figures, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    args = parser.parse_args()
    classifier, _ = load_pretrained("classifier")
    judge = load_digit_judge()
    rng = np.random.default_rng(0)
    print("| base model | sampler noise | kept: p_classifier(class) | judge success | diversity | "
          "realistic |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for model, noises in (("ddpm", (1.0, 0.7, 0.5)), ("flow", (NOISE["flow"],))):
        config = denoiser_config({"model": model})
        denoiser, _ = load_denoiser(config)
        for noise in noises:
            sampler = config.sampler(args.steps, noise)
            x = sample(denoiser, sampler, jax.random.key(1), args.samples, 64)
            images = to_images(x)
            probs = np.asarray(jax.nn.softmax(classifier(images), -1))
            for threshold in args.thresholds:
                success, diversity, realistic = judged(judge, images, probs, threshold, rng,
                                                       args.trials)
                kept = "the classifier's class" if threshold == 0 else f">= {threshold}"
                print(f"| {model} | {noise} | {kept} | {success:.3f} | {diversity:.3f} | "
                      f"{realistic:.3f} |", flush=True)


if __name__ == "__main__":
    main()
