"""The program of a run on a Gymnasium env: env stepping on the host, the update jitted.

Same interface as `JittedProgram`. Each seed owns a `HostCollector` (its own vector env,
seeded with the seed); a chunk is a Python loop of K iterations, each collecting every seed's
trajectory on the host and running one `vmap`ped jitted update. The collectors' env state is
not checkpointed: a resumed Gymnasium run restarts its episodes.
"""

from __future__ import annotations

import time
from concurrent.futures import Future

import jax
import jax.numpy as jnp
import numpy as np

from rollax.rollout.collector import act, steps_of
from rollax.rollout.host_collector import make_host
from rollax.rollout.trajectory import Trajectory
from rollax.run.learner import Learner
from rollax.run.seeds import over_seeds, seed_by_seed


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class HostProgram:
    """`init`, `compile`, `run_chunk`, `evaluate`, `render` for `gymnasium:<id>` envs."""

    train_metric_names: list[str] | None = None  # the update compiles at its first use
    eval_metric_names: tuple[str, ...] = ()  # Gymnasium envs report no metrics of their own

    def __init__(self, learner: Learner, env_kwargs: dict):
        self.learner, self.plan = learner, learner.plan
        self.env_kwargs = dict(env_kwargs)
        self.collectors = []
        # the frozen initial policy is kept only for a KL anchor (older checkpoints lack it)
        self._anchored = self.plan.algorithm.uses_reference(self.plan.config)
        self._update = jax.jit(over_seeds(self._update_one))
        self._init = jax.jit(seed_by_seed(self._init_one))

    def _init_one(self, seed: jax.Array) -> dict:
        model_key, key = jax.random.split(jax.random.key(seed))
        train, reference = self.learner.init(model_key)
        return {"train": train, "key": key, **({"reference": reference} if self._anchored else {})}

    def _update_one(self, state: dict, trajectory: Trajectory, key: jax.Array):
        ref_log_probs = None
        if self._anchored:  # the actions under the frozen initial policy
            reference = self.learner.reference(state["reference"])
            ref_log_probs = act(reference, trajectory.observations, self.plan.action_space) \
                .distribution.log_prob(trajectory.actions)
        steps = steps_of(trajectory, jnp.zeros(trajectory.rewards.shape, jnp.int32), ref_log_probs)
        return self.learner.update(state["train"], steps, key)

    def init(self, seeds: list[int], hparams: dict | None = None) -> dict:
        if hparams:  # a sweep runs Gymnasium envs one combination per program
            raise ValueError("a Gymnasium env's program takes no swept numbers")
        self.close()
        self.collectors = [make_host(self.plan.host_env_id, self.plan.num_envs, seed=int(s),
                                     **self.env_kwargs) for s in seeds]
        return self._init(jnp.asarray(seeds))

    def abstract_state(self, seeds: list[int], hparams: dict | None = None):
        """The shapes and dtypes `init` returns, computing nothing."""
        return jax.eval_shape(self._init, jnp.asarray(seeds))

    def working_memory(self, compiled_chunk) -> dict[str, int]:
        """Steps live on the host; the update compiles at its first use."""
        return {}

    def compile(self, seeds: list[int], hparams: dict | None = None):
        """Nothing to compile ahead: the update compiles on first use."""
        return _done(self.run_chunk), time.perf_counter()

    def compile_evaluation(self, seeds: list[int], hparams: dict | None = None):
        return _done(self.evaluate)

    def _seed_model(self, state: dict, index: int):
        return self.learner.model(jax.tree.map(lambda x: x[index], state["train"]))

    def run_chunk(self, state: dict):
        outputs = []
        for _ in range(self.plan.iterations_per_chunk):
            keys = jax.vmap(lambda k: jax.random.split(k, 3))(state["key"])
            trajectories = [collector.collect(self._seed_model(state, i), keys[i, 1], self.plan.num_steps)
                            for i, collector in enumerate(self.collectors)]
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trajectories)
            train, metrics = self._update(state, stacked, keys[:, 2])
            state = {**state, "train": train, "key": keys[:, 0]}
            outputs.append((metrics, (stacked.episode_returns, stacked.episode_lengths, stacked.dones)))
        # [K] list of [S, ...] -> [S, K, ...], as the jitted chunk returns
        return state, jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outputs)

    def evaluate(self, state: dict, keys: jax.Array):
        episodes = self.plan.eval_episodes
        return np.stack([collector.evaluate(self._seed_model(state, i), episodes,
                                            max_episode_steps=self.plan.eval_max_steps)
                         for i, collector in enumerate(self.collectors)]), {}

    def metric_names(self, seeds: list[int]) -> list[str]:
        """Gymnasium envs report no evaluation metrics of their own."""
        return []

    def render(self, state: dict, keys: jax.Array) -> None:
        return None

    def sample_texts(self, state: dict, keys: jax.Array) -> None:
        return None

    def place(self, tree):
        """Host programs run on one device: nothing to move."""
        return tree

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()
        self.collectors = []
