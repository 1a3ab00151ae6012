"""rollax: reinforcement-learning experiments on JAX, Flax NNX and Optax."""

from rollax.envs import make, register, registered_ids

__all__ = ["make", "register", "registered_ids"]
