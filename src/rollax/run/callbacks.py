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
    SampleImages,
)
from rollax.run.experiment import Experiment


def default_callbacks(experiment: Experiment, total_steps: int, start_step: int,
                      progress: bool) -> list[Callback]:
    """In hook order: metrics are flushed before a checkpoint is written, and closed before
    the results and the plot read them."""
    logging = experiment.logging
    callbacks: list[Callback] = []
    if logging.enabled:
        metrics = MetricsLogger()
        callbacks.append(metrics)
        if logging.images:
            callbacks.append(SampleImages(metrics))
        if logging.checkpoint:
            callbacks += [BestCheckpoint(), ResumeCheckpoint(logging.checkpoint_every_seconds)]
        callbacks.append(ResultWriter(plot=logging.plot))
    optional = optional_configs(experiment)
    if "early_stopping" in optional:
        callbacks.append(optional["early_stopping"])
    if "profiler" in optional:
        callbacks.append(JAXProfiler(optional["profiler"]))
    if "wandb" in optional:
        callbacks.append(WandbLoggerCallback(optional["wandb"]))
    if progress and logging.progress:
        callbacks.append(ProgressBarCallback(total=total_steps, initial=start_step,
                                             desc=experiment.name))
    return callbacks


def optional_configs(experiment: Experiment) -> dict:
    """The `[logging]` tables that switch optional callbacks on, built and checked (the preset
    loader calls this too, so a bad table fails before anything runs): `EarlyStopping`,
    `ProfilingConfig`, `WandbLoggerConfig`. ValueError naming `logging.<key>`."""
    logging, out = experiment.logging, {}
    tables = {
        "early_stopping": (EarlyStopping, {}),
        "profiler": (ProfilingConfig, {"log_dir": f"{logging.root}/{experiment.name}/profile"}),
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
