"""Host-side logger: TensorBoard event files (tensorboardX) and ``metrics.jsonl``, same records.

Tags follow DESIGN.md: ``train/<metric>``, ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``,
``charts/episodic_return``, ``charts/episodic_length``, ``time/fps``, ``eval/mean_reward``; the
step is always the number of environment steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import jax
import numpy as np
from numpy.typing import ArrayLike
from tensorboardX import summary
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

from rollax.logging.run_dir import write_text_atomically

__all__ = ["HPARAM_METRICS", "Logger", "image_grid", "to_scalar"]

# what TensorBoard's HPARAMS tab compares runs by (each run's latest value of these tags)
HPARAM_METRICS = ("eval/mean_reward", "rollout/ep_rew_mean")

# Quoted so each line stays valid JSON; float("NaN") / float("-Infinity") read them back.
_NON_FINITE_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def to_scalar(tag: str, value: Any) -> float:
    """Bring one metric (Python number, NumPy or JAX array of size 1) to a host float."""
    if isinstance(value, (int, float, np.number, np.bool_)):  # the loop's host metrics
        return float(value)
    array = np.asarray(jax.device_get(value))
    if array.size != 1:
        raise ValueError(f"metric {tag!r} must be a scalar, got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"metric {tag!r} must be numeric, got dtype {array.dtype}")
    return float(array.reshape(()))


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else _NON_FINITE_JSON[str(value)]


def image_grid(images: ArrayLike, padding: int = 1) -> np.ndarray:
    """Tile ``images`` ``[B, H, W]`` or ``[B, H, W, C]`` (C in 1, 3, 4; values in [0, 1]) into
    one ``[rows*(H+p)-p, cols*(W+p)-p, 3 or 4]`` float image, ``cols = ceil(sqrt(B))``."""
    images = np.asarray(jax.device_get(images), dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"images must have shape [B, H, W] or [B, H, W, C] with C in (1, 3, 4), "
            f"got {np.shape(images)}"
        )
    if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError(
            f"images must be finite and in [0, 1], got min {np.nanmin(images):.3g}, "
            f"max {np.nanmax(images):.3g}"
        )
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    count, height, width, channels = images.shape
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.ones(
        (rows * (height + padding) - padding, cols * (width + padding) - padding, channels),
        dtype=np.float32,
    )
    for index, image in enumerate(images):
        top, left = (index // cols) * (height + padding), (index % cols) * (width + padding)
        grid[top : top + height, left : left + width] = image
    return grid


class EventFile:
    """One TensorBoard event file, written in the caller's thread.

    tensorboardX's `SummaryWriter` hands events to a background thread through a queue, and its
    `flush()` does not wait for that queue: a process killed after `flush()` lost its last
    records. Here `add` writes to the file's buffer at once, so `flush()` puts every record
    added so far on disk. A record added `flush_secs` after the last flush flushes too.
    """

    def __init__(self, log_dir: Path, flush_secs: float, purge_step: int | None) -> None:
        self._file = EventsWriter(str(log_dir / "events"))
        self.path = Path(self._file._file_name)  # tensorboardX names it (time, host)
        self._flush_secs = flush_secs
        self._next_flush = time.monotonic() + flush_secs
        if purge_step is not None:  # as SummaryWriter: TensorBoard hides older events >= it
            self._file.write_event(Event(step=purge_step, file_version="brain.Event:2"))
            self._file.write_event(Event(step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def add(self, record: Any, step: int) -> None:
        self._file.write_event(Event(wall_time=time.time(), step=step, summary=record))
        if time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._next_flush = time.monotonic() + self._flush_secs

    def close(self) -> None:
        self._file.close()


class Logger:
    """Writes scalars to TensorBoard and ``metrics.jsonl`` in ``log_dir``; hyperparameters to
    TensorBoard's HPARAMS tab plus ``config.json``/``config.toml``; images as PNGs too."""

    def __init__(self, log_dir: str | Path, *, flush_secs: int = 30, purge_step: int | None = None) -> None:
        """`purge_step` (on resume): TensorBoard hides this run's events at steps >= it."""
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.log_dir / "metrics.jsonl"
        self._events = EventFile(self.log_dir, flush_secs, purge_step)
        self._jsonl = self.jsonl_path.open("a", encoding="utf-8")
        self._reported_non_finite: set[str] = set()
        self._closed = False

    # -- scalars -----------------------------------------------------------------------------
    def log_scalars(
        self, metrics: Mapping[str, Any], step: int, prefix: str | None = None
    ) -> None:
        """Log every ``tag -> scalar`` at environment step ``step`` as one JSONL record and one
        TensorBoard event; with ``prefix`` a bare name ``m`` becomes ``prefix/m`` (names with a
        ``/`` are kept)."""
        self._check_open()
        step = self._check_step(step)
        record: dict[str, Any] = {"step": step}
        values = []
        for name, value in metrics.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"metric names must be non-empty strings, got {name!r}")
            tag = f"{prefix}/{name}" if prefix and "/" not in name else name
            if tag == "step":
                raise ValueError("'step' is reserved for the x-axis; pass it as `step`")
            scalar = to_scalar(tag, value)
            if not math.isfinite(scalar) and tag not in self._reported_non_finite:
                self._reported_non_finite.add(tag)  # once per tag: no flood from a diverged run
                warnings.warn(
                    f"non-finite value {scalar} for {tag!r} at step {step} "
                    f"(logged as-is; further ones for this tag are not reported)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            record[tag] = _json_number(scalar)
            values.append(Summary.Value(tag=tag, simple_value=scalar))
        if values:
            with _naming_the_file(self._events.path):  # one event: each costs a pure-Python checksum
                self._events.add(Summary(value=values), step)
        with _naming_the_file(self.jsonl_path):
            self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")

    def log_scalar(self, tag: str, value: Any, step: int) -> None:
        """Log one scalar (see ``log_scalars``)."""
        self.log_scalars({tag: value}, step)

    # -- text, hyperparameters ---------------------------------------------------------------
    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Write ``text`` (Markdown) to TensorBoard's text tab under ``tag``."""
        self._check_open()
        self._events.add(summary.text(tag, text), self._check_step(step))

    def log_hparams(self, hparams: Mapping[str, Any] | Any, toml_text: str | None = None, *,
                    metrics: Sequence[str] = HPARAM_METRICS,
                    session: Mapping[str, Any] | None = None) -> None:
        """Save the resolved config (dict or dataclass) as ``config.json`` (and ``config.toml``
        when its text is given) in the run dir, and give TensorBoard's HPARAMS tab this run: the
        flattened config (``agent.optimizer.learning_rate``, ...) with ``session`` on top (values
        of this folder alone, e.g. its seed; not saved in ``config.json``), compared by
        ``metrics`` (scalar tags; HPARAMS shows each one's latest value in this run)."""
        self._check_open()
        if dataclasses.is_dataclass(hparams) and not isinstance(hparams, type):
            hparams = dataclasses.asdict(hparams)
        if not isinstance(hparams, Mapping):
            raise TypeError(f"hparams must be a dict or dataclass, got {type(hparams).__name__}")
        try:
            as_json = json.dumps(hparams, indent=2, sort_keys=True, default=_json_default)
        except (TypeError, ValueError) as err:
            raise ValueError(f"hyperparameters are not JSON-serialisable: {err}") from None
        # atomic: a resume rewrites the run's only config
        write_text_atomically(self.log_dir / "config.json", as_json + "\n")
        values = {key: _hparam_value(value) for key, value in
                  {**flatten_dotted(hparams), **(session or {})}.items() if value is not None}
        experiment, session_start, _ = summary.hparams(values, dict.fromkeys(metrics, 0.0))
        self._events.add(experiment, 0)  # the plugin reads names from here, values from ssi
        self._events.add(session_start, 0)
        if toml_text is not None:
            (self.log_dir / "config.toml").write_text(toml_text, encoding="utf-8")
            self._events.add(summary.text("config_toml", f"```toml\n{toml_text}\n```"), 0)

    # -- images ------------------------------------------------------------------------------
    def log_images(self, tag: str, images: ArrayLike, step: int) -> Path:
        """Write ``images`` ``[B, H, W]`` or ``[B, H, W, C]`` in [0, 1] as one grid to
        TensorBoard and to ``images/<tag>_<step>.png``; returns the PNG path."""
        import matplotlib.image

        self._check_open()
        step = self._check_step(step)
        grid = image_grid(images)
        self._events.add(summary.image(tag, grid, dataformats="HWC"), step)
        png = self.log_dir / "images" / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', tag)}_{step}.png"
        png.parent.mkdir(exist_ok=True)
        scale = max(1, 256 // max(grid.shape[:2]))  # 8x8 digits: enlarge (nearest) to be seen
        matplotlib.image.imsave(png, grid.repeat(scale, axis=0).repeat(scale, axis=1))
        return png

    # -- lifecycle ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Push buffered records to disk (call between jitted chunks and before exiting)."""
        if not self._closed:
            with _naming_the_file(self.jsonl_path):
                self._jsonl.flush()
            with _naming_the_file(self._events.path):
                self._events.flush()

    def close(self) -> None:
        """Flush and close both files; further logging raises ``RuntimeError``."""
        if not self._closed:
            self._closed = True  # also when a full disk fails the last flush: closed, not retried
            try:
                with _naming_the_file(self.jsonl_path):
                    self._jsonl.close()  # flushes
            finally:
                with _naming_the_file(self._events.path):
                    self._events.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"logger for {self.log_dir} is closed")

    @staticmethod
    def _check_step(step: Any) -> int:
        as_int = int(np.asarray(jax.device_get(step)))
        if as_int != step or as_int < 0:
            raise ValueError(f"step must be a non-negative integer, got {step!r}")
        return as_int


@contextlib.contextmanager
def _naming_the_file(path: Path) -> Iterator[None]:
    """A failed buffered write (a full disk) names no file: give it the one being written."""
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def _json_default(value: Any) -> Any:
    """Make config values JSON-friendly: arrays and NumPy scalars, paths, tuples."""
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} value {value!r}")


def _hparam_value(value: Any) -> str | bool | float:
    """A number, bool or string as HPARAMS shows it; anything else (a list, a table) as JSON."""
    if isinstance(value, (str, bool, int, float)):
        return value
    return json.dumps(value, default=_json_default)


def flatten_dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: nested settings named by their dotted keys (the
    HPARAMS names, the keys a resume conflict names)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_dotted(value, f"{name}."))
        else:
            flat[name] = value
    return flat
