"""Start-up stays light: `import rollax`, `rollax --help` and `rollax envs` import no jax, gymnax
or plotting library (checked in a fresh interpreter's `sys.modules`; wall times are in
benchmarks/startup.py), the static gymnax id table matches gymnax, and ids whose data gymnax
downloads are neither listed nor registered."""

import json
import subprocess
import sys

import gymnasium
import gymnax
import pytest

import rollax
from rollax.envs.gymnax_ids import DOWNLOADING_IDS, GYMNAX_IDS
from rollax.envs.probe_ids import PROBE_IDS
from rollax.envs.probes import PROBES

HEAVY = ("jax", "flax", "optax", "gymnax", "matplotlib", "seaborn", "scipy")

# runs argv (a CLI command, or none for a bare `import rollax`) in a fresh interpreter, then
# writes the loaded heavy top-level packages to stderr as JSON
PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
import rollax
if argv:
    from rollax.cli import main
    try:
        main(argv)
    except SystemExit:
        pass
loaded = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
print("LOADED=" + json.dumps(loaded), file=sys.stderr)
"""


def fresh_process(argv: list[str]) -> tuple[list[str], str]:
    """(heavy packages loaded, stdout) of `argv` run in a new interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, timeout=120, check=True)
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED="))
    return json.loads(line.removeprefix("LOADED=")), done.stdout


@pytest.mark.parametrize("argv", [[], ["--help"], ["envs"], ["plot"]],
                         ids=["import rollax", "--help", "envs", "plot without arguments"])
def test_light_commands_import_no_jax_gymnax_or_plotting(argv):
    loaded, _ = fresh_process(argv)
    assert loaded == []


def test_envs_lists_every_gymnax_and_rollax_id_without_gymnax():
    loaded, out = fresh_process(["envs"])
    assert loaded == []
    expected = (set(gymnax.registered_envs) - set(DOWNLOADING_IDS)) | set(PROBES) | {
        "rollax/VAEDigit-v0", "rollax/VAEReconstruct-v0", "rollax/GANDiscriminator-v0"}
    assert set(out.split()) == expected


def test_static_gymnax_table_is_gymnax_registry_minus_downloading_ids():
    assert set(DOWNLOADING_IDS) <= set(gymnax.registered_envs)
    assert sorted(GYMNAX_IDS) == sorted(set(gymnax.registered_envs) - set(DOWNLOADING_IDS))
    assert len(GYMNAX_IDS) == len(set(GYMNAX_IDS))


def test_probe_id_table_matches_the_probe_classes():
    assert sorted(PROBE_IDS) == sorted(PROBES)


def test_downloading_ids_are_not_registered_and_make_says_why():
    assert "MNISTBandit-bsuite" not in rollax.envs.registered_ids()
    assert "rollax/MNISTBandit-bsuite-v0" not in gymnasium.registry
    with pytest.raises(ValueError, match=r"'MNISTBandit-bsuite' is not available in rollax: "
                                         r"gymnax downloads MNIST"):
        rollax.envs.make("MNISTBandit-bsuite")


def test_gymnax_ids_are_made_by_gymnax_with_param_overrides():
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
