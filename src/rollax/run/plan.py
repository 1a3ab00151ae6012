"""Everything static about a run, resolved and checked before anything is compiled."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gymnasium
import jax
from gymnax.environments import spaces

from rollax.envs import make
from rollax.envs.token_env import TokenEnv
from rollax.rl.spec import AlgorithmSpec
from rollax.rollout.host_collector import is_host_env_id, make_host
from rollax.run.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class Plan:
    """The env, the algorithm and the shapes of one run."""

    env: Any  # None for host (Gymnasium) envs, which the host program steps itself
    env_params: Any
    observation_space: Any  # gymnax spaces, for building networks
    action_space: Any
    algorithm: AlgorithmSpec
    config: Any
    num_envs: int
    num_steps: int
    group_size: int  # generations per prompt for "groups" algorithms; 1 otherwise
    iterations: int
    iterations_per_chunk: int
    steps_per_iteration: int
    eval_episodes: int
    eval_max_steps: int
    updates_per_iteration: int
    host_env_id: str | None = None  # "gymnasium:<id>": stepped on the host, not jitted
    env_spec: Any = None  # the experiment's [env]: what built `env` (a warm start rebuilds it)

    @property
    def total_steps(self) -> int:
        return self.iterations * self.steps_per_iteration


# The loop gets control (progress, logs, evaluation, signals) only between chunks. 30 per run
# redraws the bar every ~0.4 s on cartpole_ppo (1e5 steps, 2 CPU cores) without measurable cost;
# 390 one-iteration chunks there cost ~15 ms each (flushes, transfers, dispatch).
CHUNKS_PER_RUN = 30


def chunk_size(iterations: int, requested: int) -> int:
    """A divisor of `iterations` (one compiled chunk shape): the request, or about a thirtieth
    of the run (`CHUNKS_PER_RUN`)."""
    target = min(requested or max(1, iterations // CHUNKS_PER_RUN), iterations)
    small = [d for d in range(1, math.isqrt(iterations) + 1) if iterations % d == 0]
    return max(d for d in small + [iterations // d for d in small] if d <= target)


def iteration_layout(budget: Any, total_steps: int | None = None) -> tuple[int, int, int]:
    """`(env steps per iteration, iterations, iterations per chunk)` of a budget (with another
    total, for a resume that changes it)."""
    steps_per_iteration = budget.num_envs * budget.num_steps
    iterations = (budget.total_steps if total_steps is None else total_steps) // steps_per_iteration
    # (a total below one iteration, which only a resume can ask for, is refused by the caller)
    return steps_per_iteration, iterations, chunk_size(max(iterations, 1), budget.iterations_per_chunk)


def make_plan(experiment: Experiment) -> Plan:
    """Build the env and check the agent fits it."""
    algorithm, config, budget = experiment.agent.spec, experiment.agent.config, experiment.budget
    env, env_params, observation_space, action_space, max_steps, host_env_id = _env(experiment)
    if host_env_id is not None and algorithm.batch_source != "rollout":
        raise ValueError(f"agent.algorithm={algorithm.name!r} samples groups of one-step "
                         "generations from a jittable env; Gymnasium envs train with an "
                         "algorithm that learns from rollouts (e.g. ppo, reinforce)")
    if not isinstance(action_space, (spaces.Discrete, spaces.Box)):
        raise ValueError(f"unsupported action space {action_space!r}; expected Discrete or Box")
    num_tasks = env.num_tasks(env_params) if hasattr(env, "num_tasks") else 1
    algorithm.check(config, budget, num_tasks)
    tokens = is_token_env(env)
    _check_token_agent(tokens, algorithm, experiment.agent.network.kind)
    group_size = 1
    if algorithm.batch_source == "groups":
        group_size = algorithm.group_size(config, budget)
        _check_groups(algorithm.name, budget, group_size)
        if not tokens:
            _check_single_step(env, env_params, algorithm.name)
    elif tokens:
        _check_one_sample_per_env(algorithm.name, budget)
    steps_per_iteration, iterations, iterations_per_chunk = iteration_layout(budget)
    return Plan(
        env=env, env_params=env_params, observation_space=observation_space,
        action_space=action_space, algorithm=algorithm, config=config,
        num_envs=budget.num_envs, num_steps=budget.num_steps, group_size=group_size,
        iterations=iterations, iterations_per_chunk=iterations_per_chunk,
        steps_per_iteration=steps_per_iteration, eval_episodes=experiment.eval.episodes,
        eval_max_steps=max_steps, updates_per_iteration=algorithm.updates_per_iteration(config),
        host_env_id=host_env_id, env_spec=experiment.env,
    )


def _env(experiment: Experiment) -> tuple:
    """`(env, params, observation space, action space, max episode steps, host id or None)`."""
    spec = experiment.env
    if is_host_env_id(spec.id):
        probe = make_host(spec.id, 1, **spec.kwargs)
        max_steps = gymnasium.spec(probe.gym_id).max_episode_steps or 1000
        result = (None, None, probe.observation_space, probe.action_space, max_steps, spec.id)
        probe.close()
        return result
    env, env_params = make(spec.id, **spec.params, **spec.kwargs)
    max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    return (env, env_params, env.observation_space(env_params), env.action_space(env_params),
            max_steps, None)


def _check_groups(name: str, budget: Any, group_size: int) -> None:
    if group_size < 2:
        raise ValueError(f"{name}: group size {group_size} must be >= 2 (samples compared per prompt)")
    _check_one_sample_per_env(name, budget)
    if budget.num_envs % group_size:
        raise ValueError(f"budget.num_envs={budget.num_envs} must be a multiple of the group size {group_size}")


def is_token_env(env: Any) -> bool:
    """A token task (`rollax/Tokens-*`): its groups are sampled completions."""
    return isinstance(env, TokenEnv)


def _check_one_sample_per_env(name: str, budget: Any) -> None:
    if budget.num_steps != 1:
        raise ValueError(f"budget.num_steps={budget.num_steps}: {name} here samples one whole "
                         "generation (a one-step action or a token completion) per env and "
                         "iteration; set budget.num_steps = 1")


def _check_token_agent(tokens: bool, algorithm: AlgorithmSpec, kind: str) -> None:
    if tokens and not algorithm.trains_on_completions:
        raise ValueError(f"agent.algorithm={algorithm.name!r} cannot learn from sampled token "
                         "completions (its AlgorithmSpec has no completion_batch)")
    if tokens != (kind == "transformer"):
        raise ValueError(f"agent.network.kind={kind!r}: token tasks take kind='transformer', "
                         "and only token tasks do")


def _check_single_step(env: Any, env_params: Any, name: str) -> None:
    key = jax.random.key(0)
    _, state = env.reset(key, env_params)
    action = env.action_space(env_params).sample(key)
    terminated = env.step(key, state, action, env_params)[3]
    if not bool(terminated):
        raise ValueError(f"{name} in the training loop needs a one-step (bandit) env whose "
                         "episode ends after one action, e.g. rollax/VAEDigit-v0")
