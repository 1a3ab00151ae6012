"""The callbacks a preset's `[logging]` table attaches to a run (before a user's own)."""

from __future__ import annotations

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
    if "early_stopping" in optional:
        callbacks.append(optional["early_stopping"])
    if "profiler" in optional:
        callbacks.append(JAXProfiler(optional["profiler"]))
    if "wandb" in optional:
        callbacks.append(WandbLoggerCallback(optional["wandb"]))
    if progress and logging.progress:  # shown even when the output is not a terminal
        closing.append(ProgressBarCallback(total=total_steps, initial=start_step,
                                           desc=experiment.name, unit="env steps per seed",
                                           disable=False))
    return callbacks, closing


def optional_configs(experiment: Experiment) -> dict:
    """The `[logging]` tables that switch optional callbacks on, built and checked (the preset
    loader calls this too, so a bad table fails before anything runs): `EarlyStopping`,
    `ProfilingConfig`, `WandbLoggerConfig`. ValueError naming `logging.<key>`."""
    logging, out = experiment.logging, {}
    tables = {
        "early_stopping": (EarlyStopping, {}),
        # the loop's steps are env steps at chunk ends: trace the first fifth of the run
        "profiler": (ProfilingConfig, {"log_dir": f"{logging.root}/{experiment.name}/profile",
                                       "start_step": 0,
                                       "end_step": max(1, experiment.budget.total_steps // 5)}),
        "wandb": (WandbLoggerConfig, {"name": experiment.name, "config": experiment.to_dict()}),
    }
    for key, (factory, defaults) in tables.items():
        table = getattr(logging, key)
        if table:
            try:
                out[key] = factory(**{**defaults, **table})
            except (TypeError, ValueError) as err:
                raise ValueError(f"logging.{key}: {err}") from None
    return out
