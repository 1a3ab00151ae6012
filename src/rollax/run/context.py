"""The run as callbacks see it: what is being trained, where it is written, how far it got."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rollax.logging.episode_stats import TAGS as EPISODE_TAGS
from rollax.logging.episode_stats import EpisodeStats
from rollax.logging.run_dir import claim_run_folder, make_run_dir
from rollax.logging.writer_lock import WriterLock, hold_writer_lock
from rollax.run.experiment import Experiment
from rollax.run.learner import PARAMS_FINITE
from rollax.run.parallel import host_local
from rollax.run.plan import Plan
from rollax.run.result import TrainResult
from rollax.run.seeds import eval_keys

RENDER_KEY_INDEX = 2**31 - 1  # sample pictures use the same conditions before and after training


@dataclasses.dataclass(frozen=True)
class Runs:
    """The runs one program trains side by side, index by index: a run's seeds, each with the
    run's experiment, or a sweep's combinations x seeds (`rollax.sweeps`), each with its
    combination's experiment, its own seed folder and its swept numbers."""

    seeds: list[int]
    experiments: list[Experiment]
    dirs: list[Path] | None = None  # a sweep's seed folders, made by the sweep; None: the run's
    hparams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # {key: [runs]}
    checkpoint_dir: Path | None = None  # a sweep program's folder, for its resume checkpoints

    @classmethod
    def of(cls, experiment: Experiment) -> Runs:
        return cls(experiment.seed_list, [experiment] * experiment.seeds)

    @property
    def sweep(self) -> bool:
        return self.dirs is not None


@dataclasses.dataclass
class RunContext:
    """Passed to every callback hook in `rollax.train`.

    `state` is the stacked per-seed training state (`state["train"]` is a `TrainState` with a
    leading seed axis); `resume_step` the checkpoint step a resumed run started from (None for
    a fresh run); `outcome` is "running", then "finished", "stopped" (signal, early stop,
    `stop_at_step`) or "failed"; `result` is set once a run has finished or stopped.
    `callbacks.should_stop`: training ends after this chunk (any callback asked, the loop's own
    reasons included: `rollax.logging.callbacks.StopRequest`).
    """

    experiment: Experiment
    plan: Plan
    program: Any
    seeds: list[int]
    run_dir: Path | None
    seed_dirs: list[Path]
    episode_stats: list[EpisodeStats]
    resume_step: int | None = None
    state: Any = None
    iteration: int = 0
    outcome: Literal["running", "finished", "stopped", "failed"] = "running"
    result: TrainResult | None = None
    callbacks: Any = None  # the run's CallbackList
    seed_experiments: list[Experiment] = dataclasses.field(default_factory=list)  # per seed folder
    sweep: bool = False  # the runs are a sweep's combinations x seeds (`Runs`)
    lock: WriterLock | None = None  # this run's hold on its folder (a sweep holds its own)

    @property
    def host_state(self) -> Any:
        """`state` as arrays this process holds whole: what a callback may index or save (in
        a multi-process run, this process's replica; otherwise `state` itself)."""
        return host_local(self.state)

    @property
    def step(self) -> int:
        """Env steps per seed done so far."""
        return self.iteration * self.plan.steps_per_iteration

    def reported_tags(self) -> set[str] | None:
        """Every tag a chunk's summary may hold (`train/*`, `rollout/*`, `charts/*`,
        `time/fps`, `eval/*`), or None where the update's metrics are known only after it ran."""
        names = self.program.train_metric_names
        if names is None:
            return None
        return {*(f"train/{name}" for name in names if name != PARAMS_FINITE), *EPISODE_TAGS,
                "time/fps", "eval/mean_reward",
                *(f"eval/{name}" for name in self.program.eval_metric_names or [])}

    def render_samples(self):
        """The env's sample pictures `[S, B, H, W]` for the current state, or None."""
        return self.program.render(self.host_state, eval_keys(self.seeds, RENDER_KEY_INDEX))

    def sample_texts(self):
        """Per seed, a text of the policy's samples (sources that show texts), or None."""
        return self.program.sample_texts(self.host_state, eval_keys(self.seeds, RENDER_KEY_INDEX))


def open_run(experiment: Experiment, plan: Plan, program: Any, resume: str | Path | None,
             runs: Runs | None = None) -> RunContext:
    """A fresh run's directories (an unwritable root fails here, before training), or a resumed
    one's (its checkpoint checked by `resumed_experiment`), untouched until that has been read;
    a sweep's folders, which the sweep made (and holds). A run holds its folder's writer lock
    (`rollax.logging.writer_lock`) from here to its end. `runs`: the experiment's seeds by
    default."""
    runs = Runs.of(experiment) if runs is None else runs
    seeds = runs.seeds
    stats = [EpisodeStats() for _ in seeds]

    def context(run_dir: Path | None, seed_dirs: list[Path], lock: WriterLock | None = None):
        return RunContext(experiment, plan, program, seeds, run_dir, seed_dirs, stats,
                          seed_experiments=runs.experiments, sweep=runs.sweep, lock=lock)

    if runs.sweep:  # the program's folder in the sweep's
        return context(runs.checkpoint_dir, runs.dirs)
    if resume is not None:
        run_dir = Path(resume)
        seed_dirs = [run_dir / f"seed_{seed}" for seed in seeds]
        missing = [str(d) for d in seed_dirs if not d.is_dir()]
        if missing:  # a resumed experiment is the run's own, so it logs
            raise FileNotFoundError(f"cannot resume: missing seed directories {missing}")
        return context(run_dir, seed_dirs, hold_writer_lock(run_dir))
    if not experiment.logging.enabled:
        return context(None, [])
    run_dir = claim_run_folder(experiment.logging.root, experiment.name,  # this run's alone
                               experiment.logging.run_name)
    lock = hold_writer_lock(run_dir)  # before anything is written in it
    try:
        seed_dirs = [make_run_dir(experiment.logging.root, experiment=experiment.name, seed=seed,
                                  timestamp=run_dir.name) for seed in seeds]
    except BaseException:
        lock.release()
        raise
    return context(run_dir, seed_dirs, lock)
