"""The learning half of a run, shared by the jitted and the host program: the agent's model
(built by its policy kind) and optimizer, the per-seed training state, and the algorithm's
pure update."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rollax.networks.kinds import PolicyContext, policy_kind
from rollax.networks.normalization import NormalizedPolicy
from rollax.rl.algorithm import TrainState
from rollax.rl.trainer import params_finite
from rollax.run.experiment import AgentSpec, OptimizerSpec
from rollax.run.plan import Plan


def learning_rate_schedule(spec: OptimizerSpec, total_updates: int, warmup_updates: int = 0
                           ) -> optax.Schedule:
    """The rate of each update by its count: rising linearly from 0 over the first
    `warmup_updates`, then constant, or with `anneal_lr` decaying linearly to 0 at the end."""
    rate = spec.learning_rate
    after = (optax.linear_schedule(rate, 0.0, max(total_updates - warmup_updates, 1))
             if spec.anneal_lr else optax.constant_schedule(rate))
    if not warmup_updates:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, rate, warmup_updates), after],
                                [warmup_updates])


def make_optimizer(spec: OptimizerSpec, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The agent's optimizer. A constant rate goes in as a number: a schedule would add a
    step counter to the optimizer state (and so to every checkpoint) that `nnx.Optimizer`
    already keeps."""
    lr = schedule if spec.anneal_lr or spec.warmup_steps else spec.learning_rate
    if spec.name == "sgd":
        return optax.sgd(lr)
    if spec.name == "rmsprop":
        return optax.rmsprop(lr, eps=spec.eps)
    return getattr(optax, spec.name)(lr, eps=spec.eps)


def build_model(agent: AgentSpec, plan: Plan, key: jax.Array,
                initial_params: nnx.State | None = None) -> nnx.Module:
    """The agent's policy for the run's env, built by its policy kind (from `initial_params`
    when given), inside a `NormalizedPolicy` when the env normalises observations."""
    policy = policy_kind(agent.network.kind).build(agent.network, policy_context(plan), nnx.Rngs(key))
    if initial_params is not None:
        nnx.update(policy, initial_params)
    spec = plan.env_spec
    if spec is None or not spec.normalize_observations:
        return policy
    return NormalizedPolicy(policy, tuple(plan.observation_space.shape), spec.clip_observations)


def policy_context(plan: Plan) -> PolicyContext:
    spec = plan.env_spec
    return PolicyContext(plan.env, plan.env_params, plan.observation_space, plan.action_space,
                         critic=plan.algorithm.needs_critic, env_id=spec.id,
                         env_settings={**spec.params, **spec.kwargs})


LEARNING_RATE = "agent.optimizer.learning_rate"
PARAMS_FINITE = "params_finite"  # not a metric: the loop's divergence check takes it out
CONFIG = "agent.config."


