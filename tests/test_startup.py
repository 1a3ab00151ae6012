"""Start-up stays light: `import rollax`, `rollax --help`, `rollax envs` and `rollax presets`
import no jax, gymnax or plotting library, and making an env imports only its own gymnax family (checked in a fresh
interpreter's `sys.modules`; wall times are in benchmarks/startup.py); the static gymnax table
matches gymnax; ids whose data gymnax downloads are neither listed nor registered."""

import json
import subprocess
import sys
import textwrap

import gymnasium
import gymnax
import jax
import numpy as np
import pytest

import rollax
from rollax.envs.gymnax_envs import DOWNLOADING_IDS, GYMNAX_ENVS, make_gymnax
from rollax.envs.probe_ids import PROBE_IDS
from rollax.envs.probes import PROBES

HEAVY = {"jax", "flax", "optax", "matplotlib", "seaborn", "scipy"}
# `import rollax` puts these two in sys.modules with their init deferred (envs/gymnax_envs.py);
# any other gymnax module loaded means gymnax code ran
DEFERRED = {"gymnax", "gymnax.environments"}


def fresh_process(statement: str = "pass") -> tuple[set[str], str]:
    """(modules loaded, stdout) after `import rollax` and `statement` in a new interpreter."""
    script = ("import json, sys\nimport rollax\ntry:\n" + textwrap.indent(statement, "    ")
              + "\nexcept SystemExit:\n    pass\n"
              "print('MODULES=' + json.dumps(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES="))), done.stdout


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("argv", [None, ["--help"], ["envs"], ["plot"], ["presets"]],
                         ids=["import rollax", "--help", "envs", "plot without arguments", "presets"])
def test_light_commands_import_no_jax_gymnax_or_plotting(argv):
    statement = "pass" if argv is None else f"from rollax.cli import main; main({argv!r})"
    modules, _ = fresh_process(statement)
    assert top_level(modules) & HEAVY == set()
    assert {name for name in modules if name.startswith("gymnax")} == DEFERRED


def test_the_python_api_imports_no_checkpoint_or_plotting_library():
    # orbax (about 0.2 s) is imported by the first checkpoint saved or read, matplotlib by a plot
    modules, _ = fresh_process("import rollax.api")
    assert "jax" in top_level(modules)
    assert top_level(modules) & {"orbax", "matplotlib", "seaborn"} == set()


# one process makes a probe, then CartPole, then a MinAtar env (one jax import, not three),
# printing after each the gymnax families and plotting packages loaded so far; then uses gymnax
JOURNEY = """
def loaded():
    names = set(sys.modules)
    return (sorted({n.split(".")[2] for n in names if n.startswith("gymnax.environments.")}),
            sorted({n.split(".")[0] for n in names} & {"matplotlib", "seaborn", "scipy", "pandas"}))
for env_id in ["rollax/ProbeConstant-v0", "CartPole-v1", "Breakout-MinAtar"]:
    rollax.make(env_id)
    print(json.dumps(loaded()))
import gymnax
from gymnax import make, registered_envs
import gymnax.environments as e
print(json.dumps([type(make("Acrobot-v1")[0]).__name__, len(registered_envs),
                  e.CartPole.__name__, gymnax.EnvState is e.environment.EnvState]))
"""


def test_making_an_env_imports_its_gymnax_family_only_and_gymnax_stays_whole():
    _, out = fresh_process(JOURNEY)
    probe, cartpole, minatar, whole = map(json.loads, out.splitlines())
    assert probe == [["environment", "spaces"], []]  # gymnax's base classes, no env family
    assert cartpole == [["classic_control", "environment", "spaces"], []]
    assert minatar == [["classic_control", "environment", "minatar", "spaces"], []]
    assert whole == ["Acrobot", len(gymnax.registered_envs), "CartPole", True]


def test_envs_lists_every_gymnax_and_rollax_id_without_gymnax():
    modules, out = fresh_process("from rollax.cli import main; main(['envs'])")
    assert {name for name in modules if name.startswith("gymnax")} == DEFERRED
    expected = (set(gymnax.registered_envs) - set(DOWNLOADING_IDS)) | set(PROBES) | {
        "rollax/VAEDigit-v0", "rollax/VAEReconstruct-v0", "rollax/GANDiscriminator-v0",
        "rollax/DiffusionDigit-v0", "rollax/FlowDigit-v0",
        "rollax/Tokens-Reverse-v0", "rollax/Tokens-Sort-v0", "rollax/Tokens-Addition-v0",
        "rollax/Tokens-Multiply-v0", "rollax/Tokens-Lookup-v0",
        "rollax/Tokens-Text-v0", "rollax/Tokens-Edits-v0"}
    assert set(out.split()) == expected


def test_static_gymnax_table_is_gymnax_registry_minus_downloading_ids():
    assert set(DOWNLOADING_IDS) <= set(gymnax.registered_envs)
    assert sorted(GYMNAX_ENVS) == sorted(set(gymnax.registered_envs) - set(DOWNLOADING_IDS))


@pytest.mark.parametrize("env_id", sorted(GYMNAX_ENVS))
def test_static_gymnax_table_makes_what_gymnax_makes(env_id):
    env, params = make_gymnax(env_id)
    reference, reference_params = gymnax.make(env_id)
    assert type(env) is type(reference)
    assert jax.tree.structure(params) == jax.tree.structure(reference_params)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, params, reference_params)))


def test_probe_id_table_matches_the_probe_classes():
    assert sorted(PROBE_IDS) == sorted(PROBES)


def test_downloading_ids_are_not_registered_and_make_says_why():
    assert "MNISTBandit-bsuite" not in rollax.envs.registered_ids()
    assert "rollax/MNISTBandit-bsuite-v0" not in gymnasium.registry
    with pytest.raises(ValueError, match=r"'MNISTBandit-bsuite' is not available in rollax: "
                                         r"gymnax downloads MNIST"):
        rollax.envs.make("MNISTBandit-bsuite")


def test_make_of_a_gymnax_id_matches_gymnax_make_with_param_overrides():
    env, params = rollax.envs.make("CartPole-v1", max_steps_in_episode=7)
    reference, reference_params = gymnax.make("CartPole-v1")
    assert type(env) is type(reference)
    assert params == reference_params.replace(max_steps_in_episode=7)


def test_every_public_name_resolves_and_is_listed_by_dir():
    assert set(rollax.__all__) <= set(dir(rollax))
    for name in rollax.__all__:
        assert getattr(rollax, name) is not None, name
    from rollax import PPOTrainer
    from rollax.rl import PPOTrainer as defined

    assert PPOTrainer is defined
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        rollax.Nope  # noqa: B018
