"""Sample grids before and after fine-tuning a denoising chain: the base model (the untrained
policy, which ignores the class) and a trained run's sampling policy, 10 samples of each class
per row, side by side in one PNG; prints the judge's success on each grid.

    python benchmarks/diffusion_grids.py runs/diffusion_grpo --out docs/diffusion_grpo_grids.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import rollax
from rollax.diffusion.policy import DenoiserPolicy
from rollax.logging.logger import image_grid

PER_CLASS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a diffusion run folder")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    agent = rollax.load_agent(args.run)
    env = agent.env
    classes = [c for c in range(env.num_conditions) for _ in range(PER_CLASS)]
    base = DenoiserPolicy(env.denoiser, env.sampler, env.num_conditions, critic=False,
                          rngs=nnx.Rngs(0))
    key = jax.random.key(args.seed)
    before = np.asarray(agent.source.sample_images(base, classes, 0, key, False))
    after = agent.sample_images(classes=classes, seed=args.seed)
    judge = rollax.generative.load_digit_judge()
    for name, images in (("base model", before), ("fine-tuned", after)):
        hits = np.asarray(judge.judge(images.reshape(len(classes), -1)).argmax(-1)) == classes
        print(f"{name}: judge success {hits.mean():.3f} on {len(classes)} samples")
    _draw(before, after, args.out, agent.experiment.name)
    print(f"wrote {args.out}")


def _draw(before: np.ndarray, after: np.ndarray, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for axis, images, title in ((axes[0], before, "base model (asked for rows 0-9)"),
                                (axes[1], after, f"{name}: row c asks for class c")):
        axis.imshow(image_grid(images), interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
