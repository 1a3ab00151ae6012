"""Atomic checkpoints on orbax for resuming training.

A checkpoint directory holds one sub-directory per step. orbax writes each step into a
temporary directory and renames it when complete, so a run killed mid-write leaves the
previous steps loadable. Each step stores two items: ``state`` (the pytree, with NNX states
as pure dicts and typed PRNG keys as their raw ``uint32`` data) and ``metadata`` (JSON).

Once orbax has finished a step, ``rollax_sha256.json`` in it records the SHA-256 of each of its
files; loading checks them, so a damaged file is an error naming it instead of wrong numbers
(orbax itself does not notice flipped bytes in array data). A step without the manifest (an
older rollax, or a kill between orbax's commit and the manifest) loads with a warning.

orbax is imported by the functions that use it: its import takes about 0.2 s, which
`import rollax.api` and a run's start need not wait for (a run imports it at its first
checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rollax.logging.run_dir import write_text_atomically

if TYPE_CHECKING:
    import orbax.checkpoint as ocp

__all__ = [
    "available_steps",
    "checkpoint_manager",
    "load_checkpoint",
    "load_metadata",
    "save_checkpoint",
    "save_to_manager",
    "to_storable",
]

MANIFEST = "rollax_sha256.json"
# Private metadata key recording which leaves were typed PRNG keys (path -> impl name).
_KEYS_FIELD = "__rollax_prng_keys__"


def _is_state(node: Any) -> bool:
    return isinstance(node, nnx.State)


def _is_typed_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def to_storable(tree: Any) -> tuple[Any, dict[str, str]]:
    """Turn ``tree`` into arrays orbax can write: NNX states become pure dicts, typed PRNG keys
    their ``key_data``. Returns the storable tree and ``{keypath: key impl}`` of the keys."""
    tree = jax.tree.map(
        lambda node: nnx.to_pure_dict(node) if _is_state(node) else node, tree, is_leaf=_is_state
    )
    key_impls: dict[str, str] = {}

    def convert(path: tuple, leaf: Any) -> Any:
        if _is_typed_key(leaf):
            key_impls[jax.tree_util.keystr(path)] = str(jax.random.key_impl(leaf))
            return jax.random.key_data(leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(convert, tree), key_impls


def _from_storable_with_target(target: Any, restored: Any) -> Any:
    """Rebuild ``target``'s structure (NNX states, typed keys) from restored arrays."""

    def rebuild(template: Any, value: Any) -> Any:
        if _is_state(template):
            state = jax.tree.map(lambda x: x, template)  # a copy: leave the caller's state alone
            nnx.replace_by_pure_dict(state, value)
            return state
        if _is_typed_key(template):
            return jax.random.wrap_key_data(value, impl=jax.random.key_impl(template))
        if isinstance(template, (bool, int, float)):
            return type(template)(value)  # orbax hands Python scalars back as arrays
        return value

    return jax.tree.map(rebuild, target, restored, is_leaf=_is_state)


def _wrap_recorded_keys(restored: Any, key_impls: Mapping[str, str]) -> Any:
    def rewrap(path: tuple, leaf: Any) -> Any:
        impl = key_impls.get(jax.tree_util.keystr(path))
        return leaf if impl is None else jax.random.wrap_key_data(leaf, impl=impl)

    return jax.tree_util.tree_map_with_path(rewrap, restored)


def _check_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    clean = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise TypeError(f"metadata key {key!r} is not a string")
        if key == _KEYS_FIELD:
            raise ValueError(f"metadata key {key!r} is reserved")
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN/inf; keep the value readable
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"metadata[{key!r}] is not JSON-serialisable: {err}") from None
        clean[key] = value
    return clean


def checkpoint_manager(
    directory: str | Path,
    *,
    max_to_keep: int | None = None,
    preservation_policy: Any = None,
    read_only: bool = False,
) -> ocp.CheckpointManager:
    """An orbax manager for ``directory`` with synchronous, atomic saves of ``state`` and
    ``metadata`` items. Read-only managers never create, clean up or delete anything."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    alone = {}
    if jax.process_count() > 1:
        # In a multi-process run each process reads alone and process 0 writes alone
        # (replicated state, see `rollax.run.parallel`): no manager waits at a barrier.
        me = jax.process_index()
        alone = {"multiprocessing_options": ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me})}
        if not read_only:  # orbax creates folders only when every process takes part
            directory.mkdir(parents=True, exist_ok=True)
    if read_only:
        with _absl_quiet():  # it logs that it sets save_interval_steps=0
            options = ocp.CheckpointManagerOptions(read_only=True, create=False, **alone)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if preservation_policy is not None else max_to_keep,
            preservation_policy=preservation_policy,
            enable_async_checkpointing=False,
            create=not alone,
            cleanup_tmp_directories=True,  # leftovers of a run killed mid-write
            **alone,
        )
    with _absl_quiet():  # a read-only manager logs that it is read-only
        return ocp.CheckpointManager(directory, item_names=("state", "metadata"), options=options)


def save_to_manager(
    manager: ocp.CheckpointManager,
    step: int,
    pytree_state: Any,
    metadata: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> None:
    """Write one step through ``manager`` (see ``checkpoint_manager``) in the layout that
    ``load_checkpoint`` reads; ``metrics`` feed orbax's best-N preservation policy."""
    import orbax.checkpoint as ocp

    clean_metadata = _check_json(metadata or {})
    storable, key_impls = to_storable(pytree_state)
    # Host copies: orbax records a device array's sharding, and a checkpoint of a run on 4
    # devices (or processes) would then load only on that topology.
    storable = jax.device_get(storable)
    clean_metadata[_KEYS_FIELD] = key_impls
    if step in manager.all_steps():
        raise ValueError(f"checkpoint step {step} already exists in {manager.directory}")
    step_dir = Path(manager.directory) / str(step)
    with _disk_full_named(step_dir):
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(storable),
                metadata=ocp.args.JsonSave(clean_metadata),
            ),
            metrics=dict(metrics) if metrics is not None else None,
        )
        manager.wait_until_finished()
        if step_dir.is_dir():  # a best-N preservation policy may have dropped it at once
            _write_manifest(step_dir)


