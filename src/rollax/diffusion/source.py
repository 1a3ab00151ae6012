"""Groups of sampled denoising chains: the batch source of every algorithm on a denoising-chain
env, and their evaluation by the env's judge.

Each condition (an env reset) is repeated G times in contiguous rows; the policy samples a whole
chain of K Gaussian steps per row, and the env rewards its last image. The batch is
`Sequences [B, K]`: observations `[B, K, D + 1 + C]` (each step's image, step and condition),
actions `[B, K, D]` (the next images), per-step log-probs, one reward per chain. Every
algorithm's converter then reads a chain as it reads a token completion, its steps as parts.

Evaluation samples chains for a balanced set of conditions (class i % C for chain i): a chain's
"greedy" path of step means is not a sample of the model, so the judge scores the sampling
policy, the figures a user gets from `sample_images`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rollax.diffusion.env import to_images
from rollax.networks.policy import policy_output
from rollax.rollout.batches import Sequences
from rollax.rollout.sources import FAULT, BatchSource, check_whole_samples

PICTURE_ROWS = 10  # chains per class in the pictures TensorBoard shows


class Chains(BatchSource):
    """`num_envs / group_size` conditions, `group_size` chains each, per iteration."""

    batch_type = Sequences

    def check(self, algorithm_name: str) -> None:
        check_whole_samples(self.settings, algorithm_name, "denoising chain")
        if not self.env.sampler.stochastic:
            raise ValueError(f"{algorithm_name} learns from the log-probabilities of the chain's "
                             f"steps; a deterministic sampler ({type(self.env.sampler).__name__} "
                             "with noise 0) has none: set the env param noise > 0")

    def sample(self, policy: Any, reference: Any, state: Any, key: jax.Array):
        settings, env, group_size = self.settings, self.env, self.settings.group_size
        start_key, chain_key = jax.random.split(key)
        num_prompts = settings.num_envs // group_size
        _, starts = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(start_key, num_prompts),
                                                           self.env_params)
        conditions = jnp.repeat(starts.condition, group_size, axis=0)
        chain = sample_chains(policy, env, self.env_params, chain_key, conditions)
        samples = settings.shard(chain.samples.replace(
            group_size=group_size, task_ids=jnp.argmax(conditions, axis=-1).astype(jnp.int32)))
        reference_output = policy_output(reference(samples.observations), False).distribution
        kl = jnp.mean(jnp.sum(chain.distribution.kl(reference_output), axis=1))
        if settings.needs_reference:
            samples = samples.replace(ref_log_probs=reference_output.log_prob(samples.actions),
                                      ref_distribution=reference_output)
        if settings.needs_values:
            samples = samples.replace(values=policy_output(policy(samples.observations), False).value)
        rewards = samples.rewards
        metrics = {"kl_to_reference": kl,
                   f"{FAULT}env {env.name!r}: the reward of a chain's image is not finite":
                       jnp.sum(~jnp.isfinite(rewards))}
        episodes = (rewards, jnp.full(rewards.shape, env.num_steps, jnp.int32),
                    jnp.ones(rewards.shape, bool))
        return state, samples, episodes, metrics

    def evaluate(self, policy: Any, key: jax.Array) -> tuple[jax.Array, dict]:
        env, count = self.env, self.settings.eval_episodes
        conditions = self.env_params.conditions[jnp.arange(count) % self.env_params.conditions.shape[0]]
        chain = sample_chains(policy, env, self.env_params, key, conditions)
        return chain.samples.rewards, env.evaluate_samples(self.env_params, chain.images, conditions)

    @property
    def shows_images(self) -> bool:
        return True

    def images(self, policy: Any, key: jax.Array) -> jax.Array:
        conditions = self._grid_conditions()
        chain = sample_chains(policy, self.env, self.env_params, key, conditions)
        return self.env.picture(self.env_params, chain.images, conditions)

    def _grid_conditions(self) -> jax.Array:
        """`PICTURE_ROWS` chains of each class, class by class."""
        return jnp.repeat(self.env_params.conditions, PICTURE_ROWS, axis=0)

    def sample_images(self, policy: Any, tasks: Any, count: int, key: jax.Array,
                      greedy: bool) -> jax.Array:
        """Chains for the classes `tasks` (or `count` of uniformly drawn classes); `greedy`
        follows each step's mean (a deterministic path, not a sample of the model)."""
        table = self.env_params.conditions
        condition_key, chain_key = jax.random.split(key)
        rows = jax.random.randint(condition_key, (count,), 0, table.shape[0]) if tasks is None \
            else jnp.asarray(tasks)
        chain = sample_chains(policy, self.env, self.env_params, chain_key, table[rows],
                              greedy=greedy)
        return to_images(chain.images).reshape(-1, *self.env.image_shape)

    def film(self, policy: Any, key: jax.Array) -> jax.Array:
        """The class grid of `images` at every step of its chains: from noise to the digits."""
        conditions = self._grid_conditions()
        chain = sample_chains(policy, self.env, self.env_params, key, conditions)
        steps = jnp.swapaxes(chain.samples.observations[..., :self.env.data_dim], 0, 1)
        states = jnp.concatenate([steps, chain.images[None]])
        return jax.vmap(lambda x: self.env.picture(self.env_params, x, conditions))(states)


class Chain(NamedTuple):
    """A batch of sampled chains: the `Sequences`, the policy's step distributions on its grid,
    and the final images `[B, D]` (data range)."""

    samples: Sequences
    distribution: Any
    images: jax.Array


def sample_chains(policy: Any, env: Any, env_params: Any, key: jax.Array, conditions: jax.Array,
                  greedy: bool = False) -> Chain:
    """Chains from noise for condition rows `[B, C]`, stepped through the env (its rewards);
    `greedy`: every step its mean."""
    count = conditions.shape[0]
    start_key, steps_key = jax.random.split(key)
    observations, state = jax.vmap(env.start)(jax.random.split(start_key, count), conditions)
    step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(carry, step_key):
        observations, state = carry
        distribution = policy_output(policy(observations), False).distribution
        action_key, env_key = jax.random.split(step_key)
        actions = distribution.mode() if greedy else distribution.sample(action_key)
        next_observations, state, rewards = step(jax.random.split(env_key, count), state,
                                                 actions, env_params)[:3]
        return (next_observations, state), (observations, actions, distribution.log_prob(actions),
                                            distribution, rewards)

    _, (observations, actions, log_probs, distribution, rewards) = jax.lax.scan(
        one_step, (observations, state), jax.random.split(steps_key, env.num_steps))
    batch_first = lambda x: jnp.swapaxes(x, 0, 1)
    samples = Sequences(batch_first(observations), batch_first(actions),
                        jnp.ones(log_probs.shape[::-1], bool), jnp.sum(rewards, axis=0),
                        batch_first(log_probs), group_size=1)
    return Chain(samples, jax.tree.map(batch_first, distribution), actions[-1])
