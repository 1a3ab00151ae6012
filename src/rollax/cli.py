"""The `rollax` command line: train, sweep, tune, eval, baselines, presets, envs, plot, pretrain."""

from __future__ import annotations

import argparse
import atexit
import errno
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from rollax.errors import RunFailed


def _import_modules(modules: list[str]) -> None:
    """`--import-module`: the user's explicit choice; presets and run folders never import.
    A module in the working folder is found as with `python -m` (the console script's
    `sys.path` does not hold that folder)."""
    if modules and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"--import-module {module}: {err}") from None
        except (Exception, SystemExit) as err:  # noqa: BLE001 - the user's code: one line naming it
            raise ValueError(f"--import-module {module} raised {type(err).__name__}: {err}") from None


def _check_dirs(folders: list[str] | None) -> None:
    for folder in folders or ():
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--dir {folder}: no such folder")


def _train(args: argparse.Namespace) -> int:
    from rollax.api import train
    from rollax.presets import load_experiment

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    writer = _join_processes(args)  # before anything touches a device
    if args.devices is not None:
        args.set.append(f"parallel.devices={args.devices}")
    _check_dirs(args.dir)
    _import_modules(args.import_module)
    if args.resume:
        if args.no_log:
            raise ValueError("--no-log cannot go with --resume: a resumed run goes on writing "
                             "to its own folder")
        experiment = _experiment_to_resume(args)
    elif args.experiment is None:
        raise ValueError("name an experiment to train, or --resume RUN_DIR to continue a run")
    else:
        experiment = load_experiment(args.experiment, args.set, seeds=args.seeds, dirs=args.dir)
    if args.no_log:
        experiment = experiment.replace(logging={"enabled": False})
    result = train(experiment, progress=not args.quiet, resume=args.resume)
    if not writer:  # another process of a multi-process run: process 0 reports
        return 0
    print(result.table())
    if result.run_dir is not None:
        print(f"run written to {result.run_dir}  (tensorboard --logdir {result.run_dir.parent})")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from rollax.api import sweep
    from rollax.sweeps import check_metrics, parse_grid, read_sweep

    _import_modules(args.import_module)
    if args.resume:
        _nothing_besides_resume(args, "--grid", args.grid, "sweep")
        check_metrics(read_sweep(args.resume)[0], args.metric)
        result = sweep(resume=args.resume, progress=not args.quiet)
    else:
        grid = parse_grid(args.grid)
        experiment = _experiment_to_search(args, "sweep", "SWEEP_DIR")
        check_metrics(experiment, args.metric)
        result = sweep(experiment, grid, progress=not args.quiet)
    print(result.table(args.metric))
    if result.folder is not None:
        print(f"sweep written to {result.folder}  (tensorboard --logdir {result.folder})")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from rollax.api import tune
    from rollax.tuning import parse_space

    _import_modules(args.import_module)
    if args.resume:
        _nothing_besides_resume(args, "--param", args.param, "search")
        result = tune(resume=args.resume, progress=not args.quiet)
    else:
        space = parse_space(args.param) if args.param else None  # None: the preset's [search]
        experiment = _experiment_to_search(args, "tune", "TUNE_DIR")
        result = tune(experiment, space, progress=not args.quiet, trials=args.trials,
                      batch=args.batch, metric=args.metric, aggregate=args.aggregate,
                      direction=args.direction, sampler=args.sampler, pruner=args.pruner,
                      seed=args.sampler_seed, storage=args.storage or "", study_name=args.study)
    print(result.table())
    print(f"search written to {result.folder}  (best preset: {result.folder / 'best.toml'})")
    return 0


def _nothing_besides_resume(args: argparse.Namespace, flag: str, value: Any, what: str) -> None:
    """A ValueError naming what was given besides `--resume` (it continues as it was started)."""
    given = [name for name, v in (("EXPERIMENT", args.experiment), (flag, value), ("--set", args.set),
                                  ("--seeds", args.seeds)) if v]
    if given:
        raise ValueError(f"--resume continues the {what} as it was started; drop {', '.join(given)}")


def _experiment_to_search(args: argparse.Namespace, command: str, folder: str) -> Any:
    """The experiment a sweep or search trains (its preset, `--set`, `--seeds`, `--dir`)."""
    from rollax.presets import load_experiment

    if args.experiment is None:
        raise ValueError(f"name an experiment to {command}, or --resume {folder} to continue")
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    _check_dirs(args.dir)
    return load_experiment(args.experiment, args.set, seeds=args.seeds, dirs=args.dir)


