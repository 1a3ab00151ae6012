"""Presets are data: every value checked for type and range at load time (a ValueError naming the
key and the value, before anything is built, compiled or written), no module imported because of
a preset or a run's config.json, run folders only under the log root.

Each case here was reported as a traceback, a hang, a silent wrong run or an unclear message."""

import json
import sys
import time
from pathlib import Path

import pytest

from rollax.cli import main
from rollax.networks.mlp import MLPConfig
from rollax.presets import PresetError, load_experiment
from rollax.run.experiment import Experiment
from rollax.run.plan import chunk_size

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = ROOT / "experiments" / "cartpole_ppo.toml"  # 5 envs x 100 steps, 1e5 steps
PRESET_HEAD = (f'env = "{ROOT / "envs" / "cartpole.toml"}"\n'
               f'agent = "{ROOT / "agents" / "ppo_cartpole.toml"}"\n')


@pytest.mark.parametrize(("override", "message"), [
    # tracebacks
    ("budget.iterations_per_chunk=1.5", r"budget.iterations_per_chunk must be an integer >= 0, got 1.5"),
    ("agent.optimizer.learning_rate=fast", r"agent.optimizer.learning_rate must be a number, got 'fast'"),
    ("agent.network.hidden_sizes=64", r"agent.network.hidden_sizes must be a list of integers, got 64"),
    ("logging.root=123", r"logging.root must be a string, got 123"),
    ("env.id=42", r"env.id must be a string, got 42"),
    ("budget.total_steps.x=5", r"'budget.total_steps' is a value, not a table"),
    ("seed=1099511627776", r"seed=1099511627776 is too large: at most 2147483647"),
    ("budget.total_steps=1000000000000", r"budget.total_steps=1000000000000 is too large: at most 2147483647"),
    ("eval.episodes=100000000", r"eval.episodes=100000000 is too large: at most 65536"),
    ("env.id='gymnasium:nosuchmod:X'", r"names the module 'nosuchmod', which rollax does not import"),
    # accepted but wrong
    ("logging.enabled=no", r"logging.enabled must be a boolean \(true or false\), got 'no'"),
    ("logging.enabled='false'", r"logging.enabled must be a boolean"),
    ("agent.config.normalize_advantages=0", r"agent.config.normalize_advantages must be a boolean"),
    ("eval.every_steps=-1", r"eval.every_steps must be an integer >= 0, got -1"),
    ("eval.every_steps=nan", r"eval.every_steps must be an integer >= 0, got nan"),
    ("agent.optimizer.eps=-1", r"agent.optimizer.eps=-1 must be >= 0"),
    ("seed=true", r"seed must be an integer, got True"),
    ("agent.network.hidden_sizes=[64.5]", r"agent.network.hidden_sizes must be a list of integers"),
    ("agent.network.hidden_sizes=[0]", r"agent.network.hidden_sizes\[i\] must be an integer >= 1, got 0"),
    ("agent.optimizer.learning_rate=inf", r"agent.optimizer.learning_rate=inf must be a finite number"),
    ("agent.config.clip_param=nan", r"agent.config.clip_param=nan must be a finite number"),
    ("agent.config.gamma=nan", r"agent.config.gamma=nan must be a finite number"),
    ("env.solved_threshold=inf", r"env.solved_threshold=inf must be a finite number"),
    ("tags='baseline'", r"tags must be a list of strings, got 'baseline'"),
    # unclear messages
    ("budget.iterations_per_chunk=-1", r"budget.iterations_per_chunk must be an integer >= 0, got -1"),
    ("agent.config.clip_param=x", r"agent.config.clip_param must be a number, got 'x'"),
    ("agent.network.activation=swish", r"agent.network.activation='swish'; expected one of \["),
    # folders outside the log root
    ("name=..", r"name='..' must be a folder name"),
    ("name='../x'", r"name='../x' must be a folder name"),
    ("name='.hidden'", r"name='.hidden' must be a folder name"),
    # sizes the machine cannot hold
    ("budget.num_envs=2000000", r"budget.num_envs \* budget.num_steps \* seeds = 64000000 transitions"),
])
def test_bad_values_are_rejected_at_load_naming_key_and_value(override, message):
    with pytest.raises(PresetError, match=message):
        load_experiment(CARTPOLE, [override] + (["budget.total_steps=2000000000"]
                                                if "num_envs" in override else []))


