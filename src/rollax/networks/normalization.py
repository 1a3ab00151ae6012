"""Running statistics, and a policy that sees its observations normalised by them.

`RunningStatistics` is the running mean and variance of Stable-Baselines3's `RunningMeanStd`
(its starting count 1e-4, mean 0, variance 1), merged batch by batch with the parallel update
of Chan, Golub and LeVeque (1979), which gives the statistics of all the samples seen so far
whichever way they are cut into batches.

`NormalizedPolicy` wraps any policy: it normalises each observation by running statistics it
holds as `ObservationStatistics` variables (`(x - mean) / sqrt(var + 1e-8)`, clipped), as
SB3's `VecNormalize` does. The statistics are not `nnx.Param`s, so the optimizer never moves
them; they are part of the model's state, so they are vmapped per seed, checkpointed with the
model, restored on resume, and frozen wherever a saved model acts (`load_agent`, evaluation,
videos). The learner updates them from each batch's observations after its update, so that the
update scores actions with the statistics that chose them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

START_COUNT = 1e-4  # SB3's RunningMeanStd epsilon: the prior weight of mean 0, variance 1
EPSILON = 1e-8  # SB3's VecNormalize epsilon, under the square root


@struct.dataclass
class RunningStatistics:
    """Mean and (population) variance of every sample seen, and how many there were."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def start(cls, shape: tuple[int, ...] = ()) -> RunningStatistics:
        return cls(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32),
                   jnp.asarray(START_COUNT, jnp.float32))

    def update(self, samples: jax.Array) -> RunningStatistics:
        """These statistics merged with `samples [..., *shape]` (every leading axis is samples)."""
        samples = samples.reshape(-1, *self.mean.shape).astype(jnp.float32)
        batch_count = jnp.asarray(samples.shape[0], jnp.float32)
        batch_mean, batch_var = samples.mean(axis=0), samples.var(axis=0)
        total = self.count + batch_count
        delta = batch_mean - self.mean
        mean = self.mean + delta * batch_count / total
        squares = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        return RunningStatistics(mean, squares / total, total)


class ObservationStatistics(nnx.Variable):
    """A policy's running observation statistics: state, not a parameter."""


SAVED_VARIABLES = (nnx.Param, ObservationStatistics)  # what a saved policy holds


class NormalizedPolicy(nnx.Module):
    """`policy` acting on observations normalised by running statistics and clipped to
    `[-clip, clip]`."""

    def __init__(self, policy: nnx.Module, observation_shape: tuple[int, ...], clip: float):
        self.policy, self.clip = policy, float(clip)
        start = RunningStatistics.start(tuple(observation_shape))
        self.mean = ObservationStatistics(start.mean)
        self.var = ObservationStatistics(start.var)
        self.count = ObservationStatistics(start.count)

    @property
    def statistics(self) -> RunningStatistics:
        return RunningStatistics(self.mean[...], self.var[...], self.count[...])

    def normalize(self, observations: jax.Array) -> jax.Array:
        scaled = (observations - self.mean[...]) / jnp.sqrt(self.var[...] + EPSILON)
        return jnp.clip(scaled, -self.clip, self.clip)

    def __call__(self, observations: jax.Array):
        return self.policy(self.normalize(observations))

    def update_statistics(self, observations: jax.Array) -> None:
        """Merge a batch of raw observations `[..., *observation_shape]` into the statistics."""
        statistics = self.statistics.update(observations)
        self.mean[...], self.var[...], self.count[...] = statistics.mean, statistics.var, statistics.count
