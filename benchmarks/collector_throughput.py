"""Env-steps/s of `rollax.rollout.collector.collect` on CartPole-v1 next to raw gymnax stepping.

raw: a jit-compiled `lax.scan` over `vmap`'d auto-reset `env.step` with uniform random actions.
collector (random): `collect` with a parameter-free module returning zero logits (uniform
policy), so the difference to raw is the collector's own bookkeeping (sampling, log-probs,
episode statistics, the Trajectory). collector (MLP): the default 64x64 actor-critic, for
scale (two forward passes per step: V(s_t) and V(final observation)).
Most of the raw/collector gap on CPU is the categorical sampler (Gumbel-max draws one
uniform and two logs per logit, against one `randint` per env in raw), not the bookkeeping.
Compile time is excluded (one warm-up call, `block_until_ready`).

    JAX_PLATFORMS=cpu python benchmarks/collector_throughput.py [--num-steps 128]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.envs import make
from rollax.networks.mlp import build_policy
from rollax.rollout.collector import init_rollout, make_collect_fn


class UniformLogits(nnx.Module):
    """A parameter-free policy: zero logits `[N, num_actions]` (uniform random actions)."""

    def __init__(self, num_actions: int):
        self.num_actions = num_actions

    def __call__(self, obs: jax.Array) -> jax.Array:
        return jnp.zeros((obs.shape[0], self.num_actions))


def make_raw_fn(env, env_params, num_steps: int):
    """Jitted `(env_state, obs, key) -> (env_state, obs, reward sum)` of `num_steps` raw steps."""
    step_batch = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    num_actions = env.action_space(env_params).n

    @jax.jit
    def run(env_state, obs, key):
        num_envs = obs.shape[0]

        def one_step(carry, step_key):
            env_state, obs, total = carry
            action_key, env_key = jax.random.split(step_key)
            actions = jax.random.randint(action_key, (num_envs,), 0, num_actions)
            obs, env_state, reward, _, _, _ = step_batch(
                jax.random.split(env_key, num_envs), env_state, actions, env_params
            )
            return (env_state, obs, total + reward.sum()), None

        carry = (env_state, obs, jnp.zeros(()))
        return jax.lax.scan(one_step, carry, jax.random.split(key, num_steps))[0]

    return run


def steps_per_second(call, num_env_steps: int, min_seconds: float) -> float:
    """Warm up (compile) once, then repeat until `min_seconds` have passed."""
    jax.block_until_ready(call(0))
    repeats, start = 0, time.perf_counter()
    while True:
        jax.block_until_ready(call(repeats + 1))
        repeats += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return repeats * num_env_steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--num-steps", type=int, default=128, help="T per collect call")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="timed span per cell")
    args = parser.parse_args()

    env, env_params = make("CartPole-v1")
    random_policy = UniformLogits(env.action_space(env_params).n)
    mlp_policy = build_policy(
        env.observation_space(env_params), env.action_space(env_params), rngs=nnx.Rngs(0)
    )
    raw_fn = make_raw_fn(env, env_params, args.num_steps)
    collect_fn = make_collect_fn(env, env_params, args.num_steps)
    print(f"device: {jax.devices()[0].device_kind}, T = {args.num_steps} steps per call")
    header = f"{'N':>6} {'raw steps/s':>14} {'collector':>14} {'ratio':>6} {'collector+MLP':>14}"
    print(header)
    print("-" * len(header))
    for num_envs in args.num_envs:
        start = init_rollout(env, env_params, jax.random.key(0), num_envs)
        num_env_steps = num_envs * args.num_steps
        raw = steps_per_second(
            lambda i, start=start: raw_fn(start.env_state, start.obs, jax.random.key(i)),
            num_env_steps,
            args.min_seconds,
        )
        rates = []
        for policy in (random_policy, mlp_policy):
            graphdef, state = nnx.split(policy)
            rates.append(
                steps_per_second(
                    lambda i, g=graphdef, s=state, start=start: collect_fn(
                        g, s, start, jax.random.key(i)
                    ),
                    num_env_steps,
                    args.min_seconds,
                )
            )
        print(f"{num_envs:>6} {raw:>14,.0f} {rates[0]:>14,.0f} {rates[0] / raw:>6.2f} {rates[1]:>14,.0f}")


if __name__ == "__main__":
    main()
