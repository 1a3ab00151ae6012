"""Bayesian hyperparameter search with Optuna, a batch of trials at a time in compiled programs.

Optuna's sampler (TPE by default, with the constant liar so that the trials of one batch
spread out) proposes a batch of trials with `study.ask()`; the batch trains as `rollax sweep`
trains a grid: trials x seeds side by side in one program, trials whose values cannot vary
inside one program (a static key such as `num_epochs`) in programs of their own. Every
evaluation reports each trial's metric (aggregated over its seeds: mean or IQM) to Optuna, whose
pruner (median by default) may prune it; the program then stops at that chunk and its other
trials go on from its checkpoint in a program without the pruned ones. Each trial is told when
its program ends, so a killed search loses no finished trial.
The study lives in an Optuna storage (a SQLite file in the tune folder by default, or any
SQLAlchemy URL), readable with Optuna's own tools::

    <root>/<experiment>/<timestamp>_tune/
        tune.json                  the experiment, space and settings (`resume_tune` reads it)
        study.db                   the Optuna study (unless --storage names another)
        trial_<n>/seed_<k>/        metrics, TensorBoard, checkpoints of each trial
        best.toml                  the best trial as an experiment preset, for `rollax train`
        optimization_history.png  param_importances.png

`resume_tune` continues a killed search: trials it left running are failed and asked again with
the same values, finished ones are kept, and it runs until the study holds `trials` finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rollax.logging.callbacks import Callback
from rollax.logging.checkpoint import load_checkpoint, save_checkpoint
from rollax.logging.run_dir import claim_run_folder, write_text_atomically
from rollax.logging.writer_lock import hold_writer_lock
from rollax.presets import parse_override
from rollax.run.experiment import Experiment
from rollax.run.loop import check_run_options
from rollax.run.plan import iteration_layout
from rollax.sweeps import (
    NOT_SWEPT,
    SideBySide,
    check_metrics,
    experiment_with,
    program_groups,
    traced_keys,
)

SETTINGS = "tune.json"
AGGREGATES = ("mean", "iqm")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
SPACE_HELP = "log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or cat:A,B,..."


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """What a search is: its space (`{key: spec}` as `--param` gives it), how many finished
    trials, how many asked at once, what it optimises and where the study lives."""

    space: Mapping[str, str]
    trials: int = 32
    batch: int = 8
    metric: str = "eval/mean_reward"
    aggregate: str = "mean"  # over a trial's seeds
    direction: str = "maximize"
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0  # the sampler's
    storage: str = ""  # an SQLAlchemy URL; "" for study.db in the tune folder
    study_name: str = "rollax"

    def __post_init__(self):
        for name, low in (("trials", 1), ("batch", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, choices in (("aggregate", AGGREGATES), ("direction", DIRECTIONS),
                              ("sampler", SAMPLERS), ("pruner", PRUNERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {list(choices)}")
        if not isinstance(self.metric, str) or not self.metric.startswith("eval/"):
            raise ValueError(f"metric={self.metric!r} must be an evaluation metric, "
                             "'eval/mean_reward' or an env's 'eval/<name>'")
        distributions(self.space)


def parse_space(texts: Sequence[str]) -> dict[str, str]:
    """`["agent.optimizer.learning_rate=log:1e-4:1e-2", ...]` -> `{key: spec}`, each checked."""
    space: dict[str, str] = {}
    for text in texts:
        if not isinstance(text, str) or "=" not in text:
            raise ValueError(f"--param {text!r} must be KEY=SPEC, SPEC one of {SPACE_HELP}")
        key, spec = (part.strip() for part in text.split("=", 1))
        if key in space:
            raise ValueError(f"--param {key} is given twice")
        space[key] = spec
    distributions(space)
    return space


def distributions(space: Mapping[str, str]) -> dict[str, Any]:
    """Optuna's distribution of each key; ValueError naming the key and what is wrong."""
    import optuna

    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"a search needs at least one --param KEY=SPEC ({SPACE_HELP}), or a "
                         "[search] table in the experiment preset")
    out = {}
    for key, spec in space.items():
        if not isinstance(key, str) or key.split(".", 1)[0] in NOT_SWEPT:
            raise ValueError(f"--param {key}: not a searchable key (seeds and logging are set "
                             "for the whole search)")
        kind, _, rest = str(spec).partition(":")
        if kind == "cat":
            choices = [parse_override(f"{key}={part}")[1] for part in rest.split(",")]
            if not rest or len(set(map(repr, choices))) < len(choices):
                raise ValueError(f"--param {key}={spec}: cat needs distinct values, cat:A,B,...")
            out[key] = optuna.distributions.CategoricalDistribution(choices)
            continue
        out[key] = _range(key, spec, kind, rest.split(":"))
    return out


