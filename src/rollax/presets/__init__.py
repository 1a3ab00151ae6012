"""Experiment presets: TOML files under `envs/`, `agents/`, `experiments/` -> a typed `Experiment`.

The shipped presets live in this package (`rollax/presets/{envs,agents,experiments}/*.toml`, package
data of the wheel). An experiment is a path to a `.toml` file or a NAME, looked up in the user's
folders (`--dir`), then `./experiments/`, then the shipped ones. It names an env preset and an agent
preset (file stems looked up in the `envs/` and `agents/` folders beside its own folder, then the
shipped ones; or inline tables), a budget, seeds, evaluation and logging.
Every section has a fixed set of keys: an unknown key is an error that lists the valid ones.
Overrides use dotted paths (`agent.config.clip_param=0.1`), from `[overrides]` or `--set`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.resources
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from rollax.rollout.host_collector import GYMNASIUM_PREFIX, check_gymnasium_id, is_host_env_id
from rollax.run.callbacks import optional_configs
from rollax.run.experiment import AgentSpec, BudgetSpec, EnvSpec, Experiment

REQUIRED = object()  # marks a key a preset must set


def _defaults(spec: type) -> dict[str, Any]:
    """A section's keys and defaults, read from its typed dataclass (`run/experiment.py`), so
    the defaults live in one place; a field without a default is REQUIRED."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(spec):
        if field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            value = field.default_factory()
        else:
            value = REQUIRED
        if dataclasses.is_dataclass(value):
            value = _defaults(type(value))
        out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


# Every section's keys and defaults. "env"/"agent" name a preset file or are inline tables;
# "tags" holds "baseline" for the classic-control validation set run by `rollax baselines`.
SCHEMA: dict[str, Any] = {**_defaults(Experiment), "name": "", "env": REQUIRED, "agent": REQUIRED,
                          "budget": _defaults(BudgetSpec), "overrides": {}}
ENV_SCHEMA: dict[str, Any] = _defaults(EnvSpec)
AGENT_SCHEMA: dict[str, Any] = {**_defaults(AgentSpec), "config": {}}
# tables whose keys are free (passed on to a factory or config class), not a fixed schema
OPEN_TABLES = ("params", "kwargs", "config", "overrides", "early_stopping", "profiler", "wandb")