@contextlib.contextmanager
def _disk_full_named(step_dir: Path) -> Iterator[None]:
    """A full disk as one `OSError(ENOSPC)` naming the step, with orbax's half-written
    temporary folder removed (its space back for the logs). orbax's writer threads log each
    failed write with a traceback: silenced here, the error itself is raised."""
    _ignore_abandoned_callbacks()
    try:
        with _absl_quiet():
            yield
    except Exception as err:
        text = f"{err!r} {getattr(err, 'strerror', '')}"
        if not any(sign in text for sign in ("RESOURCE_EXHAUSTED", "No space left", "Disk quota")):
            raise
        for tmp in step_dir.parent.glob(f"{step_dir.name}.orbax-checkpoint-tmp*"):
            shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(step_dir)) from None


def _ignore_abandoned_callbacks() -> None:
    """When a save or restore fails, tensorstore finishes the operations orbax abandoned and
    their callbacks find orbax's event loop closed: dozens of "Event loop is closed" tracebacks
    (via `sys.unraisablehook`, from other threads, before and after the error reaches us).
    Installed before each save and restore, once per process; drops those only."""
    previous = sys.unraisablehook
    if getattr(previous, "rollax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        if not (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"):
            previous(unraisable)

    hook.rollax_filter = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _absl_quiet() -> Iterator[None]:
    """orbax's log lines (via absl) off; its errors still raise."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _file_digests(step_dir: Path) -> dict[str, str]:
    """``{path relative to the step: sha256}`` of every file of a checkpoint step."""
    digests = {}
    for path in sorted(step_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            with open(path, "rb") as f:
                digests[path.relative_to(step_dir).as_posix()] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def _write_manifest(step_dir: Path) -> None:
    write_text_atomically(step_dir / MANIFEST,
                          json.dumps({"sha256": _file_digests(step_dir)}, indent=1) + "\n")


def _verify_manifest(step_dir: Path) -> None:
    """ValueError naming the first file of ``step_dir`` that is corrupt, missing or not in its
    manifest; a warning when there is no manifest."""
    path = step_dir / MANIFEST
    if not path.exists():
        warnings.warn(f"checkpoint {step_dir} has no checksum manifest ({MANIFEST}; written by an "
                      "older rollax or killed right after saving): loading it unverified",
                      RuntimeWarning, stacklevel=3)
        return
    try:
        expected = json.loads(path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint {step_dir}: its manifest {MANIFEST} is unreadable: {err}") from None
    actual = _file_digests(step_dir)
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            raise ValueError(f"checkpoint {step_dir} is corrupt: {name} is missing")
        if name not in expected:
            raise ValueError(f"checkpoint {step_dir} is corrupt: {name} is not in its manifest")
        if actual[name] != expected[name]:
            raise ValueError(f"checkpoint {step_dir} is corrupt: {name} does not match its "
                             "recorded checksum")


def _leaf_names(tree: Any) -> dict[str, Any]:
    """``{"a/b/0": leaf}``: dict keys, attributes and indices alike, as orbax stores them."""

    def name(entry: Any) -> str:
        for field in ("key", "name", "idx"):
            if hasattr(entry, field):
                return str(getattr(entry, field))
        return str(entry)

    return {"/".join(name(e) for e in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _check_stored_shapes(state_dir: Path, abstract: Any) -> None:
    """ValueError naming the first leaf whose stored shape or presence differs from the
    target's, checked before orbax reads (whose own error names a storage path, not a leaf,
    and once truncated a NumPy target of another shape silently)."""
    import orbax.checkpoint as ocp

    state_dir = Path(state_dir).absolute()  # orbax reads a relative path's metadata as empty
    try:
        with _absl_quiet(), ocp.StandardCheckpointer() as checkpointer:  # it warns of no step metadata
            stored = _leaf_names(checkpointer.metadata(state_dir).item_metadata)
    except Exception:  # noqa: BLE001 - an unreadable _METADATA: the restore below names it
        return
    wanted = _leaf_names(abstract)
    for name in sorted(stored.keys() | wanted.keys()):
        if name not in stored:
            raise ValueError(f"checkpoint {state_dir.parent} does not match the target: it has no "
                             f"{name!r} (its state was saved by a different program)")
        if name not in wanted:
            raise ValueError(f"checkpoint {state_dir.parent} does not match the target: it holds "
                             f"{name!r}, which the target lacks")
        if tuple(stored[name].shape) != tuple(wanted[name].shape):
            raise ValueError(f"checkpoint {state_dir.parent} does not match the target: {name!r} "
                             f"has shape {tuple(stored[name].shape)} there, the target "
                             f"{tuple(wanted[name].shape)} (a different network, batch or seed "
                             "count?)")


def save_checkpoint(
    directory: str | Path,
    step: int,
    pytree_state: Any,
    metadata: Mapping[str, Any] | None = None,
    *,
    max_to_keep: int | None = 3,
) -> Path:
    """Write ``pytree_state`` (arrays, NNX states, typed PRNG keys) and JSON ``metadata`` as
    step ``step`` of ``directory``, atomically; keep the newest ``max_to_keep`` steps."""
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if max_to_keep is not None and max_to_keep < 1:
        raise ValueError(f"max_to_keep must be >= 1 or None, got {max_to_keep}")
    with checkpoint_manager(directory, max_to_keep=max_to_keep) as manager:
        save_to_manager(manager, step, pytree_state, metadata)
    return Path(directory) / str(step)


def available_steps(directory: str | Path) -> list[int]:
    """Steps of the complete (fully written) checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {directory}")
    # orbax writes a step into `<step>.orbax-checkpoint-tmp-*` and renames it once complete: a
    # folder named by its step alone is complete (listed without orbax's manager, which would
    # start JAX's backends before a resume has split the CPU into the devices it asks for)
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir())


