"""Rollout collection: the time-major `Trajectory` and the collectors that fill it."""

from rollax.rollout.trajectory import Trajectory

__all__ = ["Trajectory"]
