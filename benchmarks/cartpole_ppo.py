"""PPO on CartPole-v1 at the shipped preset's settings: compile time, training time, env-steps/s and
greedy evaluation per seed, for 1 seed and 8 vmapped seeds, with a cold and a warm
compilation cache. Each configuration runs in a fresh process (whole-process wall time too).

    python benchmarks/cartpole_ppo.py
"""

from __future__ import annotations

import json
import os
import tempfile

from timing import run_process

# one training process (the other CartPole benchmarks run it too): the shipped experiment with
# overrides (argv[1], JSON), argv[2] seeds, no run folder; prints its figures as JSON
CHILD = """
import json, sys
from rollax.cache import enable_compilation_cache
from rollax.presets import load_experiment
from rollax.run import train
experiment = load_experiment("cartpole_ppo", ["logging.enabled=false", *json.loads(sys.argv[1])],
                             seeds=int(sys.argv[2]))
enable_compilation_cache()
result = train(experiment, progress=False)
print(json.dumps({"compile": result.compile_seconds, "train": result.train_seconds,
                  "steps": result.env_steps, "eval": result.eval_returns.mean(axis=1).tolist()}))
"""


def run(seeds: int, overrides: list[str] = (), cache_dir: str | None = None,
        timeout: float | None = None) -> dict:
    """One fresh process training the shipped experiment: its figures plus its whole wall
    time; `cache_dir` a compile cache of its own. TimeoutExpired past `timeout` seconds."""
    return run_code([CHILD, json.dumps(list(overrides)), str(seeds)], cache_dir, timeout)


def run_code(code: list[str], cache_dir: str | None = None, timeout: float | None = None) -> dict:
    """`python -c *code` in a fresh process on CPU, in the repository (whose `experiments/`
    the name lookup finds first): the JSON it prints last, plus `process` seconds."""
    env = {**os.environ, **({"ROLLAX_CACHE_DIR": cache_dir} if cache_dir else {})}
    seconds, out = run_process(["-c", *code], env=env, timeout=timeout)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process": seconds}


def main() -> None:
    print("PPO CartPole-v1 (the shipped preset): 8 envs x 32 steps, 20 full-batch epochs, 1.5e5 steps/seed")
    print(f"{'seeds':>5} {'cache':>5} {'compile s':>9} {'train s':>8} {'compile+train':>13} "
          f"{'process s':>9} {'env-steps/s':>11}  greedy eval per seed")
    for seeds in (1, 8):
        with tempfile.TemporaryDirectory() as cache_dir:
            for cache in ("cold", "warm"):
                r = run(seeds, cache_dir=cache_dir)
                rate = r["steps"] * seeds / r["train"]
                evals = " ".join(f"{v:.0f}" for v in r["eval"])
                print(f"{seeds:>5} {cache:>5} {r['compile']:>9.2f} {r['train']:>8.2f} "
                      f"{r['compile'] + r['train']:>13.2f} {r['process']:>9.2f} {rate:>11,.0f}  {evals}")


if __name__ == "__main__":
    main()
