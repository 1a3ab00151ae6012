"""Hyperparameter sweeps: every combination of a grid, each for the same seeds, in as few
compiled programs as the grid allows.

Combinations that differ only in numbers the program can take per run (the learning rate, and
the algorithm config's fields declared `traced`, such as `clip_param`: `rollax.rl.config`)
train side by side in one program, as seeds do: combinations x seeds are stacked along the
`vmap`ped run axis, each run carrying its values (`Learner(swept=...)`). A key whose values
change shapes or that the program branches on in Python (`num_epochs`, an env parameter,
`kl_coeff`: is there a reference policy?) is declared static and gives one program per value.
Each combination is written as a run folder of its own::

    <root>/<experiment>/<timestamp>_sweep/
        <key>=<value>,.../seed_<k>/   metrics, TensorBoard (HPARAMS: the combination's values)
        <key>=<value>,.../results.json
        program_<k>/checkpoints/      the stacked state of program k's runs, for resuming
        sweep.json  sweep.png  learning_curves.png

Each program keeps its resume checkpoints in `program_<k>/`; `resume_sweep` (`rollax sweep
--resume FOLDER`) reads finished programs back and continues the others.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import sys
import time
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rollax.envs.gymnasium_ids import is_host_env_id
from rollax.logging.checkpoint import load_metadata
from rollax.logging.run_callbacks import write_results
from rollax.logging.run_dir import (
    MAX_LABEL,
    claim_run_folder,
    make_run_dir,
    overrides_label,
    write_text_atomically,
)
from rollax.logging.writer_lock import hold_writer_lock
from rollax.presets import apply_override, parse_override
from rollax.run.context import Runs
from rollax.run.experiment import MAX_SEEDS, MAX_TRANSITIONS, Experiment
from rollax.run.learner import CONFIG, LEARNING_RATE
from rollax.run.loop import check_run_options, train_runs
from rollax.run.plan import iteration_layout
from rollax.run.program import make_program
from rollax.run.result import TrainResult
from rollax.run.run_folder import config_changes

NOT_SWEPT = ("name", "seed", "seeds", "logging", "search")  # --seeds gives the seeds; logging says where
PLAN = "sweep.json"  # the sweep's experiment and grid (written first), then its results too


@dataclasses.dataclass
class SweepResult:
    """Per combination (grid order): its values, its experiment and its `TrainResult` (all
    its seeds); the sweep folder, the number of compiled programs and the wall seconds."""

    keys: list[str]
    values: list[dict[str, Any]]
    labels: list[str]  # folder names
    experiments: list[Experiment]
    results: list[TrainResult]
    folder: Path | None
    programs: int
    seconds: float

    def final_returns(self) -> np.ndarray:
        """Mean greedy evaluation return at the end, `[combinations, seeds]`."""
        return np.stack([result.eval_returns.mean(axis=1) for result in self.results])

    def final(self, metric: str) -> np.ndarray:
        """An env's final evaluation metric (`eval/<name>`, e.g. `eval/sampled_judge_success`),
        `[combinations, seeds]`."""
        name = metric.removeprefix("eval/")
        known = sorted(self.results[0].eval_metrics)
        if name not in known:
            raise ValueError(f"{metric!r} is not an evaluation metric of this env; its metrics: "
                             f"{['eval/' + k for k in known]}")
        return np.stack([np.asarray(result.eval_metrics[name], float) for result in self.results])

    def table(self, metrics: Sequence[str] = ()) -> str:
        """One row per combination: its values, the final return's mean, std and worst seed,
        and the mean ± std over seeds of each of `metrics` (`eval/<name>`)."""
        names = [key.rsplit(".", 1)[-1] for key in self.keys]
        widths = [max(len(name), 10) for name in names]
        header = "  ".join(f"{n:>{w}}" for n, w in zip(names, widths))
        extra = [(metric.removeprefix("eval/"), self.final(metric)) for metric in metrics]
        rows = [f"{header}  {'eval return':>11}  {'± std':>8}  {'worst':>8}"
                + "".join(f"  {name:>15}" for name, _ in extra)]
        for row, (values, returns) in enumerate(zip(self.values, self.final_returns())):
            cells = "  ".join(f"{_short(values[k]):>{w}}" for k, w in zip(self.keys, widths))
            rows.append(f"{cells}  {returns.mean():>11.2f}  {returns.std():>8.2f}  {returns.min():>8.2f}"
                        + "".join(f"  {f'{v[row].mean():.3f} ± {v[row].std():.3f}':>{max(15, len(name))}}"
                                  for name, v in extra))
        runs = sum(len(result.seeds) for result in self.results)
        rows.append(f"{len(self.values)} combinations x {runs // len(self.values)} seed(s) = {runs} "
                    f"runs in {self.programs} compiled program(s), {self.seconds:.1f} s")
        return "\n".join(rows)


def parse_grid(texts: Sequence[str]) -> dict[str, list[Any]]:
    """`["agent.optimizer.learning_rate=1e-4,3e-4", ...]` -> `{key: [values]}`; each value a
    TOML literal (a bare word a string), as `--set` reads it."""
    grid: dict[str, list[Any]] = {}
    for text in texts:
        key, _ = parse_override(text)
        raw = text.split("=", 1)[1].strip()
        try:
            values = tomllib.loads(f"v = [{raw}]")["v"]
        except tomllib.TOMLDecodeError:
            values = [parse_override(f"{key}={part}")[1] for part in raw.split(",")]
        if key in grid:
            raise ValueError(f"--grid {key} is given twice; list all its values in one --grid")
        grid[key] = values
    return grid


def sweep(experiment: Experiment, grid: Mapping[str, Sequence[Any]], *, seeds: int | None = None,
          progress: bool = True, stop_at_step: int | None = None) -> SweepResult:
    """Train every combination of `grid` (`{key: [values]}`, keys as `--set` names them) for
    `seeds` seeds (default: the experiment's), in as few programs as the values allow (see the
    module docstring). ValueError naming the key or the combination for bad input.
    `stop_at_step` ends each program early (after the chunk reaching that env step) with a
    checkpoint, as a signal would, for `resume_sweep`."""
    check_run_options(progress, stop_at_step)
    if seeds is not None:
        experiment = experiment.replace(seeds=seeds)
    _combinations(experiment, grid)  # every combination checked before a folder is made
    grid = {key: list(values) for key, values in grid.items()}
    if not experiment.logging.enabled:
        return _run(experiment, grid, None, progress, stop_at_step)
    folder = claim_run_folder(experiment.logging.root, experiment.name, "sweep")
    with hold_writer_lock(folder):  # this process alone writes the sweep
        write_text_atomically(folder / PLAN, json.dumps(
            {"experiment": experiment.to_dict(), "grid": grid}, indent=2) + "\n")
        return _run(experiment, grid, folder, progress, stop_at_step)


def check_metrics(experiment: Experiment, metrics: Sequence[str]) -> None:
    """ValueError naming any of `metrics` (`eval/<name>`, for `table`) that a run of
    `experiment` does not report; checked from the evaluation's shapes, before training."""
    if not metrics:
        return
    _, program = make_program(experiment)
    known = ["eval/" + name for name in program.metric_names(experiment.seed_list)]
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"--metric {unknown[0]!r} is not an evaluation metric of "
                         f"{experiment.env.id}; its metrics: {known or 'none besides eval/mean_reward'}")


