"""The unconditional base models on the digits, trained on first use and cached
(`rollax.weights`): a DDPM and a rectified flow, one `Denoiser` each."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.cache import models_dir
from rollax.checks import check_int
from rollax.diffusion.models import Denoiser
from rollax.diffusion.samplers import DDIMSampler, FlowSampler, sample
from rollax.weights import cached_or_trained

CACHE_FORMAT_VERSION = 3  # bump when the model, its training or its report changes
MODELS = ("ddpm", "flow")


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """A base model: `model` "ddpm" (noise prediction over `train_steps`) or "flow" (velocity),
    the denoiser's width and depth, and its training (Adam, minibatches of the train split)."""

    model: str = "ddpm"
    hidden_dim: int = 256
    depth: int = 3
    epochs: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3
    train_steps: int = 1000  # the DDPM's schedule (unused by "flow")
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"denoiser.model={self.model!r}; expected one of {list(MODELS)}")
        for name in ("hidden_dim", "depth", "epochs", "batch_size", "train_steps"):
            check_int(f"denoiser.{name}", getattr(self, name), 1)
        check_int("denoiser.seed", self.seed, 0)
        if not self.learning_rate > 0:
            raise ValueError(f"denoiser.learning_rate={self.learning_rate!r} must be > 0")

    def sampler(self, num_steps: int, noise: float | None = None) -> DDIMSampler | FlowSampler:
        """The chain's sampler: `noise` is DDIM's eta, or the flow SDE's noise level a (None:
        the sampler's memoryless default)."""
        if self.model == "ddpm":
            return DDIMSampler(num_steps, 1.0 if noise is None else noise, self.train_steps)
        return FlowSampler(num_steps) if noise is None else FlowSampler(num_steps, noise)


def denoiser_config(overrides: Any = None) -> DenoiserConfig:
    """The config of `overrides` (a table of `DenoiserConfig` fields; None: the default),
    naming an unknown key."""
    if overrides is None:
        return DenoiserConfig()
    if isinstance(overrides, DenoiserConfig):
        return overrides
    if not isinstance(overrides, dict):
        raise ValueError(f"denoiser must be a table of DenoiserConfig fields, got {overrides!r}")
    fields = {f.name for f in dataclasses.fields(DenoiserConfig)}
    if unknown := sorted(set(overrides) - fields):
        raise ValueError(f"denoiser: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    return DenoiserConfig(**overrides)


def load_denoiser(config: DenoiserConfig | dict | None = None, force: bool = False
                  ) -> tuple[Denoiser, dict]:
    """`(denoiser, report)`, trained on first use (tens of seconds) and cached (`force`:
    retrained); the report holds the training time, the final loss and the quality of 2,000
    samples of its 10-step chain by the digits' independent judge."""
    config = denoiser_config(config)
    payload = {"format": CACHE_FORMAT_VERSION, **dataclasses.asdict(config)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    path = models_dir() / f"denoiser-{config.model}-{digest}.npz"
    return cached_or_trained(path, lambda: _build(config), lambda: _train(config),
                             f"the {config.model} denoiser", force)


def _build(config: DenoiserConfig) -> Denoiser:
    return Denoiser(hidden_dim=config.hidden_dim, depth=config.depth, rngs=nnx.Rngs(config.seed))


def _train(config: DenoiserConfig) -> tuple[Denoiser, dict]:
    from rollax.generative.data import load_digits_split
    from rollax.generative.training import fit

    images = 2.0 * load_digits_split().train_images - 1.0  # the data range [-1, 1]
    sampler = config.sampler(1)
    model = _build(config)

    def loss(model: Denoiser, batch: tuple[jax.Array, ...], key: jax.Array) -> jax.Array:
        noisy, times, target = sampler.training_pair(batch[0], key)
        return jnp.mean((model(noisy, times) - target) ** 2)

    losses = fit(model, loss, (images,), epochs=config.epochs, batch_size=config.batch_size,
                 learning_rate=config.learning_rate, key=jax.random.key(config.seed))
    return model, {"final_loss": float(np.mean(losses[-10:])), **quality(model, config)}


QUALITY_SAMPLES = 2000


def quality(model: Denoiser, config: DenoiserConfig) -> dict:
    """The judge's view of unconditional samples of the shipped 10-step chain: its class
    histogram, the per-class diversity against real digits (samples grouped by the judge's
    class) and the realistic share."""
    from rollax.diffusion.env import to_images
    from rollax.generative.judge import load_digit_judge

    sampler = config.sampler(10)

    judge = load_digit_judge()
    images = to_images(jax.jit(lambda key: sample(model, sampler, key, QUALITY_SAMPLES,
                                                 model.data_dim))(jax.random.key(config.seed + 1)))
    judged = judge.judge(images).argmax(-1)
    metrics = judge(images, jax.nn.one_hot(judged, 10))
    return {"judge_class_histogram": np.bincount(np.asarray(judged), minlength=10).tolist(),
            "diversity_by_judged_class": round(float(metrics["diversity"]), 3),
            "worst_class_diversity": round(float(metrics["diversity_min"]), 3),
            "realistic": round(float(jnp.mean(metrics["realistic"])), 3),
            "judge_confident": round(float(jnp.mean(metrics["judge_confident"])), 3)}
