"""Policy and value networks, and the adapter from their outputs to action distributions."""

from rollax.networks.distributions import GaussianParams
from rollax.networks.mlp import MLPPolicy, build_policy

__all__ = ["GaussianParams", "MLPPolicy", "build_policy"]
