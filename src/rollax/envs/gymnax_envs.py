"""gymnax's envs without gymnax's package init.

`gymnax/__init__.py` imports every env family, matplotlib, seaborn and scipy (about 3 s), and
Python runs it before any gymnax submodule, even `gymnax.environments.spaces`. So rollax lists
gymnax's ids from the table below (`tests/test_startup.py` checks it against
`gymnax.registered_envs` and `gymnax.make`), makes an env by importing only its family, and has
`gymnax` and `gymnax.environments` run their init on first use of a name they define
(`gymnax.make`), not on the import of a submodule. gymnax's files are not changed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

# id -> "module under gymnax.environments:class"; gymnax.make(id) is `class()` and its
# `default_params`
GYMNAX_ENVS = {
    "CartPole-v1": "classic_control.cartpole:CartPole",
    "Pendulum-v1": "classic_control.pendulum:Pendulum",
    "Acrobot-v1": "classic_control.acrobot:Acrobot",
    "MountainCar-v0": "classic_control.mountain_car:MountainCar",
    "MountainCarContinuous-v0": "classic_control.continuous_mountain_car:ContinuousMountainCar",
    "Asterix-MinAtar": "minatar.asterix:MinAsterix",
    "Breakout-MinAtar": "minatar.breakout:MinBreakout",
    "Freeway-MinAtar": "minatar.freeway:MinFreeway",
    "Seaquest-MinAtar": "minatar.seaquest:MinSeaquest",
    "SpaceInvaders-MinAtar": "minatar.space_invaders:MinSpaceInvaders",
    "Catch-bsuite": "bsuite.catch:Catch",
    "DeepSea-bsuite": "bsuite.deep_sea:DeepSea",
    "MemoryChain-bsuite": "bsuite.memory_chain:MemoryChain",
    "UmbrellaChain-bsuite": "bsuite.umbrella_chain:UmbrellaChain",
    "DiscountingChain-bsuite": "bsuite.discounting_chain:DiscountingChain",
    "SimpleBandit-bsuite": "bsuite.bandit:SimpleBandit",
    "FourRooms-misc": "misc.rooms:FourRooms",
    "MetaMaze-misc": "misc.meta_maze:MetaMaze",
    "PointRobot-misc": "misc.point_robot:PointRobot",
    "BernoulliBandit-misc": "misc.bernoulli_bandit:BernoulliBandit",
    "GaussianBandit-misc": "misc.gaussian_bandit:GaussianBandit",
    "Reacher-misc": "misc.reacher:Reacher",
    "Swimmer-misc": "misc.swimmer:Swimmer",
    "Pong-misc": "misc.pong:Pong",
    "FrozenLake-misc": "misc.frozen_lake:FrozenLake",
}

# gymnax ids left out because making them downloads data (rollax must run offline):
# id -> why, said by `make`
DOWNLOADING_IDS = {
    "MNISTBandit-bsuite": "gymnax downloads MNIST when it is made, which fails offline",
}


def make_gymnax(env_id: str) -> tuple[Any, Any]:
    """`(env, default params)` of a gymnax id, as `gymnax.make(env_id)` builds them."""
    module, _, name = GYMNAX_ENVS[env_id].partition(":")
    env = getattr(importlib.import_module(f"gymnax.environments.{module}"), name)()
    return env, env.default_params


class _DeferredPackage(types.ModuleType):
    """A package whose `__init__` runs when a name it lacks, other than one of its submodules,
    is first looked up (`from package import submodule` looks the submodule up first)."""

    def __getattr__(self, name: str) -> Any:
        submodule = f"{self.__name__}.{name}"
        if not name.startswith("__") and importlib.util.find_spec(submodule) is not None:
            return importlib.import_module(submodule)
        self.__class__ = types.ModuleType  # once: the init below defines the names
        self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def defer_gymnax_init() -> None:
    """Put `gymnax` and `gymnax.environments` in `sys.modules` with their init deferred, unless
    gymnax is already imported (then there is nothing to save) or not installed."""
    spec = None if "gymnax" in sys.modules else importlib.util.find_spec("gymnax")
    if spec is None:
        return
    gymnax = _deferred(spec)
    sys.modules["gymnax"] = gymnax
    # found through the `gymnax` just put there, so this runs no init either
    gymnax.environments = _deferred(importlib.util.find_spec("gymnax.environments"))
    sys.modules["gymnax.environments"] = gymnax.environments


def _deferred(spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _DeferredPackage
    return module
