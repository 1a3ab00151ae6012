"""Jittable environments (gymnax interface) and the registry that builds them.

Importing this package registers every id with rollax and Gymnasium without importing jax or
gymnax: each factory imports its env's module when it is called (`make`)."""

from rollax.envs.registry import make, register, registered_ids

__all__ = ["make", "register", "registered_ids"]
from rollax.envs import (
    generative_ids,  # noqa: F401  (rollax/VAEDigit-v0 etc.; no training here)
    probe_ids,  # noqa: F401  (registers rollax/Probe*-v0)
    token_ids,  # noqa: F401  (registers rollax/Tokens-*-v0)
)
from rollax.envs.registry import register_gymnasium_ids

register_gymnasium_ids()
