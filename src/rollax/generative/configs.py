"""Pretraining configs: frozen dataclasses whose fields (and a format version) key the cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rollax.checks import check_int


@dataclass(frozen=True)
class ClassifierConfig:
    """MLP digit classifier trained with cross-entropy."""

    hidden_dim: int = 128
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("hidden_dim", "epochs", "batch_size", "learning_rate"))


@dataclass(frozen=True)
class VAEConfig:
    """VAE with a standard-normal prior and Bernoulli pixels (BCE + kl_weight * KL loss).

    `kl_weight` < 1 is a beta-VAE (Higgins et al., 2017, with beta below 1): sharper decodes
    whose prior samples vary more from one another, as real digits do."""

    latent_dim: int = 8
    hidden_dim: int = 256
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 1e-3
    kl_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("latent_dim", "hidden_dim", "epochs", "batch_size", "learning_rate",
                               "kl_weight"))


@dataclass(frozen=True)
class GANConfig:
    """GAN with the non-saturating generator loss and a standard-normal latent.

    `discriminator_epochs` > 0 trains the discriminator on afterwards against the frozen
    generator, as discriminator rejection sampling does (Azadi et al., 2019): its logit then
    estimates log p_data(x) / p_generator(x), a reward that rises only as samples look real."""

    latent_dim: int = 8
    hidden_dim: int = 256
    epochs: int = 600
    batch_size: int = 64
    learning_rate: float = 5e-4
    discriminator_epochs: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("latent_dim", "hidden_dim", "epochs", "batch_size", "learning_rate"))
        check_int("GANConfig.discriminator_epochs", self.discriminator_epochs, 0)


CONFIGS = {"classifier": ClassifierConfig, "vae": VAEConfig, "gan": GANConfig}


def make_config(name: str, **overrides: object) -> ClassifierConfig | VAEConfig | GANConfig:
    """Build the config for model `name` ("vae", "gan", "classifier"), naming unknown keys."""
    if name not in CONFIGS:
        raise ValueError(f"unknown model {name!r}; valid models: {sorted(CONFIGS)}")
    config_cls = CONFIGS[name]
    valid = {field.name for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown config keys {unknown} for {name!r}; valid keys: {sorted(valid)}")
    return config_cls(**overrides)


def _check_positive(config: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be > 0, got {value!r}")
