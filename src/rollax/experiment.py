"""Presets -> objects, and the training loop.

One iteration = collect + trainer update (the trainers' own pure `update`). K iterations run
inside one jitted `lax.scan` ("a chunk"), `vmap`ped over seeds, so N seeds are one compiled
program. Between chunks the host logs, evaluates, checkpoints and draws progress.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from gymnax.environments import spaces

from rollax.envs import make
from rollax.networks import build_policy
from rollax.networks.distributions import log_prob, mode, sample, split_output
from rollax.presets import algorithm_config, seed_list
from rollax.rl import dpo, grpo, ppo, reinforce
from rollax.rl.trainer import evaluate_policy, sequence_sum
from rollax.rollout.collector import collect, env_actions, evaluate, init_rollout
from rollax.rollout.host_collector import is_host_env_id, make_host

UPDATES = {"ppo": ppo.update, "reinforce": reinforce.update, "grpo": grpo.update, "dpo": dpo.update}
CRITIC = {"ppo": True, "reinforce": False, "grpo": False, "dpo": False}


RENDER_KEY_INDEX = 2**31 - 1  # sample pictures use the same conditions before and after training


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf; the message names the iteration, seed and metric."""


def enable_compilation_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache in a user cache dir).

    Opt out with `ROLLAX_COMPILATION_CACHE=0`; `ROLLAX_CACHE_DIR` moves it.
    """
    if os.environ.get("ROLLAX_COMPILATION_CACHE", "1") == "0":
        return
    root = Path(os.environ.get("ROLLAX_CACHE_DIR", Path.home() / ".cache" / "rollax"))
    jax.config.update("jax_compilation_cache_dir", str(root / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything static about a run, resolved from an experiment dict."""

    env: Any  # None for host (Gymnasium) envs, which the host program steps itself
    env_params: Any
    observation_space: Any  # gymnax spaces, for building networks
    action_space: Any
    algorithm: str
    config: Any
    discrete: bool
    num_envs: int
    num_steps: int
    group_size: int  # generations per prompt (GRPO/DPO); 1 otherwise
    iterations: int
    iterations_per_chunk: int
    steps_per_iteration: int
    eval_episodes: int
    eval_max_steps: int
    updates_per_iteration: int
    host_env_id: str | None = None  # "gymnasium:<id>": stepped on the host, not jitted

    @property
    def num_chunks(self) -> int:
        return self.iterations // self.iterations_per_chunk