def _range(key: str, spec: str, kind: str, bounds: list[str]) -> Any:
    import optuna

    if kind not in ("log", "float", "int") or len(bounds) != 2:
        raise ValueError(f"--param {key}={spec}: expected {SPACE_HELP}")
    try:
        low, high = (int(b) if kind == "int" else float(b) for b in bounds)
    except ValueError:
        raise ValueError(f"--param {key}={spec}: the bounds must be {kind} numbers") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"--param {key}={spec}: low must be below high (finite numbers)")
    if kind == "log" and low <= 0:
        raise ValueError(f"--param {key}={spec}: a log range must stay above 0")
    if kind == "int":
        return optuna.distributions.IntDistribution(low, high)
    return optuna.distributions.FloatDistribution(low, high, log=kind == "log")


@dataclasses.dataclass
class TuneResult:
    """The study, its folder, the programs compiled by this call and its wall seconds."""

    study: Any
    folder: Path
    settings: TuneSettings
    programs: int
    seconds: float

    @property
    def finished(self) -> list[Any]:
        from optuna.trial import TrialState

        return [t for t in self.study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]

    def table(self, top: int = 10) -> str:
        """The best complete trials, best first, with their values; then the counts."""
        from optuna.trial import TrialState

        complete = [t for t in self.study.trials if t.state == TrialState.COMPLETE]
        complete.sort(key=lambda t: t.value, reverse=self.settings.direction == "maximize")
        keys = list(self.settings.space)
        names = [key.rsplit(".", 1)[-1] for key in keys]
        rows = [f"{'trial':>5}  {self.settings.metric:>18}  " + "  ".join(f"{n:>12}" for n in names)]
        for trial in complete[:top]:
            rows.append(f"{trial.number:>5}  {trial.value:>18.3f}  "
                        + "  ".join(f"{_short(trial.params[k]):>12}" for k in keys))
        pruned = sum(t.state == TrialState.PRUNED for t in self.study.trials)
        rows.append(f"{len(complete)} complete and {pruned} pruned trial(s) x "
                    f"{self.study.user_attrs.get('seeds', '?')} seed(s); this call: "
                    f"{self.programs} compiled program(s), {self.seconds:.1f} s")
        return "\n".join(rows)


def tune(experiment: Experiment, settings: TuneSettings, *, progress: bool = True) -> TuneResult:
    """Search `settings.space` for `experiment` (all its seeds per trial) in a new tune folder
    under its `logging.root`; ValueError naming a bad key, range, metric or storage before
    anything trains."""
    check_run_options(progress, None)
    _check(experiment, settings)
    folder = claim_run_folder(experiment.logging.root, experiment.name, "tune")
    with hold_writer_lock(folder):
        write_text_atomically(folder / SETTINGS, json.dumps(
            {"experiment": experiment.to_dict(), "settings": dataclasses.asdict(settings)}, indent=2) + "\n")
        return _search(experiment, settings, folder, progress)


def resume_tune(folder: str | Path, *, progress: bool = True) -> TuneResult:
    """Continue the search of a tune folder until its study holds its number of finished trials."""
    check_run_options(progress, None)
    path = Path(folder) / SETTINGS
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {SETTINGS}: is it a tune folder (<timestamp>_tune)?")
    with hold_writer_lock(folder):
        saved = json.loads(path.read_text())
        experiment = Experiment.from_dict(saved["experiment"])
        settings = TuneSettings(**saved["settings"])
        return _search(experiment, settings, Path(folder), progress)


def _check(experiment: Experiment, settings: TuneSettings) -> None:
    """Every key of the space applies to the experiment (at both ends of its range) and the
    metric is one the runs report."""
    for key, distribution in distributions(settings.space).items():
        for value in _ends(distribution):
            experiment_with(experiment, {key: value}, "--param")
    if settings.metric != "eval/mean_reward":
        check_metrics(experiment, [settings.metric])
    if settings.storage:
        _storage(settings.storage)


def _storage(url: str) -> Any:
    """Optuna's storage at the SQLAlchemy `url`; ValueError naming it when it cannot be opened."""
    import optuna

    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # noqa: BLE001 (SQLAlchemy's errors vary by database)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__  # not SQLAlchemy's link
        raise ValueError(f"storage={url!r} cannot be opened: {reason}") from None


