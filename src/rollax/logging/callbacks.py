"""The one callback protocol, with the documented hooks (the RL training guide's "Using
Callbacks"), and the documented callbacks.

The same objects serve a user's own loop around `trainer.train_step` and rollax's training
loop (`rollax.train`). Every hook takes the trainer first: any object with ``model``,
``optimizer`` and ``config`` in a hand-written loop; in rollax's loop the `RunContext`
(experiment, seeds, stacked per-seed ``state``, ``step``, run directory, episode statistics).

- `on_train_begin(trainer)`, `on_train_batch_end(trainer, metrics, step)`,
  `on_train_end(trainer)`: the documented hooks.
- `on_chunk_end(trainer, chunk)`: the loop's hook after each jitted chunk, with every seed's
  per-iteration metrics (`Chunk`). By default it calls `on_train_batch_end` with the chunk's
  summary (scalars averaged over seeds), so a callback written for `train_step` loops works
  in the loop unchanged.
- `on_evaluation(trainer, evaluation)`: after each greedy evaluation (`Evaluation`).

``step`` is the x-axis: environment steps done so far (a 0-based batch index works too).
Callbacks never read the loop's locals. The one way to ask for a stop is ``should_stop``: the
loop ends training after a chunk where any callback's is true (its own reasons, a signal or
`stop_at_step`, ask the same way: `StopRequest`). The one best-by-metric rule is `improved`.
Where to add your own: subclass `Callback`, override the hooks you need, pass it to
`rollax.train(experiment, callbacks=[...])`.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import jax
import numpy as np
from flax import nnx

from rollax.logging.checkpoint import checkpoint_manager, load_checkpoint, save_to_manager
from rollax.logging.logger import Logger, to_scalar

__all__ = [
    "Callback",
    "CallbackList",
    "CheckpointConfig",
    "Chunk",
    "EarlyStopping",
    "Evaluation",
    "JAXProfiler",
    "ModelCheckpoint",
    "ProfilingConfig",
    "ProgressBarCallback",
    "StopRequest",
    "TensorBoardLoggerCallback",
    "WandbLoggerCallback",
    "WandbLoggerConfig",
]

Mode = Literal["max", "min"]


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One jitted chunk of K iterations for S seeds.

    `metrics` are the trainer's `{name: [S, K]}`; `episodes` the `(returns, lengths, dones)`
    arrays `[S, K, ...]` of finished episodes; `rollout[s][k]` seed s's episode statistics
    after iteration k (`rollout/ep_rew_mean`, ...); `step` the env step after the chunk; `summary`
    the scalars a plain callback sees (seed means of the last iteration's trainer metrics as
    `train/<name>`, `rollout/ep_rew_mean`, `time/fps`, and `eval/mean_reward` when the chunk
    ended with an evaluation).
    """

    first_iteration: int
    steps_per_iteration: int
    metrics: Mapping[str, np.ndarray]
    episodes: tuple
    rollout: list[list[dict[str, float]]]
    fps: float
    step: int
    summary: Mapping[str, float]

    def iteration_step(self, k: int) -> int:
        """The env step after the chunk's k-th iteration."""
        return (self.first_iteration + k + 1) * self.steps_per_iteration


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Greedy evaluation of every seed: `returns [S, episodes]`, the env's own metrics
    `{name: [S]}`; `final` for the one after training."""

    step: int
    returns: np.ndarray
    metrics: Mapping[str, np.ndarray]
    final: bool = False


class Callback:
    """Base class: every hook is a no-op; ``should_stop`` asks the loop to end training."""

    should_stop: bool = False

    def on_train_begin(self, trainer: Any) -> None:
        """Called once before the first batch."""

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        """Called after each update (or each jitted chunk) with its metrics."""

    def on_chunk_end(self, trainer: Any, chunk: Chunk) -> None:
        """rollax's loop, after each jitted chunk: by default `on_train_batch_end` on its summary."""
        self.on_train_batch_end(trainer, chunk.summary, chunk.step)

    def on_evaluation(self, trainer: Any, evaluation: Evaluation) -> None:
        """rollax's loop, after each greedy evaluation."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once after the last batch, also after an early stop, a shutdown signal or an
        error (in the loop, `run.outcome` says which)."""


class StopRequest(Callback):
    """The training loop's own reasons to stop after a chunk (a signal, `stop_at_step`), asked
    the way any callback asks: `reason` set, `should_stop` true."""

    def __init__(self) -> None:
        self.reason: str | None = None

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        return self.reason is not None


