"""Learning curves from ``metrics.jsonl``: mean over seeds with a spread band, one per run
folder (``<experiment>/<timestamp>``), so two runs of one experiment stay two curves."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["aggregate_seeds", "load_curve", "plot_runs", "plot_sweep", "read_records",
           "runs_by_folder", "seed_dirs"]


def seed_dirs(run_dir: str | Path) -> list[Path]:
    """Every ``seed_*`` directory with a ``metrics.jsonl`` under ``run_dir`` (an experiment
    dir: those of all its runs; ``runs_by_folder`` groups them by run)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    found = sorted(p.parent for p in run_dir.rglob("metrics.jsonl") if p.parent.name.startswith(
        "seed_"))
    if not found:
        raise FileNotFoundError(f"no seed_*/metrics.jsonl under {run_dir}")
    return found


def runs_by_folder(run_dirs: Sequence[str | Path]) -> dict[str, list[Path]]:
    """``{"<experiment>/<run folder>": [seed dirs]}`` for every run under ``run_dirs`` (an
    experiment folder gives each of its runs), in the order given, then by folder name."""
    runs: dict[str, list[Path]] = {}
    for run_dir in run_dirs:
        for seed in seed_dirs(run_dir):
            run = seed.parent
            runs.setdefault(f"{run.parent.name}/{run.name}", []).append(seed)
    return runs


def read_records(metrics_jsonl: str | Path) -> list[dict]:
    """The records of one ``metrics.jsonl``. A torn last line (a run killed mid-write) is
    skipped with a warning naming the file; a bad line before it is a ValueError naming it."""
    lines = [(number, line) for number, line in enumerate(
        Path(metrics_jsonl).read_text(encoding="utf-8").splitlines(), start=1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == lines[-1][0]:
                warnings.warn(f"{metrics_jsonl}: skipped its torn last line {number} (a run "
                              "killed while writing it)", RuntimeWarning, stacklevel=2)
                break
            raise ValueError(f"{metrics_jsonl} line {number} is not JSON: {err}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{metrics_jsonl} line {number} is not a record with an integer 'step'")
        records.append(record)
    return records


def load_curve(metrics_jsonl: str | Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps [K], values [K])`` of ``metric`` in one ``metrics.jsonl``, sorted by step, with
    non-finite values (written as "NaN"/"Infinity") dropped."""
    steps, values = [], []
    for record in read_records(metrics_jsonl):
        if metric in record:
            value = float(record[metric])  # float("NaN") / float("Infinity") parse the strings
            if math.isfinite(value):
                steps.append(int(record["step"]))
                values.append(value)
    order = np.argsort(steps, kind="stable")
    return np.asarray(steps, dtype=np.int64)[order], np.asarray(values, dtype=np.float64)[order]


def _available_tags(paths: Sequence[Path]) -> list[str]:
    tags: set[str] = set()
    for path in paths:
        for record in read_records(path)[:50]:
            tags.update(record)
    return sorted(tags - {"step"})


def aggregate_seeds(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], band: Literal["minmax", "std"] = "minmax"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and band ``(grid [K], mean [K], low [K], high [K])`` over seeds' ``(steps, values)``
    on the union of their steps inside the range every seed covers (linear interpolation)."""
    start = max(steps[0] for steps, _ in curves)
    stop = min(steps[-1] for steps, _ in curves)
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    grid = grid[(grid >= start) & (grid <= stop)]
    stacked = np.stack([np.interp(grid, steps, values) for steps, values in curves])
    mean = stacked.mean(axis=0)
    if band == "minmax":
        return grid, mean, stacked.min(axis=0), stacked.max(axis=0)
    std = stacked.std(axis=0)
    return grid, mean, mean - std, mean + std


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display), imported on first use:
    it takes about 0.4 s, which commands that draw nothing should not pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def image_path(out: str | Path) -> Path:
    """Where a plot goes: `out`, with `.png` added unless it names one of `IMAGE_SUFFIXES`
    (the path written is the one returned and reported), in a folder that exists (a typo must
    not create folders anywhere) and may be written."""
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        out = out.with_name(out.name + ".png")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"cannot write {out}: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise PermissionError(f"cannot write {out}: folder {out.parent} is read-only")
    return out


def plot_runs(
    run_dirs: Sequence[str | Path],
    out_png: str | Path,
    metric: str = "rollout/ep_rew_mean",
    band: Literal["minmax", "std"] = "minmax",
) -> Path:
    """Draw ``metric`` against environment steps for each run folder under ``run_dirs`` (one
    colour each, labelled ``<experiment>/<run folder> (N seeds)``): the mean over its seeds and
    a min-max (or +-std) band (see ``aggregate_seeds``). Writes and returns ``out_png``."""
    plt = pyplot()
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    if not run_dirs:
        raise ValueError("run_dirs is empty")
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
    out_png = image_path(out_png)
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, seeds) in enumerate(runs_by_folder(run_dirs).items()):
        curves = [load_curve(seed / "metrics.jsonl", metric) for seed in seeds]
        curves = [(steps, values) for steps, values in curves if steps.size]
        if not curves:
            raise ValueError(
                f"metric {metric!r} not found under {seeds[0].parent}; available: "
                f"{_available_tags([s / 'metrics.jsonl' for s in seeds])}"
            )
        grid, mean, low, high = aggregate_seeds(curves, band)
        colour = colours[index % len(colours)]
        label = f"{name} ({len(curves)} seed{'s' * (len(curves) > 1)})"
        axes.plot(grid, mean, color=colour, label=label, linewidth=1.8,
                  marker="o" if grid.size == 1 else None)
        axes.fill_between(grid, low, high, color=colour, alpha=0.25, linewidth=0)
    axes.set_xlabel("environment steps")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    band_name = "min-max" if band == "minmax" else "±1 std"
    axes.set_title(f"{metric}: mean over seeds, {band_name} band")
    figure.tight_layout()
    figure.savefig(out_png)
    plt.close(figure)
    return out_png


def plot_sweep(labels: Sequence[str], returns: np.ndarray, out_png: str | Path) -> Path:
    """A sweep's final greedy return per combination (`returns [combinations, seeds]`): each
    seed as a dot, the mean as a bar with a ±1 std line, one row per combination (`labels`)."""
    plt = pyplot()
    out_png = image_path(out_png)
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim != 2 or returns.shape[0] != len(labels):
        raise ValueError(f"returns must be [combinations={len(labels)}, seeds], got {returns.shape}")
    rows = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(8, 1.2 + 0.4 * len(labels)), dpi=100)
    mean, std = returns.mean(axis=1), returns.std(axis=1)
    axes.barh(rows, mean, color="#9ecae1", label="mean over seeds")
    axes.errorbar(mean, rows, xerr=std, fmt="none", ecolor="black", capsize=3, label="±1 std")
    for seed in range(returns.shape[1]):
        axes.plot(returns[:, seed], rows, "o", color="#08519c", markersize=3,
                  label="one seed" if seed == 0 else None)
    axes.set_yticks(rows, labels, fontsize=8)
    axes.invert_yaxis()  # grid order, top to bottom
    axes.set_xlabel("final greedy evaluation return")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    axes.set_title(f"sweep: {len(labels)} combinations x {returns.shape[1]} seed(s)")
    figure.tight_layout()
    figure.savefig(out_png)
    plt.close(figure)
    return out_png
