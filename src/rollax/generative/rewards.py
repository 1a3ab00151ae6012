"""Reward functions over decoded digit samples, following the `RewardFunction` protocol.

`reward_fn(samples [B, 64], conditions [B, C] | None) -> [B]`. They are NNX modules so that an
environment can `nnx.split` them and carry their frozen weights in its params pytree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.generative.models import GAN, VAE, Classifier, Discriminator, prior_log_density
from rollax.rl.rewards import CompositeReward


def _require_conditions(conditions: jax.Array | None, num_classes: int, who: str) -> jax.Array:
    if conditions is None or conditions.shape[-1] != num_classes:
        shape = None if conditions is None else conditions.shape
        raise ValueError(f"{who} needs one-hot target conditions [B, {num_classes}], got {shape}")
    return conditions


class ClassifierReward(nnx.Module):
    """Classifier log-probability (or probability) of the target class given as a one-hot."""

    def __init__(self, classifier: Classifier, kind: str = "log_prob"):
        if kind not in ("log_prob", "prob"):
            raise ValueError(f"kind must be 'log_prob' or 'prob', got {kind!r}")
        self.classifier = classifier
        self.kind = kind

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None) -> jax.Array:
        log_probs = jax.nn.log_softmax(self.classifier(samples), axis=-1)
        targets = _require_conditions(conditions, log_probs.shape[-1], "ClassifierReward")
        target_log_prob = jnp.sum(log_probs * targets, axis=-1)
        return target_log_prob if self.kind == "log_prob" else jnp.exp(target_log_prob)


class VAERealismReward(nnx.Module):
    """Prior log-density of the re-encoded sample, per latent dimension: `log N(enc(x); 0, I) / d`.

    It scores the sample, not the action, so it works for any decoder; an off-manifold latent
    (e.g. a corner of the action box) decodes to an image the encoder maps far into the prior's
    tail, which scores low, so a policy cannot buy reward with extreme latents.
    """

    def __init__(self, vae: VAE):
        self.encoder = vae.encoder
        self.latent_dim = vae.latent_dim

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None) -> jax.Array:
        del conditions
        mean, _ = self.encoder(samples)
        return prior_log_density(mean) / self.latent_dim


class ClassAndRealismReward(CompositeReward):
    """`class_weight * log p(target | x) + realism_weight * VAERealismReward(x)`; `class_kind=
    "prob"` scores p(target | x) instead, which saturates once the class is clear, so it does
    not keep pulling every sample towards the most typical digit as the log-probability does."""

    def __init__(self, classifier: Classifier, vae: VAE, class_weight: float = 1.0,
                 realism_weight: float = 0.1, class_kind: str = "log_prob"):
        super().__init__([ClassifierReward(classifier, class_kind), VAERealismReward(vae)],
                         [class_weight, realism_weight])


class DiscriminatorReward(nnx.Module):
    """GAN discriminator logit (an estimate of log p_data/p_model) or `log D(x)`."""

    def __init__(self, discriminator: Discriminator | GAN, kind: str = "logit"):
        if kind not in ("logit", "log_prob"):
            raise ValueError(f"kind must be 'logit' or 'log_prob', got {kind!r}")
        if isinstance(discriminator, GAN):
            discriminator = discriminator.discriminator
        self.discriminator = discriminator
        self.kind = kind

    def __call__(self, samples: jax.Array, conditions: jax.Array | None = None) -> jax.Array:
        del conditions
        logits = self.discriminator(samples)
        return logits if self.kind == "logit" else jax.nn.log_sigmoid(logits)


def reconstruction_reward(samples: jax.Array, conditions: jax.Array | None = None) -> jax.Array:
    """Negative per-pixel MSE between samples `[B, P]` and target images `conditions [B, P]`."""
    if conditions is None or conditions.shape != samples.shape:
        shape = None if conditions is None else conditions.shape
        raise ValueError(f"reconstruction_reward needs target images shaped like the samples "
                         f"{samples.shape}, got conditions {shape}")
    return -jnp.mean((samples - conditions) ** 2, axis=-1)
