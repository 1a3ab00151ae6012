"""Presets: strict keys that list the valid ones, overrides, and value checks naming the field."""

from pathlib import Path

import pytest

from rollax.presets import PresetError, load_experiment, parse_override
from rollax.rl.registry import ALGORITHMS

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = ROOT / "experiments" / "cartpole_ppo.toml"


def test_shipped_experiments_load_with_their_env_and_agent_presets():
    for path in sorted((ROOT / "experiments").glob("*.toml")):
        experiment = load_experiment(path)
        assert experiment.name == path.stem
        assert experiment.env.id and experiment.agent.algorithm in ALGORITHMS


def test_overrides_reach_nested_keys_as_toml_values():
    experiment = load_experiment(CARTPOLE, ["agent.config.clip_param=0.1", "budget.num_envs=4",
                                            "agent.network.hidden_sizes=[16, 8]",
                                            "logging.root=somewhere"], seeds=3)
    assert experiment.agent.config.clip_param == 0.1
    assert experiment.budget.num_envs == 4 and experiment.seeds == 3
    assert experiment.agent.network.hidden_sizes == (16, 8)
    assert experiment.logging.root == "somewhere"  # a bare word is a string
    assert parse_override("a.b = 1e3") == ("a.b", 1000.0)


def test_unknown_key_in_a_preset_file_lists_the_valid_keys(tmp_path):
    (tmp_path / "experiments").mkdir()
    path = tmp_path / "experiments" / "bad.toml"
    path.write_text(f'env = "{ROOT / "envs" / "cartpole.toml"}"\n'
                    f'agent = "{ROOT / "agents" / "ppo_cartpole.toml"}"\nseedz = 2\n'
                    "[budget]\ntotal_steps = 1000\n")
    with pytest.raises(PresetError, match=r"'seedz' \(did you mean 'seeds?'\?\).*valid keys: \[.*'seeds'"):
        load_experiment(path)
    path.write_text(path.read_text().replace("seedz = 2\n", "").replace("total_steps", "total_step"))
    with pytest.raises(PresetError, match=r"\[budget\].*'total_step'.*valid keys"):
        load_experiment(path)


@pytest.mark.parametrize(("override", "message"), [
    ("budget.bogus=1", r"unknown key 'bogus'; valid: \[.*'num_envs', 'num_steps'"),
    ("nothing.here=1", r"unknown key 'nothing'; valid: \["),
    ("agent.config.clip_parm=0.1", r"agent.config: unknown PPOConfig key\(s\) \['clip_parm'\]; valid keys: \[.*'clip_param'"),
    ("agent.config.clip_param=-1", r"clip_param"),
    ("agent.config.gamma=1.5", r"gamma"),
    ("agent.algorithm=a2c", r"agent.algorithm: unknown algorithm 'a2c'; valid: \['dpo', 'grpo', 'ppo', 'reinforce', 'rloo'\]"),
    ("budget.total_steps=10", r"budget.total_steps=10 is smaller than one iteration"),
    ("budget.num_envs=0", r"budget.num_envs must be an integer >= 1, got 0"),
    ("logging.best_metric='train/loss'", r"logging.best_metric='train/loss' must name an evaluation"),
    ("logging.best_mode='best'", r"logging.best_mode='best'"),
    ("agent.optimizer.name=lion", r"agent.optimizer.name='lion'"),
    ("agent.optimizer.learning_rate=0", r"agent.optimizer.learning_rate=0 must be > 0"),
    ("no_equals_sign", r"must look like path.to.key=value"),
    ("env=acrobot", r"override 'env': 'env' is a table; set one of its keys"),
])
def test_bad_overrides_name_the_offending_key(override, message):
    with pytest.raises(PresetError, match=message):
        load_experiment(CARTPOLE, [override])


def test_bad_seed_count_and_missing_files_are_errors(tmp_path):
    with pytest.raises(PresetError, match="seeds must be an integer >= 1, got 0"):
        load_experiment(CARTPOLE, seeds=0)
    with pytest.raises(PresetError, match="preset file not found"):
        load_experiment(ROOT / "experiments" / "nope.toml")
    path = tmp_path / "missing_env.toml"
    path.write_text(f'env = "nope"\nagent = "{ROOT / "agents" / "ppo_cartpole.toml"}"\n'
                    "[budget]\ntotal_steps = 1000\n")
    with pytest.raises(PresetError, match=r"env preset 'nope' not found at "):
        load_experiment(path)


def test_seed_sets_the_first_of_the_seeds():
    assert load_experiment(CARTPOLE, ["seed=3"], seeds=2).seed_list == [3, 4]
    assert load_experiment(CARTPOLE).seed_list == [0]
    with pytest.raises(PresetError, match="seed must be an integer >= 0, got -1"):
        load_experiment(CARTPOLE, ["seed=-1"])
