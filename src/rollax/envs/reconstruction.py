"""Encoder-as-policy environment: observe a real digit, act with a latent, be scored on how well
the decoded latent reconstructs it."""

from __future__ import annotations

import numpy as np

from rollax.envs.latent import LatentEnv
from rollax.generative.models import VAE
from rollax.generative.rewards import reconstruction_reward


class ReconstructionEnv(LatentEnv):
    """Observation: a flattened image `[64]` from `images`; action: a latent `[d]`; reward: the
    negative per-pixel MSE between `vae.decoder(latent)` and that image. Horizon 1 or K edits."""

    def __init__(self, vae: VAE, images: np.ndarray, *, horizon: int = 1,
                 action_bound: float = 3.0, reward_on: str = "final",
                 name: str = "rollax/VAEReconstruct-v0"):
        images = np.asarray(images, np.float32)
        if images.ndim != 2 or images.shape[1] != 64:
            raise ValueError(f"images must be flattened digits [N, 64], got {images.shape}")
        super().__init__(vae.decoder, reconstruction_reward, vae.latent_dim, conditions=images,
                         horizon=horizon, action_bound=action_bound, reward_on=reward_on,
                         name=name)
