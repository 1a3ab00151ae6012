"""Policy and value networks, and the adapter from their outputs to action distributions."""

from rollax.networks.distributions import GaussianParams

__all__ = ["GaussianParams"]
