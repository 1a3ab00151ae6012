"""What the trainers share: the policy adapter, one jitted update, and the `Trainer` class
(whose `train_step` checks its batch with `batch_checks.py` first).

A trainer is a config class, a `prepare` function (advantages/returns on the time-major
batch, then flattened to `[B, ...]`) and a `loss_fn(model, batch, config, static)`. The pure
`update(graphdef, state, batch, key)` built from them is what both the stateful
`train_step` and the scanned training loop run, so there is one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rollax.networks.distributions import as_distribution, is_discrete_actions
from rollax.rl.batch_checks import BatchSpec, check_batch, resolve_keys


class TrainState(NamedTuple):
    """What an algorithm's pure `update` carries: the split `(model, optimizer)` state and the
    algorithm's own state (`()` for most; REINFORCE's EMA baselines), checkpointed together."""

    model_optimizer: nnx.State
    algorithm: Any = ()


class PolicyTerms(NamedTuple):
    """The model evaluated on a flat batch: per-token `[B, L]` terms (L = 1 unless a token model)."""

    log_probs: jax.Array
    entropy: jax.Array
    mask: jax.Array
    values: jax.Array | None


def evaluate_policy(
    model: Callable, observations: jax.Array, actions: jax.Array, mask: jax.Array | None = None
) -> PolicyTerms:
    """Run `model(observations)` and score `actions` with one adapter for every policy kind."""
    distribution, values = as_distribution(model(observations), is_discrete_actions(actions))
    token_log_probs = distribution.log_prob(actions)
    token_entropy = distribution.entropy()
    if token_log_probs.ndim == 1:
        token_log_probs, token_entropy = token_log_probs[:, None], token_entropy[:, None]
    if mask is None:
        mask = jnp.ones(token_log_probs.shape, bool)
    elif mask.shape != token_log_probs.shape:
        raise ValueError(f"`mask` has shape {mask.shape}, expected {token_log_probs.shape}")
    return PolicyTerms(token_log_probs, token_entropy, mask.astype(bool), values)


def sequence_sum(token_values: jax.Array, mask: jax.Array) -> jax.Array:
    """`[B, L] -> [B]`: masked sum over tokens (a sequence's log-prob)."""
    return jnp.sum(jnp.where(mask, token_values, 0.0), axis=-1)


def flatten_batch(batch: Mapping[str, jax.Array], batch_ndim: int) -> dict[str, jax.Array]:
    """Merge the leading `batch_ndim` axes (`[T, N, ...] -> [T*N, ...]`)."""
    return {k: v.reshape(-1, *v.shape[batch_ndim:]) for k, v in batch.items()}


EPISODE_KEYS = ("dones", "terminated", "truncated", "bootstrap_values")


def episode_flags(batch: dict) -> dict:
    """`dones`/`truncated`/`bootstrap_values` for the return functions from any documented key mix."""
    dones = batch.get("dones")
    terminated, truncated = batch.get("terminated"), batch.get("truncated")
    if dones is None and (terminated is not None or truncated is not None):
        dones = jnp.zeros(batch["rewards"].shape, bool)
        for flag in (terminated, truncated):
            dones = dones if flag is None else dones | flag.astype(bool)
    if truncated is None and terminated is not None and dones is not None:
        truncated = dones.astype(bool) & ~terminated.astype(bool)
    elif truncated is not None and terminated is not None:
        # A step can be both (a time limit on the terminal step): it ended, so no bootstrap.
        truncated = truncated.astype(bool) & ~terminated.astype(bool)
    if truncated is not None and "bootstrap_values" not in batch:
        raise ValueError("batch has truncated episodes but no 'bootstrap_values' (V of the final observation)")
    return {"dones": dones, "truncated": truncated, "bootstrap_values": batch.get("bootstrap_values")}


# ---------------------------------------------------------------- the shared update


def require_reference(batch: Mapping[str, Any], config: Any) -> None:
    """A KL anchor (`config.kl_coeff > 0`) needs the actions' log-probs under the sampling
    policy and under the reference."""
    missing = [key for key in ("log_probs", "ref_log_probs") if key not in batch]
    if config.kl_coeff > 0 and missing:
        raise ValueError(f"kl_coeff={config.kl_coeff} anchors the policy to a reference: the "
                         f"batch needs {missing} (the actions' log-probs under the sampling "
                         "policy and under the frozen reference policy)")


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


def gradient_step(
    loss_fn: Callable, graphdef: nnx.GraphDef, state: nnx.State, batch: dict, config: Any,
    static: dict, max_grad_norm: float | None,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """One optimizer step on `batch`; metrics are measured at the parameters before it."""
    # copy: the optimizer updates in place, and callers (target_kl) still need the old state
    model, optimizer = nnx.merge(graphdef, state, copy=True)
    grad_fn = nnx.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(model, batch, config, static)
    grad_norm = optax.tree.norm(grads)
    if max_grad_norm is not None:
        scale = jnp.minimum(1.0, max_grad_norm / (grad_norm + 1e-12))
        grads = jax.tree.map(lambda g: g * scale, grads)
    optimizer.update(model, grads)
    return nnx.split((model, optimizer))[1], {**metrics, "loss": loss, "grad_norm": grad_norm}


def single_step_update(
    loss_fn: Callable, graphdef: nnx.GraphDef, state: TrainState, batch: dict, config: Any,
    static: dict,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One `gradient_step` on the `TrainState`'s model and optimizer (algorithms without state
    of their own and without minibatches: GRPO, RLOO, DPO)."""
    model_optimizer, metrics = gradient_step(loss_fn, graphdef, state.model_optimizer, batch, config,
                                             static, config.max_grad_norm)
    return state._replace(model_optimizer=model_optimizer), metrics


def minibatch_update(
    loss_fn: Callable, graphdef: nnx.GraphDef, state: nnx.State, batch: dict, key: jax.Array,
    config: Any, static: dict, *, num_epochs: int = 1, num_minibatches: int = 1,
    max_grad_norm: float | None = None, target_kl: float | None = None,
) -> tuple[nnx.State, dict[str, jax.Array]]:
    """`num_epochs` passes of shuffled minibatches over a flat batch; metrics averaged over steps.

    With `target_kl`, once a step's `approx_kl` (measured before it) exceeds the target, that
    step and every later one leave the state unchanged.
    """
    step = partial(gradient_step, loss_fn, graphdef, config=config, static=static, max_grad_norm=max_grad_norm)
    if num_epochs == 1 and num_minibatches == 1:
        return step(state, batch)
    size = next(iter(batch.values())).shape[0]
    minibatch_size = size // num_minibatches

    def one_minibatch(carry, minibatch):
        state, stopped = carry
        new_state, metrics = step(state, minibatch)
        if target_kl is not None:
            stopped = stopped | (metrics["approx_kl"] > target_kl)
            new_state = jax.tree.map(lambda new, old: jnp.where(stopped, old, new), new_state, state)
        return (new_state, stopped), metrics

    def one_epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, size)
        shuffled = jax.tree.map(
            lambda x: x[order].reshape(num_minibatches, minibatch_size, *x.shape[1:]), batch
        )
        return jax.lax.scan(one_minibatch, carry, shuffled)

    (state, _), metrics = jax.lax.scan(
        one_epoch, (state, jnp.array(False)), jax.random.split(key, num_epochs)
    )
    return state, jax.tree.map(jnp.mean, metrics)


class Trainer:
    """Base of the trainers: holds model, optimizer and config; `train_step` checks its batch
    against `batch_spec` (unless `check_batches=False`, for loops that check upstream) and runs
    the jitted update."""

    config_class: type = object
    batch_spec: BatchSpec

    def __init__(self, model: nnx.Module, optimizer: nnx.Optimizer, config: Any = None, *,
                 check_batches: bool = True):
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.model, self.optimizer, self.config = model, optimizer, config
        self.check_batches = check_batches
        self._policy_shapes: dict = {}  # the model's abstract outputs per observation shape
        self.algorithm_state = self.init_state(config)
        self.trace_count = 0  # how often the update was traced (compiled); tests check reuse
        self._key = jax.random.key(0)
        self._jitted_update = jax.jit(self._traced_update, static_argnums=(0, 4))

    @staticmethod
    def init_state(config: Any) -> Any:
        """The algorithm's own training state (none by default)."""
        return ()

    def validate(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        """`(arrays, static ints)` of `batch`; subclasses add their own checks on top."""
        if self.check_batches:
            values, static = check_batch(batch, self.batch_spec, self.model, self._policy_shapes)
        else:
            values, static = resolve_keys(batch, self.batch_spec)
        # on the device once: DPO's reference pass and the update share the upload
        return {k: jnp.asarray(v) for k, v in values.items()}, static

    @staticmethod
    def update(graphdef, state, batch, key, config, static) -> tuple[TrainState, dict[str, jax.Array]]:
        raise NotImplementedError

    def _traced_update(self, graphdef, state, batch, key, static_items):
        self.trace_count += 1
        return self.update(graphdef, state, batch, key, self.config, dict(static_items))

    def train_step(self, batch: Mapping[str, Any], key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Apply one update (PPO: its epochs and minibatches) and return the metrics dict."""
        arrays, static = self.validate(batch)
        if key is None:
            self._key, key = jax.random.split(self._key)
        graphdef, model_optimizer = nnx.split((self.model, self.optimizer))
        state = TrainState(model_optimizer, self.algorithm_state)
        state, metrics = self._jitted_update(graphdef, state, arrays, key, tuple(sorted(static.items())))
        nnx.update((self.model, self.optimizer), state.model_optimizer)
        self.algorithm_state = state.algorithm
        return metrics

