"""The training loop: compiled chunks of iterations, callbacks between them.

One iteration = collect (or sample groups) + the algorithm's update. K iterations run inside
one jitted `lax.scan` ("a chunk"), `vmap`ped over seeds, so N seeds are one compiled program.
Between chunks the host hands the chunk's metrics to the callbacks (logging, progress,
checkpoints, early stopping, ...), evaluates when due, and checks for a stop.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from rollax.checks import check_int
from rollax.errors import RunFailed
from rollax.logging.callbacks import Callback, CallbackList, Chunk, Evaluation, StopRequest
from rollax.logging.run_callbacks import restore
from rollax.logging.shutdown import graceful_shutdown
from rollax.logging.writer_lock import hold_writer_lock
from rollax.rollout.sources import FAULT
from rollax.run.callbacks import default_callbacks
from rollax.run.context import RunContext, Runs, open_run
from rollax.run.experiment import Experiment
from rollax.run.learner import PARAMS_FINITE
from rollax.run.parallel import split_the_cpu
from rollax.run.program import make_program
from rollax.run.resources import check_file_size, check_memory, check_open_files, tree_bytes
from rollax.run.result import TrainResult
from rollax.run.resume import resumed_experiment
from rollax.run.seeds import eval_keys


class TrainingDiverged(RunFailed):
    """A loss or the parameters became NaN/inf, or a batch broke its env's contract (a
    source's `FAULT` count); the message names the iteration, seed and what happened."""


def train(
    experiment: Experiment | None, *, callbacks: Sequence[Callback] = (), progress: bool = True,
    resume: str | Path | None = None, stop_at_step: int | None = None,
) -> TrainResult:
    """Run an experiment (from `rollax.load_experiment`) for all its seeds at once.

    `callbacks` run after the preset's metrics, images, best-model and `[logging]` optional
    callbacks and before its resume checkpoint, results and progress bar (so a stop they ask
    for is checkpointed in the same chunk); `resume` continues a run directory's
    newest checkpoint with the run's own experiment (`experiment` may be None; one that differs
    from the run's in anything but `budget.total_steps` is a ValueError naming the keys);
    `stop_at_step` ends early (after the chunk reaching that env step) with a checkpoint, as a
    signal would, for later resuming.
    """
    check_run_options(progress, stop_at_step)
    if experiment is not None:  # before the checkpoint reader below starts JAX
        split_the_cpu(experiment.parallel.devices)
    if resume is None and experiment is None:
        raise ValueError("train needs an experiment, or resume=RUN_DIR to continue a run")
    # a resume reads the run only while no other process writes it
    with contextlib.ExitStack() as held:
        if resume is not None:
            if not (Path(resume) / "checkpoints").is_dir():  # nothing locked in a stray folder
                raise FileNotFoundError(f"cannot resume: no {Path(resume) / 'checkpoints'} folder")
            held.enter_context(hold_writer_lock(resume))
            experiment = resumed_experiment(resume, experiment)
        plan, program = make_program(experiment)  # a missing model pretrains here (says so)
        if jax.process_index() != 0:  # a multi-process run has one writer (rollax.run.parallel)
            experiment = experiment.replace(logging={"enabled": False, "progress": False, "wandb": {}})
        return train_runs(experiment, plan, program, Runs.of(experiment), callbacks=callbacks,
                          progress=progress, resume=resume, stop_at_step=stop_at_step)


def check_run_options(progress: Any, stop_at_step: Any) -> None:
    """ValueError naming `progress` unless it is a boolean (a string such as 'no' is truthy) or
    `stop_at_step` unless it is None or an env step >= 1."""
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    if stop_at_step is not None:
        check_int("stop_at_step", stop_at_step, 1)