def resume_sweep(folder: str | Path, *, progress: bool = True, stop_at_step: int | None = None
                 ) -> SweepResult:
    """Continue the sweep in `folder` (a `<timestamp>_sweep` folder): its finished programs are
    read back, a stopped one continues from its newest checkpoint, the others train."""
    check_run_options(progress, stop_at_step)
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"cannot resume the sweep: {folder} is not a folder")
    with hold_writer_lock(folder):  # read and continued while no other process writes it
        experiment, grid = read_sweep(folder)
        return _run(experiment, grid, Path(folder), progress, stop_at_step)


def read_sweep(folder: str | Path) -> tuple[Experiment, dict]:
    """The experiment and grid a sweep folder was started with (its `sweep.json`)."""
    path = Path(folder) / PLAN
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {PLAN}: is it a sweep folder (<timestamp>_sweep)?")
    saved = json.loads(path.read_text())
    return Experiment.from_dict(saved["experiment"]), saved["grid"]


def _run(experiment: Experiment, grid: dict, folder: Path | None, progress: bool,
         stop_at_step: int | None) -> SweepResult:
    """Plan the programs, train each (or read it back when finished), write the summary."""
    start = time.perf_counter()
    keys, combos, experiments = _combinations(experiment, grid)
    labels = _labels(combos)
    traced = traced_keys(experiment, keys, combos)
    programs = program_groups(experiments, combos, keys, traced)
    say = (lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None)
    results: dict[int, TrainResult] = {}
    for number, members in enumerate(programs, start=1):
        say(f"sweep program {number} of {len(programs)}: {len(members)} combination(s) x "
            f"{experiment.seeds} seed(s)" + (f", per-run {', '.join(traced)}" if len(members) > 1 else ""))
        program = SideBySide(experiments, combos, labels, members, traced if len(members) > 1 else (),
                           folder, number)
        results.update(program.results() or program.train(progress, stop_at_step))
    ordered = [results[index] for index in range(len(combos))]
    outcome = SweepResult(keys, combos, labels, experiments, ordered, folder, len(programs),
                          time.perf_counter() - start)
    if folder is not None:
        _write(outcome, experiment, grid, experiment.logging.plot)
    return outcome


