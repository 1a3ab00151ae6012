"""Slow learning checks (`-m slow`) of the diffusion presets: 5 seeds in one program each; the
independent judge scores the sampling policy's digits (evaluation samples chains, 20 per
class), and every seed must reach the targets."""

import time

import numpy as np
import pytest

from rollax.presets import load_experiment
from rollax.run import train

# experiment, least judge success, least per-class diversity, least realistic share (per seed)
CASES = [
    ("diffusion_ppo", 0.95, 0.7, 0.9),
    ("diffusion_grpo", 0.95, 0.7, 0.9),
    ("flow_grpo", 0.95, 0.7, 0.9),
    ("diffusion_reinforce", 0.95, 0.7, 0.9),
    ("diffusion_rloo", 0.95, 0.7, 0.9),
    ("diffusion_dpo", 0.9, 0.7, 0.9),
]
SEEDS = 5


@pytest.mark.slow
@pytest.mark.parametrize(("name", "success", "diversity", "realistic"), CASES)
def test_diffusion_preset_reaches_its_targets_on_every_seed(name, success, diversity, realistic,
                                                             capsys):
    experiment = load_experiment(name, ["logging.enabled=false"], seeds=SEEDS)
    start = time.perf_counter()
    result = train(experiment, progress=False)
    wall = time.perf_counter() - start
    metrics = {key: np.asarray(result.eval_metrics[key])
               for key in ("judge_success", "diversity", "realistic")}
    with capsys.disabled():
        print(f"\n{name} ({wall:.0f} s): " + ", ".join(
            f"{key} mean {v.mean():.3f} worst {v.min():.3f}" for key, v in metrics.items()))
    tolerance = 1e-6  # the shares are float32: 190 of 200 reads 0.94999999
    assert np.all(metrics["judge_success"] >= success - tolerance), metrics
    assert np.all(metrics["diversity"] >= diversity - tolerance), metrics
    assert np.all(metrics["realistic"] >= realistic - tolerance), metrics
