"""One entry point for the two kinds of run program.

Both `JittedProgram` (jittable envs: the whole chunk compiled) and `HostProgram` (Gymnasium
envs: host stepping, jitted update) offer `init(seeds)`, `compile(seeds)`, `run_chunk(state)`,
`evaluate(state, keys)`, `render(state, keys)` and `close()`; the loop drives either.
"""

from __future__ import annotations

from rollax.run.experiment import Experiment
from rollax.run.host_program import HostProgram
from rollax.run.jitted_program import JittedProgram
from rollax.run.learner import Learner
from rollax.run.plan import Plan, make_plan


def make_program(experiment: Experiment) -> tuple[Plan, JittedProgram | HostProgram]:
    """Resolve the experiment's plan and build the program that runs it."""
    plan = make_plan(experiment)
    learner = Learner(experiment.agent, plan)
    if plan.host_env_id is not None:
        return plan, HostProgram(learner, experiment.env.kwargs)
    return plan, JittedProgram(learner)