class PresetError(ValueError):
    """A preset file or override is invalid; the message names the file and key."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PresetError(f"preset file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PresetError(f"{path}: invalid TOML (a preset is UTF-8 text): {err}") from None
    except OSError as err:
        raise PresetError(f"cannot read preset file {path}: {err.strerror or err}") from None


def _apply_schema(data: dict, schema: dict, where: str) -> dict:
    """Fill defaults, reject unknown keys (listing valid ones) and missing required ones."""
    unknown = sorted(set(data) - set(schema))
    if unknown:
        hints = {k: difflib.get_close_matches(k, schema, n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" if h else repr(k) for k, h in hints.items())
        raise PresetError(f"{where}: unknown key(s) {hint}; valid keys: {sorted(schema)}")
    out = {}
    for key, default in schema.items():
        if key not in data and default is REQUIRED:
            raise PresetError(f"{where}: missing required key {key!r}")
        if isinstance(default, dict) and default and key not in OPEN_TABLES:  # a section
            value = data.get(key, {})  # absent: its own required keys are still required
            if not isinstance(value, dict):
                raise PresetError(f"{where}: {key!r} must be a table, got {value!r}")
            out[key] = _apply_schema(value, default, f"{where} [{key}]")
        else:
            out[key] = data[key] if key in data else copy.deepcopy(default)
    return out


KINDS = ("envs", "agents", "experiments")

PathLike = str | os.PathLike


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PresetError(f"unknown preset kind {kind!r}; valid: {list(KINDS)}")


def shipped_dir(kind: str) -> Path:
    """The folder of the presets of `kind` ("envs", "agents", "experiments") shipped with rollax."""
    _check_kind(kind)
    return Path(os.fspath(importlib.resources.files(__name__))) / kind


def search_dirs(kind: str, dirs: Iterable[PathLike] = ()) -> list[Path]:
    """Where presets of `kind` are looked up, first match wins.

    `dirs` are experiment folders (as `--dir`): for experiments they are searched themselves, for
    env and agent presets their sibling `envs/` / `agents/` folders. Then `./<kind>/` of the current
    directory, then the shipped presets. Folders that do not exist are left out.
    """
    _check_kind(kind)
    user = [Path(d) if kind == "experiments" else Path(d).parent / kind for d in dirs]
    candidates = [*user, Path(kind), shipped_dir(kind)]
    out, seen = [], set()
    for folder in candidates:
        key = folder.resolve()
        if folder.is_dir() and key not in seen:
            seen.add(key)
            out.append(folder)
    return out


def preset_files(kind: str, dirs: Iterable[PathLike] = ()) -> dict[str, Path]:
    """`{name: path}` for every preset of `kind` in `search_dirs(kind, dirs)`, first match wins."""
    found: dict[str, Path] = {}
    for folder in search_dirs(kind, dirs):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return dict(sorted(found.items()))


def preset_names(kind: str, dirs: Iterable[PathLike] = ()) -> list[str]:
    """The names of the presets of `kind` (user folders, `./<kind>/`, shipped), sorted."""
    return list(preset_files(kind, dirs))


def find_experiment(name_or_path: PathLike, dirs: Iterable[PathLike] = ()) -> Path:
    """The experiment file for a path to a `.toml` file, or a NAME looked up in `dirs`, then
    `./experiments/`, then the shipped experiments."""
    dirs = tuple(dirs)
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == ".toml" or len(path.parts) > 1:  # a path, not a name
        raise PresetError(f"preset file not found: {path}; known experiments: "
                          f"{preset_names('experiments', dirs)}")
    folders = search_dirs("experiments", dirs)
    for folder in folders:
        candidate = folder / f"{path}.toml"
        if candidate.is_file():
            return candidate
    raise PresetError(f"experiment {str(path)!r} not found in {[str(f) for f in folders]}; "
                      f"known experiments: {preset_names('experiments', dirs)}")


def baseline_experiments(dirs: Iterable[PathLike] = ()) -> list[Path]:
    """The experiment files tagged "baseline" in `dirs`; without `dirs`, in `./experiments/` (if it
    exists) and the shipped experiments (a name in `./experiments/` hides the shipped one)."""
    dirs = [Path(d) for d in dirs]
    for folder in dirs:
        if not folder.is_dir():
            raise PresetError(f"experiment folder not found: {folder}")
    folders = dirs or [f for f in (Path("experiments"), shipped_dir("experiments")) if f.is_dir()]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return [path for _, path in sorted(found.items())
            if "baseline" in _read_toml(path).get("tags", [])]


def describe(path: PathLike) -> str:
    """A preset file's `description` ("" if it has none or cannot be read)."""
    try:
        return str(_read_toml(Path(path)).get("description", ""))
    except PresetError:
        return ""


def _find_preset(value: Any, folders: list[Path], kind: str) -> tuple[dict, str]:
    """An env or agent preset: an inline table, a path to a `.toml` file, or a name looked up in
    `folders` (first match wins)."""
    if isinstance(value, dict):
        return value, f"inline {kind}"
    if not isinstance(value, str):
        raise PresetError(f"{kind} must be a preset name, a path or a table, got {value!r}")
    path = Path(value)
    if path.suffix == ".toml":
        if not path.exists():
            raise PresetError(f"{kind} preset {value!r} not found at {path}")
        return _read_toml(path), str(path)
    folders = [f for f in folders if f.is_dir()]
    for folder in folders:
        if (folder / f"{value}.toml").is_file():
            path = folder / f"{value}.toml"
            return _read_toml(path), str(path)
    known = sorted({p.stem for folder in folders for p in folder.glob("*.toml")})
    raise PresetError(f"{kind} preset {value!r} not found at "
                      f"{' or '.join(str(f / f'{value}.toml') for f in folders) or 'no folder'}; "
                      f"known {kind}s: {known}")


def parse_override(text: str) -> tuple[str, Any]:
    """`"agent.config.clip_param=0.1"` -> `("agent.config.clip_param", 0.1)`; values are TOML literals."""
    if "=" not in text:
        raise PresetError(f"override {text!r} must look like path.to.key=value")
    path, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return path, value