class CallbackList(Callback):
    """Runs each hook of ``callbacks`` in order; ``should_stop`` if any callback asks to."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"{callback!r} is not a rollax.logging.Callback")

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        return any(callback.should_stop for callback in self.callbacks)

    def on_train_begin(self, trainer: Any) -> None:
        for callback in self.callbacks:
            callback.on_train_begin(trainer)

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        for callback in self.callbacks:
            callback.on_train_batch_end(trainer, metrics, step)

    def on_chunk_end(self, trainer: Any, chunk: Chunk) -> None:
        for callback in self.callbacks:
            callback.on_chunk_end(trainer, chunk)

    def on_evaluation(self, trainer: Any, evaluation: Evaluation) -> None:
        for callback in self.callbacks:
            callback.on_evaluation(trainer, evaluation)

    def on_train_end(self, trainer: Any) -> None:
        """Every callback's hook runs, even when an earlier one raises (the first error is
        raised after), so a failing callback cannot keep logs unflushed."""
        errors = []
        for callback in self.callbacks:
            try:
                callback.on_train_end(trainer)
            except Exception as err:  # noqa: BLE001 (re-raised below)
                errors.append(err)
        if errors:
            raise errors[0]


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _monitored_value(metrics: Mapping[str, Any], monitor: str) -> float:
    """``metrics[monitor]`` (or ``metrics["train/" + monitor]``) as a host float."""
    for key in (monitor, f"train/{monitor}"):
        if key in metrics:
            return to_scalar(key, metrics[key])
    raise ValueError(f"monitored metric {monitor!r} not in metrics; available: {sorted(metrics)}")


def improved(value: float, best: float, mode: Mode, min_delta: float = 0.0) -> bool:
    """The one best-by-metric rule: `value` beats `best` by more than `min_delta` in the
    direction of `mode` ("max" or "min"); NaN never wins, and anything beats a NaN best."""
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class TensorBoardLoggerCallback(Callback):
    """Logs each batch's metrics as ``<prefix>/<name>`` at ``step`` through a ``Logger`` (given,
    or created for a log dir and then closed at the end). Names with a ``/`` keep their tag."""

    def __init__(self, logger_or_logdir: Logger | str | Path, prefix: str = "train") -> None:
        self._owns_logger = not isinstance(logger_or_logdir, Logger)
        self.logger = Logger(logger_or_logdir) if self._owns_logger else logger_or_logdir
        self.prefix = prefix

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        self.logger.log_scalars(metrics, step, prefix=self.prefix)

    def on_train_end(self, trainer: Any) -> None:
        if self._owns_logger:
            self.logger.close()
        else:
            self.logger.flush()


def significant(value: float, digits: int = 3) -> str:
    """`value` with `digits` significant digits, never in exponent form from 10**digits up:
    -0.07342 -> "-0.0734", 499.87 -> "500", 12345.6 -> "12346"."""
    if math.isfinite(value) and abs(value) >= 10**digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


class ProgressBarCallback(Callback):
    """A tqdm bar over ``total`` steps with the mean return (``ret``: ``rollout/ep_rew_mean``
    or ``mean_reward``, 3 significant digits), one rate and the ETA. In rollax's loop the rate
    is the last chunk's env steps per second over all seeds (`time/fps`), labelled so; in a
    plain loop, steps per second since the first batch; the loop's bar clock starts with its
    first chunk, not the compile before it (elapsed and ETA are training time). Each call advances the bar to ``step``
    and by at least one, so a loop passing a 0-based batch index also ends at ``total``. As in
    tqdm, ``disable=None`` hides the bar when the output is not a terminal; it redraws at most
    every ``mininterval`` seconds (a loop's bar moves once per jitted chunk)."""

    reward_keys = ("rollout/ep_rew_mean", "mean_reward", "train/mean_reward", "eval/mean_reward")
    bar_format = "{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}{postfix}]"

    def __init__(
        self,
        total: int | None = None,
        desc: str = "train",
        unit: str = "step",
        leave: bool = True,
        disable: bool | None = None,
        file: IO[str] | None = None,
        initial: int = 0,
        mininterval: float = 0.1,
    ) -> None:
        self.total, self.desc, self.unit, self.initial = total, desc, unit, initial
        self.leave, self.disable, self.file, self.mininterval = leave, disable, file, mininterval
        self.bar: Any = None
        self._start_time = 0.0
        self._rate_label, self._seeds = "steps/s", 0

    def on_train_begin(self, trainer: Any) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, unit=self.unit,
                        unit_scale=True, leave=self.leave, disable=self.disable, file=self.file,
                        dynamic_ncols=True, mininterval=self.mininterval,
                        bar_format=self.bar_format)
        self._seeds = len(getattr(trainer, "seeds", None) or ())
        if self._seeds:  # rollax's loop: `time/fps` counts every seed's env steps
            self._rate_label = "env steps/s" + (f" (all {self._seeds} seeds)" if self._seeds > 1 else "")
        self._start_time = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        if self.bar is None:
            self.on_train_begin(trainer)
        position = max(int(step), self.bar.n + 1)
        shown = []
        for key in self.reward_keys:
            if key in metrics:
                shown.append(f"ret={significant(to_scalar(key, metrics[key]))}")
                break
        elapsed = time.perf_counter() - self._start_time
        rate = metrics.get("time/fps", (position - self.initial) / elapsed if elapsed > 0 else None)
        if rate is not None:
            shown.append(f"{significant(to_scalar('time/fps', rate))} {self._rate_label}")
        if "time/fps" in metrics and self.bar.n == self.initial and to_scalar("time/fps", rate) > 0:
            # the loop's first chunk: the bar's clock (elapsed, ETA) starts with training, not
            # with the compile before it (the loop prints how long that took)
            took = (position - self.bar.n) * max(self._seeds, 1) / to_scalar("time/fps", rate)
            self.bar.start_t = self.bar.last_print_t = time.time() - took
        self.bar.set_postfix_str(", ".join(shown), refresh=False)
        self.bar.update(position - self.bar.n)

    def on_train_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """Where and what ``ModelCheckpoint`` keeps: the ``save_top_k`` best steps by ``monitor``
    (-1: all) plus the newest one when ``save_last``; saves every ``every_n_steps`` calls."""

    dirpath: str | Path
    monitor: str = "mean_reward"
    mode: Mode = "max"
    save_top_k: int = 1
    save_last: bool = True
    every_n_steps: int = 1

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.save_top_k < -1:
            raise ValueError(f"save_top_k must be >= -1, got {self.save_top_k}")
        if self.every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {self.every_n_steps}")
        if self.save_top_k == 0 and not self.save_last:
            raise ValueError("save_top_k=0 with save_last=False would keep no checkpoint")


