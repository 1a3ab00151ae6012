"""Shipped presets: package data found by name from any directory, `--dir` and `./experiments/`
take precedence, unknown names list the known ones, `rollax presets`, and the wheel holds them."""

import contextlib
import importlib.metadata
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rollax.cli import build_parser
from rollax.presets import (
    KINDS,
    PresetError,
    baseline_experiments,
    find_experiment,
    load_experiment,
    preset_names,
    shipped_dir,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {kind: sorted(p.stem for p in shipped_dir(kind).glob("*.toml")) for kind in KINDS}


def write_experiment(folder: Path, name: str, description: str, env: str = "cartpole") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'description = "{description}"\ntags = ["baseline"]\nenv = "{env}"\n'
                    'agent = "ppo_cartpole"\n[budget]\ntotal_steps = 5000\n')
    return path


def test_shipped_presets_are_in_the_package_and_the_repo_links_point_at_them():
    assert shipped_dir("experiments") == Path(__file__).parents[2] / "src/rollax/presets/experiments"
    assert "cartpole_ppo" in SHIPPED["experiments"] and "cartpole" in SHIPPED["envs"]
    assert "ppo_cartpole" in SHIPPED["agents"]
    for kind in KINDS:
        assert (ROOT / kind).is_symlink(), f"{kind}/ at the repo root should link to the package"
        assert (ROOT / kind).resolve() == shipped_dir(kind).resolve()
    with pytest.raises(PresetError, match=r"unknown preset kind 'models'; valid: \['envs'"):
        preset_names("models")


def test_a_name_finds_the_shipped_experiment_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_experiment("cartpole_ppo") == shipped_dir("experiments") / "cartpole_ppo.toml"
    experiment = load_experiment("cartpole_ppo", ["budget.total_steps=5000"])
    assert experiment.name == "cartpole_ppo" and experiment.env.id == "CartPole-v1"
    assert experiment.agent.algorithm == "ppo"
    assert preset_names("experiments") == SHIPPED["experiments"]
    # a path keeps working, relative to the current directory
    write_experiment(tmp_path / "elsewhere", "mine", "by path")
    assert load_experiment("elsewhere/mine.toml").description == "by path"


def test_dir_then_local_experiments_then_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_experiment(tmp_path / "experiments", "cartpole_ppo", "local copy")
    write_experiment(tmp_path / "experiments", "local_only", "local only")
    write_experiment(tmp_path / "a", "cartpole_ppo", "from a")
    write_experiment(tmp_path / "b", "cartpole_ppo", "from b")
    write_experiment(tmp_path / "b", "b_only", "from b only")
    assert load_experiment("cartpole_ppo").description == "local copy"
    assert load_experiment("cartpole_ppo", dirs=["a", "b"]).description == "from a"
    assert load_experiment("cartpole_ppo", dirs=["b", "a"]).description == "from b"
    assert load_experiment("b_only", dirs=["a", "b"]).description == "from b only"
    assert load_experiment("acrobot_ppo", dirs=["a"]).env.id == "Acrobot-v1"  # shipped
    names = preset_names("experiments", dirs=["b"])
    assert {"b_only", "local_only", *SHIPPED["experiments"]} == set(names)
    assert names == sorted(names)


def test_env_and_agent_names_use_sibling_folders_then_the_shipped_ones(tmp_path):
    path = write_experiment(tmp_path / "mine" / "experiments", "exp", "mine")
    assert load_experiment(path).env.id == "CartPole-v1"  # no sibling envs/: shipped
    (tmp_path / "mine" / "envs").mkdir()
    (tmp_path / "mine" / "envs" / "cartpole.toml").write_text('id = "Acrobot-v1"\n')
    assert load_experiment(path).env.id == "Acrobot-v1"  # the sibling one wins
    assert "cartpole" in preset_names("envs", dirs=[tmp_path / "mine" / "experiments"])


