"""`rollax.train`: what `rollax train` does, from Python."""

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


def train(experiment: Experiment | Mapping[str, Any] | str | os.PathLike | None = None, *,
          callbacks: Sequence[Callback] = (), progress: bool = True,
          resume: str | Path | None = None, stop_at_step: int | None = None) -> TrainResult:
    """Train an experiment for all its seeds at once, with the CLI's compilation cache.

    `experiment`: an `Experiment`, a preset path or NAME (as `rollax train NAME`), or a dict
    holding a preset's content (as its TOML file would); None with `resume`. The keywords are
    `rollax.run.train`'s.
    """
    if isinstance(experiment, (str, os.PathLike)):
        experiment = load_experiment(experiment)
    elif isinstance(experiment, Mapping):
        experiment = experiment_from_dict(dict(experiment))
    elif experiment is not None and not isinstance(experiment, Experiment):
        raise ValueError("train needs an Experiment, a preset path or name, or a preset dict; "
                         f"got {type(experiment).__name__}")
    enable_compilation_cache()
    return run_experiment(experiment, callbacks=callbacks, progress=progress, resume=resume,
                          stop_at_step=stop_at_step)
