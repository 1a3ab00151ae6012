"""The training program for Gymnasium envs: env stepping on the host, the update jitted.

It has `Program`'s interface (`init`, `compile`, `run_chunk`, `evaluate`), so `train()` drives
it unchanged. Each seed owns a `HostCollector` (its own vector env, seeded with the seed); a
chunk is a Python loop of K iterations, each collecting every seed's trajectory on the host
and running one `vmap`ped jitted update. The collectors' env state is not checkpointed:
a resumed Gymnasium run restarts its episodes.
"""

from __future__ import annotations

from concurrent.futures import Future

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.experiment import UPDATES, Plan, Program, over_seeds
from rollax.rollout.host_collector import make_host


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class HostProgram(Program):
    """`Program` for `gymnasium:<id>` envs (PPO and REINFORCE)."""

    def __init__(self, experiment: dict, plan: Plan):
        super().__init__(experiment, plan)
        self.collectors = []
        config, graphdef = plan.config, self.graphdef
        update = UPDATES[plan.algorithm]
        self._update = jax.jit(over_seeds(
            lambda state, batch, key: update(graphdef, state, batch, key, config, {})))
        self.run_chunk, self.evaluate = self._host_chunk, self._host_evaluate

    def _init_one(self, seed: jax.Array) -> dict:
        model_key, key = jax.random.split(jax.random.key(seed))
        model = self._build(model_key)
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        return {"train": nnx.split((model, optimizer))[1], "key": key}

    def init(self, seeds) -> dict:
        kwargs = self.experiment["env"]["kwargs"]
        self.close()
        self.collectors = [make_host(self.plan.host_env_id, self.plan.num_envs, seed=int(s), **kwargs)
                           for s in seeds]
        return super().init(seeds)

    def compile(self, seeds):
        import time

        return (_done(self._host_chunk), _done(self._host_evaluate)), time.perf_counter()

    def _seed_model(self, state: dict, index: int) -> nnx.Module:
        model, _ = nnx.merge(self.graphdef, jax.tree.map(lambda x: x[index], state["train"]))
        return model

    def _host_chunk(self, state: dict):
        outputs = []
        for _ in range(self.plan.iterations_per_chunk):
            keys = jax.vmap(lambda k: jax.random.split(k, 3))(state["key"])
            trajectories = [collector.collect(self._seed_model(state, i), keys[i, 1], self.plan.num_steps)
                            for i, collector in enumerate(self.collectors)]
            stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *trajectories)
            train, metrics = self._update(state["train"], stacked.as_batch(), keys[:, 2])
            state = {"train": train, "key": keys[:, 0]}
            outputs.append((metrics, (stacked.episode_returns, stacked.episode_lengths, stacked.dones)))
        # [K] list of [S, ...] -> [S, K, ...], as the jitted chunk returns
        return state, jax.tree.map(lambda *xs: jnp.stack(xs, axis=1), *outputs)

    def _host_evaluate(self, state: dict, keys: jax.Array) -> np.ndarray:
        episodes = self.plan.eval_episodes
        return np.stack([collector.evaluate(self._seed_model(state, i), episodes)
                         for i, collector in enumerate(self.collectors)]), {}

    def render(self, state: dict, keys: jax.Array) -> None:
        return None

    def close(self) -> None:
        for collector in self.collectors:
            collector.close()
        self.collectors = []
