"""A run spread over devices and hosts with JAX's own runtime: a `seeds x data` mesh, and
`jax.distributed` for several processes.

The compiled program stays the single-device program over the whole batch; the mesh only
says where its arrays live, and XLA's partitioner inserts the collectives. So a sharded run
computes what one device would (up to the order of float sums): seeds split along `seeds`,
each seed's env batch (or generation batch) along `data`, parameters and optimizer state
replicated, gradients of the global-batch loss all-reduced, random keys drawn as on one device
(`jax_threefry_partitionable`). Between chunks the whole state is replicated, so every process
can read metrics and write checkpoints without further collectives.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rollax.errors import RunFailed
from rollax.run.experiment import ParallelSpec

MAX_CPU_DEVICES = 64  # devices one host's CPU is split into at most (each costs memory)

SEEDS, DATA = "seeds", "data"


def split_the_cpu(devices: int) -> None:
    """Give JAX's CPU backend `devices` devices (as `JAX_NUM_CPU_DEVICES` does), so that a run
    asking for them on a machine without an accelerator gets them, for instance its seeds on
    two cores (`--devices 2 --set parallel.seed_devices=2`). Only before JAX has started and
    when `JAX_NUM_CPU_DEVICES` is not set, and into at most `MAX_CPU_DEVICES`; an
    accelerator's devices are unaffected."""
    if devices <= 1 or "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    with contextlib.suppress(RuntimeError):  # JAX runs already: make_mesh names what to set
        # each CPU device costs memory: more than MAX_CPU_DEVICES is left to make_mesh to refuse
        jax.config.update("jax_num_cpu_devices", min(devices, MAX_CPU_DEVICES))


def make_mesh(spec: ParallelSpec, num_seeds: int, batch: int) -> Mesh | None:
    """The run's `seeds x data` mesh over the first `spec.devices` devices, or None for one
    device (the default program, unchanged). ValueError naming what does not divide."""
    available = jax.device_count()
    devices = spec.devices or available
    if devices > available:
        hint = (f"a CPU is split into at most {MAX_CPU_DEVICES} devices"
                if devices > MAX_CPU_DEVICES else
                f"on CPU, JAX_NUM_CPU_DEVICES={devices} splits the host into that many")
        raise ValueError(f"parallel.devices={devices}, but JAX sees {available} device(s) "
                         f"({jax.devices()[0].platform}); {hint}")
    if devices == 1:
        return None
    data_devices = devices // spec.seed_devices
    if num_seeds % spec.seed_devices:
        raise ValueError(f"seeds={num_seeds} must be a multiple of parallel.seed_devices="
                         f"{spec.seed_devices}")
    if batch % data_devices:
        raise ValueError(f"budget.num_envs={batch} must be a multiple of the {data_devices} "
                         "devices of the data axis (parallel.devices / parallel.seed_devices)")
    # Auto axes: XLA propagates the shardings below through the unchanged program.
    return jax.make_mesh((spec.seed_devices, data_devices), (SEEDS, DATA),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=jax.devices()[:devices])


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place_replicated(tree, mesh: Mesh):
    """`tree` (this process's whole copy, identical in every process) as arrays replicated
    over `mesh`. Built from host copies: `device_put` cannot reach other processes' devices."""
    sharding = replicated(mesh)

    def place(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(place(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        local = np.asarray(x)
        return jax.make_array_from_callback(local.shape, sharding, lambda index: local[index])

    return jax.tree.map(place, tree)


def shard_batch(tree, mesh: Mesh | None, axis: int = 0):
    """Constrain every array of one seed's `tree` to be split along `data` at `axis` (inside a
    `vmap` over seeds with `spmd_axis_name=SEEDS`, the seed axis is split along `seeds`)."""
    if mesh is None:
        return tree
    spec = P(*([None] * axis), DATA)
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)), tree)


def host_local(tree):
    """`tree` with each array that spans other processes' devices replaced by this process's
    replica (the programs' outputs are replicated, so it is the whole array): what a single
    process may index, draw or save without the others taking part."""
    def local(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x.addressable_data(0)
        return x

    return jax.tree.map(local, tree)


class CoordinatorUnreachable(RunFailed):
    """A process could not join the multi-process run; the message names the coordinator."""


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout_seconds: int = 60) -> None:
    """Join a multi-process run through `jax.distributed.initialize`: from the arguments, or
    (all None) from the cluster environment JAX detects itself (SLURM, Kubernetes, ...).

    Call before anything touches a device. CPU processes exchange data through gloo. Every
    process runs the same program; only process 0 writes logs and checkpoints.
    """
    explicit = (coordinator, num_processes, process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError("--coordinator, --num-processes and --process-id go together "
                         f"(got {coordinator!r}, {num_processes!r}, {process_id!r})")
    if num_processes is not None:
        if num_processes < 1:
            raise ValueError(f"--num-processes={num_processes} must be >= 1")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process-id={process_id} must be in [0, {num_processes - 1}] "
                             f"for --num-processes={num_processes}")
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--coordinator={coordinator!r} must be HOST:PORT")
        if process_id != 0:  # process 0 is the coordinator; the others wait for it to listen
            _wait_for_coordinator(host, int(port), timeout_seconds, process_id, num_processes)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout_seconds)
    except Exception as err:  # the runtime's errors do not say which flag to check
        raise CoordinatorUnreachable(f"could not join the multi-process run at coordinator {coordinator!r} "
                           f"within {timeout_seconds} s as process {process_id} of "
                           f"{num_processes}: {err}") from err


def _wait_for_coordinator(host: str, port: int, timeout_seconds: float, process_id: int,
                          num_processes: int) -> None:
    """Return once `host:port` accepts connections; RuntimeError after `timeout_seconds`.
    JAX's own client aborts the whole process (no Python error) when the coordinator never
    answers, so an unreachable one is caught here first."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise CoordinatorUnreachable(
                    f"could not join the multi-process run at coordinator '{host}:{port}' within "
                    f"{timeout_seconds} s as process {process_id} of {num_processes}: nothing "
                    f"listens there ({err}); start process 0 first, or check --coordinator and "
                    "the firewall") from err
            time.sleep(0.2)