class ModelCheckpoint(Callback):
    """Saves ``nnx.state(trainer.model)`` and ``nnx.state(trainer.optimizer)`` with orbax
    (atomic temp-dir-and-rename writes) and keeps the top-k steps by the monitored metric.
    Read a step back with ``restore`` or ``load_checkpoint(dirpath, step)``."""

    def __init__(self, config: CheckpointConfig) -> None:
        from orbax.checkpoint import checkpoint_managers as policies

        self.config = config
        self.dirpath = Path(config.dirpath)
        descending = config.mode == "min"  # BestN keeps the last n after sorting

        def score(metrics: Mapping[str, float]) -> float:
            value = metrics["score"]
            if math.isnan(value):  # a diverged step ranks last
                return math.inf if descending else -math.inf
            return value

        keep: list[Any] = []
        if config.save_top_k != 0:
            keep.append(policies.BestN(
                get_metric_fn=score, reverse=descending,
                n=None if config.save_top_k == -1 else config.save_top_k,
                keep_checkpoints_without_metrics=False,
            ))
        if config.save_last:
            keep.append(policies.LatestN(n=1))
        self._policy = policies.AnyPreservationPolicy(keep)
        self._manager: Any = None
        self._calls = 0
        self.best_step: int | None = None
        self.best_score = math.nan
        self.last_step: int | None = None

    def on_train_begin(self, trainer: Any) -> None:
        if not (hasattr(trainer, "model") and hasattr(trainer, "optimizer")):
            raise TypeError("ModelCheckpoint saves a trainer's model and optimizer; rollax.train "
                            "checkpoints through [logging] checkpoint = true (ResumeCheckpoint, "
                            "BestCheckpoint) instead")
        if self._manager is None:
            self._manager = checkpoint_manager(self.dirpath, preservation_policy=self._policy)

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        self._calls += 1
        if self._calls % self.config.every_n_steps:
            return
        self.on_train_begin(trainer)
        value = _monitored_value(metrics, self.config.monitor)
        state = {"model": nnx.state(trainer.model), "optimizer": nnx.state(trainer.optimizer)}
        metadata = {"step": int(step), self.config.monitor: value}
        save_to_manager(self._manager, int(step), state, metadata, metrics={"score": value})
        self.last_step = int(step)
        if improved(value, self.best_score, self.config.mode):
            self.best_step, self.best_score = int(step), value

    def on_train_end(self, trainer: Any) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def restore(self, trainer: Any, step: int | None = None) -> dict[str, Any]:
        """Load ``step`` (default: the best step, else the newest) into ``trainer.model`` and
        ``trainer.optimizer`` in place; returns the checkpoint's metadata."""
        step = self.best_step if step is None else step
        target = {"model": nnx.state(trainer.model), "optimizer": nnx.state(trainer.optimizer)}
        state, metadata = load_checkpoint(self.dirpath, step, target)
        nnx.update(trainer.model, state["model"])
        nnx.update(trainer.optimizer, state["optimizer"])
        return metadata


