"""Greedy evaluation of a saved run: its experiment, newest checkpoint, fresh episodes."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from rollax.logging.run_callbacks import restore
from rollax.run.experiment import Experiment
from rollax.run.program import make_program
from rollax.run.run_folder import find_run, read_experiment
from rollax.run.seeds import eval_keys

EVAL_KEY_INDEX = 10**6  # keys apart from the ones evaluations during training used


def evaluate_run(run_dir: str | Path, episodes: int = 10) -> tuple[Experiment, np.ndarray, int]:
    """`(experiment, greedy returns [seeds, episodes], env steps trained)` of the run's newest
    checkpoint; `run_dir` may be an experiment folder (see `find_run`)."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    run_dir = find_run(run_dir)
    experiment = read_experiment(run_dir)
    experiment = experiment.replace(eval={"episodes": episodes})
    _, program = make_program(experiment)
    try:
        seeds = experiment.seed_list
        state, _, step = restore(Path(run_dir), program.init(seeds), [])
        state = program.place(state)
        returns, _ = jax.device_get(program.evaluate(state, eval_keys(seeds, EVAL_KEY_INDEX)))
    finally:
        program.close()
    return experiment, np.asarray(returns), step