def _chunk_size(iterations: int, requested: int) -> int:
    """A divisor of `iterations` (one compiled chunk shape): the request, or about a tenth."""
    target = requested or max(1, iterations // 10)
    return max(d for d in range(1, min(target, iterations) + 1) if iterations % d == 0)


def make_plan(experiment: dict) -> Plan:
    """Build the env and check the agent fits it, before anything is compiled."""
    env_spec, agent = experiment["env"], experiment["agent"]
    algorithm = agent["algorithm"]
    config = algorithm_config(agent)
    budget = experiment["budget"]
    num_envs, num_steps = budget["num_envs"], budget["num_steps"]
    host_env_id = env_spec["id"] if is_host_env_id(env_spec["id"]) else None
    if host_env_id is not None:
        if algorithm not in ("ppo", "reinforce"):
            raise ValueError(f"{algorithm} needs a jittable one-step env; Gymnasium envs train with ppo or reinforce")
        probe = make_host(host_env_id, 1, **env_spec["kwargs"])
        env, env_params = None, None
        observation_space, action_space = probe.observation_space, probe.action_space
        max_steps = gymnasium.spec(probe.gym_id).max_episode_steps or 1000
        probe.close()
    else:
        env, env_params = make(env_spec["id"], **env_spec["params"], **env_spec["kwargs"])
        observation_space, action_space = env.observation_space(env_params), env.action_space(env_params)
        max_steps = int(getattr(env_params, "max_steps_in_episode", 1000))
    if not isinstance(action_space, (spaces.Discrete, spaces.Box)):
        raise ValueError(f"unsupported action space {action_space!r}; expected Discrete or Box")
    discrete = isinstance(action_space, spaces.Discrete)
    group_size = 1
    if algorithm in ("grpo", "dpo"):
        group_size = config.num_generations if algorithm == "grpo" else budget["group_size"]
        if group_size < 2:
            raise ValueError(f"budget.group_size={group_size} must be >= 2 (samples ranked per prompt)")
        if num_steps != 1:
            raise ValueError(f"{algorithm} samples one-step generations: set budget.num_steps = 1")
        if num_envs % group_size:
            raise ValueError(f"budget.num_envs={num_envs} must be a multiple of the group size {group_size}")
        _check_single_step(env, env_params, algorithm)
    if algorithm == "ppo" and (num_envs * num_steps) % config.num_minibatches:
        raise ValueError(f"num_envs * num_steps = {num_envs * num_steps} does not split into "
                         f"num_minibatches={config.num_minibatches}")
    steps_per_iteration = num_envs * num_steps
    iterations = budget["total_steps"] // steps_per_iteration
    updates = config.num_epochs * config.num_minibatches if algorithm == "ppo" else 1
    return Plan(
        env=env, env_params=env_params, observation_space=observation_space,
        action_space=action_space, algorithm=algorithm, config=config, discrete=discrete,
        num_envs=num_envs, num_steps=num_steps, group_size=group_size, iterations=iterations,
        iterations_per_chunk=_chunk_size(iterations, budget["iterations_per_chunk"]),
        steps_per_iteration=steps_per_iteration, eval_episodes=experiment["eval"]["episodes"],
        eval_max_steps=max_steps, updates_per_iteration=updates, host_env_id=host_env_id,
    )


def _check_single_step(env, env_params, algorithm: str) -> None:
    key = jax.random.key(0)
    _, state = env.reset(key, env_params)
    action = env.action_space(env_params).sample(key)
    terminated = env.step(key, state, action, env_params)[3]
    if not bool(terminated):
        raise ValueError(f"{algorithm} in the training loop needs a one-step (bandit) env whose "
                         "episode ends after one action, e.g. rollax/VAEDigit-v0")


def make_optimizer(spec: dict, total_updates: int) -> optax.GradientTransformation:
    """The agent's optimizer; `anneal_lr` decays the rate linearly to 0 over the run."""
    lr = spec["learning_rate"]
    if spec["anneal_lr"]:
        lr = optax.linear_schedule(lr, 0.0, max(total_updates, 1))
    name = spec["name"]
    if name == "sgd":
        return optax.sgd(lr)
    if name == "rmsprop":
        return optax.rmsprop(lr, eps=spec["eps"])
    return getattr(optax, name)(lr, eps=spec["eps"])


def build_model(experiment: dict, plan: Plan, seed_key: jax.Array) -> nnx.Module:
    """The agent's policy network for the env's spaces."""
    network = experiment["agent"]["network"]
    return build_policy(
        plan.observation_space, plan.action_space,
        hidden_sizes=network["hidden_sizes"], activation=network["activation"],
        critic=CRITIC[plan.algorithm], shared_torso=network["shared_torso"],
        log_std_init=network["log_std_init"], rngs=nnx.Rngs(seed_key))


class Program:
    """The compiled pieces of one experiment: `init(seeds)`, `run_chunk(state)`, `evaluate(state)`."""

    def __init__(self, experiment: dict, plan: Plan):
        self.experiment, self.plan = experiment, plan
        total_updates = plan.iterations * plan.updates_per_iteration
        self.tx = make_optimizer(experiment["agent"]["optimizer"], total_updates)
        def abstract_model_and_optimizer():  # shapes only: nothing is computed or compiled
            model = build_model(experiment, plan, jax.random.key(0))
            return model, nnx.Optimizer(model, self.tx, wrt=nnx.Param)

        model, optimizer = nnx.eval_shape(abstract_model_and_optimizer)
        self.graphdef, _ = nnx.split((model, optimizer))
        self.model_graphdef, _ = nnx.split(model)
        self.run_chunk = jax.jit(over_seeds(self._chunk), donate_argnums=0)
        self.evaluate = jax.jit(over_seeds(self._evaluate))
        self._init = jax.jit(over_seeds(self._init_one))
        self._render = jax.jit(over_seeds(self._render_one))  # compiled once: before and after

    def _build(self, key: jax.Array) -> nnx.Module:
        return build_model(self.experiment, self.plan, key)

    def close(self) -> None:
        """Release host resources (nothing for jitted envs)."""

    def init(self, seeds: jax.Array) -> dict:
        """Stacked per-seed training state `[S, ...]`: model+optimizer, reference policy, rollout, key."""
        return self._init(jnp.asarray(seeds))

    def _init_one(self, seed: jax.Array) -> dict:
        model_key, rollout_key, key = jax.random.split(jax.random.key(seed), 3)
        model = self._build(model_key)
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        rollout = init_rollout(self.plan.env, self.plan.env_params, rollout_key, self.plan.num_envs)
        return {"train": nnx.split((model, optimizer))[1], "reference": nnx.split(model)[1],
                "rollout": rollout, "key": key}

    def compile(self, seeds: list[int]) -> tuple[tuple[Future, Future], float]:
        """Trace the chunk and the evaluation here, compile them in a background thread.

        Tracing is Python and holds the GIL, so it runs first, on the caller's thread; XLA's
        compile releases it, so the caller initialises and imports while the chunk compiles,
        and trains while the evaluation compiles. Returns the two futures and the start time.
        """
        start = time.perf_counter()
        abstract = jax.eval_shape(self._init, jnp.asarray(seeds))
        chunk = self.run_chunk.lower(abstract)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollax-compile")
        chunk_job = pool.submit(chunk.compile)
        evaluation = self.evaluate.lower(abstract, jax.eval_shape(eval_keys, seeds, 0))
        jobs = (chunk_job, pool.submit(evaluation.compile))
        pool.shutdown(wait=False)
        return jobs, start

    # ---- one iteration per algorithm family
    def _iteration(self, state: dict, _):
        plan = self.plan
        key, collect_key, update_key = jax.random.split(state["key"], 3)
        model, _ = nnx.merge(self.graphdef, state["train"])
        if plan.algorithm in ("ppo", "reinforce"):
            rollout, trajectory = collect(model, plan.env, plan.env_params, state["rollout"],
                                          collect_key, plan.num_steps)
            batch, episodes = trajectory.as_batch(), (
                trajectory.episode_returns, trajectory.episode_lengths, trajectory.dones)
        else:
            rollout = state["rollout"]
            batch, rewards = self._group_batch(model, state["reference"], collect_key)
            episodes = (rewards, jnp.ones_like(rewards, jnp.int32), jnp.ones_like(rewards, bool))
        train, metrics = UPDATES[plan.algorithm](self.graphdef, state["train"], batch, update_key,
                                                 plan.config, {"group_size": plan.group_size})
        return {**state, "train": train, "rollout": rollout, "key": key}, (metrics, episodes)

    def _group_batch(self, model, reference_state, key):
        """Sample `group_size` one-step generations per prompt; GRPO groups or DPO best/worst pairs."""
        plan, env, params = self.plan, self.plan.env, self.plan.env_params
        prompts, size = plan.num_envs // plan.group_size, plan.group_size
        reset_key, action_key, step_key = jax.random.split(key, 3)
        obs, env_state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, prompts), params)
        repeat = lambda x: jnp.repeat(x, size, axis=0)  # contiguous groups
        obs, env_state = repeat(obs), jax.tree.map(repeat, env_state)
        policy_output, _ = split_output(model(obs), plan.discrete)
        actions = sample(policy_output, action_key, plan.discrete)
        rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(step_key, prompts * size), env_state,
            env_actions(actions, plan.action_space, plan.discrete), params)[2]
        rewards = rewards.astype(jnp.float32)
        reference = nnx.merge(self.model_graphdef, reference_state)
        if plan.algorithm == "grpo":
            batch = {"observations": obs, "actions": actions, "rewards": rewards,
                     "log_probs": log_prob(policy_output, actions, plan.discrete)}
            if plan.config.beta > 0:
                terms = evaluate_policy(reference, obs, actions)
                batch["ref_log_probs"] = sequence_sum(terms.log_probs, terms.mask)
            return batch, rewards
        grouped = rewards.reshape(prompts, size)
        first = jnp.arange(prompts) * size
        best, worst = first + jnp.argmax(grouped, 1), first + jnp.argmin(grouped, 1)
        batch = {"chosen_observations": obs[best], "chosen_actions": actions[best],
                 "rejected_observations": obs[worst], "rejected_actions": actions[worst]}
        for side, index in (("chosen", best), ("rejected", worst)):
            terms = evaluate_policy(reference, obs[index], actions[index])
            batch[f"ref_{side}_log_probs"] = sequence_sum(terms.log_probs, terms.mask)
        return batch, rewards

    def _chunk(self, state: dict):
        return jax.lax.scan(self._iteration, state, None, length=self.plan.iterations_per_chunk)

    def _evaluate(self, state: dict, key: jax.Array):
        """Greedy returns `[episodes]` and the env's own evaluation metrics (see `env_metrics`)."""
        model, _ = nnx.merge(self.graphdef, state["train"])
        returns_key, metrics_key = jax.random.split(key)
        returns = evaluate(model, self.plan.env, self.plan.env_params, returns_key,
                           self.plan.eval_episodes, self.plan.eval_max_steps)
        return returns, self._env_hook(model, metrics_key, "evaluation_metrics")

    def _env_hook(self, model, key: jax.Array, name: str):
        """Call the env's optional `name(params, observations, greedy_actions)` on a reset batch.

        Generative envs use it for judge metrics (`evaluation_metrics -> {name: scalar}`) and
        sample pictures (`render -> images [B, H, W]`); other envs return `{}`/`None`.
        """
        hook = getattr(self.plan.env, name, None)
        if hook is None:
            return {} if name == "evaluation_metrics" else None
        params = self.plan.env_params
        observations, _ = jax.vmap(self.plan.env.reset, in_axes=(0, None))(
            jax.random.split(key, self.plan.eval_episodes), params)
        policy_output, _ = split_output(model(observations), self.plan.discrete)
        return hook(params, observations, mode(policy_output, self.plan.discrete))

    def render(self, state: dict, keys: jax.Array):
        """Images `[S, B, H, W]` of greedy samples per seed, or None when the env cannot render."""
        if getattr(self.plan.env, "render", None) is None:
            return None
        return self._render(state, keys)

    def _render_one(self, seed_state: dict, key: jax.Array):
        model, _ = nnx.merge(self.graphdef, seed_state["train"])
        return self._env_hook(model, key, "render")


