"""`rgb_array` frames of gymnax's classic-control states, drawn by Gymnasium's own renderer.

gymnax draws nothing; Gymnasium's classic-control envs do (with pygame), and their `render`
reads only the env's `state` (and Pendulum's `last_u`). So a gymnax state copied into the
Gymnasium twin gives exactly the picture Gymnasium shows for that state: one drawing, kept by
Gymnasium, instead of a second one here that could drift from it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

# gymnax id -> (the Gymnasium twin, the twin's `state` from a gymnax state)
_TWINS: dict[str, tuple[str, Callable[[Any], tuple]]] = {
    "CartPole-v1": ("CartPole-v1", lambda s: (s.x, s.x_dot, s.theta, s.theta_dot)),
    "Acrobot-v1": ("Acrobot-v1",
                   lambda s: (s.joint_angle1, s.joint_angle2, s.velocity_1, s.velocity_2)),
    "Pendulum-v1": ("Pendulum-v1", lambda s: (s.theta, s.theta_dot)),
    "MountainCar-v0": ("MountainCar-v0", lambda s: (s.position, s.velocity)),
    "MountainCarContinuous-v0": ("MountainCarContinuous-v0", lambda s: (s.position, s.velocity)),
}


def can_render(env_id: str) -> bool:
    """Whether `StateRenderer` draws the states of `env_id` (a rollax/gymnax id)."""
    return env_id in _TWINS


def has_pygame() -> bool:
    """Whether pygame, with which Gymnasium draws, is installed (the `video` extra)."""
    return importlib.util.find_spec("pygame") is not None


def prepare_pygame(what: str) -> None:
    """ValueError saying what to install when pygame is missing; no sound device either
    (`pygame.init` in Gymnasium's `render` would look for one)."""
    if not has_pygame():
        raise ValueError(f"{what} needs pygame, which draws Gymnasium's classic-control envs: "
                         "pip install 'rollax[video]' (or pip install pygame)")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


class StateRenderer:
    """`renderer(state) -> uint8 [H, W, 3]` for one gymnax classic-control env."""

    def __init__(self, env_id: str):
        if not can_render(env_id):
            raise ValueError(f"env {env_id!r} cannot be drawn; rollax draws {sorted(_TWINS)}")
        prepare_pygame(f"drawing {env_id}")
        gym_id, self._state_of = _TWINS[env_id]
        self._twin = gymnasium.make(gym_id, render_mode="rgb_array").unwrapped
        self.render_fps = self._twin.metadata.get("render_fps", 30)

    def __call__(self, state: Any) -> np.ndarray:
        self._twin.state = np.array([float(x) for x in self._state_of(state)])
        if hasattr(state, "last_u"):  # Pendulum draws the last torque as an arrow
            self._twin.last_u = float(state.last_u)
        return self._twin.render()

    def close(self) -> None:
        self._twin.close()