def test_too_many_seeds_is_refused_before_any_folder(tmp_path):
    with pytest.raises(PresetError, match=r"seeds=10000 is too large: at most 256 per run"):
        load_experiment(CARTPOLE, [f"logging.root='{tmp_path}'"], seeds=10000)
    assert list(tmp_path.iterdir()) == []


def write_preset(tmp_path: Path, body: str, name: str = "exp.toml") -> Path:
    path = tmp_path / name
    path.write_text(PRESET_HEAD + body)
    return path


@pytest.mark.parametrize("root", ["/abs/runs", "../../", "runs/../../x"])
def test_a_preset_file_keeps_its_runs_under_the_working_folder(tmp_path, root):
    path = write_preset(tmp_path, f'[budget]\ntotal_steps = 2000\n[logging]\nroot = "{root}"\n')
    with pytest.raises(PresetError, match=r"logging.root=.* in a preset must be a relative path "
                                          r"inside the working folder.*--set logging.root="):
        load_experiment(path)
    # the user's own command line may put runs anywhere
    assert load_experiment(path, [f"logging.root='{tmp_path}'"]).logging.root == str(tmp_path)
    overrides = write_preset(tmp_path, f'[budget]\ntotal_steps = 2000\n[overrides]\n'
                                       f'"logging.root" = "{root}"\n', "overrides.toml")
    with pytest.raises(PresetError, match="in a preset must be a relative path"):
        load_experiment(overrides)


@pytest.mark.parametrize(("key", "table"), [("logging.profiler.log_dir", 'log_dir = "/abs"'),
                                            ("logging.wandb.dir", 'project = "p"\ndir = "/abs"')])
def test_other_folders_a_preset_names_stay_under_the_working_folder(tmp_path, key, table):
    section = key.rsplit(".", 1)[0]
    path = write_preset(tmp_path, f"[budget]\ntotal_steps = 2000\n[{section}]\n{table}\n")
    with pytest.raises(PresetError, match=rf"{key}='/abs' in a preset must be a relative path"):
        load_experiment(path)


def test_a_missing_budget_names_its_required_key(tmp_path):
    with pytest.raises(PresetError, match=r"\[budget\]: missing required key 'total_steps'"):
        load_experiment(write_preset(tmp_path, ""))