def _ends(distribution: Any) -> list[Any]:
    if hasattr(distribution, "choices"):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _search(experiment: Experiment, settings: TuneSettings, folder: Path, progress: bool) -> TuneResult:
    from optuna.trial import TrialState

    start = time.perf_counter()
    study = _study(settings, folder)
    study.set_user_attr("seeds", experiment.seeds)
    _ask_again_what_was_running(study, folder)
    space = distributions(settings.space)
    say = (lambda line: print(line, file=sys.stderr)) if progress else (lambda line: None)
    programs = 0
    while (left := settings.trials - _count(study, TrialState.COMPLETE, TrialState.PRUNED)) > 0:
        trials = [study.ask(space) for _ in range(min(settings.batch, left))]
        say(f"tune: trials {trials[0].number}-{trials[-1].number} "
            f"({_count(study, TrialState.COMPLETE, TrialState.PRUNED)} of {settings.trials} finished)")
        programs += _run_batch(experiment, settings, folder, study, trials, progress)
    result = TuneResult(study, folder, settings, programs, time.perf_counter() - start)
    _write_outputs(result, experiment)
    return result


def _study(settings: TuneSettings, folder: Path) -> Any:
    """The study in its storage (created, or loaded to go on), with the sampler seeded by the
    settings' seed and the trials it already holds: a resumed search draws new values, not the
    first process's again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(settings.storage or f"sqlite:///{(folder / 'study.db').resolve()}")
    pruner = optuna.pruners.MedianPruner() if settings.pruner == "median" else optuna.pruners.NopPruner()
    study = optuna.create_study(storage=storage, study_name=settings.study_name, pruner=pruner,
                                direction=settings.direction, load_if_exists=True)
    seed = settings.seed + len(study.trials)
    study.sampler = (optuna.samplers.TPESampler(seed=seed, constant_liar=True)
                     if settings.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    return study


def _ask_again_what_was_running(study: Any, folder: Path) -> None:
    """Trials a killed search left running: failed (their partial folders and program
    checkpoints removed) and their values enqueued, so they are asked again first."""
    from optuna.trial import TrialState

    for program in folder.glob("program_*"):  # a finished program's folder is gone
        shutil.rmtree(program)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)
        shutil.rmtree(folder / _label(trial.number), ignore_errors=True)
        study.enqueue_trial(trial.params)


def _count(study: Any, *states: Any) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _label(number: int) -> str:
    return f"trial_{number}"


def _run_batch(experiment: Experiment, settings: TuneSettings, folder: Path, study: Any,
               trials: list[Any], progress: bool) -> int:
    """Train a batch of asked trials in as few programs as their values allow; tell each. The
    number of programs compiled."""
    keys = list(settings.space)
    combos = [{key: trial.params[key] for key in keys} for trial in trials]
    batch = _Batch(study, settings, folder, trials, combos,
                   [experiment_with(experiment, combo, f"trial {trial.number}")
                    for trial, combo in zip(trials, combos)], progress)
    traced = traced_keys(experiment, keys, combos)
    groups = program_groups(batch.experiments, combos, keys, traced)
    return sum(batch.train(members, traced if len(members) > 1 else ()) for members in groups)


@dataclasses.dataclass
class _Batch:
    """Asked trials (with their values and experiments) and where their results go."""

    study: Any
    settings: TuneSettings
    folder: Path
    trials: list[Any]
    combos: list[dict]
    experiments: list[Experiment]
    progress: bool

    def train(self, members: list[int], swept: tuple[str, ...]) -> int:
        """Train the trials `members` side by side, telling Optuna each one's outcome; the
        number of programs compiled. When the pruner prunes some of them, the program stops at
        that chunk and the others continue from its checkpoint in a program without them, so
        pruned trials cost no more updates."""
        from optuna.trial import TrialState

        labels = [_label(trial.number) for trial in self.trials]
        first, seeds = self.trials[members[0]].number, self.experiments[0].seeds
        part = 0
        while True:
            name = f"{first}.{part}"
            reporter = _Reporter([self.trials[i] for i in members], seeds, self.settings)
            side_by_side = SideBySide(self.experiments, self.combos, labels, members, swept,
                                      self.folder, name)
            results = side_by_side.train(self.progress, None, callbacks=[reporter])
            kept = [i for i, pruned in zip(members, reporter.pruned) if not pruned]
            for index in set(members) - set(kept):
                self.study.tell(self.trials[index], state=TrialState.PRUNED)
            done = all(results[i].env_steps >= _trained_steps(self.experiments[i]) for i in kept)
            if done or not kept:
                for index in kept:
                    self.study.tell(self.trials[index], _aggregate(
                        _metric_values(results[index].eval_returns, results[index].eval_metrics,
                                       self.settings.metric), self.settings.aggregate))
                shutil.rmtree(self.folder / f"program_{name}", ignore_errors=True)
                return part + 1
            runs = [members.index(i) * seeds + s for i in kept for s in range(seeds)]
            _keep_runs(self.folder / f"program_{name}", self.folder / f"program_{first}.{part + 1}",
                       runs, self.experiments[kept[0]])
            members, part = kept, part + 1


def _trained_steps(experiment: Experiment) -> int:
    """The env steps a run of `experiment` trains when it is not stopped."""
    steps_per_iteration, iterations, _ = iteration_layout(experiment.budget)
    return steps_per_iteration * iterations


def _keep_runs(source: Path, target: Path, runs: list[int], experiment: Experiment) -> None:
    """Copy the newest checkpoint of the program folder `source` to `target` with only `runs`
    (positions on its run axis), as the checkpoint of a program of `experiment`'s trials."""
    import jax

    state, metadata = load_checkpoint(source / "checkpoints")
    state = jax.tree.map(lambda x: x[np.asarray(runs)], state)
    metadata = {**metadata, "episode_stats": [metadata["episode_stats"][i] for i in runs],
                "experiment": experiment.to_dict()}
    save_checkpoint(target / "checkpoints", metadata["env_steps"], state, metadata)
    shutil.rmtree(source)


