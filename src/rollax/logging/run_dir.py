"""Run directories: ``<root>/<experiment>/<timestamp>[_<label>]/seed_<k>/``, never overwritten
or shared. The label (e.g. ``learning_rate=0.001``, from ``--set``) tells runs of one experiment
apart in TensorBoard's run list and in ``rollax plot``."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from pathlib import Path

__all__ = ["LABEL", "claim_run_folder", "is_folder_name", "make_run_dir", "new_timestamp",
           "newest_run", "overrides_label", "write_text_atomically"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*")  # a folder name, not a path
LABEL = re.compile(r"[A-Za-z0-9._+=,-]*")  # what a run folder's label may hold
MAX_LABEL = 80
# a timestamp, then -2, -3, ... if taken, then the label
_RUN_NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?(?:_[A-Za-z0-9._+=,-]+)?$")


def overrides_label(overrides: list[tuple[str, object]]) -> str:
    """A run-folder label from `(key, value)` overrides: each key's last part and its value
    (a key given twice: its last value, the one used), joined by ``,``
    (``learning_rate=0.001,seed=3``); ``logging.*`` keys (where and how a run is written) are
    left out, other characters become ``-``. A label longer than 80 characters keeps the whole
    parts that fit and ends in ``+<digest of the whole label>``, so that runs with different
    overrides never share a label."""
    parts: dict[str, str] = {}
    for key, value in overrides:
        if not key.startswith("logging."):
            parts.pop(key, None)  # a later value replaces it, in its new place
            parts[key] = re.sub(r"[^A-Za-z0-9._+=-]", "-", f"{key.rsplit('.', 1)[-1]}={value}")
    label = ",".join(parts.values())
    if len(label) <= MAX_LABEL:
        return label
    tail = "+" + hashlib.sha256(label.encode()).hexdigest()[:8]
    kept = ""
    for part in parts.values():
        joined = f"{kept},{part}" if kept else part
        if len(joined) + 1 + len(tail) > MAX_LABEL:
            break
        kept = joined
    return f"{kept},{tail}" if kept else f"{label[:MAX_LABEL - len(tail)]}{tail}"


def new_timestamp() -> str:
    """The current local time as ``YYYYmmdd-HHMMSS``; share one across the seeds of a run."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def claim_run_folder(root: str | Path, experiment: str, label: str = "") -> Path:
    """Create ``root/experiment/<timestamp>[_<label>]/`` for a new run, or ``<timestamp>-2``
    (``-3``, ...) when a run started in the same second: each ``mkdir`` is an atomic claim, so
    concurrent runs never share a folder. ``PermissionError`` naming the path when it cannot be
    made."""
    _check_name(experiment)
    if not LABEL.fullmatch(label) or len(label) > MAX_LABEL:
        raise ValueError(f"run label {label!r} must be at most {MAX_LABEL} letters, digits or "
                         "'._+=,-'")
    parent = Path(root) / experiment
    stamp = new_timestamp()
    tail = f"_{label}" if label else ""
    folder, suffix = parent / f"{stamp}{tail}", 1
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                folder.mkdir()  # exist_ok=False: the claim
                return folder
            except FileExistsError:
                suffix += 1
                folder = parent / f"{stamp}-{suffix}{tail}"
    except OSError as err:
        raise PermissionError(f"cannot create a run folder under {parent}: {err}") from err


def newest_run(experiment_dir: str | Path) -> Path | None:
    """The newest run folder (``<timestamp>[-N][_<label>]``) in ``experiment_dir`` that has
    checkpoints, or None."""
    runs = [(match[1], int(match[2] or 1), p) for p in Path(experiment_dir).iterdir()
            if (match := _RUN_NAME.match(p.name)) and (p / "checkpoints").is_dir()]
    return max(runs)[2] if runs else None


def write_text_atomically(path: Path, text: str) -> None:
    """`path` holds either its old content or `text`, never a torn mix (a kill, a full disk)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def is_folder_name(name: str) -> bool:
    """Letters, digits and '._+-', not starting with '.' and without '..': one folder below
    the log root, never a path out of it."""
    return bool(_SAFE_NAME.fullmatch(name)) and ".." not in name


def _check_name(experiment: str) -> None:
    if not is_folder_name(experiment):
        raise ValueError("experiment must be a folder name: letters, digits and '._+-', not "
                         f"starting with '.' and without '..'; got {experiment!r}")


def make_run_dir(
    root: str | Path = "runs",
    *,
    experiment: str,
    seed: int,
    timestamp: str | None = None,
) -> Path:
    """Create and return ``root/experiment/timestamp/seed_<seed>/``; if it already exists, a
    fresh ``seed_<seed>-2`` (``-3``, ...) is created instead. Raises ``PermissionError`` naming
    the path when it cannot be created or written, so a run fails before training."""
    _check_name(experiment)
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    timestamp = new_timestamp() if timestamp is None else timestamp
    if not timestamp or not LABEL.fullmatch(timestamp):  # a labelled run folder's name too
        raise ValueError(f"timestamp must be a plain directory name, got {timestamp!r}")
    parent = Path(root) / experiment / timestamp
    try:
        parent.mkdir(parents=True, exist_ok=True)
        run_dir = parent / f"seed_{int(seed)}"
        suffix = 1
        while True:
            try:
                run_dir.mkdir()  # exist_ok=False: atomic claim, safe against concurrent seeds
                break
            except FileExistsError:
                suffix += 1
                run_dir = parent / f"seed_{int(seed)}-{suffix}"
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot create a writable run directory under {parent}: {err}"
        ) from err
    if not os.access(run_dir, os.W_OK):
        raise PermissionError(f"run directory {run_dir} is not writable")
    return run_dir
