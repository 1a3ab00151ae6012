"""Where a cold `rollax train` of PPO CartPole-v1 spends its time, at rejax's published settings
(the ones `peers.py` compares at; no evaluation until the end). Three parts, in this one
process, with no persistent compilation cache (`rollax.run.train` turns none on):

1. one whole `rollax.run.train`: every program JAX traces, lowers and compiles (from JAX's own
   monitoring events), and the phases of the run;
2. the run's three programs (the training chunk, the evaluation, the initialisation) compiled
   alone at XLA:CPU's backend optimisation levels 2 (the default), 1 and 0: compile seconds,
   milliseconds per chunk, and whether the chunk's results stay bit-identical;
3. one training iteration split into its collection (5 envs x 100 steps) and its update (5
   epochs x 5 minibatches), each jitted alone; and the floor of a minibatch step: a bare
   gradient step of the same networks with Adam, without PPO's loss and metrics.

    JAX_PLATFORMS=cpu python benchmarks/compile_profile.py
"""

from __future__ import annotations

import collections
import time

START = time.perf_counter()

import jax
import jax.numpy as jnp
import numpy as np
import optax
from cartpole_ablation import REJAX
from flax import nnx

from rollax.presets import load_experiment
from rollax.rollout.collector import act
from rollax.run import train
from rollax.run.program import make_program
from rollax.run.seeds import eval_keys

IMPORTED = time.perf_counter() - START
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/core/compile/backend_compile_duration": "compile"}


def whole_run(experiment) -> None:
    seconds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    order: list[str] = []

    def listen(event: str, duration: float, **labels) -> None:
        if event in EVENTS:
            name = labels.get("fun_name", "?").removeprefix("jit(").removesuffix(")")
            if name not in seconds:
                order.append(name)
            seconds[name][EVENTS[event]] += duration
            seconds[name]["count " + EVENTS[event]] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    start = time.perf_counter()
    result = train(experiment, progress=False)
    wall = time.perf_counter() - start
    print(f"1. one cold run: imports {IMPORTED:.2f} s, then train() {wall:.2f} s = compile wait "
          f"{result.compile_seconds:.2f} s + training {result.train_seconds:.2f} s + the rest "
          f"(plan, final evaluation) {wall - result.compile_seconds - result.train_seconds:.2f} s")
    print(f"   {'function (JAX name)':<28} {'trace s':>8} {'lower s':>8} {'compile s':>9} {'compiles':>8}")
    big = [name for name in order if seconds[name]["compile"] > 0.05]
    for name in big:
        s = seconds[name]
        print(f"   {name:<28} {s['trace']:>8.2f} {s['lower']:>8.2f} {s['compile']:>9.2f} {s['count compile']:>8}")
    small = [seconds[name] for name in order if name not in big]
    print(f"   {len(small)} other programs (keys, casts): {sum(s['compile'] for s in small):.2f} s "
          f"compile in all; XLA compile summed over every program "
          f"{sum(s['compile'] for s in seconds.values()):.2f} s (they overlap on 2 cores)")


def programs_alone(experiment) -> None:
    _, program = make_program(experiment)
    seeds = [0]
    abstract = program.abstract_state(seeds)
    keys = eval_keys(seeds, 1)
    lowered = {"chunk": program.run_chunk.lower(abstract),
               "evaluation": program._evaluate_jit.lower(abstract, jax.eval_shape(eval_keys, seeds, 0)),
               "init": program._init.lower(np.asarray(seeds), {})}
    print("2. each program compiled alone, by XLA:CPU backend optimisation level")
    print(f"   {'level':>5} {'chunk s':>8} {'evaluation s':>12} {'init s':>7} {'ms per chunk':>12}  chunk results")
    reference = None
    for level in (2, 1, 0):
        options = {"xla_backend_optimization_level": level}
        times, compiled = {}, {}
        for name, low in lowered.items():
            tick = time.perf_counter()
            compiled[name] = low.compile(compiler_options=options)
            times[name] = time.perf_counter() - tick
        state = program.init(seeds)
        state, _ = compiled["chunk"](state)
        jax.block_until_ready(compiled["evaluation"](state, keys))
        tick = time.perf_counter()
        for _ in range(5):
            state, _ = compiled["chunk"](state)
        jax.block_until_ready(state)
        per_chunk = (time.perf_counter() - tick) / 5 * 1000
        leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state["train"]))]
        reference = reference or leaves
        same = all(np.array_equal(a, b) for a, b in zip(leaves, reference))
        print(f"   {level:>5} {times['chunk']:>8.2f} {times['evaluation']:>12.2f} {times['init']:>7.2f} "
              f"{per_chunk:>12.1f}  {'bit-identical to level 2' if same else 'differ from level 2'}")


