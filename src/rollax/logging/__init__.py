"""Host-side logging (TensorBoard + JSONL), run directories, checkpoints, callbacks, plots."""

from rollax.logging.callbacks import (
    Callback,
    CallbackList,
    CheckpointConfig,
    EarlyStopping,
    JAXProfiler,
    ModelCheckpoint,
    ProfilingConfig,
    ProgressBarCallback,
    TensorBoardLoggerCallback,
    WandbLoggerCallback,
    WandbLoggerConfig,
)
from rollax.logging.checkpoint import available_steps, load_checkpoint, save_checkpoint
from rollax.logging.episode_stats import EpisodeStats
from rollax.logging.logger import Logger
from rollax.logging.run_dir import claim_run_folder, make_run_dir, new_timestamp
from rollax.logging.shutdown import ShutdownRequested, graceful_shutdown

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointConfig",
    "EarlyStopping",
    "EpisodeStats",
    "JAXProfiler",
    "Logger",
    "ModelCheckpoint",
    "ProfilingConfig",
    "ProgressBarCallback",
    "ShutdownRequested",
    "TensorBoardLoggerCallback",
    "WandbLoggerCallback",
    "WandbLoggerConfig",
    "available_steps",
    "claim_run_folder",
    "graceful_shutdown",
    "load_checkpoint",
    "make_run_dir",
    "new_timestamp",
    "save_checkpoint",
]
