"""Stochastic samplers whose every step is a Gaussian `N(mean, std^2 I)` with an exact
log-probability: what makes the denoising chain an MDP a policy gradient can learn on.

A chain has `num_steps` (K) steps; step k (k = 0 at pure noise) maps x to the next x. Both
samplers take the denoiser's output at `(x, model_time(k))` and give `(mean, std)`.

- `DDIMSampler`: a DDPM (noise prediction, linear betas over `train_steps`, Ho et al., 2020)
  sampled on K strided timesteps with DDIM's mean at eta (Song et al., 2021, eq. 12 and 16) and
  eta times Ho et al.'s larger step std sqrt(beta) (the posterior's on the last step): eta = 1
  is ancestral sampling with sigma^2 = beta, eta = 0 DDIM's deterministic chain. The predicted
  clean image is not clipped to the data range: clipping zeroes the gradient of the noisy early
  steps, where the class of the digit is decided. The last step lands on timestep 0: every
  step, the last included, keeps a log-probability (as DDPO's sampler does).
- `FlowSampler`: rectified flow (x_t = (1 - t) x_0 + t noise, velocity v = noise - x_0; Liu et
  al., 2023) sampled with the SDE that has the ODE's marginals (Flow-GRPO, Liu et al., 2025,
  eq. 8-9): x_{t-h} = x_t - h [v + sigma_t^2 / (2t) (x_t + (1 - t) v)] + sigma_t sqrt(h) z,
  sigma_t = a sqrt(t / (1 - t)), with t = 1 read as 1 - h in the denominator (Flow-GRPO's
  code does the same) and a = `noise_level`.

Both are memoryless at the shipped noise (eta = 1; a = sqrt 2, where sigma_t^2 = 2 t / (1 - t)
is Adjoint Matching's memoryless schedule of this flow, Domingo-Enrich et al., 2025): the
chain's last image is independent of its first noise, which is what lets a KL-anchored
fine-tuning reach the base model tilted by the reward rather than a per-noise tilt that
loses diversity.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class DDIMSampler:
    num_steps: int = 10
    eta: float = 1.0
    train_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    min_std: float = 0.1  # a floor on the step std: the last would be 0.01 (docs/diffusion.md)

    def __post_init__(self):
        _check_steps(self.num_steps, self.train_steps - 1, "the DDPM's train_steps - 1")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta={self.eta!r} must be in [0, 1]")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def alphas_cumprod(self) -> np.ndarray:
        betas = np.linspace(self.beta_start, self.beta_end, self.train_steps, dtype=np.float64)
        return np.cumprod(1.0 - betas)

    def timesteps(self) -> np.ndarray:
        """`[K + 1]` training timesteps from 0 to train_steps - 1; the chain walks them down."""
        return np.round(np.linspace(0, self.train_steps - 1, self.num_steps + 1)).astype(np.int64)

    def _tables(self):
        alphas = self.alphas_cumprod()[self.timesteps()[::-1]]  # [K + 1], from the noisiest
        current, previous = alphas[:-1], alphas[1:]
        posterior = self.eta * np.sqrt((1 - previous) / (1 - current) * (1 - current / previous))
        # Ho et al.'s larger variance sigma^2 = beta (strided: 1 - a / a_prev) on every step but
        # the last: the posterior's smaller one shrinks a 10-step chain's samples (on data
        # N(0, 0.5^2) with the exact denoiser they end with std 0.35; with beta, 0.50)
        std = np.append(self.eta * np.sqrt(1 - current / previous)[:-1], posterior[-1])
        if self.eta > 0:
            posterior, std = np.maximum(posterior, self.min_std), np.maximum(std, self.min_std)
        times = self.timesteps()[::-1][:-1] / self.train_steps
        return tuple(jnp.asarray(table, jnp.float32)
                     for table in (current, previous, posterior, std, times))

    def model_time(self, step: jax.Array) -> jax.Array:
        return self._tables()[4][step]

    def step_std(self, step: jax.Array) -> jax.Array:
        return self._tables()[3][step]

    def transition(self, output: jax.Array, x: jax.Array, step: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """`(mean, std)` of the next x given the predicted noise `output` at chain step `step`:
        DDIM's mean at eta (the posterior's at 1), the step std of `_tables`."""
        current, previous, posterior, std, _ = self._tables()
        a, a_prev, p, s = (table[step][..., None] for table in (current, previous, posterior, std))
        x0 = (x - jnp.sqrt(1 - a) * output) / jnp.sqrt(a)
        mean = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1 - a_prev - p**2, 0.0)) * output
        return mean, s[..., 0]

    def training_pair(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        """`(noisy images, model times, target)` for the denoising loss on clean `images`."""
        time_key, noise_key = jax.random.split(key)
        steps = jax.random.randint(time_key, images.shape[:1], 0, self.train_steps)
        alpha = jnp.asarray(self.alphas_cumprod(), jnp.float32)[steps][:, None]
        noise = jax.random.normal(noise_key, images.shape)
        return jnp.sqrt(alpha) * images + jnp.sqrt(1 - alpha) * noise, steps / self.train_steps, noise


@dataclasses.dataclass(frozen=True)
class FlowSampler:
    num_steps: int = 10
    noise_level: float = 2.0**0.5  # memoryless (module docstring); Flow-GRPO used 0.7

    def __post_init__(self):
        _check_steps(self.num_steps, None, "")
        if not self.noise_level >= 0.0:
            raise ValueError(f"noise_level={self.noise_level!r} must be >= 0")

    @property
    def stochastic(self) -> bool:
        return self.noise_level > 0

    def _tables(self):
        h = 1.0 / self.num_steps
        t = 1.0 - h * np.arange(self.num_steps)  # the time each step starts from
        sigma = self.noise_level * np.sqrt(t / (1 - np.where(t >= 1.0, 1.0 - h, t)))
        return jnp.asarray(t, jnp.float32), jnp.asarray(sigma, jnp.float32), h

    def model_time(self, step: jax.Array) -> jax.Array:
        return self._tables()[0][step]

    def step_std(self, step: jax.Array) -> jax.Array:
        _, sigma, h = self._tables()
        return sigma[step] * np.sqrt(h)

    def transition(self, output: jax.Array, x: jax.Array, step: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
        """`(mean, std)` of the next x given the predicted velocity `output` at `step`."""
        times, sigma, h = self._tables()
        t, s = times[step][..., None], sigma[step][..., None]
        drift = output + s**2 / (2 * t) * (x + (1 - t) * output)
        return x - h * drift, s[..., 0] * np.sqrt(h)

    def training_pair(self, images: jax.Array, key: jax.Array) -> tuple[jax.Array, ...]:
        time_key, noise_key = jax.random.split(key)
        t = jax.random.uniform(time_key, images.shape[:1])
        noise = jax.random.normal(noise_key, images.shape)
        return (1 - t[:, None]) * images + t[:, None] * noise, t, noise - images


def sample(denoiser, sampler, key: jax.Array, count: int, data_dim: int) -> jax.Array:
    """`count` unconditional samples `[count, data_dim]` (data range) of `denoiser` along
    `sampler`'s chain: each step's mean plus its noise, no log-probability (the base model's
    sampler; a policy's chains with log-probs and rewards are `rollax.diffusion.sample_chains`)."""
    start_key, steps_key = jax.random.split(key)

    def step(x, inputs):
        k, step_key = inputs
        mean, std = sampler.transition(denoiser(x, jnp.full(x.shape[:1], sampler.model_time(k))),
                                       x, k)
        return mean + std[..., None] * jax.random.normal(step_key, x.shape), None

    x = jax.random.normal(start_key, (count, data_dim))
    steps = (jnp.arange(sampler.num_steps), jax.random.split(steps_key, sampler.num_steps))
    return jax.lax.scan(step, x, steps)[0]


def _check_steps(num_steps: object, limit: int | None, what: str) -> None:
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive int (the chain's length)")
    if limit is not None and num_steps > limit:
        raise ValueError(f"num_steps={num_steps} is longer than {what} ({limit}): a chain "
                         "cannot have more steps than the base model's schedule")
