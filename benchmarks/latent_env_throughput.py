"""Env-steps/s of rollax/VAEDigit-v0 (VAE decoder + classifier/realism reward) next to the same
models' batched forward pass, the physical limit of any env built on them.

Both sides run as one jitted `lax.scan` of `steps` iterations on `N` parallel items with random
actions, so the ratio isolates what the env adds (reset, auto-reset select, per-env batch of 1
under `vmap`). Usage: python benchmarks/latent_env_throughput.py [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools

import jax
from timing import best_seconds

import rollax.envs


def env_rollout(env, params, num_envs: int, steps: int):
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    bound = env.action_bound

    @jax.jit
    def run(key):
        _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)

        def body(carry, key):
            state, total = carry
            action_key, step_key = jax.random.split(key)
            actions = jax.random.uniform(action_key, (num_envs, env.latent_dim),
                                         minval=-bound, maxval=bound)
            _, state, reward, _, _, _ = step(jax.random.split(step_key, num_envs), state, actions,
                                             params)
            return (state, total + reward.sum()), None

        (_, total), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(key, steps))
        return total

    return run


def direct_forward(env, params, num_envs: int, steps: int):
    """The same decode + reward on `[N, d]` latents, with one-hot targets, no env around it."""
    bound = env.action_bound

    @jax.jit
    def run(key):
        def body(total, key):
            action_key, target_key = jax.random.split(key)
            latents = jax.random.uniform(action_key, (num_envs, env.latent_dim),
                                         minval=-bound, maxval=bound)
            targets = jax.nn.one_hot(jax.random.randint(target_key, (num_envs,), 0, 10), 10)
            rewards = env.reward(params, env.decode(params, latents), targets)
            return total + rewards.sum(), None

        total, _ = jax.lax.scan(body, 0.0, jax.random.split(key, steps))
        return total

    return run


def best_rate(fn, items: int, repeats: int) -> float:
    """`items` per second of `fn(key)`'s fastest call after a warm-up (compile), a fresh key each."""
    keys = map(jax.random.key, itertools.count())
    jax.block_until_ready(fn(next(keys)))  # compile
    return items / best_seconds(lambda: fn(next(keys)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()
    env, params = rollax.envs.make("rollax/VAEDigit-v0")
    print(f"device: {jax.devices()[0].device_kind}  steps per call: {args.steps}  "
          f"best of {args.repeats}")
    print(f"{'N':>6} {'env steps/s':>14} {'forward items/s':>16} {'env/forward':>12}")
    for num_envs in args.sizes:
        items = num_envs * args.steps
        env_rate = best_rate(env_rollout(env, params, num_envs, args.steps), items, args.repeats)
        fwd_rate = best_rate(direct_forward(env, params, num_envs, args.steps), items,
                             args.repeats)
        print(f"{num_envs:>6} {env_rate:>14,.0f} {fwd_rate:>16,.0f} {env_rate / fwd_rate:>12.2f}")


if __name__ == "__main__":
    main()