def load_metadata(directory: str | Path, step: int | None = None) -> dict[str, Any]:
    """The JSON metadata of step ``step`` (default: the newest complete one) of ``directory``,
    checked against the step's manifest, without reading the arrays. It reads the JSON file
    orbax wrote (``<step>/metadata/metadata``) itself: orbax's reader starts JAX's backends,
    which a resume on more CPU devices must not do before it has split the CPU."""
    directory = Path(directory)
    steps = available_steps(directory)
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {directory}")
    step_dir = directory / str(steps[-1] if step is None else int(step))
    path = step_dir / "metadata" / "metadata"
    try:
        data = path.read_bytes()
        manifest = step_dir / MANIFEST
        if manifest.exists():
            recorded = json.loads(manifest.read_text())["sha256"].get("metadata/metadata")
            if recorded != hashlib.sha256(data).hexdigest():
                raise ValueError("it does not match its recorded checksum")
        metadata = json.loads(data)
        if not isinstance(metadata, dict):
            raise ValueError("it is not a JSON object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint {step_dir} has no readable metadata ({path}: {err})") from None
    metadata.pop(_KEYS_FIELD, None)
    return metadata


def load_checkpoint(
    directory: str | Path, step: int | None = None, target: Any = None
) -> tuple[Any, dict[str, Any]]:
    """Read step ``step`` (default: the newest complete one) of ``directory``; returns
    ``(pytree, metadata)``. With ``target`` the pytree takes its structure, NNX states and
    dtypes; without it, NNX states come back as pure dicts and PRNG keys as typed keys."""
    import orbax.checkpoint as ocp

    directory = Path(directory)
    steps = available_steps(directory)
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {directory}")
    if step is None:
        step = steps[-1]
    elif int(step) not in steps:
        raise FileNotFoundError(
            f"no checkpoint for step {step} in {directory}; available steps: {steps}"
        )
    step = int(step)
    step_path = directory / str(step)
    _verify_manifest(step_path)
    if target is None:
        state_args = ocp.args.StandardRestore()
    else:
        storable_target, _ = to_storable(target)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), storable_target
        )
        _check_stored_shapes(step_path / "state", abstract)
        state_args = ocp.args.StandardRestore(abstract)
    _ignore_abandoned_callbacks()
    try:
        with checkpoint_manager(directory, read_only=True) as manager:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=state_args, metadata=ocp.args.JsonRestore())
            )
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        raise ValueError(
            f"checkpoint {step_path} is corrupt or does not match the target: "
            f"{type(err).__name__}: {err}"
        ) from err
    metadata = dict(restored["metadata"] or {})
    key_impls = metadata.pop(_KEYS_FIELD, {})
    state = restored["state"]
    if target is None:
        state = _wrap_recorded_keys(state, key_impls)
    else:
        state = _from_storable_with_target(target, state)
    return state, metadata
