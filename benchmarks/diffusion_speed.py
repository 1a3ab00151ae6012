"""Speed of the diffusion domain on this machine: chains per second of the shipped samplers
(a policy's chains with each step's log-probability and the env's reward, as training samples
them, against the base model's bare sampler), and seconds per training iteration of each diffusion experiment, split into sampling
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
from rollax.diffusion.samplers import sample
from rollax.diffusion.source import sample_chains
from rollax.presets import load_experiment

EXPERIMENTS = ("diffusion_reinforce", "diffusion_ppo", "diffusion_grpo", "diffusion_rloo",
               "diffusion_dpo", "flow_grpo")


def sampler_speed(env_id: str, chains: int) -> tuple[float, float]:
    env, params = rollax.make(env_id)
    policy = DenoiserPolicy(env.denoiser, env.sampler, env.num_conditions, critic=False,
                            rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(policy)
    conditions = params.conditions[jnp.arange(chains) % env.num_conditions]
    with_log_probs = jax.jit(lambda s, key: sample_chains(
        nnx.merge(graphdef, s), env, params, key, conditions).samples.log_probs)
    bare = jax.jit(lambda key: sample(env.denoiser, env.sampler, key, chains, env.data_dim))
    key = jax.random.key(0)
    return (chains / best_seconds(lambda: with_log_probs(state, key), 5),
            chains / best_seconds(lambda: bare(key), 5))


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
