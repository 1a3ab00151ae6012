"""`rollax.train`, `rollax.sweep` and `rollax.tune`: what `rollax train`, `rollax sweep` and
`rollax tune` do, from Python."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rollax.cache import enable_compilation_cache
from rollax.logging.callbacks import Callback
from rollax.presets import experiment_from_dict, load_experiment
from rollax.run import Experiment, TrainResult
from rollax.run import train as run_experiment
from rollax.sweeps import SweepResult, resume_sweep
from rollax.sweeps import sweep as run_sweep
from rollax.tuning import TuneResult, TuneSettings, resume_tune
from rollax.tuning import tune as run_tune


def train(experiment: Experiment | Mapping[str, Any] | str | os.PathLike | None = None, *,
          callbacks: Sequence[Callback] = (), progress: bool = True,
          resume: str | Path | None = None, stop_at_step: int | None = None) -> TrainResult:
    """Train an experiment for all its seeds at once, with the CLI's compilation cache.

    `experiment`: an `Experiment`, a preset path or NAME (as `rollax train NAME`), or a dict
    holding a preset's content (as its TOML file would); None with `resume`. The keywords are
    `rollax.run.train`'s.
    """
    if experiment is not None:
        experiment = _experiment(experiment, "train")
    enable_compilation_cache()
    return run_experiment(experiment, callbacks=callbacks, progress=progress, resume=resume,
                          stop_at_step=stop_at_step)


def sweep(experiment: Experiment | Mapping[str, Any] | str | os.PathLike | None = None,
          grid: Mapping[str, Sequence[Any]] | None = None, *, seeds: int | None = None,
          progress: bool = True, resume: str | Path | None = None,
          stop_at_step: int | None = None) -> SweepResult:
    """Train every combination of `grid` (`{"agent.optimizer.learning_rate": [1e-4, 3e-4],
    ...}`, keys as `--set` names them) for `seeds` seeds each, combinations that differ only in
    numbers side by side in one compiled program (`rollax.sweeps`). `experiment` as for
    `train`; `resume` continues a sweep folder instead (without experiment, grid or seeds);
    `stop_at_step` ends each program there with a checkpoint. Returns the `SweepResult` (its
    `table()`, per-combination results, folder)."""
    enable_compilation_cache()
    if resume is not None:
        if experiment is not None or grid is not None or seeds is not None:
            raise ValueError("sweep(resume=...) continues the sweep as it was started: give no "
                             "experiment, grid or seeds")
        return resume_sweep(resume, progress=progress, stop_at_step=stop_at_step)
    if experiment is None or grid is None:
        raise ValueError("sweep needs an experiment and a grid, or resume=SWEEP_DIR")
    return run_sweep(_experiment(experiment, "sweep"), grid, seeds=seeds, progress=progress,
                     stop_at_step=stop_at_step)


def tune(experiment: Experiment | Mapping[str, Any] | str | os.PathLike | None = None,
         space: Mapping[str, str] | None = None, *, progress: bool = True,
         resume: str | Path | None = None, **settings: Any) -> TuneResult:
    """Bayesian search of `space` (`{"agent.optimizer.learning_rate": "log:1e-4:1e-2", ...}`,
    specs as `--param` takes them; None: the experiment's `[search]` table) with Optuna, a batch
    of trials per compiled program (`rollax.tuning`). `settings` are `TuneSettings`' fields (`trials`, `batch`, `metric`,
    `aggregate`, `sampler`, `pruner`, `seed`, `storage`, `study_name`, `direction`); `resume`
    continues a tune folder instead. Returns the `TuneResult` (its `study`, `table()`, folder)."""
    enable_compilation_cache()
    if resume is not None:
        if experiment is not None or space is not None or settings:
            raise ValueError("tune(resume=...) continues the search as it was started: give no "
                             "experiment, space or settings")
        return resume_tune(resume, progress=progress)
    if experiment is None:
        raise ValueError("tune needs an experiment (and a space, or its [search] table), or "
                         "resume=TUNE_DIR")
    experiment = _experiment(experiment, "tune")
    space = experiment.search if space is None else space
    return run_tune(experiment, TuneSettings(space=dict(space), **settings), progress=progress)


def _experiment(experiment: Any, what: str) -> Experiment:
    if isinstance(experiment, (str, os.PathLike)):
        return load_experiment(experiment)
    if isinstance(experiment, Mapping):
        return experiment_from_dict(dict(experiment))
    if not isinstance(experiment, Experiment):
        raise ValueError(f"{what} needs an Experiment, a preset path or name, or a preset dict; "
                         f"got {type(experiment).__name__}")
    return experiment
