"""Small Flax NNX models for the 8x8 digits: a VAE, a GAN and a classifier.

Encoder and decoder (generator and discriminator) are separate submodules so that each can be
handed to an environment or a policy on its own (`vae.decoder`, `gan.generator`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.generative.data import IMAGE_SIZE, NUM_CLASSES

LOG_2PI = math.log(2.0 * math.pi)


class Encoder(nnx.Module):
    """Images `[B, 64]` -> posterior `(mean [B, d], log_var [B, d])`."""

    def __init__(self, latent_dim: int, hidden_dim: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IMAGE_SIZE, hidden_dim, rngs=rngs)
        self.mean = nnx.Linear(hidden_dim, latent_dim, rngs=rngs)
        self.log_var = nnx.Linear(hidden_dim, latent_dim, rngs=rngs)

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        hidden = nnx.relu(self.hidden(images))
        return self.mean(hidden), self.log_var(hidden)


class Decoder(nnx.Module):
    """Latents `[B, d]` -> images `[B, 64]` in [0, 1] (sigmoid of `logits`)."""

    def __init__(self, latent_dim: int, hidden_dim: int, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.hidden = nnx.Linear(latent_dim, hidden_dim, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, IMAGE_SIZE, rngs=rngs)

    def logits(self, latents: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(latents)))

    def __call__(self, latents: jax.Array) -> jax.Array:
        return nnx.sigmoid(self.logits(latents))


class VAE(nnx.Module):
    """Gaussian-latent VAE with a Bernoulli (sigmoid) pixel likelihood."""

    def __init__(self, latent_dim: int = 8, hidden_dim: int = 256, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim, hidden_dim, rngs=rngs)
        self.decoder = Decoder(latent_dim, hidden_dim, rngs=rngs)

    def __call__(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        """Reparameterised pass: `(recon_logits [B, 64], mean [B, d], log_var [B, d])`."""
        mean, log_var = self.encoder(images)
        latents = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
        return self.decoder.logits(latents), mean, log_var


class Discriminator(nnx.Module):
    """Images `[B, 64]` -> realness logit `[B]`."""

    def __init__(self, hidden_dim: int, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IMAGE_SIZE, hidden_dim, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, 1, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.out(nnx.leaky_relu(self.hidden(images), 0.2))[..., 0]


class GAN(nnx.Module):
    """A generator (a `Decoder`: latent -> image) and a discriminator (image -> logit)."""

    def __init__(self, latent_dim: int = 8, hidden_dim: int = 256, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.generator = Decoder(latent_dim, hidden_dim, rngs=rngs)
        self.discriminator = Discriminator(hidden_dim, rngs=rngs)


class Classifier(nnx.Module):
    """Images `[B, 64]` -> class logits `[B, 10]`."""

    def __init__(self, hidden_dim: int = 128, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(IMAGE_SIZE, hidden_dim, rngs=rngs)
        self.out = nnx.Linear(hidden_dim, NUM_CLASSES, rngs=rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.out(nnx.relu(self.hidden(images)))


def prior_log_density(latents: jax.Array) -> jax.Array:
    """Standard-normal log-density of latents `[B, d]` -> `[B]` (the VAE prior)."""
    latents = jnp.asarray(latents)
    return -0.5 * jnp.sum(latents**2, axis=-1) - 0.5 * latents.shape[-1] * LOG_2PI