def test_unknown_names_list_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_experiment(tmp_path / "mine", "my_exp", "mine")
    with pytest.raises(PresetError, match=r"experiment 'nope' not found in .*known experiments: "
                       r"\[.*'cartpole_ppo'.*'my_exp'"):
        find_experiment("nope", dirs=["mine"])
    with pytest.raises(PresetError, match=r"preset file not found: missing\.toml; known "
                       r"experiments: \[.*'cartpole_ppo'"):
        load_experiment("missing.toml")
    path = write_experiment(tmp_path / "mine", "bad_env", "bad env", env="cartpol")
    with pytest.raises(PresetError, match=r"env preset 'cartpol' not found at .*known envs: "
                       r"\[.*'cartpole'"):
        load_experiment(path)


def test_baseline_experiments_default_to_local_and_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = baseline_experiments()
    assert shipped_dir("experiments") / "cartpole_ppo.toml" in shipped
    assert all(p.parent == shipped_dir("experiments") for p in shipped)
    write_experiment(tmp_path / "experiments", "cartpole_ppo", "local copy")
    assert Path("experiments/cartpole_ppo.toml") in baseline_experiments()  # hides the shipped one
    assert shipped_dir("experiments") / "cartpole_ppo.toml" not in baseline_experiments()
    write_experiment(tmp_path / "mine", "my_baseline", "mine")
    assert baseline_experiments(["mine"]) == [Path("mine") / "my_baseline.toml"]
    with pytest.raises(PresetError, match="experiment folder not found: nowhere"):
        baseline_experiments(["nowhere"])


def run_cli(*argv: str) -> str:
    args = build_parser().parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return out.getvalue()


def test_presets_command_lists_every_kind_with_descriptions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = run_cli("presets")
    sections = [line.split()[0] for line in printed.splitlines() if line and not line[0].isspace()]
    assert sections == list(KINDS)
    for kind in KINDS:
        for name in SHIPPED[kind]:
            assert f"  {name} " in printed
    assert "cartpole_ppo             shipped  PPO on CartPole-v1" in printed
    assert " user " not in printed
    write_experiment(tmp_path / "mine", "my_exp", "my own experiment")
    printed = run_cli("presets", "--dir", "mine")
    assert "  my_exp                   user     my own experiment" in printed
    assert "user: mine" in printed


def test_train_and_baselines_accept_repeated_dirs():
    args = build_parser().parse_args(["train", "cartpole_ppo", "--dir", "a", "--dir", "b"])
    assert args.dir == ["a", "b"]
    assert build_parser().parse_args(["train", "cartpole_ppo"]).dir == []
    assert build_parser().parse_args(["baselines", "--dir", "a"]).dir == ["a"]
    assert build_parser().parse_args(["baselines"]).dir is None


@pytest.mark.parametrize(("argv", "seed"), [([], 0), (["--first-seed", "10"], 10)])
def test_baselines_first_seed_moves_the_seeds_without_naming_the_run_folders(monkeypatch, argv, seed):
    from rollax.cli import main
    from rollax.run import baselines

    seen = []
    monkeypatch.setattr(baselines, "run_baselines", lambda experiments, progress: seen.extend(experiments) or [])
    monkeypatch.setattr(baselines, "baseline_table", lambda rows: "")
    assert main(["baselines", "--seeds", "2", *argv]) == 0
    assert seen and all(e.seed_list == [seed, seed + 1] for e in seen)
    assert all(e.logging.run_name == "" for e in seen)  # run folders named by the timestamp alone


def _can_build_wheels_offline() -> bool:
    try:
        version = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    except importlib.metadata.PackageNotFoundError:
        return False
    if version >= (70, 1):  # bdist_wheel is part of setuptools
        return True
    try:
        importlib.metadata.version("wheel")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _can_build_wheels_offline(),
                    reason="needs setuptools>=70.1 (or wheel) to build without isolation")
def test_the_wheel_ships_every_preset(tmp_path):
    source = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("rollax-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"rollax/presets/{kind}/{name}.toml" for kind in KINDS for name in SHIPPED[kind]}
    assert "rollax/presets/experiments/cartpole_ppo.toml" in expected
    assert expected <= files, sorted(expected - files)
    assert {"rollax/presets/__init__.py", "rollax/cache.py", "rollax/cli.py"} <= files