class Learner:
    """Builds one seed's training state and applies the algorithm's update to it.

    `graphdef` describes `(model, optimizer)`, `model_graphdef` the model alone (for the frozen
    reference policy of "groups" algorithms and for evaluation).

    `swept`: hyperparameters each run of the program takes as a number of its own (a sweep,
    `rollax.sweeps`): `agent.optimizer.learning_rate` and the config's traced fields
    (`agent.config.<field>`). Their values are the `hparams` of `init`, `config` and `update`,
    `{key: scalar}` per run. A swept learning rate multiplies an optimizer built at rate 1
    (`optax.inject_hyperparams` keeps it in the optimizer state as `step_size`), which is what
    the optimizer at that rate computes.
    """

    def __init__(self, agent: AgentSpec, plan: Plan, swept: tuple[str, ...] = ()):
        self.agent, self.plan, self.swept = agent, plan, swept
        total_updates = plan.iterations * plan.updates_per_iteration
        optimizer = agent.optimizer
        if optimizer.warmup_steps >= plan.total_steps:
            raise ValueError(f"agent.optimizer.warmup_steps={optimizer.warmup_steps} must be below "
                             f"budget.total_steps={plan.total_steps}")
        warmup_updates = -(-optimizer.warmup_steps // plan.steps_per_iteration) * plan.updates_per_iteration
        if LEARNING_RATE in swept:
            optimizer = dataclasses.replace(optimizer, learning_rate=1.0)
        self.learning_rate = learning_rate_schedule(optimizer, total_updates, warmup_updates)
        self.tx = make_optimizer(optimizer, self.learning_rate)
        if LEARNING_RATE in swept:
            self.tx = optax.chain(self.tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))

        def abstract_model_and_optimizer():  # shapes only: nothing is computed or compiled
            model = build_model(agent, plan, jax.random.key(0))
            return model, nnx.Optimizer(model, self.tx, wrt=nnx.Param)

        model, optimizer = nnx.eval_shape(abstract_model_and_optimizer)
        if plan.source is not None:
            plan.source.check_policy(model)
        self.graphdef, _ = nnx.split((model, optimizer))
        self.model_graphdef, _ = nnx.split(model)
        # nnx.Param state every seed starts from (a supervised warm start), or None: random
        self.initial_params = policy_kind(agent.network.kind).initial_params(
            agent.network, policy_context(plan))

    def init(self, key: jax.Array, hparams: Mapping[str, jax.Array] | None = None
             ) -> tuple[TrainState, nnx.State]:
        """`(training state, the model's initial state)`; the latter is the frozen reference."""
        model = build_model(self.agent, self.plan, key, self.initial_params)
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        if LEARNING_RATE in self.swept:
            optax.tree_utils.tree_get(optimizer.opt_state, "step_size")[...] = hparams[LEARNING_RATE]
        state = TrainState(nnx.split((model, optimizer))[1], self.plan.algorithm.init_state(self.plan.config))
        return state, nnx.split(model)[1]

    def config(self, hparams: Mapping[str, jax.Array] | None = None) -> Any:
        """The algorithm config of one run: the plan's, with its swept fields as traced numbers."""
        return self.plan.config.with_traced({key.removeprefix(CONFIG): value
                                             for key, value in (hparams or {}).items()
                                             if key.startswith(CONFIG)})

    def model(self, state: TrainState) -> nnx.Module:
        """The policy in `state` (a fresh module: changing it does not change `state`)."""
        return nnx.merge(self.graphdef, state.model_optimizer)[0]

    def reference(self, reference_state: nnx.State) -> nnx.Module:
        return nnx.merge(self.model_graphdef, reference_state)

    def update(self, state: TrainState, batch: Any, key: jax.Array,
               hparams: Mapping[str, jax.Array] | None = None) -> tuple[TrainState, dict]:
        """The algorithm's conversion of a source's batch and its pure update (traceable: runs
        inside the jitted chunk); the metrics gain `learning_rate`, the rate the iteration's
        last update used, and `PARAMS_FINITE`, whether the updated parameters are finite."""
        config, algorithm = self.config(hparams), self.plan.algorithm
        inputs, converted = batch.learned_by(algorithm, config)
        state, metrics = algorithm.update(self.graphdef, state, inputs, key, config)
        metrics = {**metrics, **converted}
        model, optimizer = nnx.merge(self.graphdef, state.model_optimizer)
        if isinstance(model, NormalizedPolicy):  # after the update, which scored with the old ones
            model.update_statistics(batch.observations)
            state = state._replace(model_optimizer=nnx.split((model, optimizer))[1])
        updates = optimizer.step[...]  # counted after each
        rate = jnp.asarray(self.learning_rate(updates - 1), jnp.float32)  # a constant is a float
        if LEARNING_RATE in self.swept:
            rate = rate * hparams[LEARNING_RATE]
        return state, {**metrics, "learning_rate": rate,
                       PARAMS_FINITE: params_finite(state.model_optimizer)}
