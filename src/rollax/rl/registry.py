"""Name -> algorithm: the loop, the presets and the CLI look algorithms up here instead of
branching on their names.

A new algorithm is one module under `rl/` (config, pure update, trainer class, and its
`SPEC = AlgorithmSpec(...)`) plus its line in `ALGORITHMS` below; an algorithm defined outside
rollax joins with `register_algorithm(spec)`.
"""

from __future__ import annotations

from rollax.rl import dpo, grpo, ppo, reinforce, rloo
from rollax.rl.spec import AlgorithmSpec

ALGORITHMS: dict[str, AlgorithmSpec] = {spec.name: spec for spec in (
    reinforce.SPEC,
    ppo.SPEC,
    grpo.SPEC,
    rloo.SPEC,
    dpo.SPEC,
)}


def register_algorithm(spec: AlgorithmSpec) -> AlgorithmSpec:
    """Make a user's algorithm available to presets, the loop and the CLI."""
    if spec.name in ALGORITHMS and ALGORITHMS[spec.name] != spec:
        raise ValueError(f"algorithm {spec.name!r} is already registered")
    ALGORITHMS[spec.name] = spec
    return spec


def get_algorithm(name: str) -> AlgorithmSpec:
    """The registered spec, or a ValueError listing the known names."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; valid: {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]