def train_runs(experiment: Experiment, plan, program, runs: Runs, *, callbacks: Sequence[Callback] = (),
               progress: bool = True, resume: str | Path | None = None,
               stop_at_step: int | None = None) -> TrainResult:
    """`train` of `runs` side by side in `program` (`make_program(experiment, ...)`): the
    experiment's seeds, or a sweep's combinations x seeds (`rollax.sweeps`)."""
    run, hooks, failed = None, CallbackList(), None
    say = _announcer(progress and experiment.logging.progress)
    try:
        say(f"compiling the training and evaluation programs for {len(runs.seeds)} "
            f"{'run' if runs.sweep else 'seed'}(s)...")
        state_bytes = tree_bytes(program.abstract_state(runs.seeds, runs.hparams))
        check_memory({"training state": state_bytes})
        if experiment.logging.enabled:
            check_open_files(len(runs.seeds))
            check_file_size(state_bytes)
        chunk_job, compile_start = program.compile(runs.seeds, runs.hparams)
        run = open_run(experiment, plan, program, resume, runs)
        run.state = program.init(run.seeds, runs.hparams)  # while the chunk compiles in the background
        eval_job = program.compile_evaluation(runs.seeds, runs.hparams)  # compiles as training starts
        if resume is not None:
            run.state, run.iteration, run.resume_step = restore(Path(resume), run.state, run.episode_stats)
            run.state = program.place(run.state)
        start_step = run.step
        defaults, closing = default_callbacks(experiment, plan.total_steps, run.step, progress,
                                              sweep=runs.sweep)
        stop = StopRequest()  # first: every callback of a chunk sees the loop's own stop
        hooks = run.callbacks = CallbackList([stop, *defaults, *callbacks, *closing])
        _check_monitors(run, hooks.callbacks)
        hooks.on_train_begin(run)
        run_chunk = chunk_job.result()
        check_memory({"training state": state_bytes, **program.working_memory(run_chunk)})
        compile_seconds = time.perf_counter() - compile_start  # what training waited for
        say(f"compiled in {compile_seconds:.1f} s; training")
        with graceful_shutdown() as shutdown:
            train_seconds = _train_chunks(run, run_chunk, eval_job.result, hooks, stop,
                                          lambda: shutdown.requested, stop_at_step)
            returns, metrics = jax.device_get(eval_job.result()(run.state, eval_keys(run.seeds, run.iteration)))
            hooks.on_evaluation(run, Evaluation(run.step, returns, metrics, final=True))
            run.outcome = "stopped" if hooks.should_stop else "finished"
            run.result = TrainResult(
                name=experiment.name, run_dir=run.run_dir, seeds=run.seeds, eval_returns=returns,
                eval_metrics={k: np.asarray(v) for k, v in metrics.items()},
                ep_rew_mean=[s.ep_rew_mean for s in run.episode_stats], env_steps=run.step,
                compile_seconds=compile_seconds, train_seconds=train_seconds,
                solved_threshold=experiment.env.solved_threshold, start_step=start_step)
    except BaseException as err:
        failed = err
        if run is not None and run.outcome == "running":
            run.outcome = "failed"
        raise
    finally:
        _finish(run, hooks, program, failed)
        if failed is not None and run is not None and resume is None and run.iteration == 0:
            _discard(run)
    return run.result


def _check_monitors(run: RunContext, callbacks: Sequence[Callback]) -> None:
    """A callback's `monitor` (early stopping, a checkpoint by metric) must be a tag the run
    reports: one that never appears is an error before training, not a warning after it."""
    tags = run.reported_tags()
    if tags is None:
        return
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor not in tags and f"train/{monitor}" not in tags:
            raise ValueError(f"{type(callback).__name__}: monitor {monitor!r} is not a metric "
                             f"this run reports; its metrics: {sorted(tags)}")


def _announcer(enabled: bool):
    """Print a phase line above the progress bar (stderr), or nothing for a quiet run."""
    return (lambda line: tqdm.write(line, file=sys.stderr)) if enabled else (lambda line: None)


