"""Everything static about a run, resolved and checked before anything is compiled: the env, the
algorithm, the batch source that feeds it, and the shapes."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
from gymnax.environments import spaces

from rollax.envs import make
from rollax.envs.gymnasium_ids import is_host_env_id
from rollax.envs.hooks import env_hooks
from rollax.rl.algorithm import Algorithm
from rollax.rl.registry import get_algorithm
from rollax.rollout.batches import Steps
from rollax.rollout.collector import check_action_space
from rollax.rollout.host_collector import DEFAULT_EVAL_EPISODE_STEPS, make_host
from rollax.rollout.reward_scaling import RewardScaling
from rollax.rollout.sources import BatchSource, SourceSettings, batch_sources
from rollax.run.experiment import Experiment


@dataclasses.dataclass(frozen=True)
class Plan:
    """The env, the algorithm, the batch source and the shapes of one run."""

    env: Any  # None for host (Gymnasium) envs, which the host program steps itself
    env_params: Any
    observation_space: Any  # gymnax spaces, for building networks
    action_space: Any
    algorithm: Algorithm
    config: Any
    source: BatchSource | None  # None for host (Gymnasium) envs
    num_envs: int
    num_steps: int
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


def make_plan(experiment: Experiment, shard: Any = None) -> Plan:
    """Build the env, pick its batch source for the algorithm, and check they fit. `shard`
    splits a batch over a mesh's data axis (`rollax.run.parallel`; none by default)."""
    config, budget = experiment.agent.config, experiment.budget
    algorithm = get_algorithm(experiment.agent.algorithm)
    env, env_params, observation_space, action_space, max_steps, host_env_id = _env(experiment)
    check_action_space(action_space)
    algorithm.check_plan(config, budget, 1 if env is None else env_hooks(env).num_tasks(env_params))
    settings = SourceSettings(
        num_envs=budget.num_envs, num_steps=budget.num_steps, group_size=algorithm.group_size(config),
        eval_episodes=experiment.eval.episodes, eval_max_steps=max_steps,
        needs_values=algorithm.needs_critic, needs_reference=algorithm.uses_reference(config),
        reward_scaling=_reward_scaling(experiment.env, algorithm.name, config),
        **({} if shard is None else {"shard": shard}))
    source = None
    if host_env_id is None:
        source = _source(env, env_params, algorithm, settings)
    elif Steps not in algorithm.learns_from:
        raise ValueError(f"agent.algorithm={algorithm.name!r} learns from sampled groups of a "
                         "jittable env; Gymnasium envs train with an algorithm that learns from "
                         "env steps (e.g. ppo, reinforce)")
    _check_normalization(experiment.env, source, observation_space)
    steps_per_iteration, iterations, iterations_per_chunk = iteration_layout(budget)
    return Plan(
        env=env, env_params=env_params, observation_space=observation_space,
        action_space=action_space, algorithm=algorithm, config=config, source=source,
        num_envs=budget.num_envs, num_steps=budget.num_steps,
        iterations=iterations, iterations_per_chunk=iterations_per_chunk,
        steps_per_iteration=steps_per_iteration, eval_episodes=experiment.eval.episodes,
        eval_max_steps=max_steps, updates_per_iteration=algorithm.updates_per_iteration(config),
        host_env_id=host_env_id, env_spec=experiment.env,
    )


def _source(env: Any, env_params: Any, algorithm: Algorithm, settings: SourceSettings) -> BatchSource:
    """The first of the env's batch sources whose batches the algorithm learns from, checked
    against the env and budget."""
    candidates = batch_sources(env)
    for source_class in candidates:
        if source_class.batch_type in algorithm.learns_from:
            source = source_class(env, env_params, settings)
            source.check(algorithm.name)
            return source
    names = [source.__name__ for source in candidates]
    raise ValueError(f"agent.algorithm={algorithm.name!r} cannot learn from "
                     f"{getattr(env, 'name', type(env).__name__)}'s batch sources {names}")


def _reward_scaling(spec: Any, algorithm_name: str, config: Any) -> RewardScaling | None:
    """How rewards are normalised (by the algorithm's discount), or None."""
    if not spec.normalize_rewards:
        return None
    if not hasattr(config, "gamma"):
        raise ValueError(f"env.normalize_rewards scales rewards by the running std of the "
                         f"discounted return; {algorithm_name} has no discount (gamma)")
    return RewardScaling(float(config.gamma), spec.clip_rewards)


def _check_normalization(spec: Any, source: BatchSource | None, observation_space: Any) -> None:
    """Normalisation is for env steps: rewards of a source that scales them (jittable env
    rollouts), observations that are vectors of floats."""
    if spec.normalize_rewards and not (source is not None and source.scales_rewards):
        where = "a Gymnasium env stepped on the host" if source is None else type(source).__name__
        raise ValueError(f"env.normalize_rewards is for the env rollouts of a jittable env; "
                         f"this run samples from {where}")
    if spec.normalize_observations:
        floats = isinstance(observation_space, spaces.Box) and np.issubdtype(
            np.dtype(observation_space.dtype), np.floating)
        if not floats or (source is not None and source.batch_type is not Steps):
            raise ValueError(f"env.normalize_observations is for env steps with real-valued "
                             f"observations; {spec.id!r} gives {observation_space!r} to a "
                             f"{type(source).__name__ if source else 'host'} batch source")


def _eval_cap(experiment: Experiment, env_limit: int) -> int:
    """The steps a jittable env's evaluation episodes may take: its own limit, or the cap
    (`eval.max_episode_steps`, by default `DEFAULT_EVAL_EPISODE_STEPS`) where that is lower. The
    evaluation scans every one of these steps, so a limit of 10**8 would run for hours."""
    cap = experiment.eval.max_episode_steps or DEFAULT_EVAL_EPISODE_STEPS
    if env_limit <= cap:
        return env_limit
    warnings.warn(f"evaluation episodes of {experiment.env.id!r} end after {cap} steps "
                  f"(eval.max_episode_steps), before its own limit of {env_limit}: the returns of "
                  "longer episodes are partial", RuntimeWarning, stacklevel=3)
    return cap


def _env(experiment: Experiment) -> tuple:
    """`(env, params, observation space, action space, max episode steps, host id or None)`."""
    spec = experiment.env
    if is_host_env_id(spec.id):
        probe = make_host(spec.id, 1, **spec.kwargs)
        cap = experiment.eval.max_episode_steps or DEFAULT_EVAL_EPISODE_STEPS
        own = probe.episode_limit()  # episodes cut by the cap are named when evaluated
        max_steps = min(own, cap) if own else cap
        result = (None, None, probe.observation_space, probe.action_space, max_steps, spec.id)
        probe.close()
        return result
    env, env_params = make(spec.id, **spec.params, **spec.kwargs)
    max_steps = _eval_cap(experiment, int(getattr(env_params, "max_steps_in_episode", 1000)))
    return (env, env_params, env.observation_space(env_params), env.action_space(env_params),
            max_steps, None)
