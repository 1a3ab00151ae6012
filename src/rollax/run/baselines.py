"""`rollax baselines`: every experiment tagged "baseline" trained, judged by its env's
solved threshold, and summarised in one table."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import scipy.stats

from rollax.run.experiment import Experiment
from rollax.run.loop import train

PASS_SHARE = 0.8  # PASS when at least this share of seeds solves (4 of 5)
CONFIDENCE = 0.95


def interquartile_mean(scores: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the middle half of the scores (25% trimmed from each end), the aggregate of
    Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice"): robust to an
    outlier seed, yet less noisy than the median."""
    return scipy.stats.trim_mean(scores, 0.25, axis=axis)


def iqm_interval(scores: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM over seeds (their method; fixed resampling
    seed so a table is reproducible)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < 2 or np.ptp(scores) == 0:  # nothing to resample
        value = float(interquartile_mean(scores))
        return value, value
    interval = scipy.stats.bootstrap((scores,), interquartile_mean, n_resamples=resamples,
                                     confidence_level=CONFIDENCE, method="percentile",
                                     vectorized=True, rng=np.random.default_rng(seed))
    return float(interval.confidence_interval.low), float(interval.confidence_interval.high)


@dataclasses.dataclass(frozen=True)
class BaselineRow:
    name: str
    env_id: str
    means: np.ndarray  # per-seed mean greedy return
    threshold: float
    wall_seconds: float

    @property
    def solved(self) -> int:
        return int((self.means >= self.threshold).sum())

    @property
    def iqm(self) -> float:
        return float(interquartile_mean(self.means))

    @property
    def passed(self) -> bool:
        return self.solved >= PASS_SHARE * len(self.means)


def run_baselines(experiments: Iterable[Experiment], progress: bool = True) -> list[BaselineRow]:
    """Train each experiment (all its seeds at once) and judge it; ValueError before any
    training if one has no solved threshold."""
    experiments = list(experiments)
    for experiment in experiments:
        if experiment.env.solved_threshold is None:
            raise ValueError(f"experiment {experiment.name!r} is tagged 'baseline' but its env "
                             "preset sets no solved_threshold")
    rows = []
    for experiment in experiments:
        result = train(experiment, progress=progress)
        rows.append(BaselineRow(experiment.name, experiment.env.id, result.eval_returns.mean(axis=1),
                                experiment.env.solved_threshold,
                                result.compile_seconds + result.train_seconds))
    return rows


def baseline_table(rows: list[BaselineRow]) -> str:
    """One line per experiment: per-seed greedy returns summarised (mean, worst, IQM with its
    bootstrap interval), seeds solved and PASS/FAIL."""
    name_width = max([24, *(len(row.name) for row in rows)])
    env_width = max([14, *(len(row.env_id) for row in rows)])
    header = (f"{'experiment':<{name_width}} {'env':<{env_width}} {'mean':>9} {'worst':>9} "
              f"{'IQM [95% CI]':>26} {'threshold':>9} {'solved':>7} {'wall s':>8}  result")
    lines = [header]
    for row in rows:
        low, high = iqm_interval(row.means)
        iqm = f"{row.iqm:.1f} [{low:.1f}, {high:.1f}]"
        lines.append(f"{row.name:<{name_width}} {row.env_id:<{env_width}} {row.means.mean():>9.1f} {row.means.min():>9.1f} "
                     f"{iqm:>26} {row.threshold:>9.1f} {row.solved:>3}/{len(row.means):<3} "
                     f"{row.wall_seconds:>8.1f}  {'PASS' if row.passed else 'FAIL'}")
    return "\n".join(lines)
