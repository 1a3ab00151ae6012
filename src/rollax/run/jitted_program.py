"""The compiled program of a run on a jittable env: K iterations (collect + update) per jitted
chunk, `vmap`ped over seeds, plus the greedy evaluation and the env's picture hook. On a mesh
(`rollax.run.parallel`) the same programs run sharded: state replicated between calls, each
seed's env batch split along `data` inside."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rollax.rl.trainer import evaluate_policy
from rollax.rl.utils import tied_groups
from rollax.rollout.collector import collect, evaluate, init_rollout, policy_distribution
from rollax.rollout.groups import sample_groups
from rollax.rollout.sequences import (
    completion_metrics,
    completion_samples,
    evaluate_completions,
    held_out_prompts,
    sample_completions,
    samples_table,
    sequence_kl,
)
from rollax.run.learner import Learner
from rollax.run.parallel import SEEDS, place_replicated, replicated, shard_batch
from rollax.run.plan import is_token_env
from rollax.run.seeds import eval_keys, over_seeds, seed_by_seed

TEXT_SAMPLES = 8  # held-out prompts whose completions a token run logs as text


class JittedProgram:
    """`init`, `compile`, `run_chunk`, `evaluate`, `render` for a jittable env, on one device
    or on `mesh`."""

    def __init__(self, learner: Learner, mesh: Mesh | None = None):
        self.learner, self.plan, self.mesh = learner, learner.plan, mesh
        self.tokens = is_token_env(self.plan.env)
        if self.tokens:  # the same held-out prompts the warm start was judged on
            self.eval_prompts = np.asarray(held_out_prompts(self.plan.env.task, self.plan.eval_episodes))
        self.run_chunk = self._jit(self._chunk, donate_argnums=0)
        self._evaluate_jit = self._jit(self._evaluate)
        # on one device, seed by seed (see `seed_by_seed`), then placed: a sharded init ran
        # one batched QR per device at once and deadlocked XLA:CPU's thread pool
        self._init = jax.jit(seed_by_seed(self._init_one))
        # compiled once (before and after); on this process's devices alone, since only
        # process 0 draws pictures
        self._render = jax.jit(over_seeds(self._render_one))
        self._texts = jax.jit(over_seeds(self._texts_one))

    def _jit(self, per_seed, **options):
        """`jit` of `per_seed` over the seed axis; on a mesh every input and output replicated
        (any process can read them), the work inside split by `parallel.shard_batch`."""
        if self.mesh is None:
            return jax.jit(over_seeds(per_seed), **options)
        everywhere = replicated(self.mesh)
        return jax.jit(over_seeds(per_seed, SEEDS), in_shardings=everywhere,
                       out_shardings=everywhere, **options)

    def place(self, tree):
        """`tree` (a restored state, evaluation keys) where the programs expect their inputs."""
        return tree if self.mesh is None else place_replicated(tree, self.mesh)

    def evaluate(self, state: dict, keys: jax.Array):
        return self._evaluate_jit(state, self.place(keys))

    def metric_names(self, seeds: list[int]) -> list[str]:
        """The env's own evaluation metrics (`evaluate`'s dict), from shapes alone."""
        _, metrics = jax.eval_shape(self._evaluate_jit, self.abstract_state(seeds),
                                    jax.eval_shape(eval_keys, seeds, 0))
        return sorted(metrics)

    def close(self) -> None:
        """Nothing to release for jitted envs."""

    def init(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None) -> dict:
        """Stacked per-run state `[S, ...]`: training state, reference policy, rollout, key, and
        a sweep's `hparams` (`{key: [S]}`, the learner's `swept` numbers of each run)."""
        return self.place(self._init(np.asarray(seeds), _numbers(hparams)))

    def _init_one(self, seed: jax.Array, hparams: dict) -> dict:
        model_key, rollout_key, key = jax.random.split(jax.random.key(seed), 3)
        train, reference = self.learner.init(model_key, hparams)
        rollout = init_rollout(self.plan.env, self.plan.env_params, rollout_key, self.plan.num_envs)
        state = {"train": train, "reference": reference, "rollout": rollout, "key": key}
        return {**state, "hparams": hparams} if hparams else state

    def abstract_state(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None):
        """The shapes and dtypes `init` returns, computing nothing."""
        return jax.eval_shape(self._init, np.asarray(seeds), _numbers(hparams))

    def compile(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None
                ) -> tuple[Future, float]:
        """Trace the chunk here and compile it in a background thread; the future and the
        start time.

        Tracing holds the GIL, so it runs on the caller's thread; XLA's compile releases it,
        so the caller initialises while the chunk compiles. The evaluation is compiled after
        the initialisation (`compile_evaluation`), so that the two programs the first chunk
        needs have the cores to themselves, and the evaluation compiles while training runs.
        """
        start = time.perf_counter()
        chunk = self.run_chunk.lower(self.abstract_state(seeds, hparams))
        return _in_background(chunk.compile), start

    def compile_evaluation(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None
                           ) -> Future:
        """Trace the evaluation here, compile it in a background thread."""
        evaluation = self._evaluate_jit.lower(self.abstract_state(seeds, hparams),
                                              jax.eval_shape(eval_keys, seeds, 0))
        return _in_background(lambda: self._placing_keys(evaluation.compile()))

    def _placing_keys(self, compiled_evaluation):
        return lambda state, keys: compiled_evaluation(state, self.place(keys))

    def _iteration(self, state: dict, _):
        key, collect_key, update_key = jax.random.split(state["key"], 3)
        model = self.learner.model(state["train"])
        config = self.learner.config(state.get("hparams"))
        if self.plan.algorithm.batch_source == "rollout" and not self.tokens:
            rollout, batch, episodes = self._collected(model, state, config, collect_key)
            metrics = {}
        else:
            rollout = state["rollout"]
            batch, episodes, metrics = self._sampled(model, state, config, collect_key)
        train, update_metrics = self.learner.update(state["train"], batch, update_key, state.get("hparams"))
        return {**state, "train": train, "rollout": rollout, "key": key}, \
            ({**update_metrics, **metrics}, episodes)

    def _collected(self, model, state: dict, config, key: jax.Array):
        """`(rollout state, batch, episodes)` of `num_steps` steps of every env."""
        rollout, trajectory = collect(model, self.plan.env, self.plan.env_params, state["rollout"],
                                      key, self.plan.num_steps)
        batch = self.learner.with_reference(trajectory.as_batch(), state["reference"], config)
        if hasattr(self.plan.env, "task_ids"):  # e.g. the condition class, for per-task baselines
            batch["task_ids"] = self.plan.env.task_ids(self.plan.env_params, trajectory.observations)
        return rollout, batch, (trajectory.episode_returns, trajectory.episode_lengths, trajectory.dones)

    def _sampled(self, model, state: dict, config, key: jax.Array):
        """`(batch, episodes, metrics)` of `num_envs` sampled generations: G per prompt for
        "groups" algorithms, else one; one-step actions, or a token task's completions."""
        algorithm, plan = self.plan.algorithm, self.plan
        sampler = sample_completions if self.tokens else sample_groups
        samples = sampler(model, self.learner.reference(state["reference"]), plan.env, plan.env_params,
                          key, plan.num_envs // plan.group_size, plan.group_size)
        parts = ("observations", "actions", "log_probs", "rewards", "mask")
        samples = samples._replace(**dict(zip(parts, shard_batch(
            tuple(getattr(samples, part) for part in parts), self.mesh))))
        if algorithm.needs_critic:  # V per token, under the sampling parameters
            samples = samples._replace(values=evaluate_policy(
                model, samples.observations, samples.actions, samples.mask).values)
        make_batch = algorithm.group_batch if algorithm.batch_source == "groups" else algorithm.completion_batch
        batch = make_batch(samples, config)
        rewards = samples.rewards
        # a token completion's episode is its tokens; a one-step generation's, one step
        lengths = jnp.ones_like(rewards) if samples.mask is None else jnp.sum(samples.mask, 1)
        episodes = (rewards, lengths.astype(jnp.int32), jnp.ones_like(rewards, bool))
        metrics = {}
        if self.tokens:  # and every algorithm's KL to the reference, measured the same way
            reference = samples.reference_log_probs(samples.observations, samples.actions)
            metrics = {**completion_metrics(samples.actions, samples.mask),
                       "kl_to_reference": sequence_kl(samples.log_probs, reference, samples.mask)}
            if plan.group_size > 1:  # prompts whose completions all scored the same
                tied = tied_groups(samples.rewards, plan.group_size)
                metrics["frac_reward_zero_std"] = jnp.mean(tied.astype(jnp.float32))
        return batch, episodes, metrics

    def _chunk(self, state: dict):
        state = {**state, "rollout": shard_batch(state["rollout"], self.mesh)}
        return jax.lax.scan(self._iteration, state, None, length=self.plan.iterations_per_chunk)

    def _evaluate(self, state: dict, key: jax.Array):
        """Greedy returns `[episodes]` and the env's own evaluation metrics: generative envs'
        `evaluation_metrics(params, observations, actions) -> {name: scalar}` (judge, diversity)
        on greedy actions, and as `sampled_<name>` on the sampling policy's, since a greedy
        policy can look diverse while the sampling one collapses, and the reverse."""
        model = self.learner.model(state["train"])
        if self.tokens:  # greedy completions of the held-out prompts
            return evaluate_completions(model, self.plan.env.task, self.eval_prompts)
        returns_key, metrics_key = jax.random.split(key)
        returns = evaluate(model, self.plan.env, self.plan.env_params, returns_key,
                           self.plan.eval_episodes, self.plan.eval_max_steps)
        hook = getattr(self.plan.env, "evaluation_metrics", None)
        if hook is None:
            return returns, {}
        params, observations, distribution = self._reset_batch(model, metrics_key)
        greedy = hook(params, observations, distribution.mode())
        sampled = hook(params, observations, distribution.sample(jax.random.fold_in(metrics_key, 1)))
        return returns, {**greedy, **{f"sampled_{name}": value for name, value in sampled.items()}}

    def _reset_batch(self, model, key: jax.Array):
        """`(env params, observations [eval_episodes, ...], the policy's distribution)` on a
        batch of resets: what the env's evaluation and picture hooks look at."""
        params = self.plan.env_params
        observations, _ = jax.vmap(self.plan.env.reset, in_axes=(0, None))(
            jax.random.split(key, self.plan.eval_episodes), params)
        distribution, _ = policy_distribution(model, observations, self.plan.action_space)
        return params, observations, distribution

    def render(self, state: dict, keys: jax.Array):
        """Images `[S, B, H, W]` of greedy samples per seed, or None when the env cannot render."""
        if getattr(self.plan.env, "render", None) is None:
            return None
        return self._render(state, keys)

    def _render_one(self, seed_state: dict, key: jax.Array):
        """The env's `render(params, observations, greedy actions) -> images [B, H, W]`."""
        params, observations, distribution = self._reset_batch(
            self.learner.model(seed_state["train"]), key)
        return self.plan.env.render(params, observations, distribution.mode())

    def sample_texts(self, state: dict, keys: jax.Array) -> list[str] | None:
        """Per seed, a Markdown table of greedy and sampled completions of the first held-out
        prompts with their rewards (token tasks; None otherwise)."""
        if not self.tokens:
            return None
        samples = jax.device_get(self._texts(state, keys))
        return [samples_table(self.plan.env.task, {name: values[s] for name, values in samples.items()})
                for s in range(len(keys))]

    def _texts_one(self, seed_state: dict, key: jax.Array):
        return completion_samples(self.learner.model(seed_state["train"]), self.plan.env,
                                  self.plan.env_params, self.eval_prompts[:TEXT_SAMPLES], key)


def _in_background(job) -> Future:
    """`job()` on a thread of its own (XLA's compile releases the GIL)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollax-compile")
    future = pool.submit(job)
    pool.shutdown(wait=False)
    return future


def _numbers(hparams: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """A sweep's per-run numbers as float32 arrays (`{}` for a plain run)."""
    return {key: np.asarray(values, np.float32) for key, values in (hparams or {}).items()}