def over_seeds(fn):
    """`jax.vmap` over the leading seed axis of every argument; one seed calls `fn` directly,
    since a vmap of size 1 only adds compile time."""
    def batched(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))
        return jax.vmap(fn)(*args)

    return batched


def eval_keys(seeds: list[int] | jax.Array, index: int) -> jax.Array:
    """Evaluation keys `[S]`: a fixed function of each seed and the evaluation's index."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), index))(jnp.asarray(seeds))


def first_non_finite(metrics: dict[str, np.ndarray]) -> tuple[int, int, str] | None:
    """`(seed index, iteration in chunk, metric)` of the first NaN/inf in `[S, K]` metrics."""
    for name in sorted(metrics):
        bad = ~np.isfinite(metrics[name])
        if bad.any():
            seed, iteration = np.argwhere(bad)[0]
            return int(seed), int(iteration), name
    return None


@dataclasses.dataclass
class TrainResult:
    """What a run leaves: its directory, final greedy evaluation `[seeds, episodes]`, timings."""

    name: str
    run_dir: Path | None
    seeds: list[int]
    eval_returns: np.ndarray
    eval_metrics: dict[str, np.ndarray]  # the env's own evaluation metrics, `{name: [S]}`
    ep_rew_mean: list[float]
    env_steps: int
    compile_seconds: float
    train_seconds: float
    solved_threshold: float | None

    @property
    def solved(self) -> list[bool] | None:
        """Per seed: mean greedy eval return >= the env's solved threshold."""
        if self.solved_threshold is None:
            return None
        return [bool(r >= self.solved_threshold) for r in self.eval_returns.mean(axis=1)]

    def table(self) -> str:
        """A plain-text result table, one row per seed."""
        names = sorted(self.eval_metrics)
        rows = [f"{'seed':>4}  {'eval return':>12}  {'train ep_rew_mean':>17}  solved"
                + "".join(f"  {name:>14}" for name in names)]
        solved = self.solved or [None] * len(self.seeds)
        for i, (seed, returns, train_mean, ok) in enumerate(
                zip(self.seeds, self.eval_returns, self.ep_rew_mean, solved)):
            mark = "-" if ok is None else ("yes" if ok else "no")
            rows.append(f"{seed:>4}  {returns.mean():>12.2f}  {train_mean:>17.2f}  {mark:>6}"
                        + "".join(f"  {self.eval_metrics[name][i]:>14.3f}" for name in names))
        rows.append(f"{self.env_steps} env steps per seed, compile {self.compile_seconds:.1f} s, "
                    f"train {self.train_seconds:.1f} s"
                    f" ({self.env_steps * len(self.seeds) / max(self.train_seconds, 1e-9):,.0f} steps/s)")
        return "\n".join(rows)


