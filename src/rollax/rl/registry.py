"""Name -> algorithm: the loop, the presets and the CLI look algorithms up here instead of
branching on their names, and the documented `<Title>Config` / `<Title>Trainer` names come from
here.

A new algorithm is one module under `rl/` (its config, its `Algorithm` subclass and `ALGORITHM`
instance) plus its line in `ALGORITHMS` below; an algorithm defined outside rollax joins with
`register_algorithm(algorithm)`.
"""

from __future__ import annotations

from rollax.rl import dpo, grpo, ppo, reinforce, rloo
from rollax.rl.algorithm import Algorithm
from rollax.rl.trainer import Trainer, trainer_class

ALGORITHMS: dict[str, Algorithm] = {algorithm.name: algorithm for algorithm in (
    reinforce.ALGORITHM,
    ppo.ALGORITHM,
    grpo.ALGORITHM,
    rloo.ALGORITHM,
    dpo.ALGORITHM,
)}
TRAINERS: dict[str, type[Trainer]] = {name: trainer_class(a) for name, a in ALGORITHMS.items()}


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    """Make a user's algorithm available to presets, the loop and the CLI, with its trainer."""
    if algorithm.name in ALGORITHMS and ALGORITHMS[algorithm.name] is not algorithm:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    ALGORITHMS[algorithm.name] = algorithm
    TRAINERS[algorithm.name] = trainer_class(algorithm)
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm, or a ValueError listing the known names."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def public_names() -> dict[str, type]:
    """`{"PPOConfig": ..., "PPOTrainer": ..., ...}` of every registered algorithm."""
    names: dict[str, type] = {}
    for name, algorithm in ALGORITHMS.items():
        names[algorithm.config_class.__name__] = algorithm.config_class
        names[TRAINERS[name].__name__] = TRAINERS[name]
    return names
