"""`rollax tune` against the way RL Zoo tunes (Optuna calling one training process per trial),
in one sitting: N PPO CartPole trials of the same space, sampler (TPE, constant liar, seed 0),
budget (the `cartpole_ppo` preset, one seed per trial; `--total-steps` another) and objective
(the final greedy evaluation's mean return), without pruning on either side so both train every
step. Prints each side's wall seconds, the ratio and the best value each found.

    python benchmarks/tune_vs_processes.py [--trials 64] [--batch 16] [--total-steps N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import optuna
from timing import run_process

SPACE = {"agent.optimizer.learning_rate": "log:1e-4:1e-2", "agent.config.clip_param": "float:0.1:0.3",
         "agent.config.gae_lambda": "float:0.8:0.99"}


def rollax_tune(trials: int, batch: int, root: Path, sets: list[str]) -> tuple[float, float]:
    """`rollax tune` in a fresh process: its wall seconds and the best value."""
    params = [arg for key, spec in SPACE.items() for arg in ("--param", f"{key}={spec}")]
    seconds, _ = run_process(["-m", "rollax", "tune", "cartpole_ppo", *params, "--trials", str(trials),
                              "--batch", str(batch), "--pruner", "none", "--seeds", "1", "--quiet",
                              "--set", f"logging.root='{root}'", "--set", "logging.plot=false", *sets])
    folder = next((root / "cartpole_ppo").glob("*_tune"))
    study = optuna.load_study(study_name="rollax", storage=f"sqlite:///{folder / 'study.db'}")
    return seconds, study.best_value


def process_per_trial(trials: int, root: Path, sets: list[str]) -> tuple[float, float]:
    """Optuna's `study.optimize`, each trial a `rollax train` process reading its results.json."""
    from rollax.tuning import distributions

    space = distributions(SPACE)

    def objective(trial: optuna.Trial) -> float:
        drawn = {key: trial.suggest_float(key, d.low, d.high, log=d.log) for key, d in space.items()}
        values = [arg for key, value in drawn.items() for arg in ("--set", f"{key}={value!r}")]
        _, process = run_process(["-m", "rollax", "train", "cartpole_ppo", "--seeds", "1",
                                  "--set", f"logging.root='{root}'", "--set", "logging.plot=false",
                                  "--set", "logging.progress=false", *values, *sets])
        run_dir = process.stdout.split("run written to ")[1].split()[0]
        return float(json.loads((Path(run_dir) / "results.json").read_text())["eval_mean_return"][0])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start, study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--total-steps", type=int, help="env steps per trial (default: the preset's)")
    args = parser.parse_args()
    sets = [] if args.total_steps is None else ["--set", f"budget.total_steps={args.total_steps}",
                                                "--set", f"eval.every_steps={args.total_steps // 10}"]
    with tempfile.TemporaryDirectory() as tmp:
        tune_seconds, tune_best = rollax_tune(args.trials, args.batch, Path(tmp) / "tune", sets)
        print(f"rollax tune      : {args.trials} trials in batches of {args.batch}: "
              f"{tune_seconds:7.1f} s, best eval/mean_reward {tune_best:.1f}", flush=True)
        zoo_seconds, zoo_best = process_per_trial(args.trials, Path(tmp) / "zoo", sets)
        print(f"process per trial: {args.trials} trials, one `rollax train` each: "
              f"{zoo_seconds:7.1f} s, best eval/mean_reward {zoo_best:.1f}")
    print(f"wall time ratio (rollax tune / process per trial): {tune_seconds / zoo_seconds:.3f}")


if __name__ == "__main__":
    sys.exit(main())
