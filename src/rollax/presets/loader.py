"""Loading an experiment preset: schema, env and agent presets, overrides, checks."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path, PurePath
from typing import Any

from rollax.envs.gymnasium_ids import GYMNASIUM_PREFIX, check_gymnasium_id, is_host_env_id
from rollax.logging.run_dir import overrides_label
from rollax.presets.files import PathLike, PresetError, find_experiment, read_toml, shipped_dir
from rollax.run.callbacks import LOGGING_CALLBACKS, optional_configs
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
# `network`'s keys are its policy kind's (`rollax.networks.kinds`), checked by the typed section
AGENT_SCHEMA: dict[str, Any] = {**_defaults(AgentSpec), "config": {}, "network": {}}
# tables whose keys are free (passed on to a factory or config class), not a fixed schema
OPEN_TABLES = ("params", "kwargs", "config", "network", "overrides", "search", *LOGGING_CALLBACKS)


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
        return read_toml(path), str(path)
    folders = [f for f in folders if f.is_dir()]
    for folder in folders:
        if (folder / f"{value}.toml").is_file():
            path = folder / f"{value}.toml"
            return read_toml(path), str(path)
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
    return _resolve(read_toml(path), str(path), path.resolve().parent.parent, path.stem,
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
    if isinstance(overrides, (str, bytes)):  # it would be read one character at a time
        raise PresetError(f"overrides must be a list of 'path.to.key=value' strings, got the "
                          f"single string {overrides!r} ([{overrides!r}])")
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
    _place_data_file(experiment["env"]["params"], env_where, where, explicit=any(
        key == "env.params.data" or (key == "env.params" and isinstance(value, dict)
                                     and "data" in value) for key, value in parsed))
    if not experiment["logging"]["run_name"]:  # runs of one experiment told apart by what differs
        experiment["logging"]["run_name"] = overrides_label(parsed)
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


def _place_data_file(params: dict, env_where: str, where: str, explicit: bool) -> None:
    """An env's `data` file (`rollax/Tokens-Text-v0`) named by a preset: relative, no `..`,
    found next to the preset that names it (the env preset's file, else the experiment's) or
    in the working folder; made absolute, so the run records the file it read. The command
    line (`--set env.params.data=PATH`, `explicit`) may name any file."""
    data = params.get("data") if isinstance(params, dict) else None
    if not isinstance(data, str):
        return
    path = Path(data)
    if explicit:
        if not path.is_file():
            raise PresetError(f"{where}: env.params.data={data!r} not found at {path.resolve()}")
        params["data"] = str(path.resolve())
        return
    if path.is_absolute() or ".." in path.parts:
        raise PresetError(f"{where}: env.params.data={data!r} in a preset must be a relative "
                          "path inside the preset's or the working folder (no '..'); name "
                          "another file on the command line: --set env.params.data=PATH")
    preset = next((Path(w).parent for w in (env_where, where) if w.endswith(".toml")), None)
    places = ([preset / path] if preset else []) + [Path.cwd() / path]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise PresetError(f"{where}: env.params.data={data!r} not found at "
                          f"{' or '.join(map(str, places))}")
    params["data"] = str(found.resolve())


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
