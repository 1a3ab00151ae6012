"""Presets -> objects, and the training loop.

One iteration = collect + trainer update (the trainers' own pure `update`). K iterations run
inside one jitted `lax.scan` ("a chunk"), `vmap`ped over seeds, so N seeds are one compiled
program. Between chunks the host logs, evaluates, checkpoints and draws progress.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rollax.envs import make
from rollax.networks import build_policy
from rollax.networks.distributions import log_prob, sample, split_output
from rollax.presets import algorithm_config
from rollax.rl import dpo, grpo, ppo, reinforce
from rollax.rl.trainer import evaluate_policy, sequence_sum
from rollax.rollout.collector import action_space_kind, collect, evaluate, init_rollout

UPDATES = {"ppo": ppo.update, "reinforce": reinforce.update, "grpo": grpo.update, "dpo": dpo.update}
CRITIC = {"ppo": True, "reinforce": False, "grpo": False, "dpo": False}


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

    env: Any
    env_params: Any
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
    env, env_params = make(env_spec["id"], **env_spec["params"], **env_spec["kwargs"])
    algorithm = agent["algorithm"]
    config = algorithm_config(agent)
    discrete, _ = action_space_kind(env, env_params)
    budget = experiment["budget"]
    num_envs, num_steps = budget["num_envs"], budget["num_steps"]
    group_size = 1
    if algorithm in ("grpo", "dpo"):
        group_size = config.num_generations if algorithm == "grpo" else 2
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
        env=env, env_params=env_params, algorithm=algorithm, config=config, discrete=discrete,
        num_envs=num_envs, num_steps=num_steps, group_size=group_size, iterations=iterations,
        iterations_per_chunk=_chunk_size(iterations, budget["iterations_per_chunk"]),
        steps_per_iteration=steps_per_iteration, eval_episodes=experiment["eval"]["episodes"],
        eval_max_steps=int(getattr(env_params, "max_steps_in_episode", 1000)),
        updates_per_iteration=updates,
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
        plan.env.observation_space(plan.env_params), plan.env.action_space(plan.env_params),
        hidden_sizes=network["hidden_sizes"], activation=network["activation"],
        critic=CRITIC[plan.algorithm], shared_torso=network["shared_torso"],
        log_std_init=network["log_std_init"], rngs=nnx.Rngs(seed_key))


class Program:
    """The compiled pieces of one experiment: `init(seeds)`, `run_chunk(state)`, `evaluate(state)`."""

    def __init__(self, experiment: dict, plan: Plan):
        self.experiment, self.plan = experiment, plan
        total_updates = plan.iterations * plan.updates_per_iteration
        self.tx = make_optimizer(experiment["agent"]["optimizer"], total_updates)
        model = build_model(experiment, plan, jax.random.key(0))
        self.graphdef, _ = nnx.split((model, nnx.Optimizer(model, self.tx, wrt=nnx.Param)))
        self.model_graphdef, _ = nnx.split(model)
        self.run_chunk = jax.jit(jax.vmap(self._chunk), donate_argnums=0)
        self.evaluate = jax.jit(jax.vmap(self._evaluate))

    def init(self, seeds: list[int]) -> dict:
        """Stacked per-seed training state: model+optimizer, reference policy, rollout, key."""
        def one(seed):
            key = jax.random.key(seed)
            model_key, rollout_key, key = jax.random.split(key, 3)
            model = build_model(self.experiment, self.plan, model_key)
            optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
            rollout = init_rollout(self.plan.env, self.plan.env_params, rollout_key,
                                   self.plan.num_envs)
            return {"train": nnx.split((model, optimizer))[1], "reference": nnx.split(model)[1],
                    "rollout": rollout, "key": key}
        return jax.jit(jax.vmap(one))(jnp.asarray(seeds))

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
        _, action_space = action_space_kind(env, params)
        env_actions = actions if plan.discrete else jnp.clip(actions, action_space.low, action_space.high)
        rewards = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(step_key, prompts * size), env_state, env_actions, params)[2]
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
        model, _ = nnx.merge(self.graphdef, state["train"])
        return evaluate(model, self.plan.env, self.plan.env_params, key, self.plan.eval_episodes,
                        self.plan.eval_max_steps)


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
        rows = [f"{'seed':>4}  {'eval return':>12}  {'train ep_rew_mean':>17}  solved"]
        solved = self.solved or [None] * len(self.seeds)
        for seed, returns, train_mean, ok in zip(self.seeds, self.eval_returns, self.ep_rew_mean, solved):
            mark = "-" if ok is None else ("yes" if ok else "no")
            rows.append(f"{seed:>4}  {returns.mean():>12.2f}  {train_mean:>17.2f}  {mark}")
        rows.append(f"{self.env_steps} env steps per seed, compile {self.compile_seconds:.1f} s, "
                    f"train {self.train_seconds:.1f} s"
                    f" ({self.env_steps * len(self.seeds) / max(self.train_seconds, 1e-9):,.0f} steps/s)")
        return "\n".join(rows)


class RunLog:
    """Host-side logging of a run: one `Logger` per seed, episode statistics, checkpoints."""

    def __init__(self, experiment: dict, seeds: list[int], resume: str | Path | None):
        from rollax.logging import EpisodeStats, Logger, make_run_dir, new_timestamp

        self.enabled = experiment["logging"]["enabled"]
        self.stats = [EpisodeStats() for _ in seeds]
        self.loggers, self.run_dir = [], None
        if not self.enabled:
            return
        if resume is not None:
            self.run_dir = Path(resume)
            seed_dirs = [self.run_dir / f"seed_{seed}" for seed in seeds]
            missing = [str(d) for d in seed_dirs if not d.is_dir()]
            if missing:
                raise FileNotFoundError(f"cannot resume: missing seed directories {missing}")
        else:
            timestamp = new_timestamp()
            seed_dirs = [make_run_dir(experiment["logging"]["root"], experiment=experiment["name"],
                                      seed=seed, timestamp=timestamp) for seed in seeds]
            self.run_dir = seed_dirs[0].parent
        self.loggers = [Logger(d) for d in seed_dirs]
        if resume is None:
            for logger in self.loggers:
                logger.log_hparams(experiment)

    def chunk(self, first_iteration: int, steps_per_iteration: int, metrics: dict, episodes, fps: float):
        """Log `[S, K]` metrics and `[S, K, ...]` episode arrays of one chunk."""
        returns, lengths, dones = episodes
        num_iterations = next(iter(metrics.values())).shape[1]
        for s, stats in enumerate(self.stats):
            for k in range(num_iterations):
                stats.update(returns[s, k], lengths[s, k], dones[s, k])
                if not self.enabled:
                    continue
                step = (first_iteration + k + 1) * steps_per_iteration
                logger = self.loggers[s]
                logger.log_scalars({name: values[s, k] for name, values in metrics.items()}, step,
                                   prefix="train")
                logger.log_scalars(stats.metrics(), step)
            if self.enabled:
                self.loggers[s].log_scalars({"time/fps": fps}, step)

    def evaluation(self, step: int, eval_returns: np.ndarray) -> None:
        for logger, returns in zip(self.loggers, eval_returns):
            logger.log_scalars({"eval/mean_reward": float(np.mean(returns))}, step)

    def save(self, state: dict, iteration: int, step: int) -> None:
        """Checkpoint the stacked training state (all seeds) atomically."""
        if not self.enabled:
            return
        from rollax.logging import save_checkpoint

        stats = [{"returns": s._returns.tolist(), "lengths": s._lengths.tolist(), "count": s._count}
                 for s in self.stats]
        save_checkpoint(self.run_dir / "checkpoints", step, state,
                        {"iteration": iteration, "env_steps": step, "episode_stats": stats},
                        max_to_keep=2)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def restore(run_dir: Path, state: dict, stats: list) -> int:
    """Load the newest complete checkpoint of `run_dir` into `state`'s structure; returns the iteration."""
    from rollax.logging import load_checkpoint

    loaded, metadata = load_checkpoint(run_dir / "checkpoints", target=state)
    for s, saved in zip(stats, metadata["episode_stats"]):
        s._returns[:], s._lengths[:], s._count = saved["returns"], saved["lengths"], saved["count"]
    return loaded, int(metadata["iteration"])


