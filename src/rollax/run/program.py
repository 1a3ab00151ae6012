"""One entry point for the two kinds of run program.

Both `JittedProgram` (jittable envs: the whole chunk compiled) and `HostProgram` (Gymnasium
envs: host stepping, jitted update) offer `init(seeds)`, `abstract_state(seeds)`,
`compile(seeds)`, `working_memory(compiled chunk)`, `compile_evaluation(seeds)`,
`run_chunk(state)`, `evaluate(state, keys)`, `metric_names(seeds)`, `render(state, keys)`,
`sample_texts(state, keys)`, `place(tree)` (a restored state where the programs want it) and
`close()`, and the metric names the traced programs report (`train_metric_names`,
`eval_metric_names`; None until traced); the loop drives either.
"""

from __future__ import annotations

from functools import partial

from rollax.envs.gymnasium_ids import is_host_env_id
from rollax.run.experiment import Experiment
from rollax.run.host_program import HostProgram
from rollax.run.jitted_program import JittedProgram
from rollax.run.learner import Learner
from rollax.run.parallel import make_mesh, shard_batch, split_the_cpu
from rollax.run.plan import Plan, make_plan


def make_program(experiment: Experiment, swept: tuple[str, ...] = (), runs: int | None = None
                 ) -> tuple[Plan, JittedProgram | HostProgram]:
    """Resolve the experiment's plan and build the program that runs it: for the experiment's
    seeds, or for `runs` side by side (a sweep's combinations x seeds) whose `swept`
    hyperparameters are numbers of each run's own (see `Learner`)."""
    split_the_cpu(experiment.parallel.devices)  # before the plan's env starts JAX
    if is_host_env_id(experiment.env.id):
        if experiment.parallel.devices != 1:
            raise ValueError(f"parallel.devices={experiment.parallel.devices}: Gymnasium envs "
                             "step on the host, one device; use a jittable env id to shard")
        plan = make_plan(experiment)
        return plan, HostProgram(Learner(experiment.agent, plan, swept), experiment.env.kwargs)
    mesh = make_mesh(experiment.parallel, runs or len(experiment.seed_list), experiment.budget.num_envs)
    plan = make_plan(experiment, None if mesh is None else partial(shard_batch, mesh=mesh))
    return plan, JittedProgram(Learner(experiment.agent, plan, swept), mesh)
