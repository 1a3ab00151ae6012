"""Many seeds as one program: every per-seed function is `vmap`ped over a leading seed axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def over_seeds(fn, spmd_axis_name: str | None = None):
    """`jax.vmap` over the leading seed axis of every argument; one seed calls `fn` directly,
    since a vmap of size 1 only adds compile time. `spmd_axis_name`: the mesh axis the seeds
    are split along (sharding constraints inside `fn` then keep them split)."""
    def batched(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            return jax.tree.map(lambda x: x[None], fn(*jax.tree.map(lambda x: x[0], args)))
        return jax.vmap(fn, spmd_axis_name=spmd_axis_name)(*args)

    return batched


def seed_by_seed(fn):
    """`jax.lax.map` over the leading seed axis: the seeds one after another in one program.

    For initialisation: a `vmap`ped orthogonal initializer is a batched QR, which XLA:CPU runs
    through LAPACK's parallel batch map; two of them in flight at once deadlocked the CPU
    thread pool on 2 cores (a run hung before its first iteration, in about half the starts
    of a 3-seed vae_ppo). Unbatched, each QR is one LAPACK call.
    """
    return lambda *args: jax.lax.map(lambda xs: fn(*xs), args)


def eval_keys(seeds: list[int] | jax.Array, index: int) -> jax.Array:
    """Evaluation keys `[S]`: a fixed function of each seed and the evaluation's index."""
    return _eval_keys(jnp.asarray(seeds, jnp.int32), index)


@jax.jit  # one program for every evaluation (run eagerly, it compiled three small ones)
def _eval_keys(seeds: jax.Array, index: jax.Array) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), index))(seeds)