def test_a_non_utf8_preset_is_named(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(PRESET_HEAD.encode() + b'description = "caf\xe9"\n[budget]\ntotal_steps = 1000\n')
    with pytest.raises(PresetError, match=rf"{path}: invalid TOML \(a preset is UTF-8 text\)"):
        load_experiment(path)


def test_a_huge_step_count_in_a_file_fails_at_once(tmp_path):
    start = time.perf_counter()
    with pytest.raises(PresetError, match=r"budget.total_steps=1000000000000000000000 is too large"):
        load_experiment(write_preset(tmp_path, "[budget]\ntotal_steps = 1_000_000_000_000_000_000_000\n"))
    assert time.perf_counter() - start < 5


def test_chunk_size_search_is_quick_on_the_largest_budget():
    start = time.perf_counter()
    # 2**31 - 2 = 2 * 3**2 * 7 * 11 * 31 * 151 * 331: the largest divisor <= a thirtieth is n / 31
    assert chunk_size(2**31 - 2, 0) == (2**31 - 2) // 31
    assert chunk_size(2**31 - 1, 0) == 1  # a prime: one iteration per chunk
    assert time.perf_counter() - start < 1
    for iterations in range(1, 120):  # the plain search it replaced, where that is quick
        for requested in (0, 1, 2, 5, 7, 30, 500):
            target = min(requested or max(1, iterations // 30), iterations)
            expected = max(d for d in range(1, target + 1) if iterations % d == 0)
            assert chunk_size(iterations, requested) == expected, (iterations, requested)


@pytest.fixture
def marker_module(tmp_path, monkeypatch):
    """A module that, if ever imported, writes a marker file (as `this` prints the Zen)."""
    marker = tmp_path / "imported"
    (tmp_path / "rollax_test_marker.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("rollax_test_marker", None)


def test_a_preset_never_imports_the_module_its_env_id_names(marker_module, tmp_path):
    with pytest.raises(PresetError, match=r"names the module 'rollax_test_marker'.*--import-module"):
        load_experiment(CARTPOLE, ["env.id='gymnasium:rollax_test_marker:CartPole-v1'"])
    code = main(["train", str(CARTPOLE), "--no-log", "--set",
                 "env.id='gymnasium:rollax_test_marker:CartPole-v1'"])
    assert code == 2 and not marker_module.exists()


def test_a_run_folders_config_json_never_imports_a_module(marker_module, tmp_path, capsys):
    from rollax.run.evaluation import evaluate_run

    config = load_experiment(CARTPOLE).to_dict()
    config["env"]["id"] = "gymnasium:rollax_test_marker:CartPole-v1"
    (tmp_path / "run" / "seed_0").mkdir(parents=True)
    (tmp_path / "run" / "seed_0" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="names the module 'rollax_test_marker'"):
        evaluate_run(tmp_path / "run", episodes=1)
    assert not marker_module.exists()
    # rollax eval --import-module is the explicit way in: the id passes, the missing checkpoint is named
    code = main(["eval", str(tmp_path / "run"), "--import-module", "rollax_test_marker"])
    assert code == 2 and marker_module.exists()
    assert "checkpoint" in capsys.readouterr().err


def test_import_module_is_the_explicit_way_in(marker_module):
    code = main(["train", str(CARTPOLE), "--no-log", "--import-module", "rollax_test_marker",
                 "--set", "env.id='gymnasium:rollax_test_marker:CartPol-v1'"])
    assert code == 2 and marker_module.exists()  # imported on request; the typo is still named
    experiment = load_experiment(CARTPOLE, ["env.id='gymnasium:rollax_test_marker:CartPole-v1'"])
    assert experiment.env.id == "gymnasium:rollax_test_marker:CartPole-v1"


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c.pop("budget"), r"experiment: missing key\(s\) \['budget'\]"),
    (lambda c: c["budget"].update(total_steps="many"), r"budget.total_steps must be an integer"),
    (lambda c: c["agent"]["config"].update(gamma=None), r"agent.config.gamma must be a number, got None"),
    (lambda c: c["agent"].update(algorithm=3), r"agent.algorithm must be an algorithm name, got 3"),
    (lambda c: c["logging"].update(extra=1), r"logging: unknown LoggingSpec key\(s\) \['extra'\]"),
    (lambda c: c.update(name="../../elsewhere"), r"name='../../elsewhere' must be a folder name"),
])
def test_a_run_config_json_is_checked_like_a_preset(change, message):
    config = json.loads(json.dumps(load_experiment(CARTPOLE).to_dict()))
    change(config)
    with pytest.raises(ValueError, match=message):
        Experiment.from_dict(config)


def test_config_json_round_trips():
    experiment = load_experiment(CARTPOLE, ["agent.network.hidden_sizes=[8, 4]", "tags=['a']"])
    assert Experiment.from_dict(json.loads(json.dumps(experiment.to_dict()))) == experiment


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "logging.enabled=no"], r"logging.enabled must be a boolean"),
    (["--seeds", "10000"], r"seeds=10000 is too large"),
    (["--set", "agent.config.clip_param=x"], r"agent.config.clip_param must be a number, got 'x'"),
    (["--import-module", "rollax_no_such_module"], r"--import-module rollax_no_such_module: No module"),
])
def test_the_cli_prints_one_error_line_and_writes_nothing(extra, message, capsys, tmp_path):
    import re

    code = main(["train", str(CARTPOLE), "--quiet", "--set", f"logging.root='{tmp_path}'", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("rollax train: error: ") and re.search(message, err), err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_python_callers_may_pass_lists_and_get_tuples():
    experiment = load_experiment(CARTPOLE)
    changed = experiment.replace(agent={"network": MLPConfig(hidden_sizes=[8, 4])}, tags=["x"])
    assert changed.agent.network.hidden_sizes == (8, 4) and changed.tags == ("x",)
    with pytest.raises(ValueError, match=r"agent.network.hidden_sizes\[i\] must be an integer >= 1"):
        MLPConfig(hidden_sizes=[8, -1])


def test_a_logging_table_whose_extra_is_missing_is_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed, as with `pip install rollax`
    path = write_preset(tmp_path, '[budget]\ntotal_steps = 2000\n[logging.wandb]\nproject = "p"\n')
    with pytest.raises(PresetError, match=r"logging.wandb needs the wandb package, which is not "
                                          r"installed: pip install 'rollax\[wandb\]'"):
        load_experiment(path)
