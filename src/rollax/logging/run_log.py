"""The training loop's host-side record of a run: per-seed loggers, episode statistics,
checkpoints of the stacked training state, and the final results file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rollax.logging.checkpoint import load_checkpoint, save_checkpoint
from rollax.logging.episode_stats import EpisodeStats
from rollax.logging.logger import Logger
from rollax.logging.run_dir import make_run_dir, new_timestamp


class RunLog:
    """Host-side logging of a run: one `Logger` per seed, episode statistics, checkpoints."""

    def __init__(self, experiment: dict, seeds: list[int], resume: str | Path | None):
        self.enabled = experiment["logging"]["enabled"]
        self.stats = [EpisodeStats() for _ in seeds]
        self.loggers, self.run_dir = [], None
        if not self.enabled:
            return
        if resume is not None:
            self.run_dir = Path(resume)
            seed_dirs = [self.run_dir / f"seed_{seed}" for seed in seeds]
            missing = [str(d) for d in seed_dirs if not d.is_dir()]
            if missing:
                raise FileNotFoundError(f"cannot resume: missing seed directories {missing}")
        else:
            timestamp = new_timestamp()
            seed_dirs = [make_run_dir(experiment["logging"]["root"], experiment=experiment["name"],
                                      seed=seed, timestamp=timestamp) for seed in seeds]
            self.run_dir = seed_dirs[0].parent
        self.loggers = [Logger(d) for d in seed_dirs]
        if resume is None:
            for logger in self.loggers:
                logger.log_hparams(experiment)

    def chunk(self, first_iteration: int, steps_per_iteration: int, metrics: dict, episodes, fps: float):
        """Log `[S, K]` metrics and `[S, K, ...]` episode arrays of one chunk."""
        returns, lengths, dones = episodes
        num_iterations = next(iter(metrics.values())).shape[1]
        for s, stats in enumerate(self.stats):
            for k in range(num_iterations):
                stats.update(returns[s, k], lengths[s, k], dones[s, k])
                if not self.enabled:
                    continue
                step = (first_iteration + k + 1) * steps_per_iteration
                logger = self.loggers[s]
                logger.log_scalars({name: values[s, k] for name, values in metrics.items()}, step,
                                   prefix="train")
                logger.log_scalars(stats.metrics(), step)
            if self.enabled:
                self.loggers[s].log_scalars({"time/fps": fps}, step)

    def evaluation(self, step: int, eval_returns: np.ndarray) -> None:
        for logger, returns in zip(self.loggers, eval_returns):
            logger.log_scalars({"eval/mean_reward": float(np.mean(returns))}, step)

    def save(self, state: dict, iteration: int, step: int) -> None:
        """Checkpoint the stacked training state (all seeds) atomically."""
        if not self.enabled:
            return
        stats = [s.state_dict() for s in self.stats]
        save_checkpoint(self.run_dir / "checkpoints", step, state,
                        {"iteration": iteration, "env_steps": step, "episode_stats": stats},
                        max_to_keep=2)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def restore(run_dir: Path, state: dict, stats: list) -> int:
    """Load the newest complete checkpoint of `run_dir` into `state`'s structure; returns the iteration."""
    loaded, metadata = load_checkpoint(run_dir / "checkpoints", target=state)
    for s, saved in zip(stats, metadata["episode_stats"]):
        s.load_state_dict(saved)
    return loaded, int(metadata["iteration"])


def write_results(result) -> None:
    """`results.json` in the run directory (atomic): per-seed evaluation, timings."""
    summary = {"name": result.name, "seeds": result.seeds, "env_steps": result.env_steps,
               "eval_mean_return": result.eval_returns.mean(axis=1).tolist(),
               "train_ep_rew_mean": result.ep_rew_mean, "solved": result.solved,
               "compile_seconds": result.compile_seconds, "train_seconds": result.train_seconds}
    path = result.run_dir / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)
