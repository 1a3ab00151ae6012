"""Policies initialised from pretrained generative models (the encoder as a latent policy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.generative.models import VAE
from rollax.networks.distributions import DiagGaussian


class EncoderPolicy(nnx.Module):
    """Gaussian policy over latents whose mean is a copy of the VAE encoder's mean head.

    Images `[B, 64]` -> `DiagGaussian(mean [B, d], log_std [d])`, or `(DiagGaussian, value [B])` with
    `with_value=True` (a fresh value head on the encoder's hidden layer, for PPO). The copy is
    independent: fine-tuning the policy leaves the VAE unchanged.
    """

    def __init__(self, vae: VAE, *, log_std_init: float = -1.0, with_value: bool = False,
                 rngs: nnx.Rngs | None = None):
        encoder = nnx.clone(vae.encoder)
        self.hidden = encoder.hidden
        self.mean = encoder.mean
        self.log_std = nnx.Param(jnp.full((vae.latent_dim,), log_std_init, jnp.float32))
        self.with_value = with_value
        if with_value:
            hidden_dim = self.hidden.out_features
            self.value = nnx.Linear(hidden_dim, 1, rngs=rngs or nnx.Rngs(0))

    def __call__(self, images: jax.Array):
        hidden = nnx.relu(self.hidden(images))
        policy = DiagGaussian(self.mean(hidden), self.log_std[...])
        if self.with_value:
            return policy, self.value(hidden)[..., 0]
        return policy


def encoder_policy(vae: VAE, *, log_std_init: float = -1.0,
                   with_value: bool = False) -> EncoderPolicy:
    """A latent policy for `rollax/VAEReconstruct-v0` that starts as the VAE's encoder mean."""
    return EncoderPolicy(vae, log_std_init=log_std_init, with_value=with_value)
