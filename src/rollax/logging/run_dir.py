"""Run directories: ``<root>/<experiment>/<timestamp>/seed_<k>/``, never overwritten or shared."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

__all__ = ["claim_run_folder", "make_run_dir", "new_timestamp", "newest_run"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")
_RUN_NAME = re.compile(r"^(\d{8}-\d{6})(?:-(\d+))?$")  # a timestamp, then -2, -3, ... if taken


def new_timestamp() -> str:
    """The current local time as ``YYYYmmdd-HHMMSS``; share one across the seeds of a run."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def claim_run_folder(root: str | Path, experiment: str) -> Path:
    """Create ``root/experiment/<timestamp>/`` for a new run, or ``<timestamp>-2`` (``-3``, ...)
    when a run started in the same second: each ``mkdir`` is an atomic claim, so concurrent
    runs never share a folder. ``PermissionError`` naming the path when it cannot be made."""
    _check_name(experiment)
    parent = Path(root) / experiment
    stamp = new_timestamp()
    folder, suffix = parent / stamp, 1
    try:
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                folder.mkdir()  # exist_ok=False: the claim
                return folder
            except FileExistsError:
                suffix += 1
                folder = parent / f"{stamp}-{suffix}"
    except OSError as err:
        raise PermissionError(f"cannot create a run folder under {parent}: {err}") from err


def newest_run(experiment_dir: str | Path) -> Path | None:
    """The newest run folder (``<timestamp>[-N]``) in ``experiment_dir`` that has checkpoints,
    or None."""
    runs = [(match[1], int(match[2] or 1), p) for p in Path(experiment_dir).iterdir()
            if (match := _RUN_NAME.match(p.name)) and (p / "checkpoints").is_dir()]
    return max(runs)[2] if runs else None


def _check_name(experiment: str) -> None:
    if not experiment or not _SAFE_NAME.match(experiment):
        raise ValueError(
            f"experiment must be a non-empty name of letters, digits, '.', '_', '+', '-'; "
            f"got {experiment!r}"
        )


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
    if not timestamp or not _SAFE_NAME.match(timestamp):
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