def _combinations(experiment: Experiment, grid: Mapping[str, Sequence[Any]]):
    """`(keys, [{key: value}], [Experiment])` of every combination, each checked."""
    if not isinstance(grid, Mapping):
        raise ValueError(f"the grid must map keys to lists of values, got {grid!r}")
    if not grid:
        raise ValueError("a sweep needs at least one --grid KEY=V1,V2,...")
    for key, values in grid.items():
        if key.split(".", 1)[0] in NOT_SWEPT:
            raise ValueError(f"--grid {key}: {key.split('.', 1)[0]!r} is not swept "
                             "(--seeds sets the seeds; logging is where the sweep is written)")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"--grid {key}: expected a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) < len(values):
            raise ValueError(f"--grid {key}: a value is listed twice in {list(values)}")
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    return keys, combos, [experiment_with(experiment, combo, "--grid combination") for combo in combos]


def experiment_with(experiment: Experiment, values: Mapping[str, Any], what: str) -> Experiment:
    """`experiment` with `values` (`{key: value}`, keys as `--set` names them), checked;
    ValueError naming `what` and the values."""
    data = json.loads(json.dumps(experiment.to_dict()))  # a deep copy, as config.json holds it
    try:
        for key, value in values.items():
            apply_override(data, key, value)
        return Experiment.from_dict(data)
    except ValueError as err:
        raise ValueError(f"{what} {overrides_label(list(values.items()))}: {err}") from None


def traced_keys(experiment: Experiment, keys: list[str], combos: list[dict]) -> tuple[str, ...]:
    """Keys whose values every run of one program can hold as a number of its own: the learning
    rate and the config's traced fields, swept over numbers (a Gymnasium env's program is one
    run per seed, so nothing there). With normalised rewards `gamma` is also the reward
    scaler's discount, which the program holds as a constant: one program per value."""
    if is_host_env_id(experiment.env.id):
        return ()
    traced_fields = {CONFIG + name for name in experiment.agent.config.traced_fields}
    if experiment.env.normalize_rewards:
        traced_fields.discard(CONFIG + "gamma")
    return tuple(key for key in keys if (key == LEARNING_RATE or key in traced_fields) and all(
        isinstance(c[key], (int, float)) and not isinstance(c[key], bool) for c in combos))


