"""The digit models pretrained on first use, one cached `.npz` weight file per config
(`rollax.weights`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from flax import nnx

from rollax.cache import models_dir
from rollax.generative import training
from rollax.generative.configs import make_config
from rollax.generative.data import load_digits_split
from rollax.generative.models import GAN, VAE, Classifier
from rollax.weights import cached_or_trained

CACHE_FORMAT_VERSION = 1  # bump when model code changes so old weights are not reused
MODEL_NAMES = ("vae", "gan", "classifier")


def cache_dir() -> Path:
    """Where weights are cached: `rollax.cache.models_dir()`, i.e. `$ROLLAX_CACHE_DIR/models`
    (default `~/.cache/rollax/models`, honouring `$XDG_CACHE_HOME`)."""
    return models_dir()


def cache_path(name: str, **config: Any) -> Path:
    """The cache file for model `name` with these config overrides (a hash of the full config)."""
    resolved = make_config(name, **config)
    payload = {"model": name, "format": CACHE_FORMAT_VERSION, **dataclasses.asdict(resolved)}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{name}-{digest}.npz"


def pretrain(name: str, force: bool = False, **config: Any) -> dict[str, Any]:
    """Train model `name` ("vae", "gan", "classifier") unless cached (or `force`); its report."""
    return _load_or_train(name, force, config)[1]


def load_pretrained(name: str, **config: Any) -> tuple[nnx.Module, dict[str, Any]]:
    """`(model, report)` for `name`, training and caching it on first use.

    The report holds the quality figures measured after training (classifier test accuracy,
    VAE test reconstruction error, GAN confident-sample share), plus `source`: "cache" or
    "trained". Each call returns a fresh model object, so fine-tuning one copy leaves others alone.
    """
    return _load_or_train(name, False, config)


def _load_or_train(name: str, force: bool, config: dict[str, Any]) -> tuple[nnx.Module, dict]:
    resolved = make_config(name, **config)
    return cached_or_trained(cache_path(name, **config), lambda: _build(name, resolved),
                             lambda: _train(name, resolved), name, force)


def _build(name: str, config: Any) -> nnx.Module:
    rngs = nnx.Rngs(config.seed)
    if name == "classifier":
        return Classifier(config.hidden_dim, rngs=rngs)
    if name == "vae":
        return VAE(config.latent_dim, config.hidden_dim, rngs=rngs)
    return GAN(config.latent_dim, config.hidden_dim, rngs=rngs)


def _train(name: str, config: Any) -> tuple[nnx.Module, dict[str, Any]]:
    split = load_digits_split()
    if name == "classifier":
        model = training.train_classifier(split, config)
        return model, training.classifier_report(model, split)
    if name == "vae":
        model = training.train_vae(split, config)
        return model, training.vae_report(model, split)
    if config.discriminator_epochs:  # the finished GAN, trained and cached once for every refit
        model, _ = load_pretrained("gan", **(dataclasses.asdict(config) | {"discriminator_epochs": 0}))
        training.refit_discriminator(model, split.train_images, config)
    else:
        model = training.train_gan(split, config)
    judge, _ = load_pretrained("classifier")
    return model, training.gan_report(model, judge, split)
