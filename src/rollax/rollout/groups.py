"""Groups of one-step generations: G samples of the policy per prompt, scored by the env.

Each prompt (an env reset) is repeated G times in contiguous rows, the policy samples one
action per row, and one env step gives each sample its reward: `Sequences` of one part each.
The env must end its episode after that step (a bandit, such as `rollax/VAEDigit-v0`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rollax.networks.policy import score_actions
from rollax.rollout.batches import Sequences
from rollax.rollout.collector import EnvSource, act, env_actions
from rollax.rollout.sources import check_whole_samples


class GenerationGroups(EnvSource):
    """`num_envs / group_size` prompts, `group_size` one-step generations each, per iteration."""

    batch_type = Sequences

    def check(self, algorithm_name: str) -> None:
        check_whole_samples(self.settings, algorithm_name, "generation")
        key = jax.random.key(0)
        _, state = self.env.reset(key, self.env_params)
        action = self.env.action_space(self.env_params).sample(key)
        if not bool(self.env.step(key, state, action, self.env_params)[3]):
            raise ValueError(f"{algorithm_name} in the training loop needs a one-step (bandit) env "
                             "whose episode ends after one action, e.g. rollax/VAEDigit-v0")

    def sample(self, policy: Any, reference: Any, state: Any, key: jax.Array):
        settings = self.settings
        samples = settings.shard(sample_groups(
            policy, reference if settings.needs_reference else None, self.env, self.env_params, key,
            settings.num_envs // settings.group_size, settings.group_size))
        if settings.needs_values:
            samples = samples.replace(values=score_actions(
                policy, samples.observations, samples.actions, samples.mask.shape).values)
        rewards = samples.rewards
        episodes = (rewards, jnp.ones(rewards.shape, jnp.int32), jnp.ones(rewards.shape, bool))
        return state, samples, episodes, {}


def sample_groups(model: Any, reference: Any, env: Any, env_params: Any, key: jax.Array,
                  num_prompts: int, group_size: int) -> Sequences:
    """`num_prompts * group_size` generations `[p0g0, p0g1, ..., p1g0, ...]` with their rewards;
    scored by `reference` too unless it is None."""
    reset_key, action_key, step_key = jax.random.split(key, 3)
    observations, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_prompts), env_params)
    repeat = lambda x: jnp.repeat(x, group_size, axis=0)
    observations, env_state = repeat(observations), jax.tree.map(repeat, env_state)
    action_space = env.action_space(env_params)
    distribution = act(model, observations, action_space).distribution
    actions = distribution.sample(action_key)
    rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(step_key, num_prompts * group_size), env_state,
        env_actions(actions, action_space), env_params)[2]
    grid = (num_prompts * group_size, 1)
    ref_log_probs = None if reference is None else \
        score_actions(reference, observations, actions, grid).log_probs
    return Sequences(observations, actions, jnp.ones(grid, bool), rewards.astype(jnp.float32),
                     distribution.log_prob(actions).reshape(grid), ref_log_probs,
                     group_size=group_size)
