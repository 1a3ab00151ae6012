"""The benchmarks' one timing helper: a whole fresh process's wall seconds (`run_process`), and
the best of N calls of jitted work (`best_seconds`). Importing it imports no jax."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the repository root


def run_process(argv: list[str], *, env: dict | None = None, cwd: Path | None = None,
                timeout: float | None = None, check: bool = True, capture: bool = True
                ) -> tuple[float, subprocess.CompletedProcess]:
    """`python ARGV` in a fresh process (on CPU unless `env` sets `JAX_PLATFORMS`, in the
    repository root unless `cwd` is given): its whole wall seconds and the completed process."""
    env = dict(os.environ if env is None else env)
    env.setdefault("JAX_PLATFORMS", "cpu")
    output = {"capture_output": True} if capture else {"stdout": subprocess.DEVNULL,
                                                       "stderr": subprocess.DEVNULL}
    start = time.perf_counter()
    process = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT if cwd is None else cwd,
                             timeout=timeout, check=check, text=True, **output)
    return time.perf_counter() - start, process


def best_seconds(call: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` calls of `call()`, each timed until its result is ready."""
    import jax

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        best = min(best, time.perf_counter() - start)
    return best
