"""gymnax classic-control dynamics against Gymnasium's own envs started from the same state.

gymnax computes in float32 and Gymnasium in float64; both Acrobots take one RK4 step over
`dt` (Gymnasium's `rk4` with `t = [0, dt]`), so there is no integrator difference and
observations agree to ~1e-6 even after 40 free-running steps. Tolerances allow float32
round-off only (the Pendulum cost reaches ~16, so its rewards get a relative tolerance).
"""

import gymnasium
import jax
import numpy as np
import pytest

from rollax.envs import make

GYMNAX_STATE_AS_GYMNASIUM = {
    "CartPole-v1": lambda s: [s.x, s.x_dot, s.theta, s.theta_dot],
    "Acrobot-v1": lambda s: [s.joint_angle1, s.joint_angle2, s.velocity_1, s.velocity_2],
    "Pendulum-v1": lambda s: [s.theta, s.theta_dot],
}
ATOL, RTOL = 1e-5, 1e-5


def set_gymnasium_state(reference, env_id, gymnax_state):
    reference.state = np.array(GYMNAX_STATE_AS_GYMNASIUM[env_id](gymnax_state), np.float64)
    if env_id == "CartPole-v1":  # forget the previous episode's end (avoids its warning)
        reference.steps_beyond_terminated = None


def as_gymnasium_action(env_id, action):
    return np.asarray(action, np.float32) if env_id == "Pendulum-v1" else int(action)


@pytest.mark.parametrize("env_id", sorted(GYMNAX_STATE_AS_GYMNASIUM))
def test_one_step_from_the_same_state(env_id):
    """Re-sync Gymnasium to gymnax's state before every step, over 60 random-action steps
    (through terminations and auto-resets), and compare each transition."""
    env, params = make(env_id)
    reference = gymnasium.make(env_id).unwrapped
    reference.reset(seed=0)
    key = jax.random.key(0)
    _, state = env.reset(key, params)
    num_terminations = 0
    for _ in range(60):
        key, action_key, step_key = jax.random.split(key, 3)
        action = env.action_space(params).sample(action_key)
        set_gymnasium_state(reference, env_id, state)
        expected_obs, expected_reward, expected_terminated, _, _ = reference.step(
            as_gymnasium_action(env_id, action)
        )
        _, state, reward, terminated, _, info = env.step(step_key, state, action, params)
        np.testing.assert_allclose(info["final_observation"], expected_obs, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(reward), expected_reward, rtol=RTOL, atol=ATOL)
        assert bool(terminated) == expected_terminated
        num_terminations += int(expected_terminated)
    if env_id == "CartPole-v1":
        assert num_terminations > 0  # the terminal transition was compared too


@pytest.mark.parametrize("env_id", sorted(GYMNAX_STATE_AS_GYMNASIUM))
def test_free_running_trajectory_from_the_same_start(env_id):
    """Start both from gymnax's reset state and let each integrate on its own for up to 40 steps."""
    env, params = make(env_id)
    reference = gymnasium.make(env_id).unwrapped
    reference.reset(seed=0)
    _, state = env.reset(jax.random.key(1), params)
    set_gymnasium_state(reference, env_id, state)
    key = jax.random.key(2)
    for _ in range(40):
        key, action_key, step_key = jax.random.split(key, 3)
        action = env.action_space(params).sample(action_key)
        expected_obs, expected_reward, expected_terminated, _, _ = reference.step(
            as_gymnasium_action(env_id, action)
        )
        _, state, reward, terminated, _, info = env.step(step_key, state, action, params)
        np.testing.assert_allclose(info["final_observation"], expected_obs, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(float(reward), expected_reward, rtol=RTOL, atol=ATOL)
        assert bool(terminated) == expected_terminated
        if expected_terminated:
            break
