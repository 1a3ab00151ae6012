"""Rollout collection: the time-major `Trajectory` and the collectors that fill it."""

from rollax.rollout.collector import (
    RolloutState,
    collect,
    evaluate,
    init_rollout,
    make_collect_fn,
    make_evaluate_fn,
)
from rollax.rollout.trajectory import Trajectory

__all__ = [
    "RolloutState",
    "Trajectory",
    "collect",
    "evaluate",
    "init_rollout",
    "make_collect_fn",
    "make_evaluate_fn",
]
