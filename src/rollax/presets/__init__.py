"""Experiment presets: TOML files under `envs/`, `agents/`, `experiments/` -> a typed `Experiment`.

The shipped presets live in this package (`rollax/presets/{envs,agents,experiments}/*.toml`, package
data of the wheel). An experiment is a path to a `.toml` file or a NAME, looked up in the user's
folders (`--dir`), then `./experiments/`, then the shipped ones. It names an env preset and an agent
preset (file stems looked up in the `envs/` and `agents/` folders beside its own folder, then the
shipped ones; or inline tables), a budget, seeds, evaluation and logging.
Every section has a fixed set of keys: an unknown key is an error that lists the valid ones.
Overrides use dotted paths (`agent.config.clip_param=0.1`), from `[overrides]` or `--set`.

`files.py` finds preset files (TOML and paths only: `rollax presets` imports no jax);
`loader.py` builds the typed `Experiment`, imported on first use of one of its names.
"""

import importlib

from rollax.presets.files import (
    KINDS,
    PathLike,
    PresetError,
    baseline_experiments,
    describe,
    find_experiment,
    preset_files,
    preset_names,
    search_dirs,
    shipped_dir,
)

_LOADER = ("AGENT_SCHEMA", "ENV_SCHEMA", "OPEN_TABLES", "REQUIRED", "SCHEMA", "apply_override",
           "check_preset_paths", "experiment_from_dict", "load_experiment", "parse_override")

__all__ = ["AGENT_SCHEMA", "ENV_SCHEMA", "KINDS", "OPEN_TABLES", "REQUIRED", "SCHEMA",
           "PathLike", "PresetError", "apply_override", "baseline_experiments",
           "check_preset_paths", "describe", "experiment_from_dict", "find_experiment",
           "load_experiment",
           "parse_override", "preset_files", "preset_names", "search_dirs", "shipped_dir"]


def __getattr__(name: str):
    if name in _LOADER:  # the loader imports the typed experiment, hence jax
        return getattr(importlib.import_module("rollax.presets.loader"), name)
    raise AttributeError(f"module 'rollax.presets' has no attribute {name!r}")
