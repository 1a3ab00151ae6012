"""rollax's user cache: one root folder, one sub-folder per kind of cached thing.

`$ROLLAX_CACHE_DIR` is the root (default `$XDG_CACHE_HOME/rollax`, else `~/.cache/rollax`):

- `<root>/jax`: JAX's persistent compilation cache (compiled programs), see
  `enable_compilation_cache`; `ROLLAX_COMPILATION_CACHE=0` turns it off;
- `<root>/models`: pretrained generative-model weights (`rollax.generative.pretrained`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$ROLLAX_CACHE_DIR` if set, else `$XDG_CACHE_HOME/rollax`, else `~/.cache/rollax`."""
    if os.environ.get("ROLLAX_CACHE_DIR"):
        return Path(os.environ["ROLLAX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "rollax"


def models_dir() -> Path:
    """Pretrained model weights: `<root>/models`."""
    return cache_root() / "models"


def compiled_dir() -> Path:
    """JAX's persistent compilation cache: `<root>/jax`."""
    return cache_root() / "jax"


def enable_compilation_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache in `compiled_dir()`).

    Opt out with `ROLLAX_COMPILATION_CACHE=0`; `ROLLAX_CACHE_DIR` moves the cache root.
    """
    if os.environ.get("ROLLAX_COMPILATION_CACHE", "1") == "0":
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(compiled_dir()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
