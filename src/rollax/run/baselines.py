"""`rollax baselines`: every experiment tagged "baseline" trained, judged by its env's
solved threshold, and summarised in one table."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from rollax.run.experiment import Experiment
from rollax.run.loop import train

PASS_SHARE = 0.8  # PASS when at least this share of seeds solves (4 of 5)


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
    header = (f"{'experiment':<24} {'env':<14} {'mean':>9} {'worst':>9} {'threshold':>9} "
              f"{'solved':>7} {'wall s':>8}  result")
    lines = [header]
    for row in rows:
        lines.append(f"{row.name:<24} {row.env_id:<14} {row.means.mean():>9.1f} {row.means.min():>9.1f} "
                     f"{row.threshold:>9.1f} {row.solved:>3}/{len(row.means):<3} "
                     f"{row.wall_seconds:>8.1f}  {'PASS' if row.passed else 'FAIL'}")
    return "\n".join(lines)
