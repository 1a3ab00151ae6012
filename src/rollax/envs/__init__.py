"""Jittable environments (gymnax interface), the registry that builds them, rollax's optional
env hooks, probe envs and the Gymnasium adapter.

Importing this package registers every id with rollax and Gymnasium without importing jax or
gymnax: each factory imports its env's module when it is called (`make`). The domain packages
(`rollax.generative`, `rollax.tokens`) register their own ids when `rollax` is imported."""

from rollax.envs import probe_ids  # noqa: F401  (registers rollax/Probe*-v0)
from rollax.envs.registry import make, register, register_gymnasium_ids, registered_ids

__all__ = ["make", "register", "registered_ids"]

register_gymnasium_ids()
