"""rollax and rejax 0.1.3 side by side on PPO CartPole-v1 at rejax's published hyperparameters
(1e5 steps, 5 envs x 100 steps, 5 epochs x 5 minibatches, gae_lambda 0.95, constant lr 7.5e-4),
evaluated only at the end. Each round runs, in alternation and each in a fresh process: the
`rollax train` command as a user runs it (writing its run folder: TensorBoard, checkpoints,
results, plot) with a cold compile cache, the same with a warm one, and a rejax script. Printed:
whole-process wall seconds, compile and training seconds as each framework reports them,
training env-steps/s, and the rollax/rejax ratios per round (medians over the rounds at the
bottom).

    pip install -e '.[bench]'
    python benchmarks/peers.py [--rounds 3] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from cartpole_ablation import REJAX
from cartpole_ppo import run_code
from timing import run_process

HERE = Path(__file__).resolve().parent
TOTAL_STEPS = 100_000
REJAX_SETTINGS = [*REJAX, "eval.every_steps=0"]  # the shipped experiment at rejax's settings
REJAX_CHILD = f"""
import json, sys, time
import jax, jax.numpy as jnp
sys.path.insert(0, sys.argv[1])
from rejax_side_by_side import rejax_ppo
algo = rejax_ppo(eval_every={TOTAL_STEPS})  # evaluates before training and at the end only
keys = jnp.stack([jax.random.PRNGKey(s) for s in range(int(sys.argv[2]))])
start = time.perf_counter()
compiled = jax.jit(jax.vmap(algo.train)).lower(keys).compile()
compile_seconds = time.perf_counter() - start
start = time.perf_counter()
_, (_, returns) = jax.block_until_ready(compiled(keys))
print(json.dumps({{"compile": compile_seconds, "train": time.perf_counter() - start,
                  "steps": {TOTAL_STEPS}, "eval": returns[:, -1].mean(axis=-1).tolist()}}))
"""


def rollax_train(seeds: int, cache_dir: str, cores: int = 1) -> dict:
    """One `rollax train cartpole_ppo` process at rejax's settings, writing its run folder to a
    temporary root (with `cores` 2: the seeds split over two CPU devices); its figures from the
    run's results.json, plus its whole wall time."""
    with tempfile.TemporaryDirectory() as root:
        sets = [*REJAX_SETTINGS, f"logging.root='{root}'"]
        if cores > 1:
            sets += [f"parallel.devices={cores}", f"parallel.seed_devices={cores}"]
        command = ["-m", "rollax", "train", "cartpole_ppo", "--seeds", str(seeds), "--quiet",
                   *[item for value in sets for item in ("--set", value)]]
        env = {**os.environ, "ROLLAX_CACHE_DIR": cache_dir}
        env.pop("JAX_NUM_CPU_DEVICES", None)
        process, _ = run_process(command, env=env)
        (results,) = Path(root).glob("cartpole_ppo/*/results.json")
        figures = json.loads(results.read_text())
    return {"process": process, "compile": figures["compile_seconds"],
            "train": figures["train_seconds"], "steps": figures["env_steps"],
            "eval": figures["eval_mean_return"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=1, help="seeds vmapped in one program")
    args = parser.parse_args()
    # with an even number of seeds, rollax also runs them split over both cores
    layouts = {"": 1, " 2 cores": 2} if args.seeds % 2 == 0 else {"": 1}

    rejax = [REJAX_CHILD, str(HERE), str(args.seeds)]
    print(f"PPO CartPole-v1 at rejax's published settings, 1e5 steps, {args.seeds} seed(s); "
          "seconds per fresh process; rollax's throughput from its warm run (a cold run trains "
          "while its evaluation compiles)")
    print(f"{'round':>5} {'run':<20} {'process':>8} {'compile':>8} {'train':>7} {'env-steps/s':>12}"
          "  greedy eval")
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as warm_root:
        for cores in layouts.values():  # fills each warm cache; not counted
            rollax_train(args.seeds, f"{warm_root}/{cores}", cores)
        for round_ in range(1, args.rounds + 1):
            rows = {}
            for label, cores in layouts.items():
                with tempfile.TemporaryDirectory() as cold_cache:
                    rows[f"rollax{label} cold"] = rollax_train(args.seeds, cold_cache, cores)
                rows[f"rollax{label} warm"] = rollax_train(args.seeds, f"{warm_root}/{cores}", cores)
            with tempfile.TemporaryDirectory() as cold_cache:
                rows["rejax"] = run_code(rejax, cold_cache)
            for name, r in rows.items():
                rate = r["steps"] * args.seeds / r["train"]
                print(f"{round_:>5} {name:<20} {r['process']:>8.2f} {r['compile']:>8.2f} "
                      f"{r['train']:>7.2f} {rate:>12,.0f}  {' '.join(f'{v:.0f}' for v in r['eval'])}")
            peer = rows["rejax"]
            for label in layouts:
                for what, value in ((f"cold process{label}", rows[f"rollax{label} cold"]["process"] / peer["process"]),
                                    (f"warm process{label}", rows[f"rollax{label} warm"]["process"] / peer["process"]),
                                    (f"train throughput{label}", peer["train"] / rows[f"rollax{label} warm"]["train"])):
                    ratios.setdefault(what, []).append(value)
    print("rollax / rejax, median over rounds (per round):")
    for name, values in ratios.items():
        what = "rollax env-steps/s / rejax's" if "throughput" in name else "wall time ratio"
        print(f"  {name:<25} {statistics.median(values):.2f}  ({what}; "
              f"{', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