def train(experiment: dict, *, progress: bool = True, resume: str | Path | None = None) -> TrainResult:
    """Run an experiment (a dict from `presets.load_experiment`) for all its seeds at once."""
    plan = make_plan(experiment)
    seeds = list(range(experiment["seeds"]))
    log = RunLog(experiment, seeds, resume)
    program = Program(experiment, plan)
    state = program.init(seeds)
    iteration = 0
    if resume is not None:
        state, iteration = restore(Path(resume), state, log.stats)
    eval_keys = lambda i: jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), i))(jnp.asarray(seeds))

    start = time.perf_counter()
    run_chunk = program.run_chunk.lower(state).compile()
    evaluate_seeds = program.evaluate.lower(state, eval_keys(0)).compile()
    compile_seconds = time.perf_counter() - start

    from tqdm.auto import tqdm

    from rollax.logging.shutdown import graceful_shutdown

    total_steps = plan.iterations * plan.steps_per_iteration
    every = experiment["eval"]["every_steps"]
    train_seconds, last_save = 0.0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=iteration * plan.steps_per_iteration, unit="step",
               unit_scale=True, disable=not progress, desc=experiment["name"], dynamic_ncols=True)
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
                    log.evaluation(step, np.asarray(evaluate_seeds(state, eval_keys(iteration))))
                returns = [s.ep_rew_mean for s in log.stats]
                bar.set_postfix(ret=f"{np.nanmean(returns):.1f}" if not np.all(np.isnan(returns)) else "-",
                                fps=f"{fps:,.0f}", refresh=False)
                bar.update(chunk_steps)
                log.flush()
                if shutdown.requested or time.perf_counter() - last_save > 60:
                    log.save(state, iteration, step)
                    last_save = time.perf_counter()
                if shutdown.requested:
                    bar.write(f"stopped by signal at env step {step}; checkpoint and logs saved")
                    break
            else:
                eval_returns = np.asarray(evaluate_seeds(state, eval_keys(iteration)))
                log.evaluation(iteration * plan.steps_per_iteration, eval_returns)
                log.save(state, iteration, iteration * plan.steps_per_iteration)
    finally:
        bar.close()
        log.close()
    result = TrainResult(
        name=experiment["name"], run_dir=log.run_dir, seeds=seeds, eval_returns=eval_returns,
        ep_rew_mean=[s.ep_rew_mean for s in log.stats], env_steps=plan.iterations * plan.steps_per_iteration,
        compile_seconds=compile_seconds, train_seconds=train_seconds,
        solved_threshold=experiment["env"]["solved_threshold"])
    if log.run_dir is not None:
        _write_results(result)
    return result


def _write_results(result: TrainResult) -> None:
    import json

    summary = {"name": result.name, "seeds": result.seeds, "env_steps": result.env_steps,
               "eval_mean_return": result.eval_returns.mean(axis=1).tolist(),
               "train_ep_rew_mean": result.ep_rew_mean, "solved": result.solved,
               "compile_seconds": result.compile_seconds, "train_seconds": result.train_seconds}
    path = result.run_dir / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)
