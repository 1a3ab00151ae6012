"""The training loop's host-side record of a run: per-seed loggers, episode statistics,
checkpoints of the stacked training state, per-seed best models, results and the curve PNG.

Layout of a run directory::

    <root>/<experiment>/<timestamp>/
        checkpoints/<step>/          stacked training state of all seeds (for --resume)
        seed_<k>/metrics.jsonl       every scalar, one JSON record per (step, group of tags)
        seed_<k>/events.out.*        the same scalars for TensorBoard
        seed_<k>/config.json         the resolved experiment
        seed_<k>/checkpoints/best/<step>/   that seed's model params at its best greedy eval
        results.json  learning_curves.png

Every chunk's records are flushed before the next chunk runs, so a killed run loses at most
the chunk in flight. Resuming rewinds the run directory to the checkpoint: each seed's
`metrics.jsonl` keeps only records with `step <= checkpoint step` (rewritten atomically) and
best-model checkpoints newer than it are removed, so the resumed run appends no duplicates.
TensorBoard event files are append-only: the old file may still show steps after the
checkpoint next to the resumed ones.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from rollax.logging.checkpoint import available_steps, load_checkpoint, save_checkpoint
from rollax.logging.episode_stats import EpisodeStats
from rollax.logging.logger import Logger
from rollax.logging.run_dir import make_run_dir, new_timestamp

__all__ = ["RunLog", "model_params", "restore", "truncate_metrics", "write_results"]


def model_params(state: dict, seed_index: int) -> nnx.State:
    """One seed's model parameters (`nnx.Param` leaves only) from the stacked training state
    (`state["train"]` = split `(model, optimizer)` with a leading seed axis `[S, ...]`)."""
    model_state = state["train"][0]
    params = nnx.filter_state(model_state, nnx.Param)
    return jax.tree.map(lambda x: np.asarray(x[seed_index]), params)


def truncate_metrics(path: Path, max_step: int) -> int:
    """Keep the records of `metrics.jsonl` at `path` with `step <= max_step` (atomic rewrite;
    a torn last line from a killed run is dropped too). Returns the number of records removed."""
    if not path.exists():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            removed += 1
            continue
        if int(record["step"]) <= max_step:
            kept.append(line)
        else:
            removed += 1
    if removed:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return removed


class RunLog:
    """Host-side logging of a run: one `Logger` per seed, episode statistics, checkpoints.

    A fresh run creates its directories here (an unwritable root fails before training); a
    resumed one only checks them, and touches nothing until `restore` has read the checkpoint.
    """

    def __init__(self, experiment: dict, seeds: list[int], resume: str | Path | None):
        logging = experiment["logging"]
        self.enabled = logging["enabled"]
        self.checkpoint = self.enabled and logging["checkpoint"]
        self.plot = self.enabled and logging["plot"]
        self.experiment = experiment
        self.stats = [EpisodeStats() for _ in seeds]
        self.best = [-math.inf for _ in seeds]  # best greedy eval mean per seed
        self._last_eval_step: int | None = None
        self.loggers: list[Logger] = []
        self.run_dir: Path | None = None
        self.seed_dirs: list[Path] = []
        self.resume_dir = None if resume is None else Path(resume)
        if self.resume_dir is not None:
            checkpoints = self.resume_dir / "checkpoints"
            if not available_steps(checkpoints):  # raises FileNotFoundError naming the path
                raise FileNotFoundError(f"cannot resume: no complete checkpoint in {checkpoints}")
            self.seed_dirs = [self.resume_dir / f"seed_{seed}" for seed in seeds]
            missing = [str(d) for d in self.seed_dirs if not d.is_dir()]
            if missing and self.enabled:
                raise FileNotFoundError(f"cannot resume: missing seed directories {missing}")
            self.run_dir = self.resume_dir if self.enabled else None
            return
        if not self.enabled:
            return
        timestamp = new_timestamp()
        self.seed_dirs = [make_run_dir(logging["root"], experiment=experiment["name"], seed=seed,
                                       timestamp=timestamp) for seed in seeds]
        self.run_dir = self.seed_dirs[0].parent
        self.loggers = [Logger(d) for d in self.seed_dirs]
        for logger in self.loggers:
            logger.log_hparams(experiment)

    def restore(self, state: dict) -> tuple[dict, int]:
        """Load the resume directory's newest checkpoint into `state`'s structure, rewind the
        seeds' logs to it and open the loggers; returns `(state, iteration)`."""
        state, iteration, step = _load(self.resume_dir, state, self.stats)
        if self.enabled:
            for s, seed_dir in enumerate(self.seed_dirs):
                truncate_metrics(seed_dir / "metrics.jsonl", step)
                self.best[s] = _rewind_best(seed_dir / "checkpoints" / "best", step)
            # TensorBoard drops this run's events after the checkpoint, as metrics.jsonl does
            self.loggers = [Logger(d, purge_step=step + 1) for d in self.seed_dirs]
        return state, iteration

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

    def evaluation(self, step: int, eval_returns: np.ndarray, eval_metrics: dict | None = None,
                   state: dict | None = None) -> None:
        """Log each seed's greedy eval mean `eval_returns [S, episodes]` (and the env's own
        `eval_metrics {name: [S]}` as `eval/<name>`); with `state`, save the model params of
        every seed whose mean beats its best so far to `seed_k/checkpoints/best/<step>`."""
        if not self.enabled or step == self._last_eval_step:  # a stop right after a periodic eval
            return
        self._last_eval_step = step
        for s, (logger, returns) in enumerate(zip(self.loggers, eval_returns)):
            mean = float(np.mean(returns))
            extra = {f"eval/{name}": np.asarray(v)[s] for name, v in (eval_metrics or {}).items()}
            logger.log_scalars({"eval/mean_reward": mean, **extra}, step)
            if state is not None and self.checkpoint and mean > self.best[s]:
                self.best[s] = mean
                best_dir = self.seed_dirs[s] / "checkpoints" / "best"
                save_checkpoint(best_dir, step, model_params(state, s),
                                {"env_steps": step, "eval_mean_reward": mean}, max_to_keep=1)
            logger.flush()

    def images(self, tag: str, images: np.ndarray | None, step: int) -> None:
        """Per seed, a grid of `images [S, B, H, W]` (None: the env has no pictures) when
        `logging.images` is on."""
        if images is None or not (self.enabled and self.experiment["logging"]["images"]):
            return
        for logger, seed_images in zip(self.loggers, np.asarray(images)):
            logger.log_images(tag, np.clip(seed_images, 0.0, 1.0), step)

    def save(self, state: dict, iteration: int, step: int) -> None:
        """Checkpoint the stacked training state (all seeds) atomically."""
        if not self.checkpoint:
            return
        stats = [s.state_dict() for s in self.stats]
        save_checkpoint(self.run_dir / "checkpoints", step, state,
                        {"iteration": iteration, "env_steps": step, "episode_stats": stats},
                        max_to_keep=2)

    def finish(self, result: Any) -> None:
        """After a run that ended normally: `results.json`, and `learning_curves.png` when
        `logging.plot` is on (a plot that cannot be drawn warns instead of failing the run)."""
        if self.run_dir is None:
            return
        write_results(result)
        if self.plot:
            from rollax.logging.plot import plot_runs

            try:
                plot_runs([self.run_dir], self.run_dir / "learning_curves.png")
            except (ValueError, FileNotFoundError) as err:
                warnings.warn(f"no learning-curve plot for {self.run_dir}: {err}", RuntimeWarning,
                              stacklevel=2)

    def flush(self) -> None:
        for logger in self.loggers:
            logger.flush()

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def _load(run_dir: Path, state: dict, stats: list) -> tuple[dict, int, int]:
    loaded, metadata = load_checkpoint(run_dir / "checkpoints", target=state)
    for s, saved in zip(stats, metadata["episode_stats"]):
        s.load_state_dict(saved)
    return loaded, int(metadata["iteration"]), int(metadata["env_steps"])


def restore(run_dir: Path, state: dict, stats: list) -> tuple[dict, int]:
    """Load the newest complete checkpoint of `run_dir` into `state`'s structure (and the
    episode statistics into `stats`); returns `(state, iteration)`. Writes nothing."""
    loaded, iteration, _ = _load(Path(run_dir), state, stats)
    return loaded, iteration


def _rewind_best(best_dir: Path, max_step: int) -> float:
    """Remove best-model checkpoints newer than `max_step`; the best eval mean that remains."""
    if not best_dir.is_dir():
        return -math.inf
    for step in available_steps(best_dir):
        if step > max_step:
            shutil.rmtree(best_dir / str(step))
    remaining = available_steps(best_dir)
    if not remaining:
        return -math.inf
    _, metadata = load_checkpoint(best_dir, remaining[-1])
    return float(metadata["eval_mean_reward"])


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

