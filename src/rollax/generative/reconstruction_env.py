"""Encoder-as-policy environment: observe a real digit, act with a latent, be scored on how well
the decoded latent reconstructs it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rollax.generative.judge import reconstruction_metrics
from rollax.generative.latent_env import LatentEnv, LatentEnvParams
from rollax.generative.models import VAE
from rollax.generative.rewards import reconstruction_reward

RENDER_PAIRS = 18  # target/reconstruction pairs in the sample grid (6 columns: 3 pairs a row)


class ReconstructionEnv(LatentEnv):
    """Observation: a flattened image `[64]` from `images`; action: a latent `[d]`; reward: the
    negative per-pixel MSE between `vae.decoder(latent)` and that image. Horizon 1 or K edits.
    Evaluation reports `eval/mse`; `render` shows (target, reconstruction) pairs side by side."""

    def __init__(self, vae: VAE, images: np.ndarray, *, horizon: int = 1,
                 action_bound: float = 3.0, reward_on: str = "final",
                 name: str = "rollax/VAEReconstruct-v0"):
        images = np.asarray(images, np.float32)
        if images.ndim != 2 or images.shape[1] != 64:
            raise ValueError(f"images must be flattened digits [N, 64], got {images.shape}")
        super().__init__(vae.decoder, reconstruction_reward, vae.latent_dim, conditions=images,
                         horizon=horizon, action_bound=action_bound, reward_on=reward_on,
                         name=name, evaluator=reconstruction_metrics)

    def render(self, params: LatentEnvParams, observations: jax.Array,
               actions: jax.Array) -> jax.Array:
        """`[2P, 8, 8]`: target, reconstruction, target, ... for the first P observations."""
        pairs = min(RENDER_PAIRS, observations.shape[0])
        targets = self.conditions_of(observations)[:pairs]
        samples = self.samples(params, observations[:pairs], actions[:pairs])
        return jnp.stack([targets, samples], axis=1).reshape(2 * pairs, *self.image_shape)
