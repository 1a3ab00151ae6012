"""Experiment presets: TOML files under `envs/`, `agents/`, `experiments/` -> one resolved dict.

An experiment names an env preset and an agent preset (file stems looked up in the sibling
`envs/` and `agents/` folders, or inline tables), a budget, seeds, evaluation and logging.
Every section has a fixed set of keys: an unknown key is an error that lists the valid ones.
Overrides use dotted paths (`agent.config.clip_param=0.1`), from `[overrides]` or `--set`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import tomllib
from pathlib import Path
from typing import Any

from rollax.rl import DPOConfig, GRPOConfig, PPOConfig, REINFORCEConfig

ALGORITHMS = {"ppo": PPOConfig, "reinforce": REINFORCEConfig, "grpo": GRPOConfig, "dpo": DPOConfig}

REQUIRED = object()  # marks a key a preset must set

# Every section's keys and defaults.
SCHEMA: dict[str, Any] = {
    "name": "",
    "description": "",
    "tags": [],  # "baseline" marks the classic-control validation set run by `rollax baselines`
    "env": REQUIRED,
    "agent": REQUIRED,
    "seeds": 1,
    "seed": 0,  # the first seed: a run trains seeds seed, seed+1, ..., seed+seeds-1
    # group_size: DPO's samples per prompt, ranked into a (best, worst) pair; GRPO's is
    # agent.config.num_generations
    "budget": {"total_steps": REQUIRED, "num_envs": 8, "num_steps": 128, "iterations_per_chunk": 0,
               "group_size": 4},
    "eval": {"every_steps": 0, "episodes": 10},
    "logging": {"root": "runs", "enabled": True, "checkpoint": True, "plot": True, "images": True},
    "overrides": {},
}
ENV_SCHEMA: dict[str, Any] = {"id": REQUIRED, "params": {}, "kwargs": {}, "solved_threshold": None,
                              "description": ""}
AGENT_SCHEMA: dict[str, Any] = {
    "algorithm": REQUIRED,
    "description": "",
    "config": {},
    "network": {"hidden_sizes": [64, 64], "activation": "tanh", "shared_torso": False,
                "log_std_init": 0.0},
    "optimizer": {"name": "adam", "learning_rate": 3e-4, "eps": 1e-5, "anneal_lr": False},
}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


class PresetError(ValueError):
    """A preset file or override is invalid; the message names the file and key."""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PresetError(f"preset file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"{path}: invalid TOML: {err}") from None


def _apply_schema(data: dict, schema: dict, where: str) -> dict:
    """Fill defaults, reject unknown keys (listing valid ones) and missing required ones."""
    unknown = sorted(set(data) - set(schema))
    if unknown:
        hints = {k: difflib.get_close_matches(k, schema, n=1) for k in unknown}
        hint = "; ".join(f"{k!r} (did you mean {h[0]!r}?)" if h else repr(k) for k, h in hints.items())
        raise PresetError(f"{where}: unknown key(s) {hint}; valid keys: {sorted(schema)}")
    out = {}
    for key, default in schema.items():
        if key not in data:
            if default is REQUIRED:
                raise PresetError(f"{where}: missing required key {key!r}")
            out[key] = copy.deepcopy(default)
        elif isinstance(default, dict) and default and key not in ("params", "kwargs", "config", "overrides"):
            if not isinstance(data[key], dict):
                raise PresetError(f"{where}: {key!r} must be a table, got {data[key]!r}")
            out[key] = _apply_schema(data[key], default, f"{where} [{key}]")
        else:
            out[key] = data[key]
    return out


def _find_preset(value: Any, folder: Path, kind: str) -> tuple[dict, str]:
    if isinstance(value, dict):
        return value, f"inline {kind}"
    path = Path(value)
    if path.suffix != ".toml":
        path = folder / f"{value}.toml"
    if not path.exists():
        known = sorted(p.stem for p in folder.glob("*.toml")) if folder.exists() else []
        raise PresetError(f"{kind} preset {value!r} not found at {path}; known {kind}s: {known}")
    return _read_toml(path), str(path)


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
    last = keys[-1]
    if isinstance(node.get(last), dict) and not isinstance(value, dict) and last not in ("params", "kwargs", "config"):
        raise PresetError(f"override {path!r}: {last!r} is a table; set one of its keys, "
                          f"e.g. {path}.{next(iter(node[last]), 'key')}=...")
    open_tables = ("params", "kwargs", "config")
    if last not in node and not (len(keys) >= 2 and keys[-2] in open_tables):
        raise PresetError(f"override {path!r}: unknown key {last!r}; valid: {sorted(node)}")
    node[last] = value


def algorithm_config(agent: dict) -> Any:
    """The trainer config dataclass for an agent preset, validated."""
    algorithm = agent["algorithm"]
    if algorithm not in ALGORITHMS:
        raise PresetError(f"unknown algorithm {algorithm!r}; valid: {sorted(ALGORITHMS)}")
    config_class = ALGORITHMS[algorithm]
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(agent["config"]) - fields)
    if unknown:
        raise PresetError(f"agent config: unknown {config_class.__name__} field(s) {unknown}; valid: {sorted(fields)}")
    return config_class(**agent["config"])


def seed_list(experiment: dict) -> list[int]:
    """The seeds a run trains: `seed, seed + 1, ..., seed + seeds - 1`."""
    return list(range(experiment["seed"], experiment["seed"] + experiment["seeds"]))


def load_experiment(path: str | Path, overrides: list[str] = (), seeds: int | None = None) -> dict:
    """Read an experiment preset with its env and agent presets; apply overrides; validate."""
    path = Path(path)
    if not path.exists() and path.suffix != ".toml":
        candidate = Path("experiments") / f"{path}.toml"
        path = candidate if candidate.exists() else path
    raw = _read_toml(path)
    root = path.resolve().parent.parent
    experiment = _apply_schema(raw, SCHEMA, str(path))
    env_raw, env_where = _find_preset(experiment["env"], root / "envs", "env")
    agent_raw, agent_where = _find_preset(experiment["agent"], root / "agents", "agent")
    experiment["env"] = _apply_schema(env_raw, ENV_SCHEMA, env_where)
    experiment["agent"] = _apply_schema(agent_raw, AGENT_SCHEMA, agent_where)
    experiment["name"] = experiment["name"] or path.stem
    for key, value in experiment.pop("overrides").items():
        apply_override(experiment, key, value)
    for text in overrides:
        apply_override(experiment, *parse_override(text))
    if seeds is not None:
        experiment["seeds"] = seeds
    validate(experiment)
    return experiment


def _positive_int(value: Any, where: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PresetError(f"{where} must be an integer >= 1, got {value!r}")


def validate(experiment: dict) -> None:
    """Check values that the schema cannot: counts, the optimizer, the algorithm config."""
    _positive_int(experiment["seeds"], "seeds")
    if not isinstance(experiment["seed"], int) or experiment["seed"] < 0:
        raise PresetError(f"seed must be an integer >= 0, got {experiment['seed']!r}")
    budget = experiment["budget"]
    for key in ("total_steps", "num_envs", "num_steps"):
        _positive_int(budget[key], f"budget.{key}")
    per_iteration = budget["num_envs"] * budget["num_steps"]
    if budget["total_steps"] < per_iteration:
        raise PresetError(
            f"budget.total_steps={budget['total_steps']} is smaller than one iteration "
            f"(num_envs * num_steps = {per_iteration})")
    optimizer = experiment["agent"]["optimizer"]
    if optimizer["name"] not in OPTIMIZERS:
        raise PresetError(f"agent.optimizer.name={optimizer['name']!r}; valid: {list(OPTIMIZERS)}")
    if not optimizer["learning_rate"] > 0:
        raise PresetError(f"agent.optimizer.learning_rate must be > 0, got {optimizer['learning_rate']!r}")
    _positive_int(experiment["eval"]["episodes"], "eval.episodes")
    try:
        algorithm_config(experiment["agent"])
    except (TypeError, ValueError) as err:
        raise PresetError(f"agent.config: {err}") from None
