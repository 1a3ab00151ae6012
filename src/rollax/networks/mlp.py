"""MLP actor-critic policies built from an environment's gymnax spaces (Flax NNX), the "mlp"
policy kind.

The policy returns a `PolicyOutput`: `Categorical(logits [..., A])` for discrete actions;
`DiagGaussian(mean [..., A], log_std [..., A])` with a state-independent learned `log_std` for
continuous ones; with a critic, the value `[...]` of each observation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from gymnax.environments import spaces

from rollax.checks import check_choice, check_int, check_types
from rollax.networks.distributions import Categorical, DiagGaussian
from rollax.networks.kinds import PolicyContext, PolicyKind
from rollax.networks.policy import PolicyOutput

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
}
# Orthogonal init scales of the PPO implementation-details literature (CleanRL, SB3).
HIDDEN_SCALE = math.sqrt(2.0)
POLICY_HEAD_SCALE = 0.01
VALUE_HEAD_SCALE = 1.0


def _linear(in_features: int, out_features: int, scale: float, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=nnx.initializers.orthogonal(scale),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )


class MLPTorso(nnx.Module):
    """Hidden layers `[..., D] -> [..., hidden_sizes[-1]]` (identity when `hidden_sizes` is empty)."""

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        activation: Callable[[jax.Array], jax.Array],
        *,
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden_sizes]
        self.layers = nnx.List(
            [_linear(a, b, HIDDEN_SCALE, rngs) for a, b in itertools.pairwise(sizes)]
        )
        self.activation = activation
        self.out_features = sizes[-1]

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = self.activation(layer(x))
        return x


class MLPPolicy(nnx.Module):
    """Actor (and optionally critic) MLP on flattened observations `[..., *obs_shape]`."""

    def __init__(
        self,
        observation_shape: tuple[int, ...],
        num_observation_categories: int | None,
        action_dim: int,
        discrete: bool,
        *,
        hidden_sizes: Sequence[int],
        activation: Callable[[jax.Array], jax.Array],
        critic: bool,
        shared_torso: bool,
        log_std_init: float,
        rngs: nnx.Rngs,
    ):
        self.observation_shape = tuple(observation_shape)
        self.num_observation_categories = num_observation_categories
        self.discrete = discrete
        self.critic = critic
        self.shared_torso = shared_torso
        in_features = num_observation_categories or math.prod(self.observation_shape)
        self.actor_torso = MLPTorso(in_features, hidden_sizes, activation, rngs=rngs)
        self.policy_head = _linear(
            self.actor_torso.out_features, action_dim, POLICY_HEAD_SCALE, rngs
        )
        if not discrete:
            self.log_std = nnx.Param(jnp.full((action_dim,), log_std_init, jnp.float32))
        if critic:
            self.critic_torso = (
                None
                if shared_torso
                else MLPTorso(in_features, hidden_sizes, activation, rngs=rngs)
            )
            self.value_head = _linear(self.actor_torso.out_features, 1, VALUE_HEAD_SCALE, rngs)

    def flatten(self, observations: jax.Array) -> jax.Array:
        """`[..., *obs_shape]` -> `[..., D]` float (one-hot `[..., n]` for Discrete observations)."""
        if self.num_observation_categories is not None:
            return jax.nn.one_hot(observations, self.num_observation_categories)
        num_obs_dims = len(self.observation_shape)
        if observations.shape[observations.ndim - num_obs_dims :] != self.observation_shape:
            raise ValueError(
                f"observations of shape {observations.shape} do not end with the "
                f"observation space's shape {self.observation_shape}"
            )
        batch_shape = observations.shape[: observations.ndim - num_obs_dims]
        return observations.reshape(*batch_shape, -1).astype(jnp.float32)

    def __call__(self, observations: jax.Array) -> PolicyOutput:
        x = self.flatten(observations)
        actor_features = self.actor_torso(x)
        head = self.policy_head(actor_features)
        if self.discrete:
            distribution = Categorical(head)
        else:
            distribution = DiagGaussian(head, jnp.broadcast_to(self.log_std[...], head.shape))
        if not self.critic:
            return PolicyOutput(distribution)
        critic_features = actor_features if self.shared_torso else self.critic_torso(x)
        return PolicyOutput(distribution, self.value_head(critic_features)[..., 0])


def build_policy(
    observation_space: Any,
    action_space: Any,
    *,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    critic: bool = True,
    shared_torso: bool = False,
    log_std_init: float = 0.0,
    rngs: nnx.Rngs,
) -> nnx.Module:
    """Build an MLP policy for gymnax spaces: `model(obs [..., *obs_shape])` returns a
    `PolicyOutput` of a `Categorical` or `DiagGaussian`, with a value `[...]` when `critic`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: {sorted(ACTIVATIONS)}")
    if any(int(size) <= 0 for size in hidden_sizes):
        raise ValueError(f"hidden_sizes must be positive, got {tuple(hidden_sizes)}")
    if isinstance(observation_space, spaces.Box):
        observation_shape, num_categories = tuple(observation_space.shape), None
    elif isinstance(observation_space, spaces.Discrete):
        observation_shape, num_categories = (), int(observation_space.n)
    else:  # ValueError by the project's bad-input convention
        raise ValueError(
            f"unsupported observation space {observation_space!r}; expected Box or Discrete"
        )
    if isinstance(action_space, spaces.Discrete):
        discrete, action_dim = True, int(action_space.n)
    elif isinstance(action_space, spaces.Box) and len(tuple(action_space.shape)) == 1:
        discrete, action_dim = False, int(action_space.shape[0])
    else:
        raise ValueError(
            f"unsupported action space {action_space!r}; expected Discrete or a 1-D Box"
        )
    return MLPPolicy(
        observation_shape,
        num_categories,
        action_dim,
        discrete,
        hidden_sizes=tuple(int(size) for size in hidden_sizes),
        activation=ACTIVATIONS[activation],
        critic=critic,
        shared_torso=shared_torso,
        log_std_init=log_std_init,
        rngs=rngs,
    )


MAX_LAYER = 2**16  # units in one hidden layer


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """`[agent.network]` of kind "mlp": hidden layers (`hidden_sizes`, `activation`), a critic
    with its own torso unless `shared_torso`, and the initial log std of continuous actions."""

    kind: str = "mlp"
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    shared_torso: bool = False
    log_std_init: float = 0.0

    def __post_init__(self):
        check_types(self, "agent.network")
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))  # TOML/JSON lists
        check_hidden_layers(self.hidden_sizes, self.activation)


def check_hidden_layers(hidden_sizes: tuple[int, ...], activation: str) -> None:
    for size in hidden_sizes:
        check_int("agent.network.hidden_sizes[i]", size, 1, MAX_LAYER)
    check_choice("agent.network.activation", activation, tuple(sorted(ACTIVATIONS)))


def _build(config: MLPConfig, context: PolicyContext, rngs: nnx.Rngs) -> MLPPolicy:
    return build_policy(context.observation_space, context.action_space,
                        hidden_sizes=config.hidden_sizes, activation=config.activation,
                        critic=context.critic, shared_torso=config.shared_torso,
                        log_std_init=config.log_std_init, rngs=rngs)


MLP_KIND = PolicyKind("mlp", MLPConfig, _build)
