"""The 5-seed learning checks of token experiments: each seed's held-out greedy success before
training (the warm start, scored by the run's own evaluation) and after it."""

import time

import jax
import numpy as np

import rollax
from rollax.run.program import make_program
from rollax.run.seeds import eval_keys


def before_and_after(name: str, tmp_path, seeds: int = 5) -> tuple[np.ndarray, np.ndarray, float]:
    """`(before [S], after [S], training seconds)`: mean evaluation return per seed of the
    initial policies and of the trained ones, seeds 0..S-1 in one program."""
    experiment = rollax.load_experiment(name, [f"logging.root={tmp_path}"], seeds=seeds)
    _, program = make_program(experiment)
    seed_list = experiment.seed_list
    before, _ = jax.device_get(program.evaluate(program.init(seed_list), eval_keys(seed_list, 0)))
    start = time.perf_counter()
    after = rollax.train(experiment, progress=False).eval_returns
    return np.asarray(before).mean(1), np.asarray(after).mean(1), time.perf_counter() - start
