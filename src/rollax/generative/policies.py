"""Policies built from pretrained generative models: the encoder as a latent policy, a noise-
to-latent map that keeps the model a generator ("noise_latent"), and the generator itself as
the policy ("generator"); the two policy kinds of the digits domain."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.checks import check_types
from rollax.generative.models import VAE
from rollax.networks.distributions import DiagGaussian
from rollax.networks.kinds import PolicyContext, PolicyKind
from rollax.networks.mlp import ACTIVATIONS, MLPTorso, check_hidden_layers
from rollax.networks.policy import PolicyOutput


class EncoderPolicy(nnx.Module):
    """Gaussian policy over latents whose mean is a copy of the VAE encoder's mean head.

    Images `[B, 64]` -> a `PolicyOutput` of `DiagGaussian(mean [B, d], log_std [d])`, with a
    value `[B]` when `with_value=True` (a fresh value head on the encoder's hidden layer, for
    PPO). The copy is independent: fine-tuning the policy leaves the VAE unchanged.
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
        return PolicyOutput(policy, self.value(hidden)[..., 0] if self.with_value else None)


def encoder_policy(vae: VAE, *, log_std_init: float = -1.0,
                   with_value: bool = False) -> EncoderPolicy:
    """A latent policy for `rollax/VAEReconstruct-v0` that starts as the VAE's encoder mean."""
    return EncoderPolicy(vae, log_std_init=log_std_init, with_value=with_value)


class NoiseToLatent(nnx.Module):
    """`latent = noise + MLP(observation)` for observations that end with a prior noise sample
    `[..., d]` (`LatentEnv(noise=True)`). The output layer starts at zero, so the untrained map
    is the identity on the noise and the policy draws from the model's own distribution."""

    def __init__(self, observation_dim: int, latent_dim: int, hidden_sizes: tuple[int, ...],
                 activation: str, *, rngs: nnx.Rngs):
        if observation_dim < latent_dim:
            raise ValueError(f"observations of width {observation_dim} cannot end with a noise "
                             f"sample of latent_dim={latent_dim}")
        self.latent_dim = latent_dim
        self.torso = MLPTorso(observation_dim, hidden_sizes, ACTIVATIONS[activation], rngs=rngs)
        self.head = nnx.Linear(self.torso.out_features, latent_dim, kernel_init=nnx.initializers.zeros_init(),
                               bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, observations: jax.Array) -> jax.Array:
        return observations[..., -self.latent_dim:] + self.head(self.torso(observations))


class NoiseConditionedPolicy(nnx.Module):
    """A Gaussian around `NoiseToLatent(observation)` (noise in, latent out), or, with a
    `generator`, around `generator(NoiseToLatent(observation))`: the generator itself as the
    policy, its weights fine-tuned, `log_std` per pixel. With the map's zero start the untrained
    policy draws from the model's own distribution. `critic=True` adds a value MLP (PPO)."""

    def __init__(self, observation_dim: int, latent_dim: int, *, hidden_sizes: tuple[int, ...],
                 activation: str, log_std_init: float, critic: bool, rngs: nnx.Rngs,
                 generator: nnx.Module | None = None, sample_dim: int | None = None):
        self.to_latent = NoiseToLatent(observation_dim, latent_dim, hidden_sizes, activation,
                                       rngs=rngs)
        self.generator = generator
        action_dim = latent_dim
        if generator is not None:
            produced = jax.eval_shape(generator, jax.ShapeDtypeStruct((1, latent_dim), jnp.float32))
            if math.prod(produced.shape[1:]) != sample_dim:
                raise ValueError(f"the generator maps latents [1, {latent_dim}] to {produced.shape}, "
                                 f"but the env's samples (its actions and the reward's input) have "
                                 f"{sample_dim} values")
            action_dim = sample_dim
        self.log_std = nnx.Param(jnp.full((action_dim,), log_std_init, jnp.float32))
        self.critic = critic
        if critic:
            self.critic_torso = MLPTorso(observation_dim, hidden_sizes, ACTIVATIONS[activation], rngs=rngs)
            self.value_head = nnx.Linear(self.critic_torso.out_features, 1, rngs=rngs)

    def __call__(self, observations: jax.Array):
        mean = self.to_latent(observations)
        if self.generator is not None:
            samples = self.generator(mean.reshape(-1, mean.shape[-1]))
            mean = samples.reshape(*mean.shape[:-1], -1)
        policy = DiagGaussian(mean, jnp.broadcast_to(self.log_std[...], mean.shape))
        if not self.critic:
            return PolicyOutput(policy)
        return PolicyOutput(policy, self.value_head(self.critic_torso(observations))[..., 0])


@dataclasses.dataclass(frozen=True)
class NoisePolicyConfig:
    """`[agent.network]` of kinds "noise_latent" and "generator": the noise-to-latent map's
    hidden layers and the initial log std of the actions (latents, or the generator's pixels)."""

    kind: str = "noise_latent"
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0

    def __post_init__(self):
        check_types(self, "agent.network")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # TOML/JSON lists
        check_hidden_layers(self.hidden_sizes, self.activation)


def generative_policy(config: NoisePolicyConfig, context: PolicyContext, rngs: nnx.Rngs
                      ) -> NoiseConditionedPolicy:
    """The policy of kind `config.kind` for a `LatentEnv` with `noise=True` (and, for
    "generator", `action="sample"`); ValueError naming what the env lacks."""
    env, kind = context.env, config.kind
    if not getattr(env, "noise", False):
        raise ValueError(f"agent.network.kind={kind!r} needs an env that observes prior noise "
                         f"(env params noise = true); {getattr(env, 'name', env)!r} does not")
    kwargs = {"hidden_sizes": config.hidden_sizes, "activation": config.activation,
              "log_std_init": config.log_std_init, "critic": context.critic, "rngs": rngs}
    observation_dim = math.prod(context.observation_space.shape)
    if kind == "noise_latent":
        if env.action != "latent":
            raise ValueError(f"agent.network.kind='noise_latent' acts with latents; the env's "
                             f"action is {env.action!r} (use kind='generator')")
        return NoiseConditionedPolicy(observation_dim, env.latent_dim, **kwargs)
    if env.action != "sample":
        raise ValueError("agent.network.kind='generator' acts with samples; set the env "
                         "param action = \"sample\"")
    return NoiseConditionedPolicy(observation_dim, env.latent_dim, generator=env.generator(),
                                  sample_dim=env.num_actions, **kwargs)


NOISE_LATENT_KIND = PolicyKind("noise_latent", NoisePolicyConfig, generative_policy)
GENERATOR_KIND = PolicyKind("generator", NoisePolicyConfig, generative_policy)