def program_groups(experiments: list[Experiment], combos: list[dict], keys: list[str],
                   traced: tuple[str, ...]) -> list[list[int]]:
    """Combination indices per program: the same untraced values, at most as many runs and
    transitions per iteration as one run may hold."""
    groups: dict[str, list[int]] = {}
    for index, combo in enumerate(combos):
        fixed = json.dumps({k: combo[k] for k in keys if k not in traced}, sort_keys=True, default=str)
        groups.setdefault(fixed, []).append(index)
    programs = []
    for members in groups.values():
        budget, seeds = experiments[members[0]].budget, experiments[members[0]].seeds
        fit = max(1, min(MAX_SEEDS // seeds, MAX_TRANSITIONS // (budget.num_envs * budget.num_steps * seeds)))
        programs += [members[i:i + fit] for i in range(0, len(members), fit)]
    return programs


@dataclasses.dataclass
class SideBySide:
    """The combinations `members` (indices) of a sweep, trained side by side in one program,
    with their `swept` numbers as per-run values; `number` names its checkpoint folder."""

    experiments: list[Experiment]
    combos: list[dict]
    labels: list[str]
    members: list[int]
    swept: tuple[str, ...]
    folder: Path | None
    number: int | str

    def _run_dir(self, index: int) -> Path:
        return self.folder / self.labels[index]

    def results(self) -> dict[int, TrainResult] | None:
        """Its combinations' results when a resumed sweep finds them all finished, else None."""
        if self.folder is None:
            return None
        out = {}
        for index in self.members:
            path, experiment = self._run_dir(index) / "results.json", self.experiments[index]
            if not path.is_file():
                return None
            out[index] = TrainResult.read(path.parent, experiment.env.solved_threshold)
            steps_per_iteration, iterations, _ = iteration_layout(experiment.budget)
            if out[index].env_steps < steps_per_iteration * iterations:
                return None  # stopped early: continued from its checkpoint
        return out

    def train(self, progress: bool, stop_at_step: int | None, callbacks: Sequence[Any] = ()
              ) -> dict[int, TrainResult]:
        """Train (or continue from its checkpoint), with `callbacks` besides the run's own; its
        combinations' `TrainResult`s by index."""
        base = self.experiments[self.members[0]]
        seeds = base.seed_list
        checkpoints = None if self.folder is None else self.folder / f"program_{self.number}"
        resume = checkpoints if checkpoints is not None and (checkpoints / "checkpoints").is_dir() else None
        runs = Runs(
            seeds=[seed for _ in self.members for seed in seeds],
            experiments=[self.experiments[i] for i in self.members for _ in seeds],
            dirs=None if self.folder is None else [self._seed_dir(i, seed, resume is not None)
                                                   for i in self.members for seed in seeds],
            hparams={key: np.asarray([float(self.combos[i][key]) for i in self.members for _ in seeds])
                     for key in self.swept},
            checkpoint_dir=checkpoints)
        if resume is not None:
            recorded = load_metadata(resume / "checkpoints").get("experiment", {})
            if changes := config_changes(recorded, base.to_dict()):
                raise ValueError(f"cannot resume the sweep: {self.folder / PLAN} was changed after "
                                 f"{resume.name}'s checkpoint recorded its config ({changes})")
        plan, program = make_program(base, self.swept, runs=len(runs.seeds))
        result = train_runs(base, plan, program, runs, callbacks=callbacks, progress=progress,
                            resume=resume, stop_at_step=stop_at_step)
        out = {}
        for position, index in enumerate(self.members):
            part = slice(position * len(seeds), (position + 1) * len(seeds))
            run_dir = None if self.folder is None else self._run_dir(index)
            out[index] = result.select(part, self.experiments[index].name, run_dir)
            if run_dir is not None:
                write_results(out[index])
        return out

    def _seed_dir(self, index: int, seed: int, resuming: bool) -> Path:
        """A run's seed folder: the existing one for a program resumed from its checkpoint, a
        new one otherwise (replacing what a program killed before its first checkpoint wrote)."""
        seed_dir = self._run_dir(index) / f"seed_{seed}"
        if resuming:
            if not seed_dir.is_dir():
                raise FileNotFoundError(f"cannot resume the sweep: {seed_dir} is missing")
            return seed_dir
        shutil.rmtree(seed_dir, ignore_errors=True)
        return make_run_dir(self.folder.parent, experiment=self.folder.name, seed=seed,
                            timestamp=self.labels[index])


def _write(outcome: SweepResult, experiment: Experiment, grid: dict, plot: bool) -> None:
    """`sweep.json` (what `resume_sweep` reads, and every combination's values, folder, final
    returns and env metrics per seed), and the pictures: final return per combination, learning
    curves."""
    returns = outcome.final_returns()
    combinations = [{"values": values, "folder": result.run_dir.name, "seeds": result.seeds,
                     "eval_mean_return": r.tolist(),
                     "eval_metrics": {name: np.asarray(v, float).tolist()
                                      for name, v in sorted(result.eval_metrics.items())}}
                    for values, result, r in zip(outcome.values, outcome.results, returns)]
    summary = {"experiment": experiment.to_dict(), "grid": grid, "keys": outcome.keys,
               "programs": outcome.programs, "seconds": outcome.seconds, "combinations": combinations}
    write_text_atomically(outcome.folder / PLAN, json.dumps(summary, indent=2) + "\n")
    if not plot:
        return
    from rollax.logging.plot import plot_runs, plot_sweep

    try:
        plot_sweep(outcome.labels, returns, outcome.folder / "sweep.png")
        plot_runs([outcome.folder], outcome.folder / "learning_curves.png")
    except (ValueError, FileNotFoundError) as err:
        warnings.warn(f"no sweep plot for {outcome.folder}: {err}", RuntimeWarning, stacklevel=2)


def _labels(combos: list[dict]) -> list[str]:
    """Each combination's folder name, `learning_rate=0.001,clip_param=0.1`; numbered
    (`3-...`) when names cut at 80 characters would collide."""
    labels = [overrides_label(list(combo.items())) for combo in combos]
    if len(set(labels)) < len(labels):
        labels = [f"{i}-{label}"[:MAX_LABEL] for i, label in enumerate(labels)]
    return labels


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