def apply_override(config: dict, path: str, value: Any) -> None:
    """Set `config[a][b][c] = value` for `path = "a.b.c"`, rejecting unknown keys."""
    keys = path.split(".")
    node = config
    for depth, key in enumerate(keys[:-1]):
        if not isinstance(node, dict) or key not in node:
            valid = sorted(node) if isinstance(node, dict) else []
            raise PresetError(f"override {path!r}: unknown key {'.'.join(keys[: depth + 1])!r}; valid: {valid}")
        node = node[key]
    if not isinstance(node, dict):
        raise PresetError(f"override {path!r}: {'.'.join(keys[:-1])!r} is a value, not a table")
    last = keys[-1]
    if isinstance(node.get(last), dict) and not isinstance(value, dict) and last not in OPEN_TABLES:
        raise PresetError(f"override {path!r}: {last!r} is a table; set one of its keys, "
                          f"e.g. {path}.{next(iter(node[last]), 'key')}=...")
    if last not in node and not (len(keys) >= 2 and keys[-2] in OPEN_TABLES):
        raise PresetError(f"override {path!r}: unknown key {last!r}; valid: {sorted(node)}")
    node[last] = value


def load_experiment(path_or_name: PathLike, overrides: Iterable[str] = (), seeds: int | None = None,
                    dirs: Iterable[PathLike] = ()) -> Experiment:
    """Read an experiment preset with its env and agent presets; apply overrides; check every
    value (`Experiment.from_dict`) before anything is built, compiled or written.

    `path_or_name`: a path to a `.toml` file, or a NAME found by `find_experiment(name, dirs)`.
    `overrides` (`--set`) are the caller's own: only they may point `logging.root` outside the
    working folder (see `check_preset_paths`).
    """
    path = find_experiment(path_or_name, dirs)
    return _resolve(_read_toml(path), str(path), path.resolve().parent.parent, path.stem,
                    overrides, seeds)


def experiment_from_dict(data: dict[str, Any], overrides: Iterable[str] = (),
                         seeds: int | None = None) -> Experiment:
    """`load_experiment` for a preset's content given as a dict (what `tomllib` reads from a
    file): env and agent names are looked up in `./envs/`, `./agents/`, then the shipped
    presets; `name` defaults to "experiment"."""
    if not isinstance(data, dict):
        raise PresetError(f"an experiment preset must be a dict, got {type(data).__name__}")
    return _resolve(copy.deepcopy(data), "experiment dict", Path.cwd(), "experiment", overrides,
                    seeds)


def _resolve(raw: dict, where: str, root: Path, default_name: str, overrides: Iterable[str],
             seeds: int | None) -> Experiment:
    """A preset's raw tables -> the checked `Experiment` (`root` holds its `envs/`, `agents/`)."""
    experiment = _apply_schema(raw, SCHEMA, where)
    env_raw, env_where = _find_preset(experiment["env"], [root / "envs", shipped_dir("envs")], "env")
    agent_raw, agent_where = _find_preset(experiment["agent"],
                                          [root / "agents", shipped_dir("agents")], "agent")
    experiment["env"] = _apply_schema(env_raw, ENV_SCHEMA, env_where)
    experiment["agent"] = _apply_schema(agent_raw, AGENT_SCHEMA, agent_where)
    experiment["name"] = experiment["name"] or default_name
    for key, value in experiment.pop("overrides").items():
        apply_override(experiment, key, value)
    parsed = [parse_override(text) for text in overrides]
    for key, value in parsed:
        apply_override(experiment, key, value)
    if seeds is not None:
        experiment["seeds"] = seeds
    try:
        typed = Experiment.from_dict(experiment)
        check_preset_paths(typed, explicit=[key for key, _ in parsed])
        if is_host_env_id(typed.env.id):  # never imports a module the id names
            check_gymnasium_id(typed.env.id.removeprefix(GYMNASIUM_PREFIX))
        optional_configs(typed)
    except ValueError as err:
        raise PresetError(f"{where}: {err}") from None
    return typed


def check_preset_paths(experiment: Experiment, explicit: Iterable[str] = ()) -> None:
    """Folders a preset file names stay under the working folder: relative, no `..`. Elsewhere
    is the user's explicit choice: the `explicit` override paths (`--set logging.root=...`), or
    `experiment.replace(logging={"root": ...})` in Python."""
    logging = experiment.logging
    folders = {"logging.root": logging.root,
               "logging.profiler.log_dir": logging.profiler.get("log_dir"),
               "logging.wandb.dir": logging.wandb.get("dir")}
    for key, folder in folders.items():
        if folder is None or any(key == k or key.startswith(k + ".") for k in explicit):
            continue
        path = PurePath(folder) if isinstance(folder, str) else None
        if path is None or path.is_absolute() or ".." in path.parts:
            raise ValueError(f"{key}={folder!r} in a preset must be a relative path inside the "
                             "working folder (no '..'); choose another place on the command "
                             f"line: --set {key}=PATH")
