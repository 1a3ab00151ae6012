"""Run directories: ``<root>/<experiment>/<timestamp>/seed_<k>/``, never overwritten."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

__all__ = ["make_run_dir", "new_timestamp"]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


def new_timestamp() -> str:
    """The current local time as ``YYYYmmdd-HHMMSS``; share one across the seeds of a run."""
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


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
    if not experiment or not _SAFE_NAME.match(experiment):
        raise ValueError(
            f"experiment must be a non-empty name of letters, digits, '.', '_', '+', '-'; "
            f"got {experiment!r}"
        )
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
