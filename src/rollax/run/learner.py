"""The learning half of a run, shared by the jitted and the host program: the agent's model
and optimizer, the per-seed training state, and the algorithm's pure update."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping

import jax
import optax
from flax import nnx

from rollax.networks import build_policy
from rollax.rl.trainer import TrainState
from rollax.rollout.collector import policy_distribution
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


def build_model(agent: AgentSpec, plan: Plan, key: jax.Array) -> nnx.Module:
    """The agent's policy network for the env's spaces (and, for the generative kinds, its
    noise layout and generator)."""
    network = agent.network
    if network.kind == "transformer":
        from rollax.generative.token_model import token_policy

        return token_policy(plan.env.task, transformer_config(network),
                            value_head=plan.algorithm.needs_critic, rngs=nnx.Rngs(key))
    if network.kind != "mlp":
        from rollax.generative.policies import generative_policy

        return generative_policy(
            network.kind, plan.env, math.prod(plan.observation_space.shape),
            hidden_sizes=network.hidden_sizes, activation=network.activation,
            log_std_init=network.log_std_init, critic=plan.algorithm.needs_critic,
            rngs=nnx.Rngs(key))
    return build_policy(
        plan.observation_space, plan.action_space, hidden_sizes=network.hidden_sizes,
        activation=network.activation, critic=plan.algorithm.needs_critic,
        shared_torso=network.shared_torso, log_std_init=network.log_std_init, rngs=nnx.Rngs(key))


def transformer_config(network):
    """The warm start's settings for a `[agent.network] kind = "transformer"`."""
    from rollax.generative.token_model import WarmStartConfig

    return WarmStartConfig(width=network.width, layers=network.layers, heads=network.heads,
                           target_success=network.warm_start_success)


LEARNING_RATE = "agent.optimizer.learning_rate"
CONFIG = "agent.config."


class Learner:
    """Builds one seed's training state and applies the algorithm's update to it.

    `graphdef` describes `(model, optimizer)`, `model_graphdef` the model alone (for the frozen
    reference policy of "groups" algorithms and for evaluation).

    `swept`: hyperparameters each run of the program takes as a number of its own (a sweep,
    `rollax.sweeps`): `agent.optimizer.learning_rate` and numeric `agent.config.<field>`s.
    Their values are the `hparams` of `init`, `config` and `update`, `{key: scalar}` per run.
    A swept learning rate multiplies an optimizer built at rate 1 (`optax.inject_hyperparams`
    keeps it in the optimizer state), which is what the optimizer at that rate computes.
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
        self.graphdef, _ = nnx.split((model, optimizer))
        self.model_graphdef, _ = nnx.split(model)
        self.initial_params = None  # nnx.Param state every seed starts from, if not random
        if agent.network.kind == "transformer" and agent.network.warm_start:
            from rollax.generative.token_model import warm_start

            spec = plan.env_spec
            warm, _ = warm_start(spec.id, transformer_config(agent.network), **spec.params, **spec.kwargs)
            self.initial_params = nnx.state(warm, nnx.Param)

    def init(self, key: jax.Array, hparams: Mapping[str, jax.Array] | None = None
             ) -> tuple[TrainState, nnx.State]:
        """`(training state, the model's initial state)`; the latter is the frozen reference."""
        model = build_model(self.agent, self.plan, key)
        if self.initial_params is not None:
            nnx.update(model, self.initial_params)
        optimizer = nnx.Optimizer(model, self.tx, wrt=nnx.Param)
        if LEARNING_RATE in self.swept:
            optimizer.opt_state[1].hyperparams["step_size"][...] = hparams[LEARNING_RATE]
        state = TrainState(nnx.split((model, optimizer))[1], self.plan.algorithm.init_state(self.plan.config))
        return state, nnx.split(model)[1]

    def config(self, hparams: Mapping[str, jax.Array] | None = None):
        """The algorithm config of one run: the plan's, with its swept fields as traced numbers.
        Set without the config's own checks, which compare values in Python: each run's values
        were checked when its experiment was built."""
        fields = {key.removeprefix(CONFIG): value for key, value in (hparams or {}).items()
                  if key.startswith(CONFIG)}
        if not fields:
            return self.plan.config
        config = copy.copy(self.plan.config)
        for name, value in fields.items():
            object.__setattr__(config, name, value)
        return config

    def model(self, state: TrainState) -> nnx.Module:
        """The policy in `state` (a fresh module: changing it does not change `state`)."""
        return nnx.merge(self.graphdef, state.model_optimizer)[0]

    def reference(self, reference_state: nnx.State) -> nnx.Module:
        return nnx.merge(self.model_graphdef, reference_state)

    def with_reference(self, batch: dict, reference_state: nnx.State | None, config) -> dict:
        """A rollout batch plus `ref_log_probs` (its actions under the frozen initial policy)
        when the algorithm anchors to it (`uses_reference`); the batch as it is otherwise."""
        if not self.plan.algorithm.uses_reference(config):
            return batch
        distribution, _ = policy_distribution(self.reference(reference_state), batch["observations"],
                                              self.plan.action_space)
        return {**batch, "ref_log_probs": distribution.log_prob(batch["actions"])}

    def update(self, state: TrainState, batch: dict, key: jax.Array,
               hparams: Mapping[str, jax.Array] | None = None) -> tuple[TrainState, dict]:
        """The algorithm's pure update (traceable: runs inside the jitted chunk); its metrics
        gain `learning_rate`, the rate the iteration's last update used."""
        state, metrics = self.plan.algorithm.update(self.graphdef, state, batch, key,
                                                    self.config(hparams), {"group_size": self.plan.group_size})
        updates = nnx.merge(self.graphdef, state.model_optimizer)[1].step[...]  # counted after each
        rate = self.learning_rate(updates - 1)
        if LEARNING_RATE in self.swept:
            rate = rate * hparams[LEARNING_RATE]
        return state, {**metrics, "learning_rate": rate}
