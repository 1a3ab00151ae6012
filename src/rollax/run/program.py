"""One entry point for the two kinds of run program.

Both `JittedProgram` (jittable envs: the whole chunk compiled) and `HostProgram` (Gymnasium
envs: host stepping, jitted update) offer `init(seeds)`, `compile(seeds)`,
`compile_evaluation(seeds)`, `run_chunk(state)`, `evaluate(state, keys)`, `metric_names(seeds)`,
`render(state, keys)`, `sample_texts(state, keys)`, `place(tree)` (a restored state where the
programs want it) and `close()`; the loop drives either.
"""

from __future__ import annotations

from rollax.run.experiment import Experiment
from rollax.run.host_program import HostProgram
from rollax.run.jitted_program import JittedProgram
from rollax.run.learner import Learner
from rollax.run.parallel import make_mesh, split_the_cpu
from rollax.run.plan import Plan, make_plan


def make_program(experiment: Experiment, swept: tuple[str, ...] = (), runs: int | None = None
                 ) -> tuple[Plan, JittedProgram | HostProgram]:
    """Resolve the experiment's plan and build the program that runs it: for the experiment's
    seeds, or for `runs` side by side (a sweep's combinations x seeds) whose `swept`
    hyperparameters are numbers of each run's own (see `Learner`)."""
    split_the_cpu(experiment.parallel.devices)  # before the plan's env starts JAX
    plan = make_plan(experiment)
    learner = Learner(experiment.agent, plan, swept)
    if plan.host_env_id is not None:
        if experiment.parallel.devices != 1:
            raise ValueError(f"parallel.devices={experiment.parallel.devices}: Gymnasium envs "
                             "step on the host, one device; use a jittable env id to shard")
        return plan, HostProgram(learner, experiment.env.kwargs)
    mesh = make_mesh(experiment.parallel, runs or len(experiment.seed_list), plan.num_envs)
    return plan, JittedProgram(learner, mesh)
