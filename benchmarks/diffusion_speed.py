"""Speed of the diffusion domain on this machine: chains per second of the shipped samplers
(each step's log-probability and the env's reward, as training samples them, against the bare
sampler), and seconds per training iteration of each diffusion experiment, split into sampling
and the update.

    python benchmarks/diffusion_speed.py [--chains 256] [--iterations 40]
"""

from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx
from timing import best_seconds

import rollax
from rollax.api import train
from rollax.diffusion.policy import DenoiserPolicy
from rollax.diffusion.source import sample_chains
from rollax.presets import load_experiment

EXPERIMENTS = ("diffusion_reinforce", "diffusion_ppo", "diffusion_grpo", "diffusion_rloo",
               "diffusion_dpo", "flow_grpo")


def bare_chains(policy, env, key, conditions):
    """The sampler alone: each step's mean and noise, no log-probability, no reward."""
    _, state = jax.vmap(env.start)(jax.random.split(key, conditions.shape[0]), conditions)
    x = state.x

    def step(x, inputs):
        k, step_key = inputs
        observation = jnp.concatenate([x, jnp.full((x.shape[0], 1), k, x.dtype), conditions], -1)
        distribution = policy(observation).distribution
        return distribution.mean + jnp.exp(distribution.log_std) * jax.random.normal(
            step_key, x.shape), None

    steps = jnp.arange(env.num_steps, dtype=jnp.float32)
    return jax.lax.scan(step, x, (steps, jax.random.split(key, env.num_steps)))[0]


def sampler_speed(env_id: str, chains: int) -> tuple[float, float]:
    env, params = rollax.make(env_id)
    policy = DenoiserPolicy(env.denoiser, env.sampler, env.num_conditions, critic=False,
                            rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(policy)
    conditions = params.conditions[jnp.arange(chains) % env.num_conditions]
    with_log_probs = jax.jit(lambda s, key: sample_chains(
        nnx.merge(graphdef, s), env, params, key, conditions).samples.log_probs)
    bare = jax.jit(lambda s, key: bare_chains(nnx.merge(graphdef, s), env, key, conditions))
    key = jax.random.key(0)
    return tuple(chains / best_seconds(lambda f=f: f(state, key), 5) for f in (with_log_probs, bare))


def iteration_seconds(name: str, iterations: int) -> tuple[float, int]:
    experiment = load_experiment(name)
    steps = experiment.budget.num_envs * iterations
    with tempfile.TemporaryDirectory() as root:
        sets = [f"logging.root='{root}'", "logging.checkpoint=false", "logging.plot=false",
                f"budget.total_steps={steps}", f"eval.every_steps={steps}"]
        result = train(load_experiment(name, seeds=1, overrides=sets), progress=False)
    return result.train_seconds / iterations, experiment.budget.num_envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    sampling = {}
    for env_id in ("rollax/DiffusionDigit-v0", "rollax/FlowDigit-v0"):
        with_log_probs, bare = sampler_speed(env_id, args.chains)
        sampling[env_id] = args.chains / with_log_probs
        print(f"{env_id}: {with_log_probs:,.0f} chains/s with log-probs and rewards, "
              f"{bare:,.0f} chains/s bare ({args.chains} chains of 10 steps)")
    for name in EXPERIMENTS:
        seconds, chains = iteration_seconds(name, args.iterations)
        env_id = "rollax/FlowDigit-v0" if name.startswith("flow") else "rollax/DiffusionDigit-v0"
        sample = sampling[env_id] * chains / args.chains
        print(f"{name}: {seconds * 1000:.1f} ms per iteration of {chains} chains "
              f"(sampling ~{sample * 1000:.1f} ms, update and the rest ~{(seconds - sample) * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
