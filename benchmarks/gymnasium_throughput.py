"""Env-steps/s of the Gymnasium bridges on CartPole-v1 (prints a table; no assertions).

1. HostCollector on `gymnasium:CartPole-v1` (Gymnasium's numpy vector env + jitted policy)
   vs rollax's jitted collector (`make_collect_fn`: `lax.scan` over `vmap`'d gymnax steps and
   the same policy), at N = 8, 64, 1024.
2. The `rollax/CartPole-v1` vector adapter (`gymnasium.make_vec`) vs Gymnasium's own numpy
   vector CartPole (`vectorization_mode="vector_entry_point"`), random actions.

Usage: JAX_PLATFORMS=cpu python benchmarks/gymnasium_throughput.py [--steps 128]
"""

from __future__ import annotations

import argparse

import gymnasium
import jax
import numpy as np
from flax import nnx
from timing import best_seconds

import rollax.envs
from rollax.networks.mlp import build_policy
from rollax.rollout.collector import init_rollout, make_collect_fn
from rollax.rollout.host_collector import HostCollector


def timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call (compiles)."""
    jax.block_until_ready(fn())
    return best_seconds(fn, repeats)


def collector_rates(num_envs: int, num_steps: int, repeats: int) -> tuple[float, float]:
    host = HostCollector("gymnasium:CartPole-v1", num_envs, seed=0)
    policy = build_policy(host.observation_space, host.action_space, rngs=nnx.Rngs(0))
    host_time = timed(lambda: host.collect(policy, jax.random.key(0), num_steps), repeats)
    host.close()

    env, params = rollax.envs.make("CartPole-v1")
    collect_fn = make_collect_fn(env, params, num_steps)
    graphdef, state = nnx.split(policy)
    rollout = init_rollout(env, params, jax.random.key(0), num_envs)

    jit_time = timed(lambda: collect_fn(graphdef, state, rollout, jax.random.key(1)), repeats)
    steps = num_envs * num_steps
    return steps / host_time, steps / jit_time


def vector_env_rate(make_env, num_envs: int, num_steps: int, repeats: int) -> float:
    env = make_env(num_envs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 2, (num_steps, num_envs))

    def run():
        for t in range(num_steps):
            env.step(actions[t])

    rate = num_envs * num_steps / timed(run, repeats)
    env.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128, help="steps per env per timed call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].platform}; steps per call: {args.steps}")
    print("\nCollector env-steps/s on CartPole-v1 (MLP 64x64 actor-critic)")
    print(f"{'N':>6} {'HostCollector':>14} {'jitted collect':>15} {'ratio':>7}")
    for n in (8, 64, 1024):
        host, jitted = collector_rates(n, args.steps, args.repeats)
        print(f"{n:>6} {host:>14,.0f} {jitted:>15,.0f} {jitted / host:>6.1f}x")

    print("\nVector env step()/s x N on CartPole-v1 (random actions, no policy)")
    print(f"{'N':>6} {'rollax/CartPole-v1':>19} {'Gymnasium numpy':>16}")
    for n in (8, 64, 1024):
        ours = vector_env_rate(
            lambda k: gymnasium.make_vec("rollax/CartPole-v1", num_envs=k),
            n,
            args.steps,
            args.repeats,
        )
        theirs = vector_env_rate(
            lambda k: gymnasium.make_vec(
                "CartPole-v1", num_envs=k, vectorization_mode="vector_entry_point"
            ),
            n,
            args.steps,
            args.repeats,
        )
        print(f"{n:>6} {ours:>19,.0f} {theirs:>16,.0f}")


if __name__ == "__main__":
    main()
