"""Registered probe env ids (see `probes.py`). The env classes, and so jax and gymnax, load when
one is made, not when the ids are listed."""

from __future__ import annotations

from typing import Any

from rollax.envs.registry import EnvFactory, register

PROBE_IDS = (
    "rollax/ProbeConstant-v0",
    "rollax/ProbeObsReward-v0",
    "rollax/ProbeTwoStep-v0",
    "rollax/ProbeActionReward-v0",
    "rollax/ProbeContinuousAction-v0",
    "rollax/ProbeTruncation-v0",
)


def _factory(env_id: str) -> EnvFactory:
    def make(**overrides: Any):
        from rollax.envs.probes import make_probe

        return make_probe(env_id, **overrides)

    return make


for _env_id in PROBE_IDS:
    register(_env_id, _factory(_env_id))
