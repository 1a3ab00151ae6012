"""Gymnasium ids stepped on the host, `gymnasium:<id>`: how they are told apart from jittable
env ids, and the check that Gymnasium knows one (without importing anything)."""

from __future__ import annotations

import difflib
import sys

import gymnasium

GYMNASIUM_PREFIX = "gymnasium:"


def is_host_env_id(env_id: str) -> bool:
    """True for ids the host collector handles (`gymnasium:<id>`)."""
    return env_id.startswith(GYMNASIUM_PREFIX)


def check_gymnasium_id(gym_id: str) -> str:
    """The registered id to make (`gym_id` without a module part); ValueError naming `gym_id`
    and close matches when Gymnasium does not know it.

    Never imports anything: Gymnasium's "module:Env-v0" form is accepted only for a module
    already imported (`rollax train --import-module module`, or `import module` in Python), so a
    preset or a run's config.json cannot run code."""
    name = gym_id
    if ":" in gym_id:
        module, name = gym_id.split(":", 1)
        if module not in sys.modules:
            raise ValueError(
                f"Gymnasium env id {gym_id!r} names the module {module!r}, which rollax does not "
                f"import for a preset or a run folder; import it yourself (rollax train "
                f"--import-module {module}, or `import {module}` in Python) to register its envs")
    if name in gymnasium.registry:
        return name
    close = difflib.get_close_matches(name, list(gymnasium.registry), n=5, cutoff=0.5)
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(f"unknown Gymnasium env id {gym_id!r}.{hint}")
