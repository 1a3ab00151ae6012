"""Model weights trained on first use and cached, one `.npz` file per config under the cache
root's `models/` (`rollax.cache.models_dir`): the digit models, the token warm start.

Why `.npz` rather than orbax: the models are a few hundred KiB of float32 arrays; one zip file
written to a temporary name and moved with `os.replace` is atomic on POSIX, needs no async
machinery or directory layout, and zip's per-member CRC makes a truncated or flipped file fail
to load (we then warn and retrain) instead of loading garbage.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def cached_or_trained(path: Path, build: Callable[[], nnx.Module],
                      train: Callable[[], tuple[nnx.Module, dict[str, Any]]], what: str,
                      force: bool = False) -> tuple[nnx.Module, dict[str, Any]]:
    """`(model, report)`: `build()` filled from the cache file `path`, or (missing, unreadable
    or `force`) `train()`'s model, then written there. The report gains `source` ("cache" or
    "trained"), `path` and, when trained, `train_seconds`.

    Training holds a lock file beside `path`: runs started together train a missing model once,
    and the others wait for it, then read it."""
    cached = None if force else _read_cached(path, build, what)
    if cached is not None:
        return cached
    with _training_lock(path, what):
        cached = None if force else _read_cached(path, build, what)  # another run trained it
        if cached is not None:
            return cached
        # the first run of a preset that needs the model waits here (seconds to a minute): say why
        print(f"pretraining {what} (first use; cached afterwards in {path.parent})...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        model, report = train()
        report["train_seconds"] = round(time.perf_counter() - start, 2)
        print(f"pretrained {what} in {report['train_seconds']:.1f} s", file=sys.stderr, flush=True)
        write_weights(path, model, report)
    return model, {**report, "source": "trained", "path": str(path)}


def _read_cached(path: Path, build: Callable[[], nnx.Module], what: str
                 ) -> tuple[nnx.Module, dict[str, Any]] | None:
    """The cached model and its report, or None when the file is missing or unreadable."""
    if not path.exists():
        return None
    model = nnx.eval_shape(build)  # shapes only: every value comes from the file
    try:
        report = read_weights(path, model)
    except Exception as error:  # noqa: BLE001  (any unreadable file is rebuilt)
        warnings.warn(
            f"cached {what} weights at {path} are unreadable ({type(error).__name__}: "
            f"{error}); retraining", stacklevel=5,
        )
        return None
    return model, {**report, "source": "cache", "path": str(path)}


@contextlib.contextmanager
def _training_lock(path: Path, what: str):
    """An exclusive `flock` on `<path>.lock` (POSIX; where there is no `fcntl`, no lock)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process pretraining {what}...", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_weights(path: Path, model: nnx.Module, report: dict[str, Any]) -> None:
    """Atomic write: a temporary file in the same directory, then `os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(nnx.state(model))]
    arrays = {f"leaf_{i}": leaf for i, leaf in enumerate(leaves)}
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, num_leaves=len(leaves), report=json.dumps(report), **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_weights(path: Path, model: nnx.Module) -> dict[str, Any]:
    """Load weights into `model` (checking count and shapes); the stored report."""
    state = nnx.state(model)
    template, treedef = jax.tree.flatten(state)
    with np.load(path, allow_pickle=False) as file:
        if int(file["num_leaves"]) != len(template):
            raise ValueError(f"{int(file['num_leaves'])} arrays stored, model has {len(template)}")
        leaves = [file[f"leaf_{i}"] for i in range(len(template))]
        report = json.loads(str(file["report"]))
    for i, (stored, expected) in enumerate(zip(leaves, template, strict=True)):
        if stored.shape != expected.shape or stored.dtype != expected.dtype:
            raise ValueError(f"array {i}: stored {stored.shape} {stored.dtype}, "
                             f"model expects {expected.shape} {expected.dtype}")
        if not np.all(np.isfinite(stored)):
            raise ValueError(f"array {i} holds non-finite values")
    # device arrays, as after training: NumPy leaves would be written in place by
    # `variable[...] = ...`, reaching every `nnx.clone` of the model that shares them
    nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(leaf) for leaf in leaves]))
    return report
