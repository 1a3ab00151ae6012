"""What an algorithm is: one object per file (rejax's algorithm structs), declaring its config,
what it learns from, its loss and its update.

An iteration of the training loop, and one documented `train_step`, run:

    inputs, metrics = batch.learned_by(algorithm, config)     # from_steps / from_sequences
    state, metrics = algorithm.update(graphdef, state, inputs, key, config)
        = prepare (advantages, algorithm state) -> optimize (gradient steps on `loss`)

Every method is pure and traceable; the trainer's stateful `train_step` and the compiled loop
run the same `update`. A subclass sets the class attributes and overrides what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rollax.networks.policy import score_actions


class TrainState(NamedTuple):
    """What `update` carries: the split `(model, optimizer)` state and the algorithm's own
    state (`()` for most; REINFORCE's EMA baselines), checkpointed together."""

    model_optimizer: nnx.State
    algorithm: Any = ()


class Algorithm:
    """Base of the algorithms.

    - `name` (the preset's `agent.algorithm`), `title` (`<title>Config`, `<title>Trainer`),
      `config_class`;
    - `learns_from`: the batch types (`rollax.rollout.batches`) it has a converter for,
      `from_steps` and/or `from_sequences`, each returning `(inputs for update, metrics)`;
    - `formats`: the documented layouts of `train_step`'s batch (`rl/batch.py`), and
      `refused_keys`: keys a batch may hold for other trainers that this one refuses, with why;
    - `needs_critic`, `group_size(config)` (samples per prompt it compares; 1 for none),
      `uses_reference(config)` (its batch needs the frozen reference policy's log-probs),
      `updates_per_iteration(config)`, `check_plan(config, budget, num_tasks)`,
      `init_state(config)` (its own training state).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    config_class: ClassVar[type]
    learns_from: ClassVar[tuple[type, ...]] = ()
    formats: ClassVar[tuple[Any, ...]] = ()
    refused_keys: ClassVar[Mapping[str, str]] = {}
    needs_critic: ClassVar[bool] = False

    def batch_formats(self, config: Any, reference_model: bool) -> tuple[Any, ...]:
        """The layouts `train_step` accepts under `config` (with a trainer's reference model)."""
        if reference_model:
            raise TypeError(f"the {self.title} trainer takes no reference_model")
        return self.formats

    def group_size(self, config: Any) -> int:
        return 1

    def uses_reference(self, config: Any) -> bool:
        return False

    def updates_per_iteration(self, config: Any) -> int:
        return 1

    def check_plan(self, config: Any, budget: Any, num_tasks: int) -> None:
        """A ValueError naming the preset key when the budget does not suit the algorithm."""

    def init_state(self, config: Any) -> Any:
        return ()

    def from_steps(self, steps: Any, config: Any) -> tuple[Any, dict]:
        raise NotImplementedError(f"{self.name} does not learn from env steps")

    def from_sequences(self, sequences: Any, config: Any) -> tuple[Any, dict]:
        raise NotImplementedError(f"{self.name} does not learn from sampled sequences")

    def prepare(self, inputs: Any, config: Any, algorithm_state: Any) -> tuple[Any, Any, dict]:
        """`(the loss's batch, the new algorithm state, metrics)`; by default the inputs."""
        return inputs, algorithm_state, {}

    def loss(self, model: Any, batch: Any, config: Any) -> tuple[jax.Array, dict]:
        raise NotImplementedError

    def optimize(self, graphdef: nnx.GraphDef, model_optimizer: nnx.State, batch: Any,
                 key: jax.Array, config: Any) -> tuple[nnx.State, dict]:
        """One gradient step of `loss` (PPO: epochs of minibatches)."""
        return gradient_step(self.loss, graphdef, model_optimizer, batch, config, config.max_grad_norm)

    def update(self, graphdef: nnx.GraphDef, state: TrainState, inputs: Any, key: jax.Array,
               config: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        """The pure update both `train_step` and the compiled loop run."""
        batch, algorithm_state, metrics = self.prepare(inputs, config, state.algorithm)
        model_optimizer, step_metrics = self.optimize(graphdef, state.model_optimizer, batch, key, config)
        return TrainState(model_optimizer, algorithm_state), {**step_metrics, **metrics}


def gradient_step(
    loss_fn: Callable, graphdef: nnx.GraphDef, state: nnx.State, batch: Any, config: Any,
    max_grad_norm: float | None,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """One optimizer step on `batch`; metrics are measured at the parameters before it."""
    # copy: the optimizer updates in place, and callers (target_kl) still need the old state
    model, optimizer = nnx.merge(graphdef, state, copy=True)
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(model, batch, config)
    grad_norm = optax.tree.norm(grads)
    if max_grad_norm is not None:
        scale = jnp.minimum(1.0, max_grad_norm / (grad_norm + 1e-12))
        grads = jax.tree.map(lambda g: g * scale, grads)
    optimizer.update(model, grads)
    return nnx.split((model, optimizer))[1], {**metrics, "loss": loss, "grad_norm": grad_norm}


def minibatch_update(
    loss_fn: Callable, graphdef: nnx.GraphDef, state: nnx.State, batch: Any, key: jax.Array,
    config: Any, *, num_epochs: int = 1, num_minibatches: int = 1,
    max_grad_norm: float | None = None, target_kl: float | None = None, shuffle: bool = True,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """`num_epochs` passes of shuffled minibatches over the rows (leading axis) of `batch`;
    metrics averaged over steps.

    With `target_kl`, once a step's `approx_kl` (measured before it) exceeds the target, that
    step and every later one leave the state unchanged. `shuffle=False`: each epoch is one step
    on the whole batch as it is (GRPO's and RLOO's `num_iterations`; one minibatch).
    """
    if not shuffle and num_minibatches != 1:
        raise ValueError(f"shuffle=False takes the whole batch: num_minibatches={num_minibatches}")
    step = partial(gradient_step, loss_fn, graphdef, config=config, max_grad_norm=max_grad_norm)
    if num_epochs == 1 and num_minibatches == 1:
        return step(state, batch)
    size = jax.tree.leaves(batch)[0].shape[0]
    minibatch_size = size // num_minibatches

    def one_minibatch(carry, minibatch):
        state, stopped = carry
        new_state, metrics = step(state, minibatch)
        if target_kl is not None:
            stopped = stopped | (metrics["approx_kl"] > target_kl)
            new_state = jax.tree.map(lambda new, old: jnp.where(stopped, old, new), new_state, state)
        return (new_state, stopped), metrics

    def one_epoch(carry, epoch_key):
        if not shuffle:  # the whole batch each time, in order (GRPO's num_iterations)
            return jax.lax.scan(one_minibatch, carry, jax.tree.map(lambda x: x[None], batch))
        order = jax.random.permutation(epoch_key, size)
        shuffled = jax.tree.map(
            lambda x: x[order].reshape(num_minibatches, minibatch_size, *x.shape[1:]), batch
        )
        return jax.lax.scan(one_minibatch, carry, shuffled)

    (state, _), metrics = jax.lax.scan(
        one_epoch, (state, jnp.array(False)), jax.random.split(key, num_epochs)
    )
    return state, jax.tree.map(jnp.mean, metrics)


def sampling_log_probs(graphdef: nnx.GraphDef, model_optimizer: nnx.State, observations: Any,
                       actions: Any, mask: jax.Array) -> jax.Array:
    """Per-part log-probs `[B, L]` of `actions` under the model before an update: the sampling
    policy's, for batches that did not bring them and take several steps (GRPO's and RLOO's
    `num_iterations`)."""
    model, _ = nnx.merge(graphdef, model_optimizer)
    return jax.lax.stop_gradient(score_actions(model, observations, actions, mask.shape).log_probs)


def check_minibatches(rows: int, num_minibatches: int, what: str) -> None:
    """The one check that `rows` split into equal minibatches (plan and `train_step`)."""
    if rows % num_minibatches:
        raise ValueError(f"{what} = {rows} does not split into "
                         f"agent.config.num_minibatches={num_minibatches}")