def _discard(run: RunContext) -> None:
    """A fresh run that ended before its first chunk (Ctrl-C while compiling, an error) holds
    nothing but its config: its folder is removed rather than left looking like a run (a
    sweep's: these runs' folders, not the sweep's)."""
    if run.sweep:
        for seed_dir in run.seed_dirs:
            shutil.rmtree(seed_dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # the combination's folder, if now empty
                seed_dir.parent.rmdir()
    elif run.run_dir is not None:
        shutil.rmtree(run.run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the experiment's folder, if this was its only run
            run.run_dir.parent.rmdir()


def _finish(run: RunContext | None, hooks: CallbackList, program,
            failed: BaseException | None) -> None:
    """Every callback's end hook, then the program's resources. When the run already failed,
    a callback's own error is a warning, so it cannot hide the first error (the same full
    disk again is not news). A first signal waits for the final checkpoint and results (then
    exits 128 + signal); a second one stops."""
    with graceful_shutdown():
        try:
            if run is not None:
                hooks.on_train_end(run)
        except Exception as err:
            if failed is None:
                raise
            if isinstance(err, OSError) and getattr(failed, "errno", None) == err.errno:
                return
            warnings.warn(f"a callback failed while ending a failed run: {err!r}", RuntimeWarning,
                          stacklevel=4)
        finally:
            program.close()
            if run is not None and run.lock is not None:
                run.lock.release()


def _train_chunks(run: RunContext, run_chunk, evaluation, hooks: CallbackList, stop: StopRequest,
                  signalled, stop_at_step: int | None) -> float:
    """Chunks until the plan's iterations are done or a stop is asked; the training seconds."""
    plan, train_seconds = run.plan, 0.0
    every = run.experiment.eval.every_steps
    chunk_steps = plan.iterations_per_chunk * plan.steps_per_iteration
    while run.iteration < plan.iterations:
        tick = time.perf_counter()
        run.state, (metrics, episodes) = run_chunk(run.state)
        metrics, episodes = jax.device_get((metrics, episodes))
        finite = metrics.pop(PARAMS_FINITE)
        elapsed = time.perf_counter() - tick
        train_seconds += elapsed
        first_iteration = run.iteration
        run.iteration += plan.iterations_per_chunk
        diverged = _divergence(run, metrics, finite, first_iteration)
        rollout = _episode_statistics(run, episodes)
        summary = {**_summary(metrics, rollout), "time/fps": chunk_steps * len(run.seeds) / elapsed}
        due = every and run.step // every > (run.step - chunk_steps) // every
        if due and run.iteration < plan.iterations and diverged is None:
            returns, env_metrics = jax.device_get(evaluation()(run.state, eval_keys(run.seeds, run.iteration)))
            hooks.on_evaluation(run, Evaluation(run.step, returns, env_metrics))
            summary["eval/mean_reward"] = float(np.mean(returns))
        if diverged is not None:
            run.outcome = "failed"  # log the chunk, checkpoint nothing
        if signalled():
            stop.reason = "a signal"
        elif stop_at_step is not None and run.step >= stop_at_step:
            stop.reason = f"stop_at_step={stop_at_step}"
        hooks.on_chunk_end(run, Chunk(first_iteration, plan.steps_per_iteration, metrics, episodes,
                                      rollout, summary["time/fps"], run.step, summary))
        if diverged is not None:
            raise TrainingDiverged(diverged)
        if hooks.should_stop:  # any callback, during on_chunk_end at the latest
            run.outcome = "stopped"  # checkpointed by the end at the latest
            tqdm.write(f"stopped at env step {run.step}; the checkpoint and logs are kept")
            break
    return train_seconds


def _episode_statistics(run: RunContext, episodes) -> list[list[dict[str, float]]]:
    """Feed each seed's finished episodes to its statistics; the metrics after each iteration."""
    returns, lengths, dones = episodes
    out = []
    for s, stats in enumerate(run.episode_stats):
        out.append([])
        for k in range(returns.shape[1]):
            stats.update(returns[s, k], lengths[s, k], dones[s, k])
            out[s].append(stats.metrics())
    return out


def _summary(metrics: dict, rollout: list[list[dict[str, float]]]) -> dict[str, float]:
    """Seed means of the chunk's last iteration: what a plain callback's `metrics` holds (an
    episode tag averages the seeds that have it)."""
    summary = {f"train/{name}": float(np.mean(values[:, -1])) for name, values in metrics.items()}
    for tag in sorted({tag for seed in rollout for tag in seed[-1]}):
        summary[tag] = float(np.mean([seed[-1][tag] for seed in rollout if tag in seed[-1]]))
    return summary


def _divergence(run: RunContext, metrics: dict, finite: np.ndarray, first_iteration: int
                ) -> str | None:
    """The message for the chunk's first iteration with a fault of the source's batch (a
    `FAULT` metric), a NaN/inf loss (`[S, K]` metrics) or an update that left non-finite
    parameters (`finite` `[S, K]`), or None."""
    source = run.plan.source  # None for an env stepped on the host, which reports no faults
    detail = source.fault_detail if source is not None else str
    problems = [(int(k), 0, int(seed), detail(name.removeprefix(FAULT)), "the run is stopped")
                for name in sorted(n for n in metrics if n.startswith(FAULT))
                for seed, k in np.argwhere(metrics.pop(name) != 0)]
    diverged = "training diverged"
    problems += [(int(k), 2, int(seed), "the update left non-finite parameters", diverged)
                 for seed, k in np.argwhere(~finite)]
    for name in sorted(k for k in metrics if "loss" in k):
        problems += [(int(k), 1, int(seed), f"{name} became {metrics[name][seed, k]}", diverged)
                     for seed, k in np.argwhere(~np.isfinite(metrics[name]))]
    if not problems:
        return None
    k, _, seed, what, consequence = min(problems)  # the earliest; a cause before its effects
    iteration = first_iteration + k + 1
    return (f"{what} at iteration {iteration} (env step "
            f"{iteration * run.plan.steps_per_iteration}) for {_which(run, seed)}: "
            f"{consequence}; the logs up to there and the last good checkpoint are saved")


def _which(run: RunContext, index: int) -> str:
    """`seed 3`, or in a sweep the run's folder (`learning_rate=0.001/seed_3`)."""
    if run.sweep:
        folder = run.seed_dirs[index]
        return f"the run {folder.parent.name}/{folder.name}"
    return f"seed {run.seeds[index]}"
