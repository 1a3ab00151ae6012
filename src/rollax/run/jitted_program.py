"""The compiled program of a run on a jittable env: K iterations (sample a batch from the plan's
batch source + the algorithm's update) per jitted chunk, `vmap`ped over seeds, plus the source's
evaluation and what it shows (pictures, texts). On a mesh (`rollax.run.parallel`) the same
programs run sharded: state replicated between calls, each seed's batch split along `data`
inside (the source's `shard`)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import jax
import numpy as np
from jax.sharding import Mesh

from rollax.run.learner import Learner
from rollax.run.parallel import SEEDS, place_replicated, replicated
from rollax.run.seeds import eval_keys, over_seeds, seed_by_seed


class JittedProgram:
    """`init`, `compile`, `run_chunk`, `evaluate`, `render`, `sample_texts` for a jittable env,
    on one device or on `mesh`."""

    def __init__(self, learner: Learner, mesh: Mesh | None = None):
        self.learner, self.plan, self.mesh = learner, learner.plan, mesh
        self.train_metric_names: list[str] | None = None  # known once the chunk is traced
        self.eval_metric_names: list[str] | None = None  # known once the evaluation is traced
        self.source = self.plan.source
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
        (any process can read them), the work inside split by the source's `shard`."""
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
        """The source's own evaluation metrics, from shapes alone."""
        _, metrics = jax.eval_shape(self._evaluate_jit, self.abstract_state(seeds),
                                    jax.eval_shape(eval_keys, seeds, 0))
        return sorted(metrics)

    def close(self) -> None:
        """Nothing to release for jitted envs."""

    def init(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None) -> dict:
        """Stacked per-run state `[S, ...]`: training state, reference policy, the source's
        state, key, and a sweep's `hparams` (`{key: [S]}`, the learner's `swept` numbers)."""
        return self.place(self._init(np.asarray(seeds), _numbers(hparams)))

    def _init_one(self, seed: jax.Array, hparams: dict) -> dict:
        model_key, source_key, key = jax.random.split(jax.random.key(seed), 3)
        train, reference = self.learner.init(model_key, hparams)
        state = {"train": train, "reference": reference, "source": self.source.init(source_key),
                 "key": key}
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
        self.train_metric_names = sorted(chunk.out_info[1][0])  # (state, (metrics, episodes))
        return _in_background(chunk.compile), start

    def working_memory(self, compiled_chunk) -> dict[str, int]:
        """The compiled chunk's memory besides the state: rollout buffers, activations, caches."""
        stats = compiled_chunk.memory_analysis()
        return {} if stats is None else {"a chunk's working memory": int(stats.temp_size_in_bytes)}

    def compile_evaluation(self, seeds: list[int], hparams: dict[str, np.ndarray] | None = None
                           ) -> Future:
        """Trace the evaluation here, compile it in a background thread."""
        evaluation = self._evaluate_jit.lower(self.abstract_state(seeds, hparams),
                                              jax.eval_shape(eval_keys, seeds, 0))
        self.eval_metric_names = sorted(evaluation.out_info[1])  # (returns, {name: value})
        return _in_background(lambda: self._placing_keys(evaluation.compile()))

    def _placing_keys(self, compiled_evaluation):
        return lambda state, keys: compiled_evaluation(state, self.place(keys))

    def _iteration(self, state: dict, _):
        key, sample_key, update_key = jax.random.split(state["key"], 3)
        source_state, batch, episodes, metrics = self.source.sample(
            self.learner.model(state["train"]), self.learner.reference(state["reference"]),
            state["source"], sample_key)
        train, update_metrics = self.learner.update(state["train"], batch, update_key, state.get("hparams"))
        return {**state, "train": train, "source": source_state, "key": key}, \
            ({**update_metrics, **metrics}, episodes)

    def _chunk(self, state: dict):
        return jax.lax.scan(self._iteration, state, None, length=self.plan.iterations_per_chunk)

    def _evaluate(self, state: dict, key: jax.Array):
        """The source's evaluation of the greedy policy: `(returns [episodes], {name: scalar})`."""
        return self.source.evaluate(self.learner.model(state["train"]), key)

    def render(self, state: dict, keys: jax.Array):
        """Images `[S, B, H, W]` of greedy samples per seed, or None when the source draws none."""
        return self._render(state, keys) if self.source.shows_images else None

    def _render_one(self, seed_state: dict, key: jax.Array):
        return self.source.images(self.learner.model(seed_state["train"]), key)

    def sample_texts(self, state: dict, keys: jax.Array) -> list[str] | None:
        """Per seed, a text of the policy's samples (the batch source's), or None."""
        if not self.source.shows_texts:
            return None
        samples = jax.device_get(self._texts(state, keys))
        return [self.source.format_texts({name: values[s] for name, values in samples.items()})
                for s in range(len(keys))]

    def _texts_one(self, seed_state: dict, key: jax.Array):
        return self.source.text_samples(self.learner.model(seed_state["train"]), key)


def _in_background(job) -> Future:
    """`job()` on a thread of its own (XLA's compile releases the GIL)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollax-compile")
    future = pool.submit(job)
    pool.shutdown(wait=False)
    return future


def _numbers(hparams: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """A sweep's per-run numbers as float32 arrays (`{}` for a plain run)."""
    return {key: np.asarray(values, np.float32) for key, values in (hparams or {}).items()}