def _join_processes(args: argparse.Namespace) -> bool:
    """`--coordinator/--num-processes/--process-id`, or `--distributed` (the cluster's own
    settings): join a multi-process run through `jax.distributed`. True for the process that
    writes and reports (process 0, or the only one)."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if not (args.distributed or any(flag is not None for flag in flags)):
        return True
    import jax

    from rollax.run.parallel import initialize_distributed

    initialize_distributed(*flags, timeout_seconds=args.coordinator_timeout)
    return jax.process_index() == 0


def _experiment_to_resume(args: argparse.Namespace):
    """The experiment named (the loop checks it against the run's own), or the run's own
    `config.json` with `--set`/`--seeds` applied."""
    from rollax.presets import apply_override, load_experiment, parse_override
    from rollax.run.experiment import Experiment
    from rollax.run.run_folder import read_experiment

    run_dir = Path(args.resume)
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no checkpoints/ folder there")
    if args.experiment is not None:
        return load_experiment(args.experiment, args.set, seeds=args.seeds, dirs=args.dir)
    config = read_experiment(run_dir).to_dict()
    for text in args.set:
        apply_override(config, *parse_override(text))
    if args.seeds is not None:
        config["seeds"] = args.seeds
    return Experiment.from_dict(config)


def _baselines(args: argparse.Namespace) -> int:
    from rollax.cache import enable_compilation_cache
    from rollax.presets import baseline_experiments, load_experiment, shipped_dir
    from rollax.run.baselines import baseline_table, run_baselines

    enable_compilation_cache()
    paths = baseline_experiments(args.dir or ())
    if not paths:
        where = args.dir or ["./experiments", str(shipped_dir("experiments"))]
        raise ValueError(f"no experiment in {', '.join(map(str, where))} is tagged 'baseline'")
    experiments = [load_experiment(p, seeds=args.seeds) for p in paths]
    if args.first_seed is not None:  # not an override: the run folders keep their plain names
        experiments = [experiment.replace(seed=args.first_seed) for experiment in experiments]
    rows = run_baselines(experiments, progress=not args.quiet)
    print(baseline_table(rows))
    return 0 if all(row.passed for row in rows) else 1


def _presets(args: argparse.Namespace) -> int:
    from rollax.presets import KINDS, describe, preset_files, search_dirs, shipped_dir

    _check_dirs(args.dir)
    for number, kind in enumerate(KINDS):
        shipped = shipped_dir(kind).resolve()
        user = [str(f) for f in search_dirs(kind, args.dir) if f.resolve() != shipped]
        print(("\n" if number else "") + f"{kind}  (shipped: {shipped}"
              + (f"; user: {', '.join(user)})" if user else ")"))
        for name, path in preset_files(kind, args.dir).items():
            source = "shipped" if path.resolve().parent == shipped else "user"
            print(f"  {name:<24} {source:<8} {describe(path)}")
    return 0


def _envs(args: argparse.Namespace) -> int:
    from rollax.envs import registered_ids

    print("\n".join(registered_ids()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from rollax.run.evaluation import evaluate_run
    from rollax.run.run_folder import find_run, read_experiment
    from rollax.run.video import check_output, record_video

    _import_modules(args.import_module)
    run_dir = find_run(args.run_dir)
    if args.video is not None:  # before the evaluation, which takes a while
        check_output(Path(args.video))
        if args.video_episodes < 1:
            raise ValueError(f"--video-episodes must be >= 1, got {args.video_episodes}")
        seeds = read_experiment(run_dir).seed_list
        if args.seed is not None and args.seed not in seeds:
            raise ValueError(f"--seed: seed={args.seed} is not a seed of {run_dir}; its seeds: "
                             f"{seeds}")
    experiment, returns, step = evaluate_run(run_dir, args.episodes)
    print(f"{'seed':>4}  {'mean return':>12}  {'std':>8}   (greedy, {args.episodes} episodes, "
          f"after {step} env steps, {run_dir})")
    for seed, r in zip(experiment.seed_list, returns):
        print(f"{seed:>4}  {r.mean():>12.2f}  {r.std():>8.2f}")
    if args.video is not None:
        path, frames = record_video(run_dir, args.video, episodes=args.video_episodes,
                                    seed=args.seed, checkpoint=args.checkpoint)
        print(f"wrote {path} ({frames} frames)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from rollax.logging.plot import plot_runs

    out = args.out or Path(args.run_dirs[0]) / "learning_curves.png"
    out = plot_runs(args.run_dirs, out, metric=args.metric, band=args.band)
    print(f"wrote {out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    if args.model in ("ddpm", "flow"):
        from rollax.diffusion.pretrained import load_denoiser

        report = load_denoiser({"model": args.model}, force=args.force)[1]
    else:
        from rollax.generative import pretrain

        report = pretrain(args.model, force=args.force)
    for key, value in report.items():
        print(f"{key}: {value}")
    return 0


IMPORT_HELP = ("import MODULE first, e.g. a package that registers Gymnasium envs (repeatable); "
               "presets and run folders never import modules themselves")


def _add_placement_flags(p: argparse.ArgumentParser) -> None:
    """Where `train` runs: devices, and the processes of a multi-host run (docs/scaling.md)."""
    p.add_argument("--devices", type=int, metavar="N",
                   help="spread the run over N devices (0: all; = --set parallel.devices=N)")
    group = p.add_argument_group("multi-process runs (jax.distributed; process 0 writes)")
    group.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    group.add_argument("--num-processes", type=int, metavar="N")
    group.add_argument("--process-id", type=int, metavar="K", help="this process, 0 to N-1")
    group.add_argument("--distributed", action="store_true",
                       help="join with the settings JAX detects from the cluster (SLURM, ...)")
    group.add_argument("--coordinator-timeout", type=int, default=60, metavar="SECONDS",
                       help="give up joining after this long (default 60)")


def _add_search_experiment_args(p: argparse.ArgumentParser, each: str) -> None:
    """The experiment a sweep or search trains, and its settings for every `each` (run)."""
    p.add_argument("experiment", nargs="?", help="an experiment preset, as for train")
    p.add_argument("--seeds", type=int, help=f"seeds per {each} (default: the preset's)")
    p.add_argument("--dir", action="append", default=[], metavar="FOLDER",
                   help="a folder of experiment presets searched first for NAME (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help=f"override a preset value for every {each}")
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help=IMPORT_HELP)


def _add_sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="train every combination of a hyperparameter grid, "
                       "numbers side by side in one compiled program; table and sweep.png")
    _add_search_experiment_args(p, "combination")
    p.add_argument("--grid", action="append", default=[], metavar="PATH=V1,V2,...",
                   help="a swept key and its values, e.g. agent.optimizer.learning_rate=1e-4,3e-4 "
                   "(repeatable: every combination is trained)")
    p.add_argument("--metric", action="append", default=[], metavar="eval/NAME",
                   help="also tabulate an env's evaluation metric, e.g. eval/sampled_judge_success "
                   "(repeatable; every one is in sweep.json)")
    p.add_argument("--resume", metavar="SWEEP_DIR",
                   help="continue a sweep (runs/<experiment>/<timestamp>_sweep): finished programs "
                   "are read back, a stopped one continues from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_sweep)


def _add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="Bayesian hyperparameter search with Optuna, each batch of "
                       "trials in compiled programs; best trials, plots and best.toml")
    _add_search_experiment_args(p, "trial")
    p.add_argument("--param", action="append", default=[], metavar="PATH=SPEC",
                   help="a searched key and its range: log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH "
                   "or cat:A,B,... (repeatable; default: the preset's [search] table)")
    p.add_argument("--trials", type=int, default=32, help="finished trials to reach (default 32)")
    p.add_argument("--batch", type=int, default=8, help="trials asked and trained at once (default 8)")
    p.add_argument("--metric", default="eval/mean_reward", metavar="eval/NAME",
                   help="the objective: an evaluation metric (default eval/mean_reward)")
    p.add_argument("--aggregate", default="mean", choices=["mean", "iqm"],
                   help="over a trial's seeds (default mean)")
    p.add_argument("--direction", default="maximize", choices=["maximize", "minimize"])
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    p.add_argument("--storage", metavar="URL",
                   help="the Optuna storage, an SQLAlchemy URL (default: study.db in the tune folder)")
    p.add_argument("--study", default="rollax", help="the study's name in the storage")
    p.add_argument("--resume", metavar="TUNE_DIR",
                   help="continue a search (runs/<experiment>/<timestamp>_tune) until it has its "
                   "trials: finished trials are kept, interrupted ones asked again")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_tune)


def _add_baselines_parser(sub) -> None:
    p = sub.add_parser("baselines", help="run every experiment tagged 'baseline'; pass/fail table "
                       "(PASS: at least 80%% of the seeds reach the env's threshold with their greedy eval return)")
    p.add_argument("--seeds", type=int, default=5,
                   help="seeds per experiment, trained together in one program (default 5)")
    p.add_argument("--first-seed", type=int,
                   help="seeds are FIRST_SEED, FIRST_SEED+1, ... (default: each preset's seed, "
                   "0 for the shipped ones), to check another seed set")
    p.add_argument("--dir", action="append", metavar="FOLDER",
                   help="a folder of experiment presets (repeatable; default: ./experiments/ if it "
                   "exists, then the shipped presets)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_baselines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an experiment preset")
    p.add_argument("experiment", nargs="?",
                   help="a path to an experiment .toml file, or a NAME looked up in the --dir "
                   "folders, then ./experiments/, then the shipped presets (rollax presets); "
                   "optional with --resume, which reads the run's own config")
    p.add_argument("--dir", action="append", default=[], metavar="FOLDER",
                   help="a folder of experiment presets searched first for NAME (repeatable)")
    p.add_argument("--seeds", type=int, help="number of seeds, trained together in one program")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                   help="override a preset value, e.g. agent.config.clip_param=0.1")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run from its newest checkpoint with its own config; only "
                   "--set budget.total_steps=N may change it")
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help=IMPORT_HELP)
    p.add_argument("--no-log", action="store_true", help="write no run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_placement_flags(p)
    p.set_defaults(func=_train)

    _add_sweep_parser(sub)
    _add_tune_parser(sub)

    _add_baselines_parser(sub)

    p = sub.add_parser("presets", help="list the env, agent and experiment presets (shipped and "
                       "user ones) with their descriptions")
    p.add_argument("--dir", action="append", default=[], metavar="FOLDER",
                   help="a folder of experiment presets (its sibling envs/ and agents/ folders too); "
                   "repeatable; ./experiments/, ./envs/, ./agents/ are always searched")
    p.set_defaults(func=_presets)

    p = sub.add_parser("eval", help="greedy evaluation of a run's newest checkpoint")
    p.add_argument("run_dir", help="a run folder, or an experiment folder (runs/<experiment>): "
                   "its newest run")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--import-module", action="append", default=[], metavar="MODULE",
                   help=IMPORT_HELP)
    p.add_argument("--video", metavar="OUT",
                   help="also record greedy episodes (generative envs: the sample grids over "
                   "training) to OUT: a .mp4 (pip install 'rollax[video]'), a .gif, or a folder")
    p.add_argument("--video-episodes", type=int, default=1, metavar="N",
                   help="episodes in the video (default 1)")
    p.add_argument("--seed", type=int, help="the seed whose policy the video shows "
                   "(default: the run's first)")
    p.add_argument("--checkpoint", choices=["last", "best"], default="last",
                   help="the video's params: the newest checkpoint (default, as evaluated) or "
                   "the seed's best evaluation")
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
    p.add_argument("model", choices=["vae", "gan", "classifier", "ddpm", "flow"])
    p.add_argument("--force", action="store_true", help="retrain even if cached")
    p.set_defaults(func=_pretrain)
    return parser


# what a failed write means, for the one line a run that hit a machine limit ends with
WRITE_FAILURES = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                  errno.EFBIG: "file-size limit (ulimit -f) reached",
                  errno.EROFS: "read-only file system", errno.EMFILE: "too many open files "
                  "(ulimit -n)", errno.ENFILE: "the system's open-file table is full"}


def main(argv: list[str] | None = None) -> int:
    """Exit 2 for bad input, 1 for a failed run (a full disk, divergence), 130 for Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        print(f"rollax {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # a first signal in the loop exits 130 after a checkpoint
        print(f"rollax {args.command}: interrupted{f' ({err})' if str(err) else ''}; a run that "
              "had not finished a chunk is not kept", file=sys.stderr)
        return 130
    except OSError as err:
        # the records written so far are kept; a run resumes from its last checkpoint
        what = WRITE_FAILURES.get(err.errno)
        where = f" while writing {err.filename}" if err.filename else ""
        print(f"rollax {args.command}: error: {what or 'system error'}{where}: "
              f"{err.strerror or err}", file=sys.stderr)
        return 1
    except RunFailed as err:  # a diverged update, a busy run folder: what was written is kept
        print(f"rollax {args.command}: error: {err}", file=sys.stderr)
        return 1


def entry_point() -> None:
    """The `rollax` command (and `python -m rollax`): `main`, then exit without tearing down
    the interpreter. Tearing down JAX's runtime (XLA's compiled programs and thread pools)
    takes about 0.4 s after a training run; the handler below is registered before anything
    else, so it runs after every other exit handler (libraries flush there) and after Python
    has joined the program's threads, and it flushes stdio before `os._exit`."""
    status = [1]  # an exception escaping `main` exits 1, as Python's own exit would

    def exit_now() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be written there
                pass
        os._exit(status[0])

    atexit.register(exit_now)
    try:
        status[0] = main()
    except SystemExit as stop:  # argparse's --help (0) and usage errors (2)
        status[0] = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        raise
    except BrokenPipeError:  # the reader went away (`rollax envs | head`): nothing to report
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (the flush at exit writes nowhere)
    sys.exit(status[0])

