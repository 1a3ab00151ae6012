"""The denoiser as the policy (policy kind "denoiser"): its Gaussian transition is the action
distribution of each chain step.

The policy holds its own copy of the env's base denoiser, fine-tuned in place, and reads the
condition through linear layers initialised at zero whose outputs join each of the denoiser's
hidden layers (ControlNet's zero initialisation, Zhang et al., 2023): the untrained policy is
exactly the base model, which is therefore the frozen reference of KL anchors. The step's std is the sampler's,
never learned; the log-probability is that of the exact Gaussian. `critic=True` (PPO) adds a
value MLP over the observation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.checks import check_types
from rollax.diffusion.models import Denoiser
from rollax.networks.distributions import DiagGaussian
from rollax.networks.kinds import PolicyContext, PolicyKind
from rollax.networks.mlp import ACTIVATIONS, MLPTorso, check_hidden_layers
from rollax.networks.policy import PolicyOutput


class DenoiserPolicy(nnx.Module):
    """Observations `[..., D + 1 + C]` (image, step, condition) -> `PolicyOutput` of
    `DiagGaussian(mean [..., D], log std of the step)`, with a value `[...]` under a critic."""

    def __init__(self, denoiser: Denoiser, sampler, num_conditions: int, *, critic: bool,
                 critic_sizes: tuple[int, ...] = (64, 64), rngs: nnx.Rngs):
        self.denoiser = nnx.clone(denoiser)
        self.sampler = sampler
        self.data_dim = denoiser.data_dim
        zero = nnx.initializers.zeros_init()
        self.condition = nnx.List([
            nnx.Linear(num_conditions, denoiser.hidden_dim, kernel_init=zero, bias_init=zero,
                       rngs=rngs) for _ in range(denoiser.depth)])
        self.critic = critic
        if critic:
            self.critic_torso = MLPTorso(self.data_dim + 1 + num_conditions, critic_sizes,
                                         ACTIVATIONS["tanh"], rngs=rngs)
            self.value_head = nnx.Linear(self.critic_torso.out_features, 1, rngs=rngs)

    def __call__(self, observations: jax.Array) -> PolicyOutput:
        x = observations[..., :self.data_dim]
        step = jnp.round(observations[..., self.data_dim]).astype(jnp.int32)
        condition = observations[..., self.data_dim + 1:]
        shifts = [layer(condition) for layer in self.condition]
        output = self.denoiser(x, self.sampler.model_time(step), shifts)
        mean, std = self.sampler.transition(output, x, step)
        log_std = jnp.broadcast_to(jnp.log(std)[..., None], mean.shape)
        value = None
        if self.critic:
            value = self.value_head(self.critic_torso(observations))[..., 0]
        return PolicyOutput(DiagGaussian(mean, log_std), value)


@dataclasses.dataclass(frozen=True)
class DenoiserPolicyConfig:
    """`[agent.network]` of kind "denoiser": the critic's hidden layers (PPO only)."""

    kind: str = "denoiser"
    critic_sizes: tuple[int, ...] = (64, 64)

    def __post_init__(self):
        check_types(self, "agent.network")
        object.__setattr__(self, "critic_sizes", tuple(self.critic_sizes))
        check_hidden_layers(self.critic_sizes, "tanh")


def denoiser_policy(config: DenoiserPolicyConfig, context: PolicyContext, rngs: nnx.Rngs
                    ) -> DenoiserPolicy:
    """The policy for a denoising-chain env; ValueError for any other env."""
    from rollax.diffusion.env import DenoisingChain

    if not isinstance(context.env, DenoisingChain):
        raise ValueError(f"agent.network.kind='denoiser' needs a denoising-chain env "
                         f"(rollax/DiffusionDigit-v0, rollax/FlowDigit-v0); got "
                         f"{context.env_id or context.env!r}")
    env = context.env
    return DenoiserPolicy(env.denoiser, env.sampler, env.num_conditions, critic=context.critic,
                          critic_sizes=config.critic_sizes, rngs=rngs)


DENOISER_KIND = PolicyKind("denoiser", DenoiserPolicyConfig, denoiser_policy)