def _metric_values(returns: np.ndarray, metrics: Mapping[str, Any], metric: str) -> np.ndarray:
    """Per run, `metric` of an evaluation (`returns [runs, episodes]`, the env's metrics)."""
    if metric == "eval/mean_reward":
        return np.asarray(returns, float).mean(axis=1)
    return np.asarray(metrics[metric.removeprefix("eval/")], float)


def _aggregate(values: np.ndarray, how: str) -> float:
    values = np.asarray(values, float)
    if how == "mean":
        return float(values.mean())
    from rollax.run.baselines import interquartile_mean  # scipy.stats: 1 s to import

    return float(interquartile_mean(values))


class _Reporter(Callback):
    """Reports each trial's metric at every evaluation; asks the program to stop once the
    pruner has pruned one of its trials (the others go on without it)."""

    def __init__(self, trials: list[Any], seeds: int, settings: TuneSettings):
        self.trials, self.seeds, self.settings = trials, seeds, settings
        self.pruned = [False] * len(trials)

    @property
    def should_stop(self) -> bool:  # type: ignore[override]
        return any(self.pruned)

    def on_evaluation(self, trainer: Any, evaluation: Any) -> None:
        if evaluation.final:
            return  # the final value is told, not reported
        values = _metric_values(evaluation.returns, evaluation.metrics, self.settings.metric)
        for position, trial in enumerate(self.trials):
            if self.pruned[position]:
                continue
            seeds = values[position * self.seeds:(position + 1) * self.seeds]
            trial.report(_aggregate(seeds, self.settings.aggregate), evaluation.step)
            self.pruned[position] = trial.should_prune()


def _write_outputs(result: TuneResult, experiment: Experiment) -> None:
    """`best.toml` (the best trial as a preset) and Optuna's history and importance plots."""
    from optuna.trial import TrialState

    if not _count(result.study, TrialState.COMPLETE):
        warnings.warn(f"no trial of {result.folder} completed: no best.toml", RuntimeWarning, stacklevel=3)
        return
    best = experiment_with(experiment, result.study.best_params, "the best trial")
    write_text_atomically(result.folder / "best.toml", best_preset(best, result.study.best_trial))
    if experiment.logging.plot:
        _plots(result.study, result.folder)


def best_preset(experiment: Experiment, trial: Any) -> str:
    """An experiment preset (TOML) holding the whole of `experiment`, inline env and agent;
    where it is written (`logging.root`, `run_name`) and its tags are left to the new run."""
    import tomli_w

    data = _without_none(experiment.to_dict())
    data.pop("tags", None)
    for key in ("root", "run_name"):
        data["logging"].pop(key, None)
    data["description"] = (f"{experiment.description} Tuned: trial {trial.number}, value "
                           f"{trial.value:.4g}.").strip()
    return tomli_w.dumps(data)


def _without_none(tree: Any) -> Any:
    """TOML has no null: keys holding None are left out (they read back as their default)."""
    if isinstance(tree, dict):
        return {k: _without_none(v) for k, v in tree.items() if v is not None}
    if isinstance(tree, (list, tuple)):
        return [_without_none(v) for v in tree]
    return tree


def _plots(study: Any, folder: Path) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    from rollax.logging.plot import pyplot

    plt = pyplot()
    for name, draw in (("optimization_history", optuna_plots.plot_optimization_history),
                       ("param_importances", optuna_plots.plot_param_importances)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = draw(study)
            axes.figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
        except (ValueError, RuntimeError) as err:  # e.g. importances of a single trial
            warnings.warn(f"no {name}.png: {err}", RuntimeWarning, stacklevel=3)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
