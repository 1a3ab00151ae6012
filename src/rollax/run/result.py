"""What a finished run returns: per-seed evaluation, timings, and its result table."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np


@dataclasses.dataclass
class TrainResult:
    """A run's directory, final greedy evaluation `[seeds, episodes]`, timings (`train_seconds`
    of this process, which trained from `start_step`: the checkpoint's step on resume)."""

    name: str
    run_dir: Path | None
    seeds: list[int]
    eval_returns: np.ndarray
    eval_metrics: dict[str, np.ndarray]  # the env's own evaluation metrics, `{name: [S]}`
    ep_rew_mean: list[float]
    env_steps: int
    compile_seconds: float
    train_seconds: float
    solved_threshold: float | None
    start_step: int = 0

    @classmethod
    def read(cls, run_dir: Path, solved_threshold: float | None) -> TrainResult:
        """The result a run directory's `results.json` holds (`write_results` writes it): each
        seed's evaluation as its mean return, `[seeds, 1]` (NaN where the file holds null)."""
        saved = json.loads((run_dir / "results.json").read_text())
        return cls(name=saved["name"], run_dir=run_dir, seeds=saved["seeds"],
                   eval_returns=np.asarray(saved["eval_mean_return"], float)[:, None],
                   eval_metrics={k: np.asarray(v, float) for k, v in saved["eval_metrics"].items()},
                   ep_rew_mean=[math.nan if x is None else x for x in saved["train_ep_rew_mean"]],
                   env_steps=saved["env_steps"],
                   compile_seconds=saved["compile_seconds"], train_seconds=saved["train_seconds"],
                   solved_threshold=solved_threshold, start_step=saved["start_step"])

    def select(self, runs: slice, name: str, run_dir: Path | None) -> TrainResult:
        """The result of some of the runs (a sweep's combination), written to `run_dir`."""
        return dataclasses.replace(
            self, name=name, run_dir=run_dir, seeds=self.seeds[runs], eval_returns=self.eval_returns[runs],
            eval_metrics={k: v[runs] for k, v in self.eval_metrics.items()},
            ep_rew_mean=self.ep_rew_mean[runs])

    @property
    def solved(self) -> list[bool] | None:
        """Per seed: mean greedy eval return >= the env's solved threshold."""
        if self.solved_threshold is None:
            return None
        return [bool(r >= self.solved_threshold) for r in self.eval_returns.mean(axis=1)]

    def table(self) -> str:
        """A plain-text result table, one row per seed."""
        names = sorted(self.eval_metrics)
        rows = [f"{'seed':>4}  {'eval return':>12}  {'train ep_rew_mean':>17}  solved"
                + "".join(f"  {name:>14}" for name in names)]
        solved = self.solved or [None] * len(self.seeds)
        for i, (seed, returns, train_mean, ok) in enumerate(
                zip(self.seeds, self.eval_returns, self.ep_rew_mean, solved)):
            mark = "-" if ok is None else ("yes" if ok else "no")
            rows.append(f"{seed:>4}  {returns.mean():>12.2f}  {train_mean:>17.2f}  {mark:>6}"
                        + "".join(f"  {self.eval_metrics[name][i]:>14.3f}" for name in names))
        trained = self.env_steps - self.start_step
        speed = (f"{trained * len(self.seeds) / max(self.train_seconds, 1e-9):,.0f} steps/s" if trained
                 else "nothing left to train")
        resumed = f" (resumed at {self.start_step})" if self.start_step else ""
        rows.append(f"{self.env_steps} env steps per seed{resumed}, compile {self.compile_seconds:.1f} s, "
                    f"train {self.train_seconds:.1f} s ({speed})")
        return "\n".join(rows)
