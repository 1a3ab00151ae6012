"""Policy and value networks, and the adapter from their outputs to action distributions."""

from rollax.networks.distributions import (
    Categorical,
    DiagGaussian,
    Distribution,
    GaussianParams,
    TokenCategorical,
    as_distribution,
)
from rollax.networks.mlp import MLPPolicy, build_policy

__all__ = ["Categorical", "DiagGaussian", "Distribution", "GaussianParams", "MLPPolicy",
           "TokenCategorical", "as_distribution", "build_policy"]
