"""A run folder read back: the experiment it was trained with (what its checkpoint recorded,
checked against the `seed_*/config.json` files a person may have edited) and where its newest
run is."""

from __future__ import annotations

import json
from pathlib import Path

from rollax.logging.checkpoint import available_steps, load_metadata
from rollax.logging.logger import flatten_dotted
from rollax.logging.plot import read_records
from rollax.logging.run_dir import newest_run
from rollax.run.experiment import Experiment

# where the run lives is the folder passed; a progress bar changes nothing that is saved
NOT_COMPARED = ("logging.root", "logging.run_name", "logging.progress")


def read_experiment(run_dir: str | Path) -> Experiment:
    """The experiment a run directory was trained with: as its newest checkpoint recorded it
    (see `recorded_experiment`), or without a checkpoint its first seed's `config.json`."""
    run_dir = Path(run_dir)
    steps = available_steps(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else []
    if steps:
        return recorded_experiment(run_dir, steps[-1])
    config_path = next(iter(sorted(run_dir.glob("seed_*/config.json"))), None)
    if config_path is None:
        raise FileNotFoundError(f"{run_dir} has no seed_*/config.json: is it a run directory?")
    return Experiment.from_dict(json.loads(config_path.read_text()))


def find_run(path: str | Path) -> Path:
    """`path` itself, or for an experiment folder (`runs/<experiment>`) its newest run with
    checkpoints."""
    path = Path(path)
    if path.is_dir() and not (path / "checkpoints").is_dir():
        return newest_run(path) or path
    return path


def recorded_experiment(run_dir: Path, step: int) -> Experiment:
    """The experiment the checkpoint at `step` recorded, after checking each seed's
    `config.json` against it: ValueError naming the file and the keys changed since (only
    `budget.total_steps` may differ there, by a resume killed before its first checkpoint,
    and the checkpoint's is used)."""
    metadata = load_metadata(run_dir / "checkpoints", step)
    if "experiment" not in metadata:
        raise ValueError(f"{run_dir}/checkpoints/{step} records no experiment: it was written "
                         "by an earlier rollax and cannot be resumed; train a new run")
    recorded = Experiment.from_dict(metadata["experiment"])
    configs = sorted(run_dir.glob("seed_*/config.json"))
    if not configs:
        raise FileNotFoundError(f"{run_dir} has no seed_*/config.json: is it a run directory?")
    for path in configs:
        try:
            written = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} cannot be read ({err})") from None
        changes = config_changes(metadata["experiment"], written, ignored=("budget.total_steps",))
        if changes:
            raise ValueError(f"{path} was changed after the checkpoint at env step {step} "
                             f"recorded the run's config ({changes}): the run cannot be resumed "
                             "or evaluated as it stands; restore the file, or train a new run")
    return recorded


def config_changes(recorded: dict, written: dict, ignored: tuple[str, ...] = ()) -> str:
    """`key: recorded -> written` for each key where two experiment dicts differ (as JSON
    holds them), bar where a run lives (`NOT_COMPARED`) and `ignored`; "" when none."""
    old, new = (flatten_dotted(json.loads(json.dumps(d))) for d in (recorded, written))
    return ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
                     for key in sorted(old.keys() | new.keys(), key=str)
                     if old.get(key) != new.get(key) and key not in (*NOT_COMPARED, *ignored))


def check_seed_logs(run_dir: Path, experiment: Experiment, step: int) -> None:
    """Each seed's `metrics.jsonl` is there and reaches the checkpoint's env `step` (every
    chunk's records are flushed before its checkpoint): a deleted or truncated log is named
    instead of a resumed run with a hole in its curves."""
    for seed in experiment.seed_list:
        path = run_dir / f"seed_{seed}" / "metrics.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: {path} (seed {seed}'s log) is missing")
        last = max((record["step"] for record in read_records(path)), default=None)
        if last is None or last < step:
            raise ValueError(f"cannot resume: {path} ends at env step {last}, before the "
                             f"checkpoint at {step}: it was truncated")
