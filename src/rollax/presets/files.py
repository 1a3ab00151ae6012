"""Finding preset files: the shipped folders, the user's, `describe`. Light on purpose (TOML
and paths only, no jax): `rollax presets` lists them without loading the training code."""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "PathLike", "PresetError", "baseline_experiments", "describe",
           "find_experiment", "preset_files", "preset_names", "read_toml", "search_dirs",
           "shipped_dir"]


class PresetError(ValueError):
    """A preset file or override is invalid; the message names the file and key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise PresetError(f"preset file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise PresetError(f"{path}: invalid TOML (a preset is UTF-8 text): {err}") from None
    except OSError as err:
        raise PresetError(f"cannot read preset file {path}: {err.strerror or err}") from None


KINDS = ("envs", "agents", "experiments")

PathLike = str | os.PathLike


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PresetError(f"unknown preset kind {kind!r}; valid: {list(KINDS)}")


def shipped_dir(kind: str) -> Path:
    """The folder of the presets of `kind` ("envs", "agents", "experiments") shipped with rollax."""
    _check_kind(kind)
    return Path(os.fspath(importlib.resources.files("rollax.presets"))) / kind


def checked_dirs(dirs: Iterable[PathLike]) -> list[Path]:
    """`dirs` as folders that exist; a single path given where a list is expected (it would be
    read as one folder per character) or a folder that is not there is a PresetError naming it."""
    if isinstance(dirs, (str, bytes, os.PathLike)):
        raise PresetError(f"dirs must be a list of folders, got the single path {dirs!r} "
                          f"(dirs=[{dirs!r}])")
    folders = [Path(d) for d in dirs]
    if missing := [str(d) for d in folders if not d.is_dir()]:
        raise PresetError(f"experiment folder not found: {missing[0]} (in dirs)")
    return folders


def search_dirs(kind: str, dirs: Iterable[PathLike] = ()) -> list[Path]:
    """Where presets of `kind` are looked up, first match wins.

    `dirs` are experiment folders (as `--dir`): for experiments they are searched themselves, for
    env and agent presets their sibling `envs/` / `agents/` folders. Then `./<kind>/` of the current
    directory, then the shipped presets. Folders that do not exist are left out.
    """
    _check_kind(kind)
    user = [Path(d) if kind == "experiments" else Path(d).parent / kind for d in checked_dirs(dirs)]
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
    dirs = tuple(checked_dirs(dirs))
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
    dirs = checked_dirs(dirs)
    folders = dirs or [f for f in (Path("experiments"), shipped_dir("experiments")) if f.is_dir()]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return [path for _, path in sorted(found.items())
            if "baseline" in read_toml(path).get("tags", [])]


def describe(path: PathLike) -> str:
    """A preset file's `description` ("" if it has none or cannot be read)."""
    try:
        return str(read_toml(Path(path)).get("description", ""))
    except PresetError:
        return ""