def iteration_split(experiment) -> None:
    plan, program = make_program(experiment)
    state = jax.tree.map(lambda x: x[0], program.init([0]))
    learner = program.learner

    @jax.jit
    def collect_only(state):  # the run's batch source: the collector's steps as a `Steps` batch
        return plan.source.sample(learner.model(state["train"]), learner.reference(state["reference"]),
                                  state["source"], state["key"])

    _, batch, _, _ = collect_only(state)
    update_only = jax.jit(lambda train, batch, key: learner.update(train, batch, key))
    jax.block_until_ready(update_only(state["train"], batch, state["key"]))
    timings = {}
    for name, call in (("collect", lambda: collect_only(state)),
                       ("update", lambda: update_only(state["train"], batch, state["key"]))):
        tick = time.perf_counter()
        for _ in range(50):
            out = call()
        jax.block_until_ready(out)
        timings[name] = (time.perf_counter() - tick) / 50 * 1000
    print(f"3. one iteration, each half jitted alone: collect {timings['collect']:.2f} ms "
          f"({plan.num_envs} envs x {plan.num_steps} steps), update {timings['update']:.2f} ms "
          f"({plan.updates_per_iteration} minibatch steps); {plan.iterations} iterations per run")
    floor = bare_steps(learner.model(state["train"]), batch.observations.reshape(-1, 4), plan)
    print(f"   floor of one minibatch step: the same actor and critic, forward, backward and Adam "
          f"on {floor[1]} observations, no PPO loss or metrics: {floor[0]:.0f} us; the update "
          f"spends {timings['update'] / plan.updates_per_iteration * 1000:.0f} us per step")


def bare_steps(model, observations, plan) -> tuple[float, int]:
    """Microseconds per plain gradient step (squared outputs as the loss, optax's Adam) over
    minibatches of the iteration's size, as 25 steps in one `lax.scan`, and that size."""
    graphdef, params, others = nnx.split(model, nnx.Param, ...)
    size = observations.shape[0] // 5  # rejax's settings: 5 minibatches per epoch
    minibatches = jnp.stack([observations[:size]] * plan.updates_per_iteration)
    tx = optax.adam(7.5e-4, eps=1e-5)

    def loss(params, x):
        output = act(nnx.merge(graphdef, params, others), x, plan.action_space)
        return jnp.mean(output.value ** 2) + jnp.mean(output.distribution.log_prob(jnp.zeros(x.shape[0], jnp.int32)))

    def step(carry, x):
        params, opt_state = carry
        updates, opt_state = tx.update(jax.grad(loss)(params, x), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    run = jax.jit(lambda params: jax.lax.scan(step, (params, tx.init(params)), minibatches)[0][0])
    jax.block_until_ready(run(params))
    tick = time.perf_counter()
    for _ in range(50):
        out = run(params)
    jax.block_until_ready(out)
    return (time.perf_counter() - tick) / 50 / plan.updates_per_iteration * 1e6, size


def main() -> None:
    experiment = load_experiment("cartpole_ppo", ["logging.enabled=false", *REJAX, "eval.every_steps=0"])
    whole_run(experiment)
    programs_alone(experiment)
    iteration_split(experiment)


if __name__ == "__main__":
    main()