def train(
    experiment: dict, *, progress: bool = True, resume: str | Path | None = None,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Run an experiment (a dict from `presets.load_experiment`) for all its seeds at once.

    `resume` continues the run directory's newest checkpoint; `stop_at_step` ends early (after
    the chunk reaching that env step) with a checkpoint, as a signal would, for later resuming.
    """
    plan = make_plan(experiment)
    seeds = seed_list(experiment)
    if plan.host_env_id is not None:
        from rollax.host_program import HostProgram

        program = HostProgram(experiment, plan)
    else:
        program = Program(experiment, plan)
    (chunk_job, eval_job), compile_start = program.compile(seeds)
    # imported here so that loading orbax/tensorboardX overlaps the background compile
    from rollax.logging.run_log import RunLog

    state = program.init(seeds)  # runs while the chunk compiles in the background
    log = RunLog(experiment, seeds, resume)
    if resume is None:
        log.images("samples/before", program.render(state, eval_keys(seeds, RENDER_KEY_INDEX)), 0)
    iteration = 0
    if resume is not None:
        state, iteration = log.restore(state)  # rewinds metrics.jsonl to the checkpoint
    run_chunk = chunk_job.result()
    compile_seconds = time.perf_counter() - compile_start  # what training waited for

    from tqdm.auto import tqdm

    from rollax.logging.shutdown import graceful_shutdown

    total_steps = plan.iterations * plan.steps_per_iteration
    every = experiment["eval"]["every_steps"]
    train_seconds, last_save = 0.0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=iteration * plan.steps_per_iteration, unit="step",
               unit_scale=True, disable=not progress, desc=experiment["name"], dynamic_ncols=True)
    stopping = False
    try:
        with graceful_shutdown() as shutdown:
            while iteration < plan.iterations:
                tick = time.perf_counter()
                state, (metrics, episodes) = run_chunk(state)
                metrics, episodes = jax.device_get((metrics, episodes))
                elapsed = time.perf_counter() - tick
                train_seconds += elapsed
                chunk_steps = plan.iterations_per_chunk * plan.steps_per_iteration
                fps = chunk_steps * len(seeds) / elapsed
                log.chunk(iteration, plan.steps_per_iteration, metrics, episodes, fps)
                first_iteration, iteration = iteration, iteration + plan.iterations_per_chunk
                step = iteration * plan.steps_per_iteration
                bad = first_non_finite({k: v for k, v in metrics.items() if "loss" in k})
                if bad is not None:
                    log.flush()
                    seed, k, name = bad
                    raise TrainingDiverged(
                        f"{name} became {metrics[name][seed, k]} at iteration {first_iteration + k + 1} "
                        f"(env step {(first_iteration + k + 1) * plan.steps_per_iteration}) for seed "
                        f"{seeds[seed]}; the logs up to there are saved")
                if every and step // every > (step - chunk_steps) // every and iteration < plan.iterations:
                    log.evaluation(step, *jax.device_get(eval_job.result()(state, eval_keys(seeds, iteration))),
                                   state=state)  # state: best-model checkpoints
                returns = [s.ep_rew_mean for s in log.stats]
                bar.set_postfix(ret=f"{np.nanmean(returns):.1f}" if not np.all(np.isnan(returns)) else "-",
                                fps=f"{fps:,.0f}", refresh=False)
                bar.update(chunk_steps)
                log.flush()
                stopping = shutdown.requested or (stop_at_step is not None and step >= stop_at_step)
                if stopping or time.perf_counter() - last_save > 60:
                    log.save(state, iteration, step)
                    last_save = time.perf_counter()
                if stopping:
                    bar.write(f"stopped at env step {step}; checkpoint and logs saved")
                    break
            eval_returns, eval_metrics = jax.device_get(eval_job.result()(state, eval_keys(seeds, iteration)))
            log.evaluation(iteration * plan.steps_per_iteration, eval_returns, eval_metrics, state=state)
            log.images("samples/after", program.render(state, eval_keys(seeds, RENDER_KEY_INDEX)), iteration * plan.steps_per_iteration)
            if not stopping:
                log.save(state, iteration, iteration * plan.steps_per_iteration)
    finally:
        bar.close()
        log.close()
        program.close()
    result = TrainResult(
        name=experiment["name"], run_dir=log.run_dir, seeds=seeds, eval_returns=eval_returns,
        eval_metrics={k: np.asarray(v) for k, v in eval_metrics.items()},
        ep_rew_mean=[s.ep_rew_mean for s in log.stats], env_steps=iteration * plan.steps_per_iteration,
        compile_seconds=compile_seconds, train_seconds=train_seconds,
        solved_threshold=experiment["env"]["solved_threshold"])
    log.finish(result)  # results.json, learning_curves.png
    return result
