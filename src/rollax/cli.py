"""The `rollax` command line: train, eval, baselines, envs, plot, pretrain."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from rollax.experiment import enable_compilation_cache, train
    from rollax.presets import load_experiment

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    experiment = load_experiment(args.experiment, args.set, seeds=args.seeds)
    if args.no_log:
        experiment["logging"]["enabled"] = False
    if args.resume:
        _check_resume(Path(args.resume), experiment)
    enable_compilation_cache()
    result = train(experiment, progress=not args.quiet, resume=args.resume)
    print(result.table())
    if result.run_dir is not None:
        print(f"run written to {result.run_dir}  (tensorboard --logdir {result.run_dir.parent})")
    return 0


def _check_resume(run_dir: Path, experiment: dict) -> None:
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoints/ folder there")
    experiment["logging"]["root"] = str(run_dir.parent.parent)


def _baselines(args: argparse.Namespace) -> int:
    from rollax.experiment import enable_compilation_cache, train
    from rollax.presets import load_experiment

    enable_compilation_cache()
    paths = sorted(Path(args.dir).glob("*.toml"))
    experiments = [load_experiment(p, seeds=args.seeds) for p in paths]
    experiments = [e for e in experiments if "baseline" in e["tags"]]
    if not experiments:
        raise ValueError(f"no experiment in {args.dir} is tagged 'baseline'")
    for experiment in experiments:
        if experiment["env"]["solved_threshold"] is None:
            raise ValueError(f"experiment {experiment['name']!r} is tagged 'baseline' but its env "
                             "preset sets no solved_threshold")
    rows, failed = [], 0
    for experiment in experiments:
        result = train(experiment, progress=not args.quiet)
        means = result.eval_returns.mean(axis=1)
        threshold = experiment["env"]["solved_threshold"]
        solved = int((means >= threshold).sum())
        ok = solved >= 0.8 * len(means)  # e.g. 4 of 5 seeds, as the baseline targets are stated
        failed += not ok
        rows.append(f"{experiment['name']:<24} {experiment['env']['id']:<14} {means.mean():>9.1f} "
                    f"{means.min():>9.1f} {threshold:>9.1f} {solved:>3}/{len(means):<3} "
                    f"{result.compile_seconds + result.train_seconds:>8.1f}  {'PASS' if ok else 'FAIL'}")
    print(f"{'experiment':<24} {'env':<14} {'mean':>9} {'worst':>9} {'threshold':>9} {'solved':>7} "
          f"{'wall s':>8}  result")
    print("\n".join(rows))
    return 1 if failed else 0


def _envs(args: argparse.Namespace) -> int:
    from rollax.envs import registered_ids

    print("\n".join(registered_ids()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from rollax.experiment import Program, make_plan
    from rollax.logging.run_log import restore
    from rollax.presets import seed_list

    run_dir = Path(args.run_dir)
    config_path = next(iter(sorted(run_dir.glob("seed_*/config.json"))), None)
    if config_path is None:
        raise FileNotFoundError(f"{run_dir} has no seed_*/config.json: is it a run directory?")
    experiment = json.loads(config_path.read_text())
    experiment["eval"]["episodes"] = args.episodes
    plan = make_plan(experiment)
    if plan.host_env_id is not None:
        from rollax.host_program import HostProgram

        program = HostProgram(experiment, plan)
    else:
        program = Program(experiment, plan)
    seeds = seed_list(experiment)
    state, iteration = restore(run_dir, program.init(seeds), [])
    import jax

    keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), 10**6))(np.asarray(seeds))
    returns, _ = jax.device_get(program.evaluate(state, keys))  # (returns [S, E], env metrics)
    program.close()
    print(f"{'seed':>4}  {'mean return':>12}  {'std':>8}   (greedy, {args.episodes} episodes, "
          f"after {iteration * plan.steps_per_iteration} env steps)")
    for seed, r in zip(seeds, returns):
        print(f"{seed:>4}  {r.mean():>12.2f}  {r.std():>8.2f}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from rollax.logging.plot import plot_runs

    out = args.out or Path(args.run_dirs[0]) / "learning_curves.png"
    out = plot_runs(args.run_dirs, out, metric=args.metric, band=args.band)
    print(f"wrote {out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from rollax.generative import pretrain

    report = pretrain(args.model, force=args.force)
    for key, value in report.items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an experiment preset")
    p.add_argument("experiment", help="experiments/NAME.toml, or NAME")
    p.add_argument("--seeds", type=int, help="number of seeds, trained together in one program")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a preset value, e.g. agent.config.clip_param=0.1")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--no-log", action="store_true", help="write no run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("baselines", help="run every experiment tagged 'baseline'; pass/fail table "
                       "(PASS: at least 80%% of the seeds reach the env's threshold with their greedy eval return)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--dir", default="experiments")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_baselines)

    p = sub.add_parser("eval", help="greedy evaluation of a run's newest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=10)
    p.set_defaults(func=_eval)

    p = sub.add_parser("envs", help="list environment ids")
    p.set_defaults(func=_envs)

    p = sub.add_parser("plot", help="PNG learning curves (mean and spread over seeds)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", help="PNG path (default: <first run dir>/learning_curves.png)")
    p.add_argument("--metric", default="rollout/ep_rew_mean")
    p.add_argument("--band", choices=["minmax", "std"], default="minmax",
                   help="spread over seeds: min-max or mean +- 1 std")
    p.set_defaults(func=_plot)

    p = sub.add_parser("pretrain", help="pretrain (or load from cache) a generative model on digits")
    p.add_argument("model", choices=["vae", "gan", "classifier"])
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.set_defaults(func=_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rollax.experiment import TrainingDiverged

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"rollax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:  # names the iteration, seed and metric; logs are saved
        print(f"rollax {args.command}: training diverged: {err}", file=sys.stderr)
        return 1
