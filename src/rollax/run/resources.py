"""What a run needs of the machine, checked before the work that would fail on it: devices,
memory, open files and the file-size limit. Each shortfall is a `ValueError` naming the need,
what is there and the setting to change, instead of XLA's `RESOURCE_EXHAUSTED`, a machine
that swaps for minutes, or `Too many open files` half way through."""

from __future__ import annotations

import resource
from typing import Any

import jax
import numpy as np

FILES_PER_SEED = 3  # metrics.jsonl, TensorBoard's event file, a checkpoint being written
FILES_BESIDES = 64  # what the process holds besides (libraries, XLA, orbax's threads)
GIB = 2**30


def tree_bytes(tree: Any) -> int:
    """Bytes of the arrays (or shapes) of a pytree."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)
               if hasattr(x, "shape") and hasattr(x, "dtype")
               and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def available_memory() -> int | None:
    """Bytes free on this process's first device: an accelerator's from its allocator, the
    host's (`MemAvailable`) for CPU devices; None where neither can be read."""
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except jax.errors.JaxRuntimeError:  # a backend without memory statistics
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(parts: dict[str, int]) -> None:
    """`parts` (what needs how many bytes) must fit in the memory available."""
    needed, free = sum(parts.values()), available_memory()
    if free is None or needed <= free:
        return
    listed = ", ".join(f"{name} {size / GIB:.2f} GiB" for name, size in parts.items())
    raise ValueError(f"this run needs about {needed / GIB:.1f} GiB ({listed}) but "
                     f"{free / GIB:.1f} GiB is free on {jax.local_devices()[0].platform}; make it smaller "
                     "(seeds, budget.num_envs, budget.num_steps, agent.network, the task's lengths)")


def check_open_files(seeds: int) -> None:
    """Room for every seed's writers under the open-file limit (`ulimit -n`): the soft limit is
    raised to the hard one where that is needed and allowed."""
    needed = FILES_BESIDES + FILES_PER_SEED * seeds
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or needed <= soft:
        return
    if hard == resource.RLIM_INFINITY or needed <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY
                                                     else max(needed, min(hard, 4 * needed)), hard))
        return
    raise ValueError(f"{seeds} seeds keep about {needed} files open, but this process may open "
                     f"{hard} (ulimit -n); raise the limit, or train fewer seeds per run")


def check_file_size(largest: int) -> None:
    """The largest file a run writes (a checkpoint's arrays) under the file-size limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY and largest > soft:
        raise ValueError(f"this run writes files of about {largest / 2**20:.1f} MiB (its "
                         f"checkpoints), beyond the file-size limit of {soft / 2**20:.2f} MiB "
                         "(ulimit -f); raise the limit, or train with --no-log")