@dataclasses.dataclass(frozen=True)
class ProfilingConfig:
    """Trace the batches after step ``start_step`` up to and including ``end_step``."""

    log_dir: str | Path
    start_step: int = 10
    end_step: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(
                f"need 0 <= start_step < end_step, got {self.start_step}, {self.end_step}"
            )


class JAXProfiler(Callback):
    """Runs ``jax.profiler.start_trace``/``stop_trace`` around a window of steps; open the
    trace in TensorBoard's profile plugin or Perfetto."""

    def __init__(self, config: ProfilingConfig) -> None:
        self.config = config
        self.active = False

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        if not self.active and self.config.start_step <= step < self.config.end_step:
            Path(self.config.log_dir).mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.config.log_dir))
            self.active = True
        elif self.active and step >= self.config.end_step:
            self._stop(metrics)

    def on_train_end(self, trainer: Any) -> None:
        if self.active:
            self._stop({})

    def _stop(self, metrics: Mapping[str, Any]) -> None:
        jax.block_until_ready(list(metrics.values()))  # include the traced step's device work
        jax.profiler.stop_trace()
        self.active = False


class EarlyStopping(Callback):
    """Sets ``should_stop`` once ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` consecutive batches; ``stopped_step`` records where.

    In rollax's loop a batch is a chunk, and chunks whose summary lacks the monitored metric
    (``eval/mean_reward`` between evaluations, ``rollout/*`` before the first finished episode)
    are skipped; a metric that never appears is warned about at the end."""

    def __init__(
        self, monitor: str = "mean_reward", mode: Mode = "max", patience: int = 3,
        min_delta: float = 0.0,
    ) -> None:
        _check_mode(mode)
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best = math.nan
        self.wait = 0
        self.should_stop = False
        self.stopped_step: int | None = None
        self._seen, self._last_names = False, []

    def on_train_begin(self, trainer: Any) -> None:
        self.best, self.wait, self.should_stop, self.stopped_step = math.nan, 0, False, None
        self._seen, self._last_names = False, []

    def on_chunk_end(self, trainer: Any, chunk: Chunk) -> None:
        self._last_names = sorted(chunk.summary)
        if self.monitor in chunk.summary or f"train/{self.monitor}" in chunk.summary:
            self._seen = True
            self.on_train_batch_end(trainer, chunk.summary, chunk.step)

    def on_train_end(self, trainer: Any) -> None:
        if self._last_names and not self._seen:
            warnings.warn(f"EarlyStopping: monitored metric {self.monitor!r} never appeared; "
                          f"available: {self._last_names}", RuntimeWarning, stacklevel=2)

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        value = _monitored_value(metrics, self.monitor)
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience and not self.should_stop:
            self.should_stop, self.stopped_step = True, int(step)


@dataclasses.dataclass(frozen=True)
class WandbLoggerConfig:
    """Weights & Biases run settings; ``mode="offline"`` by default (sync later)."""

    project: str
    name: str | None = None
    config: Mapping[str, Any] | None = None
    log_every_n_steps: int = 1
    mode: Literal["online", "offline", "disabled"] = "offline"
    dir: str | Path | None = None
    prefix: str = "train"

    def __post_init__(self) -> None:
        if self.log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {self.log_every_n_steps}")
        if self.mode not in ("online", "offline", "disabled"):
            raise ValueError(f"mode must be online, offline or disabled, got {self.mode!r}")


class WandbLoggerCallback(Callback):
    """Logs each ``log_every_n_steps``-th batch's metrics to a wandb run (``wandb`` is an
    optional extra, imported only here)."""

    def __init__(self, config: WandbLoggerConfig) -> None:
        try:
            self._wandb = importlib.import_module("wandb")
        except ImportError as err:
            raise ImportError(
                "WandbLoggerCallback needs wandb: pip install 'rollax[wandb]'"
            ) from err
        self.config = config
        self.run: Any = None
        self._calls = 0

    def on_train_begin(self, trainer: Any) -> None:
        config = self.config
        self.run = self._wandb.init(
            project=config.project, name=config.name, mode=config.mode,
            config=dict(config.config or {}), dir=None if config.dir is None else str(config.dir),
        )

    def on_train_batch_end(self, trainer: Any, metrics: Mapping[str, Any], step: int) -> None:
        self._calls += 1
        if self._calls % self.config.log_every_n_steps:
            return
        if self.run is None:
            self.on_train_begin(trainer)
        prefix = self.config.prefix
        logged = {
            (f"{prefix}/{name}" if prefix and "/" not in name else name): to_scalar(name, value)
            for name, value in metrics.items()
        }
        self.run.log(logged, step=int(step))

    def on_train_end(self, trainer: Any) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

