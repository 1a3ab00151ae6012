"""Groups of one-step generations: G samples of the policy per prompt, scored by the env.

The batch source of GRPO, RLOO and DPO in the training loop: each prompt (an env reset) is
repeated G times in contiguous rows, the policy samples one action per row, and one env step
gives each sample its reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rollax.rl.spec import GroupSamples
from rollax.rl.trainer import evaluate_policy, sequence_sum
from rollax.rollout.collector import env_actions, policy_distribution


def sample_groups(model: Callable, reference: Callable, env: Any, env_params: Any, key: jax.Array,
                  num_prompts: int, group_size: int) -> GroupSamples:
    """`num_prompts * group_size` generations `[p0g0, p0g1, ..., p1g0, ...]` with rewards;
    `reference` scores them under the frozen reference policy when an algorithm asks."""
    reset_key, action_key, step_key = jax.random.split(key, 3)
    observations, env_state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_prompts), env_params)
    repeat = lambda x: jnp.repeat(x, group_size, axis=0)
    observations, env_state = repeat(observations), jax.tree.map(repeat, env_state)
    action_space = env.action_space(env_params)
    distribution, _ = policy_distribution(model, observations, action_space)
    actions = distribution.sample(action_key)
    rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        jax.random.split(step_key, num_prompts * group_size), env_state,
        env_actions(actions, action_space), env_params)[2]

    def reference_log_probs(observations: jax.Array, actions: jax.Array) -> jax.Array:
        terms = evaluate_policy(reference, observations, actions)
        return sequence_sum(terms.log_probs, terms.mask)

    return GroupSamples(observations, actions, distribution.log_prob(actions),
                        rewards.astype(jnp.float32), group_size, reference_log_probs)
