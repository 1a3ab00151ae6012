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
    if logging.early_stopping:
        callbacks.append(_configured(EarlyStopping, logging.early_stopping, "early_stopping"))
    if logging.profiler:
        directory = {"log_dir": f"{logging.root}/{experiment.name}/profile", **logging.profiler}
        callbacks.append(JAXProfiler(_configured(ProfilingConfig, directory, "profiler")))
    if logging.wandb:
        config = {"name": experiment.name, "config": experiment.to_dict(), **logging.wandb}
        callbacks.append(WandbLoggerCallback(_configured(WandbLoggerConfig, config, "wandb")))
    if progress and logging.progress:
        callbacks.append(ProgressBarCallback(total=total_steps, initial=start_step,
                                             desc=experiment.name))
    return callbacks


def _configured(factory, kwargs: dict, key: str):
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ValueError(f"logging.{key}: {err}") from None
