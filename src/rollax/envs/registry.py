"""Environment registry: one `make` for gymnax ids, rollax's own ids and user-registered envs."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np

from rollax.envs.gymnax_envs import DOWNLOADING_IDS, GYMNAX_ENVS, make_gymnax

if TYPE_CHECKING:
    from gymnax.environments.environment import Environment

EnvFactory = Callable[..., tuple["Environment", Any]]
_FACTORIES: dict[str, EnvFactory] = {}


def register(env_id: str, factory: EnvFactory, *, overwrite: bool = False) -> None:
    """Register `factory(**kwargs) -> (env, env_params)` under `env_id` (e.g. "rollax/MyEnv-v0")."""
    if env_id in _FACTORIES and not overwrite:
        raise ValueError(f"env id {env_id!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[env_id] = factory
    register_gymnasium_ids()  # the new id is usable from gymnasium.make("rollax/...") too


def registered_ids() -> list[str]:
    """Every id `make` accepts (gymnax's and rollax's), sorted."""
    return sorted(set(GYMNAX_ENVS) | set(_FACTORIES))


def make(env_id: str, **params: Any) -> tuple[Environment, Any]:
    """Build `(env, env_params)` for `env_id`.

    For gymnax ids, keyword arguments override fields of the env's params dataclass
    (e.g. `make("CartPole-v1", max_steps_in_episode=200)`); for registered ids they go
    to the factory.
    """
    if env_id.startswith("gymnasium:"):
        raise ValueError(f"{env_id!r} is stepped on the host, not jitted: use "
                         "rollax.rollout.host_collector.make_host(env_id, num_envs) (the training "
                         "loop does this for presets)")
    if env_id in _FACTORIES:
        factory = _FACTORIES[env_id]
        try:  # a missing or unknown parameter, named for this env (not the factory's traceback)
            inspect.signature(factory).bind(**params)
        except TypeError as err:
            raise ValueError(f"{env_id}: {err}") from None
        except ValueError:  # a callable without a readable signature: call it as it is
            pass
        return factory(**params)
    if env_id in GYMNAX_ENVS:
        env, env_params = make_gymnax(env_id)
        return env, override_params(env_params, params, env_id, physical=True)
    if env_id in DOWNLOADING_IDS:
        raise ValueError(f"env id {env_id!r} is not available in rollax: "
                         f"{DOWNLOADING_IDS[env_id]}")
    close = difflib.get_close_matches(env_id, registered_ids(), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `rollax envs` for the list."
    raise ValueError(f"unknown env id {env_id!r}.{hint}")


# Fields that gymnax's CartPole derives from others when its params are built: an override of
# the masses or the pole's length must carry into them, or the physics mixes old and new values.
_DERIVED = {
    "CartPole-v1": {"total_mass": lambda p: p.masscart + p.masspole,
                    "polemass_length": lambda p: p.masspole * p.length},
}


def override_params(env_params: Any, overrides: dict[str, Any], env_id: str = "",
                    physical: bool = False) -> Any:
    """Replace fields of a params dataclass. Each value is checked against the field's default:
    the same kind (an integer for an integer, a number for a float, an array of the same shape)
    and finite; an integer whose default is positive (a step count) stays >= 1. `physical`
    params (gymnax's classic control: lengths, masses, forces, bounds) also keep their
    default's sign. An unknown key or a value outside that is a `ValueError` naming it."""
    if not overrides:
        return env_params
    valid = {f.name for f in dataclasses.fields(env_params)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"unknown params {unknown} for env {env_id!r}; valid params: {sorted(valid)}"
        )
    checked = {key: _checked_param(key, value, getattr(env_params, key), env_id, physical)
               for key, value in overrides.items()}
    params = env_params.replace(**checked)
    derived = {key: rule(params) for key, rule in _DERIVED.get(env_id, {}).items()
               if key not in overrides}
    return params.replace(**derived) if derived else params


def _checked_param(key: str, value: Any, default: Any, env_id: str, physical: bool) -> Any:
    def refuse(why: str) -> ValueError:
        return ValueError(f"env param {key!r} of env {env_id!r} {why}, got {value!r} "
                          f"(its default is {default!r})")

    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise refuse("must be a boolean")
        return value
    if isinstance(default, int):
        if not (is_number and isinstance(value, int)) or (default > 0 and value < 1):
            raise refuse("must be an integer >= 1" if default > 0 else "must be an integer")
        number = value
    elif isinstance(default, float):
        if not is_number:
            raise refuse("must be a number")
        number = value = float(value)
    elif hasattr(default, "shape"):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise refuse("must be an array of numbers") from None
        if array.shape != tuple(default.shape):
            raise refuse(f"must have shape {tuple(default.shape)}")
        if not np.all(np.isfinite(array)):
            raise refuse("must be finite")
        return np.asarray(array, dtype=default.dtype)
    else:
        return value
    if not math.isfinite(number):
        raise refuse("must be finite")
    if not physical:
        return value
    if default > 0 and number <= 0:
        raise refuse("must be > 0")
    if default < 0 and number >= 0:
        raise refuse("must be < 0")
    return value


GYMNASIUM_NAMESPACE = "rollax/"
# named as strings: Gymnasium imports the adapter when an env is made
_ENTRY_POINT = "rollax.envs.gymnasium_adapter:RollaxGymnasiumEnv"
_VECTOR_ENTRY_POINT = "rollax.envs.gymnasium_adapter:RollaxVectorEnv"


def gymnasium_id(env_id: str) -> str:
    """The Gymnasium id of a rollax id: `CartPole-v1` -> `rollax/CartPole-v1`,
    `Catch-bsuite` -> `rollax/Catch-bsuite-v0`, `rollax/Foo-v0` unchanged."""
    gym_id = env_id if env_id.startswith(GYMNASIUM_NAMESPACE) else GYMNASIUM_NAMESPACE + env_id
    _, _, version = gymnasium.envs.registration.parse_env_id(gym_id)
    return gym_id if version is not None else gym_id + "-v0"


def register_gymnasium_ids() -> list[str]:
    """Register every id in `rollax.envs.registered_ids()` with Gymnasium (idempotent).

    Call again after `rollax.envs.register(...)` to expose later ids; returns the new ids.
    """
    added = []
    for env_id in registered_ids():
        gym_id = gymnasium_id(env_id)
        if gym_id in gymnasium.registry:
            continue
        gymnasium.register(
            id=gym_id,
            entry_point=_ENTRY_POINT,
            vector_entry_point=_VECTOR_ENTRY_POINT,
            kwargs={"env_id": env_id},
            disable_env_checker=False,
        )
        added.append(gym_id)
    return added
