"""The documented trainer API, built once for every registered algorithm:
`XTrainer(model, optimizer, config=None).train_step(batch) -> metrics`.

`train_step` checks the batch on the host against the algorithm's documented layouts
(`rl/batch.py`), then runs one jitted function: the typed batch built from the arrays, the
algorithm's converter (`learned_by`), and the pure `update` the compiled training loop runs too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from rollax.rl.algorithm import Algorithm, TrainState
from rollax.rl.batch import check_arrays, parts_shape, resolve_keys


class Trainer:
    """Holds model, optimizer and config; `train_step` applies one update (PPO: its epochs and
    minibatches) and returns the metrics as a dict of scalars, measured before the update.

    `reference_model`: a frozen copy of the policy that scores the batch's reference
    log-probs (for algorithms whose batch takes them, e.g. DPO), instead of the batch carrying
    them. `check_batches=False` skips the host checks of the values (for loops that check
    upstream); the layout and the algorithm's own checks still run.
    """

    algorithm: ClassVar[Algorithm]
    config_class: ClassVar[type]

    def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, config: Any = None,
                 reference_model: nnx.Module | None = None, *, check_batches: bool = True):
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        self.model, self.optimizer, self.config = model, optimizer, config
        self.check_batches = check_batches
        self.reference_model = reference_model
        self._formats = self.algorithm.batch_formats(config, reference_model is not None)
        self._reference = None
        if reference_model is not None:
            check_reference(model, reference_model)
            self._reference = nnx.split(reference_model)
        self._policy_shapes: dict = {}  # the model's abstract outputs per observation shape
        self.algorithm_state = self.algorithm.init_state(config)
        self.trace_count = 0  # how often the update was traced (compiled); tests check reuse
        self._key = jax.random.key(0)
        self._jitted_update = jax.jit(self._traced_update, static_argnums=(0, 4, 5))

    def train_step(self, batch: Mapping[str, Any], key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Apply one update and return the metrics dict (see the class docstring)."""
        for name, why in self.algorithm.refused_keys.items():
            if isinstance(batch, Mapping) and name in batch:
                raise ValueError(why)
        batch_format, values, static = resolve_keys(batch, self._formats)
        if self.check_batches:
            arrays, parts = check_arrays(values, batch_format, self.model, self._policy_shapes)
        else:
            arrays, parts = values, parts_shape(values, batch_format, self.model, self._policy_shapes)
        batch_format.check(arrays, static, parts, self.config)
        arrays = {k: jnp.asarray(v) for k, v in arrays.items()}  # uploaded once
        if key is None:
            self._key, key = jax.random.split(self._key)
        graphdef, model_optimizer = nnx.split((self.model, self.optimizer))
        layout = (self._formats.index(batch_format), parts, tuple(sorted(static.items())))
        reference_graphdef, reference_state = self._reference or (None, None)
        state, metrics, finite = self._jitted_update(
            graphdef, TrainState(model_optimizer, self.algorithm_state), arrays, key, layout,
            reference_graphdef, reference_state)
        if not bool(finite):  # the update is not applied: the model stays usable
            raise ValueError(
                f"this {type(self).__name__} update made parameters non-finite ("
                f"{', '.join(non_finite_params(nnx.merge(graphdef, state.model_optimizer)[0]))}); "
                f"the model and optimizer are left as before it (metrics: "
                f"{ {name: float(value) for name, value in metrics.items()} })")
        nnx.update((self.model, self.optimizer), state.model_optimizer)
        self.algorithm_state = state.algorithm
        return metrics

    def _traced_update(self, graphdef, state, arrays, key, layout, reference_graphdef, reference_state):
        self.trace_count += 1
        index, parts, static = layout
        reference = None if reference_graphdef is None else nnx.merge(reference_graphdef, reference_state)
        batch = self._formats[index].build(arrays, dict(static), parts, self.config, reference)
        inputs, converted = batch.learned_by(self.algorithm, self.config)
        state, metrics = self.algorithm.update(graphdef, state, inputs, key, self.config)
        return state, {**metrics, **converted}, params_finite(state.model_optimizer)


def params_finite(model_optimizer) -> jax.Array:
    """Whether every floating-point parameter of the model (of split `(model, optimizer)`) is
    finite: one boolean, computed inside the compiled update."""
    leaves = [x for x in jax.tree.leaves(nnx.filter_state(model_optimizer[0], nnx.Param))
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.array(True)


def non_finite_params(model: nnx.Module) -> list[str]:
    """The paths of the model's parameters holding NaN or inf (for the error message)."""
    return ["/".join(map(str, path)) for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
            if not bool(jnp.isfinite(value[...]).all())]


def trainer_class(algorithm: Algorithm) -> type[Trainer]:
    """`<title>Trainer`: the documented trainer of `algorithm`."""
    return type(f"{algorithm.title}Trainer", (Trainer,), {
        "algorithm": algorithm, "config_class": algorithm.config_class,
        "__doc__": f"The {algorithm.title} trainer: `train_step(batch) -> metrics` (see `Trainer`).",
        "__module__": "rollax.rl"})


def check_reference(model: nnx.Module, reference: nnx.Module) -> None:
    """A reference policy must have the model's parameters (paths and shapes): it is the
    model's own starting point, and a different one gives a meaningless KL."""
    def shapes(module):
        return {path: value.shape for path, value in nnx.to_flat_state(nnx.state(module, nnx.Param))}

    mine, theirs = shapes(model), shapes(reference)
    if mine != theirs:
        differing = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise ValueError(f"reference_model does not match the model's parameters: first "
                         f"differences (path, shape): {differing}")
