"""Training env-steps/s of a preset against the number of envs on one device, and against the
number of devices at a fixed global batch.

Each point is a separate `rollax.train` process (JAX fixes its device count at start): the
same preset with `budget.num_envs` and `parallel.devices` set, a fixed number of iterations,
no logging. On a CPU-only machine the devices are forced host devices
(`JAX_NUM_CPU_DEVICES`), which split the same cores: expect no speed-up there; the point
is that the sharded program runs. With GPUs, the real devices are used.

Usage: python benchmarks/scaling.py [--experiment cartpole_ppo] [--envs 8,64,512,2048]
       [--devices 1,2,4] [--device-envs 512] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from timing import run_process


def child(experiment: str, num_envs: int, devices: int, iterations: int) -> None:
    """One measured run; prints a JSON line."""
    import jax

    import rollax

    num_steps = rollax.load_experiment(experiment).budget.num_steps
    exp = rollax.load_experiment(experiment, [
        f"budget.num_envs={num_envs}", f"budget.total_steps={iterations * num_envs * num_steps}",
        f"budget.iterations_per_chunk={iterations}", "logging.enabled=false", "eval.episodes=1",
        f"parallel.devices={devices}"])
    result = rollax.train(exp, progress=False)
    print(json.dumps({"env_steps": result.env_steps * len(result.seeds),
                      "train_seconds": result.train_seconds,
                      "compile_seconds": result.compile_seconds,
                      "device": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"}))


def measure(experiment: str, num_envs: int, devices: int, iterations: int) -> dict:
    """One `child` run in a fresh process (on the default platform, not forced to CPU): its
    JSON line."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "")
    if devices > 1:  # forced host devices; ignored by GPU platforms
        env["JAX_NUM_CPU_DEVICES"] = str(devices)
    _, out = run_process([str(Path(__file__).resolve()), "--child", experiment, str(num_envs),
                          str(devices), str(iterations)], env=env, cwd=Path.cwd(), check=False)
    if out.returncode != 0:
        raise SystemExit(f"run with {num_envs} envs on {devices} device(s) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="cartpole_ppo")
    parser.add_argument("--envs", default="8,64,512,2048")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--device-envs", type=int, default=512, help="global envs for the device sweep")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, num_envs, devices, iterations = args.child
        child(name, int(num_envs), int(devices), int(iterations))
        return

    print(f"{args.experiment}, {args.iterations} iterations per point, training time only "
          "(compile reported apart)")
    print(f"{'envs':>6} {'devices':>7} {'env-steps/s':>12} {'train s':>8} {'compile s':>9}  device")
    rows = [(n, 1) for n in map(int, args.envs.split(","))]
    rows += [(args.device_envs, d) for d in map(int, args.devices.split(",")) if d > 1]
    for num_envs, devices in rows:
        r = measure(args.experiment, num_envs, devices, args.iterations)
        print(f"{num_envs:>6} {devices:>7} {r['env_steps'] / r['train_seconds']:>12,.0f} "
              f"{r['train_seconds']:>8.2f} {r['compile_seconds']:>9.1f}  {r['device']}", flush=True)


if __name__ == "__main__":
    main()
