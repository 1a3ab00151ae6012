"""Host-side logging (TensorBoard + JSONL), run directories, checkpoints, callbacks, plots."""

from rollax.logging.checkpoint import available_steps, load_checkpoint, save_checkpoint
from rollax.logging.episode_stats import EpisodeStats
from rollax.logging.logger import Logger
from rollax.logging.run_dir import make_run_dir, new_timestamp

__all__ = [
    "EpisodeStats",
    "Logger",
    "available_steps",
    "load_checkpoint",
    "make_run_dir",
    "new_timestamp",
    "save_checkpoint",
]
