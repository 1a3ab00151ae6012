"""What a resumed run trains: the run's own experiment, as its newest checkpoint recorded it
(`rollax.run.run_folder`), never a different one. Only `budget.total_steps` may change, to
train a run further (or stop it earlier) as SB3's `learn(..., reset_num_timesteps=False)`
does, and `parallel`, where it runs (a sharded program computes what one device would);
anything else would silently mix two configs in one run."""

from __future__ import annotations

from pathlib import Path

from rollax.logging.checkpoint import available_steps
from rollax.logging.logger import flatten_dotted
from rollax.run.experiment import Experiment
from rollax.run.plan import iteration_layout
from rollax.run.run_folder import NOT_COMPARED, check_seed_logs, recorded_experiment


def resumed_experiment(run_dir: str | Path, experiment: Experiment | None = None) -> Experiment:
    """The run's own experiment, with `experiment`'s `budget.total_steps` and progress bar when
    given. FileNotFoundError without a complete checkpoint or config; ValueError naming each
    key where `experiment` differs from the run's (old -> new), or a total that cannot be
    continued to."""
    run_dir = Path(run_dir)
    checkpoints = run_dir / "checkpoints"
    steps = available_steps(checkpoints)  # raises FileNotFoundError naming the path
    if not steps:
        raise FileNotFoundError(f"cannot resume: no complete checkpoint in {checkpoints}")
    saved = recorded_experiment(run_dir, steps[-1])
    check_seed_logs(run_dir, saved, steps[-1])
    if experiment is None:
        return saved
    old, new = flatten_dotted(saved.to_dict()), flatten_dotted(experiment.to_dict())
    changed = sorted(key for key in old.keys() | new.keys()
                     if old.get(key) != new.get(key) and key not in NOT_COMPARED)
    conflicts = [key for key in changed
                 if key != "budget.total_steps" and not key.startswith("parallel.")]
    if conflicts:
        diff = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in conflicts)
        raise ValueError(f"cannot resume {run_dir}: the config differs from the run's own in "
                         f"{diff}; only budget.total_steps and parallel.* may change on resume "
                         "(rollax train --resume RUN_DIR reads the rest)")
    resumed = saved.replace(logging={"progress": experiment.logging.progress},
                            parallel=experiment.parallel)
    if "budget.total_steps" in changed:
        _check_new_total(saved, experiment.budget.total_steps, steps[-1])
        resumed = resumed.replace(budget={"total_steps": experiment.budget.total_steps})
    return resumed


def _check_new_total(saved: Experiment, total: int, checkpoint_step: int) -> None:
    """A new total must lie past the checkpoint on a whole number of the new plan's chunks,
    with a constant learning rate (an annealed one is laid out over the original total)."""
    where = f"budget.total_steps {saved.budget.total_steps} -> {total!r}"
    if not isinstance(total, int) or isinstance(total, bool):
        raise ValueError(f"{where}: must be an integer")
    if saved.agent.optimizer.anneal_lr:
        raise ValueError(f"{where}: cannot change on resume while agent.optimizer.anneal_lr is "
                         "true (the learning-rate decay is laid out over the original total)")
    per_iteration, iterations, chunk = iteration_layout(saved.budget, total)
    done = checkpoint_step // per_iteration
    if iterations < done:
        raise ValueError(f"{where}: the run's checkpoint is already at env step {checkpoint_step}")
    if (iterations - done) % chunk:
        raise ValueError(f"{where}: {iterations - done} iterations after the checkpoint at env "
                         f"step {checkpoint_step} are not a whole number of chunks of {chunk}; "
                         "pick a total that is")

