"""The callbacks that make up a run directory, attached by `rollax.train` (chosen by the
preset's `[logging]` table; see `rollax.trainer.callbacks.default_callbacks`):

- `MetricsLogger`: per seed, every scalar to `metrics.jsonl` and TensorBoard, the config.
- `Samples`: the env's sample pictures, or a token task's completions as text, before training
  and at each evaluation (tag `samples`).
- `BestCheckpoint`: per seed, the model params at its best greedy evaluation.
- `ResumeCheckpoint`: the stacked training state of all seeds, for `--resume`.
- `ResultWriter`: `results.json` and `learning_curves.png` after a run that ended normally.

Layout of a run directory::

    <root>/<experiment>/<timestamp>/
        checkpoints/<step>/          stacked training state of all seeds (for --resume), with
                                     rollax_sha256.json (its files' checksums, checked on load)
        seed_<k>/metrics.jsonl       every scalar, one JSON record per (step, group of tags)
        seed_<k>/events.out.*        the same scalars for TensorBoard
        seed_<k>/config.json         the resolved experiment
        seed_<k>/checkpoints/best/<step>/   that seed's model params at its best greedy eval
        results.json  learning_curves.png

Every chunk's records are flushed before the chunk's checkpoint, so a killed run loses at
most the chunk in flight. Resuming rewinds the run directory to the checkpoint: each seed's
`metrics.jsonl` keeps only records with `step <= checkpoint step` (rewritten atomically),
TensorBoard purges later events, and best-model checkpoints newer than it are removed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from rollax.logging.callbacks import Callback, Chunk, Evaluation, improved
from rollax.logging.checkpoint import (
    available_steps,
    load_checkpoint,
    load_metadata,
    save_checkpoint,
)
from rollax.logging.logger import Logger
from rollax.logging.plot import pyplot, read_records
from rollax.logging.run_dir import write_text_atomically
from rollax.networks.normalization import SAVED_VARIABLES

# 3: the training state is {"train": TrainState(model_optimizer, algorithm), "reference",
# "source" (the batch source's state), "key"}; the metadata records the run's experiment (what
# a resume trusts: `rollax.run.resume`)
CHECKPOINT_FORMAT = 3

__all__ = ["BestCheckpoint", "MetricsLogger", "ResultWriter", "ResumeCheckpoint", "Samples",
           "model_params", "restore", "truncate_metrics", "write_results"]


class MetricsLogger(Callback):
    """One `Logger` per seed: trainer metrics as `train/<name>` at every iteration's env step
    (with `train/learning_rate`), episode statistics (SB3 and CleanRL names), `time/fps` (this
    seed's env steps per second, per chunk), evaluations as `eval/<name>`, the config in
    `config.json` and TensorBoard's HPARAMS tab."""

    def __init__(self) -> None:
        self.loggers: list[Logger] = []
        self._last_eval_step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        if trainer.resume_step is None:
            self.loggers = [Logger(d) for d in trainer.seed_dirs]
            self._log_hparams(trainer)
            return
        kept = [truncate_metrics(seed_dir / "metrics.jsonl", trainer.resume_step) for seed_dir in trainer.seed_dirs]
        if any(r["step"] == trainer.resume_step and "eval/mean_reward" in r for r in kept[0]):
            self._last_eval_step = trainer.resume_step  # a finished run resumed: not logged twice
            if trainer.resume_step >= trainer.plan.total_steps:
                return  # nothing left to log: no new event files, config or pictures
        # TensorBoard drops this run's events after the checkpoint, as metrics.jsonl does
        self.loggers = [Logger(d, purge_step=trainer.resume_step + 1) for d in trainer.seed_dirs]
        self._log_hparams(trainer)  # the same config, or a new budget.total_steps

    def _log_hparams(self, trainer: Any) -> None:
        """`config.json` and TensorBoard's HPARAMS, where each seed folder shows its own seed
        (and a sweep's its combination's values)."""
        for logger, seed, experiment in zip(self.loggers, trainer.seeds, trainer.seed_experiments, strict=True):
            logger.log_hparams(experiment.to_dict(), session={"seed": seed})

    def on_chunk_end(self, trainer: Any, chunk: Chunk) -> None:
        num_iterations = next(iter(chunk.metrics.values())).shape[1]
        for s, logger in enumerate(self.loggers):
            for k in range(num_iterations):
                step = chunk.iteration_step(k)
                logger.log_scalars({f"train/{name}": values[s, k]  # train/rewards/<name>/mean too
                                    for name, values in chunk.metrics.items()}, step)
                logger.log_scalars(chunk.rollout[s][k], step)
            # seeds train side by side in one program: each advanced chunk.fps / S steps per second
            logger.log_scalars({"time/fps": chunk.fps / len(trainer.seeds)}, chunk.step)
            logger.flush()

    def on_evaluation(self, trainer: Any, evaluation: Evaluation) -> None:
        if evaluation.step == self._last_eval_step:  # a stop right after a periodic evaluation
            return
        self._last_eval_step = evaluation.step
        for s, (logger, returns) in enumerate(zip(self.loggers, evaluation.returns)):
            extra = {f"eval/{name}": np.asarray(v)[s] for name, v in evaluation.metrics.items()}
            logger.log_scalars({"eval/mean_reward": float(np.mean(returns)), **extra}, evaluation.step)
            logger.flush()

    def on_train_end(self, trainer: Any) -> None:
        for logger in self.loggers:
            logger.close()


class Samples(Callback):
    """The policy's samples per seed under one tag, `samples`, at the env step they show (0
    before training, then at each evaluation), so TensorBoard's step slider compares them: a
    grid of greedy pictures for envs with a `render` hook, a table of prompts, completions and
    rewards for token tasks; the same conditions (prompts) each time."""

    def __init__(self, metrics: MetricsLogger) -> None:
        self.metrics = metrics
        self._last_step: int | None = None

    def _draw(self, trainer: Any, tag: str) -> None:
        self._last_step = trainer.step
        images, texts = trainer.render_samples(), trainer.sample_texts()
        for s, logger in enumerate(self.metrics.loggers):
            if images is not None:
                logger.log_images(tag, np.clip(np.asarray(images[s]), 0.0, 1.0), trainer.step)
            if texts is not None:
                logger.log_text(tag, texts[s], trainer.step)

    def on_train_begin(self, trainer: Any) -> None:
        if trainer.resume_step is None:
            self._draw(trainer, "samples")

    def on_evaluation(self, trainer: Any, evaluation: Evaluation) -> None:
        if evaluation.step != self._last_step:  # a stop right after a periodic evaluation
            self._draw(trainer, "samples")


class BestCheckpoint(Callback):
    """Per seed, the model params at its best evaluation so far by `monitor` (`eval/mean_reward`,
    the greedy return, or one of the env's `eval/<name>` metrics), in
    `seed_<k>/checkpoints/best/<step>` (one kept)."""

    def __init__(self, monitor: str = "eval/mean_reward", mode: str = "max") -> None:
        if not monitor.startswith("eval/") or mode not in ("max", "min"):
            raise ValueError(f"BestCheckpoint ranks evaluations: monitor must be 'eval/<name>' and "
                             f"mode 'max' or 'min', got {monitor!r}, {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best: list[float] = []
        self._last_step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        self.best = [math.nan] * len(trainer.seeds)
        if trainer.resume_step is not None:
            self.best = [_rewind_best(d / "checkpoints" / "best", trainer.resume_step)
                         for d in trainer.seed_dirs]

    def _value(self, evaluation: Evaluation, s: int) -> float:
        if self.monitor == "eval/mean_reward":
            return float(np.mean(evaluation.returns[s]))
        name = self.monitor.removeprefix("eval/")
        if name not in evaluation.metrics:
            raise ValueError(f"BestCheckpoint: {self.monitor!r} is not an evaluation metric of this "
                             f"env; available: {['eval/mean_reward', *(f'eval/{k}' for k in evaluation.metrics)]}")
        return float(np.asarray(evaluation.metrics[name])[s])

    def on_evaluation(self, trainer: Any, evaluation: Evaluation) -> None:
        if evaluation.step == self._last_step:  # a stop right after a periodic evaluation
            return
        self._last_step = evaluation.step
        for s in range(len(trainer.seeds)):
            value = self._value(evaluation, s)
            if improved(value, self.best[s], self.mode):
                self.best[s] = value
                save_checkpoint(trainer.seed_dirs[s] / "checkpoints" / "best", evaluation.step,
                                model_params(trainer.host_state, s),
                                {"env_steps": evaluation.step, "monitor": self.monitor, "value": value,
                                 "eval_mean_reward": float(np.mean(evaluation.returns[s]))},
                                max_to_keep=1)


class ResumeCheckpoint(Callback):
    """The stacked training state of all seeds in `checkpoints/<step>` (two kept): every
    `every_seconds` of training, at the chunk where a stop is asked (signal, early stop,
    `stop_at_step`; attach it after the callbacks that may ask), and at the end.
    `rollax train --resume RUN_DIR` continues from the newest."""

    def __init__(self, every_seconds: float = 60.0) -> None:
        self.every_seconds = every_seconds
        self._last_save: float | None = None  # the clock starts with the first chunk
        self._saved_step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        self._saved_step = trainer.resume_step  # resuming a finished run saves nothing twice

    def on_chunk_end(self, trainer: Any, chunk: Chunk) -> None:
        if trainer.outcome == "failed":  # a diverged chunk is logged, never checkpointed
            return
        if self._last_save is None:
            self._last_save = time.perf_counter()
        if trainer.callbacks.should_stop or time.perf_counter() - self._last_save > self.every_seconds:
            self._save(trainer)

    def on_train_end(self, trainer: Any) -> None:
        if trainer.outcome in ("finished", "stopped"):  # no-op when this step is already saved
            self._save(trainer)

    def _save(self, trainer: Any) -> None:
        if trainer.step == self._saved_step:
            return
        stats = [s.state_dict() for s in trainer.episode_stats]
        save_checkpoint(trainer.run_dir / "checkpoints", trainer.step, trainer.host_state,
                        {"format": CHECKPOINT_FORMAT, "iteration": trainer.iteration, "env_steps": trainer.step,
                         "episode_stats": stats, "experiment": trainer.experiment.to_dict()},
                        max_to_keep=2)
        self._saved_step, self._last_save = trainer.step, time.perf_counter()


class ResultWriter(Callback):
    """After a run that finished or was stopped (signal, early stop): `results.json`, and
    `learning_curves.png` when `plot` (a plot that cannot be drawn warns instead of failing).

    matplotlib takes about 0.4 s to import, a tenth of a warm CartPole run: with `plot`, a
    background thread imports it once training has begun (the main thread then mostly waits
    on XLA), so the plot at the end only draws."""

    def __init__(self, plot: bool = True) -> None:
        self.plot = plot
        self._importing: threading.Thread | None = None

    def on_train_begin(self, trainer: Any) -> None:
        if self.plot and "matplotlib.pyplot" not in sys.modules:
            self._importing = threading.Thread(target=_import_pyplot, daemon=True,
                                               name="rollax-import-matplotlib")
            self._importing.start()

    def on_train_end(self, trainer: Any) -> None:
        if self._importing is not None:
            self._importing.join()
        if trainer.result is None:
            return
        write_results(trainer.result)
        if self.plot:
            from rollax.logging.plot import plot_runs

            try:
                plot_runs([trainer.run_dir], trainer.run_dir / "learning_curves.png")
            except (ValueError, OSError) as err:  # no curve yet, a full disk, ulimit -f
                warnings.warn(f"no learning-curve plot for {trainer.run_dir}: {err}", RuntimeWarning,
                              stacklevel=2)


def _import_pyplot() -> None:
    """`pyplot()`, ahead of `plot_runs`; any failure here is met again, and reported, when it draws.
    The import holds the GIL most of its time: at Python's 5 ms switch interval the training
    loop waited that long each time it took the GIL back from XLA (0.2-0.35 s of a 1 s CartPole
    run), so the interval is 0.1 ms while it imports."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        pyplot()
    except Exception:  # noqa: BLE001, S110
        pass
    finally:
        sys.setswitchinterval(interval)


def model_params(state: dict, seed_index: int) -> nnx.State:
    """One seed's saved model (its parameters and observation statistics, `SAVED_VARIABLES`)
    from the stacked training state (`state["train"].model_optimizer` = split
    `(model, optimizer)`, leading seed axis)."""
    model_state = state["train"].model_optimizer[0]
    params = nnx.filter_state(model_state, SAVED_VARIABLES)
    # copied to the host first: indexing the device array would compile a slicing program
    # per parameter shape
    return jax.tree.map(lambda x: np.asarray(x)[seed_index], params)


def truncate_metrics(path: Path, max_step: int) -> list[dict]:
    """Keep the records of `metrics.jsonl` at `path` with `step <= max_step` (read as
    `read_records` reads them: a torn last line from a killed run is dropped with a warning);
    rewritten atomically when anything goes. Returns the records kept."""
    if not path.exists():
        return []
    lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    kept = [record for record in read_records(path) if record["step"] <= max_step]
    if len(kept) < lines:
        write_text_atomically(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
    return kept


def restore(run_dir: Path, state: dict, stats: list) -> tuple[dict, int, int]:
    """Load the newest complete checkpoint of `run_dir` into `state`'s structure (and the
    episode statistics into `stats`); returns `(state, iteration, env step)`. Writes nothing.
    A checkpoint of an earlier training-state format is a ValueError saying so."""
    directory = Path(run_dir) / "checkpoints"
    try:
        loaded, metadata = load_checkpoint(directory, target=state)
    except ValueError:
        metadata = load_metadata(directory)
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{directory} was written by an earlier rollax (training-state format "
                             f"{metadata.get('format', 1)}, this version reads {CHECKPOINT_FORMAT}): "
                             "it cannot be resumed or evaluated; train a new run") from None
        raise
    for s, saved in zip(stats, metadata["episode_stats"]):
        s.load_state_dict(saved)
    return loaded, int(metadata["iteration"]), int(metadata["env_steps"])


def _rewind_best(best_dir: Path, max_step: int) -> float:
    """Remove best-model checkpoints newer than `max_step`; the best value that remains (NaN:
    none)."""
    if not best_dir.is_dir():
        return math.nan
    for step in available_steps(best_dir):
        if step > max_step:
            shutil.rmtree(best_dir / str(step))
    remaining = available_steps(best_dir)
    if not remaining:
        return math.nan
    return float(load_metadata(best_dir, remaining[-1])["value"])


def write_results(result) -> None:
    """`results.json` in the run directory (atomic): per-seed evaluation (the env's own
    metrics too, e.g. the judge's), timings; `TrainResult.read` reads it back."""
    summary = {"name": result.name, "seeds": result.seeds, "env_steps": result.env_steps,
               "eval_mean_return": result.eval_returns.mean(axis=1).tolist(),
               "eval_metrics": {name: np.asarray(values, float).tolist()
                                for name, values in sorted(result.eval_metrics.items())},
               "train_ep_rew_mean": result.ep_rew_mean, "solved": result.solved,
               "start_step": result.start_step, "compile_seconds": result.compile_seconds,
               "train_seconds": result.train_seconds}
    not_finite: list[str] = []
    summary = _finite_or_null(summary, "", not_finite)
    if not_finite:  # e.g. an env's reward that is NaN: named, and kept out of the JSON numbers
        warnings.warn(f"results of {result.run_dir} that are not finite numbers, written as null: "
                      f"{', '.join(not_finite)}", RuntimeWarning, stacklevel=2)
    write_text_atomically(result.run_dir / "results.json",
                          json.dumps(summary, indent=2, allow_nan=False) + "\n")


def _finite_or_null(value: Any, where: str, not_finite: list[str]) -> Any:
    """`value` with each NaN or infinity replaced by None, its path added to `not_finite`."""
    if isinstance(value, dict):
        return {key: _finite_or_null(item, f"{where}.{key}".strip("."), not_finite)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item, f"{where}[{i}]", not_finite) for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        not_finite.append(where)
        return None
    return value
