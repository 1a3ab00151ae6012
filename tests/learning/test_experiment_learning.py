"""Slow learning checks (`-m slow`): every baseline preset solves on each of seeds 0-9 (its
greedy eval return, 10 episodes per seed), trained as one program like `rollax baselines --seeds 10`;
the MountainCar presets also reach the issue's mean over the seeds."""

import time
from pathlib import Path

import numpy as np
import pytest

from rollax.presets import load_experiment
from rollax.run import train

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

# experiment preset, threshold on each seed's mean greedy eval return, seeds, seeds that must
# reach it, the least mean over the seeds
CASES = [
    ("cartpole_ppo", 475.0, 10, 10, 475.0),
    ("cartpole_reinforce", 475.0, 10, 10, 475.0),
    ("acrobot_ppo", -100.0, 10, 10, -100.0),
    ("pendulum_ppo", -250.0, 10, 10, -250.0),
    ("gymnasium_cartpole_ppo", 475.0, 5, 4, -np.inf),  # Gymnasium's CartPole on the host
    ("mountaincar_ppo", -140.0, 10, 10, -115.0),  # the flag well inside the 200-step limit
    ("mountaincar_continuous_ppo", 75.0, 10, 10, 90.0),  # the flag reached
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "threshold", "seeds", "required", "mean"), CASES,
                         ids=[c[0] for c in CASES])
def test_baseline_learns_on_every_seed(name, threshold, seeds, required, mean, capsys):
    experiment = load_experiment(EXPERIMENTS / f"{name}.toml", ["logging.enabled=false"], seeds=seeds)
    start = time.perf_counter()
    result = train(experiment, progress=False)
    wall = time.perf_counter() - start
    means = result.eval_returns.mean(axis=1)
    with capsys.disabled():
        print(f"\n{name}: mean {means.mean():.1f}, worst seed {means.min():.1f}, "
              f"per seed {np.round(means, 1).tolist()}, wall {wall:.0f} s")
    assert (means >= threshold).sum() >= required, f"{name}: per-seed means {means}"
    assert means.mean() >= mean, f"{name}: mean {means.mean()} over the seeds"
