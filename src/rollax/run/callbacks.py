"""The callbacks a preset's `[logging]` table attaches to a run (before a user's own), and the
registry of the optional ones its sub-tables switch on."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

from rollax.logging.callbacks import (
    Callback,
    EarlyStopping,
    JAXProfiler,
    ProfilingConfig,
    ProgressBarCallback,
    WandbLoggerCallback,
    WandbLoggerConfig,
)
from rollax.logging.run_callbacks import (
    BestCheckpoint,
    MetricsLogger,
    ResultWriter,
    ResumeCheckpoint,
    Samples,
)
from rollax.run.experiment import Experiment


def default_callbacks(experiment: Experiment, total_steps: int, start_step: int,
                      progress: bool, sweep: bool = False) -> tuple[list[Callback], list[Callback]]:
    """`(first, last)`: a user's callbacks go between them. In hook order, metrics are flushed
    before a checkpoint is written and closed before the results and the plot read them; a
    stop any callback asks for in a chunk is seen by the resume checkpoint of that chunk. A
    sweep writes its runs' results itself."""
    logging = experiment.logging
    callbacks: list[Callback] = []
    closing: list[Callback] = []
    optional = optional_configs(experiment)
    if logging.enabled:
        metrics = MetricsLogger()
        callbacks.append(metrics)
        if logging.images:
            callbacks.append(Samples(metrics))
        if logging.checkpoint:
            callbacks.append(BestCheckpoint(logging.best_metric, logging.best_mode))
            closing.append(ResumeCheckpoint(logging.checkpoint_every_seconds))
        if not sweep:
            closing.append(ResultWriter(plot=logging.plot))
    callbacks += [LOGGING_CALLBACKS[key].callback(settings) for key, settings in optional.items()]
    if progress and logging.progress:  # shown even when the output is not a terminal
        closing.append(ProgressBarCallback(total=total_steps, initial=start_step,
                                           desc=experiment.name, unit="env steps per seed",
                                           disable=False))
    return callbacks, closing


@dataclasses.dataclass(frozen=True)
class OptionalCallback:
    """A `[logging.<name>]` table that attaches a callback: the class of its settings, the run's
    defaults for them, and the callback made from the settings."""

    settings: Callable[..., Any]
    defaults: Callable[[Experiment], dict]
    callback: Callable[[Any], Callback]
    needs: str | None = None  # a package of an optional extra (`rollax[<needs>]`) it imports


def _profiler_defaults(experiment: Experiment) -> dict:
    # the loop's steps are env steps at chunk ends: trace the first fifth of the run
    return {"log_dir": f"{experiment.logging.root}/{experiment.name}/profile", "start_step": 0,
            "end_step": max(1, experiment.budget.total_steps // 5)}


LOGGING_CALLBACKS: dict[str, OptionalCallback] = {
    "early_stopping": OptionalCallback(EarlyStopping, lambda experiment: {}, lambda stop: stop),
    "profiler": OptionalCallback(ProfilingConfig, _profiler_defaults, JAXProfiler),
    "wandb": OptionalCallback(WandbLoggerConfig, lambda experiment: {
        "name": experiment.name, "config": experiment.to_dict()}, WandbLoggerCallback, "wandb"),
}


def optional_configs(experiment: Experiment) -> dict:
    """The settings of the optional callbacks the `[logging]` tables switch on, built and
    checked (the preset loader calls this too, so a bad table fails before anything runs).
    ValueError naming `logging.<key>`."""
    out = {}
    for key, optional in LOGGING_CALLBACKS.items():
        table = getattr(experiment.logging, key)
        if table:
            if optional.needs and importlib.util.find_spec(optional.needs) is None:
                raise ValueError(f"logging.{key} needs the {optional.needs} package, which is not "
                                 f"installed: pip install 'rollax[{optional.needs}]'")
            try:
                out[key] = optional.settings(**{**optional.defaults(experiment), **table})
            except (TypeError, ValueError) as err:
                raise ValueError(f"logging.{key}: {err}") from None
    return out
