"""`rollax.load_agent` and `rollax.train` from Python: the loaded policy acts as the run's own
evaluation policy (restored through the training state, as `rollax eval` does), for jitted and
Gymnasium runs and every way of naming a run; SB3's `predict` shapes; bad arguments are
ValueErrors naming them; `train` takes a dict or a preset path (the same run either way) and
turns on the compilation cache; (`-m slow`) a solved CartPole run reaches its reported return
in Gymnasium's own CartPole driven by `predict`."""

import json
from pathlib import Path

import gymnasium
import jax
import numpy as np
import pytest
from readback import evaluation_policy_actions

import rollax
from rollax.cache import compiled_dir
from rollax.presets import load_experiment
from rollax.rollout.collector import act
from rollax.run.run_folder import read_experiment

TINY = {"budget": {"total_steps": 800, "num_envs": 4, "num_steps": 50, "iterations_per_chunk": 1},
        "eval": {"episodes": 2}}
AGENT = {"config": {"num_epochs": 1, "num_minibatches": 2}, "network": {"hidden_sizes": [16]}}


def preset(env: str, seeds: int = 1) -> dict:
    """A tiny experiment preset's content (what its TOML file would hold); a preset's
    `logging.root` is relative to the working folder."""
    return {"name": f"tiny_{env}", "env": env, "agent": "ppo_cartpole", "seeds": seeds, **TINY,
            "logging": {"root": "runs", "progress": False},
            "overrides": {f"agent.{section}.{key}": value for section, table in AGENT.items()
                          for key, value in table.items()}}


def train_in(folder: Path, experiment):
    """`rollax.train(experiment)` with `folder` as the working folder; its absolute run dir."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = rollax.train(experiment)
    return result, folder / result.run_dir


@pytest.fixture(scope="module")
def jitted_run(tmp_path_factory):
    """`(result, run dir)` of a two-seed CartPole run trained by `rollax.train(dict)`, and
    JAX's compilation cache folder right before and after that call."""
    jax.config.update("jax_compilation_cache_dir", None)
    before = jax.config.jax_compilation_cache_dir
    result, run_dir = train_in(tmp_path_factory.mktemp("jitted"), preset("cartpole", seeds=2))
    return result, run_dir, before, jax.config.jax_compilation_cache_dir


@pytest.fixture(scope="module")
def host_run(tmp_path_factory):
    return train_in(tmp_path_factory.mktemp("host"), preset("gymnasium_cartpole"))[1]


def observations(count: int = 64) -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.5, (count, 4)).astype(np.float32)


@pytest.mark.parametrize("seed_index", [0, 1])
def test_last_checkpoint_acts_as_the_runs_evaluation_policy(jitted_run, seed_index):
    run_dir, obs = jitted_run[1], observations()
    expected = evaluation_policy_actions(run_dir, seed_index, obs)
    assert len(set(expected.tolist())) == 2  # the check can tell policies apart
    agent = rollax.load_agent(run_dir, seed=seed_index, checkpoint="last")
    assert agent.seed == seed_index and agent.step == jitted_run[0].env_steps == 800
    np.testing.assert_array_equal(agent.predict(obs)[0], expected)
    np.testing.assert_array_equal(np.asarray(jax.jit(agent.act)(obs)), expected)
    assert [agent.predict(o)[0] for o in obs[:8]] == expected[:8].tolist()


def test_best_checkpoint_is_the_params_at_the_best_evaluation(jitted_run):
    """Evaluated only at the end, a run's best params are its last ones."""
    run_dir = jitted_run[1]
    best = rollax.load_agent(run_dir / "seed_1")
    metadata = json.loads(next((run_dir / "seed_1/checkpoints/best").glob(
        "*/metadata/metadata")).read_text())
    assert best.checkpoint == "best" and best.seed == 1 and best.step == metadata["env_steps"]
    np.testing.assert_array_equal(best.predict(observations())[0],
                                  evaluation_policy_actions(run_dir, 1, observations()))


def test_experiment_folder_gives_its_newest_run_and_first_seed(jitted_run):
    agent = rollax.load_agent(jitted_run[1].parent)
    assert agent.seed == 0 and agent.experiment == read_experiment(jitted_run[1])
    assert agent.env_params is not None and agent.env.name == "CartPole-v1"


def test_predict_follows_sb3_shapes(jitted_run):
    agent = rollax.load_agent(jitted_run[1])
    action, state = agent.predict(np.zeros(4, np.float32))
    assert np.shape(action) == () and state is None
    assert agent.predict(np.zeros((3, 4)))[0].shape == (3,)
    zeros = np.zeros((4000, 4), np.float32)  # samples follow the policy's probabilities
    distribution = act(agent.model, zeros[:1], agent.action_space).distribution
    p_right = float(np.exp(distribution.log_prob(np.ones(1, np.int32)))[0])
    sampled = agent.predict(zeros, deterministic=False)[0]
    assert abs(sampled.mean() - p_right) < 5 * np.sqrt(p_right * (1 - p_right) / 4000) + 1e-3
    with pytest.raises(ValueError, match=r"observation of shape \(3,\): expected \(4,\)"):
        agent.predict(np.zeros(3))
    with pytest.raises(ValueError, match="pass key"):
        agent.act(np.zeros((1, 4)), deterministic=False)
    for flag in ("yes", None, 1):  # 'no' would be truthy
        with pytest.raises(ValueError, match=rf"deterministic must be True or False, got {flag!r}"):
            agent.predict(zeros, deterministic=flag)
        with pytest.raises(ValueError, match="deterministic must be True or False"):
            agent.act(zeros, deterministic=flag)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"progress": "no"}, "progress must be True or False, got 'no'"),
    ({"stop_at_step": -5}, "stop_at_step must be an integer >= 1, got -5"),
    ({"stop_at_step": 2.5}, "stop_at_step must be an integer >= 1, got 2.5"),
])
def test_bad_run_options_are_named_before_anything_runs(kwargs, message, tmp_path):
    experiment = rollax.load_experiment("cartpole_ppo", [f"logging.root='{tmp_path}'"])
    with pytest.raises(ValueError, match=message):
        rollax.train(experiment, **kwargs)
    with pytest.raises(ValueError, match=message):
        rollax.sweep(experiment, {"seed": [0, 1]}, **kwargs)
    assert not any(tmp_path.iterdir())  # no folder was made
    with pytest.raises(ValueError, match=r"overrides must be a list .* single string 'seed=3'"):
        rollax.load_experiment("cartpole_ppo", "seed=3")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"checkpoint": "newest"}, r"checkpoint must be one of \('best', 'last'\), got 'newest'"),
    ({"seed": 7}, r"seed=7 is not a seed of .*; its seeds: \[0, 1\]"),
    ({"seed": "0"}, r"seed must be an int .* got '0'"),
])
def test_bad_arguments_are_named(jitted_run, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rollax.load_agent(jitted_run[1], **kwargs)


def test_seed_folder_and_other_seed_disagree(jitted_run):
    with pytest.raises(ValueError, match="seed=0 disagrees with the seed folder"):
        rollax.load_agent(jitted_run[1] / "seed_1", seed=0)


def test_run_without_best_checkpoint_says_to_load_last(jitted_run, tmp_path):
    import shutil

    copy = Path(shutil.copytree(jitted_run[1], tmp_path / "run"))
    shutil.rmtree(copy / "seed_0" / "checkpoints")
    with pytest.raises(FileNotFoundError, match="no best-model checkpoint.*checkpoint='last'"):
        rollax.load_agent(copy)
    assert rollax.load_agent(copy, checkpoint="last").step == 800
    with pytest.raises(FileNotFoundError, match="no run folder"):
        rollax.load_agent(tmp_path / "absent")


def test_gymnasium_run_acts_in_its_gymnasium_env(host_run):
    agent = rollax.load_agent(host_run, checkpoint="last")
    assert isinstance(agent.env, gymnasium.Env) and agent.env_params is None
    obs = observations()
    np.testing.assert_array_equal(agent.predict(obs)[0], evaluation_policy_actions(host_run, 0, obs))
    observation, _ = agent.env.reset(seed=0)
    agent.env.step(agent.predict(observation)[0])  # an action the env accepts


def test_train_from_a_dict_enables_the_compilation_cache(jitted_run):
    _, _, before, after = jitted_run
    assert before is None and after == str(compiled_dir())


def test_train_from_a_path_is_the_same_run_as_from_its_dict(jitted_run, tmp_path):
    """The same preset content as a TOML file: the same experiment, the same returns."""
    result, run_dir = jitted_run[:2]
    path = tmp_path / "experiments" / "tiny_cartpole.toml"
    path.parent.mkdir()
    path.write_text(_toml(preset("cartpole", seeds=2)))
    assert load_experiment(path) == read_experiment(run_dir)
    again, _ = train_in(tmp_path, str(path))
    np.testing.assert_array_equal(again.eval_returns, result.eval_returns)


def test_train_rejects_other_types():
    with pytest.raises(ValueError, match="a preset dict; got int"):
        rollax.train(3)


def _toml(data: dict, prefix: str = "") -> str:
    """A small TOML writer for the preset dicts above (strings, numbers, lists, tables)."""
    plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
    lines = [f"[{prefix}]"] if prefix and plain else []
    lines += [f"{json.dumps(k) if '.' in k else k} = {json.dumps(v)}" for k, v in plain.items()]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(_toml(table, f"{prefix}.{key}" if prefix else key))
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["env.normalize_observations=true"]])
def test_solved_cartpole_reaches_its_reported_return_in_gymnasium(tmp_path, overrides):
    """The shipped preset (1e5 steps) solves CartPole, also with normalised observations;
    Gymnasium's own CartPole-v1, driven by `predict` (which applies the run's frozen statistics),
    gives the greedy return the run reported."""
    experiment = load_experiment("cartpole_ppo", [*overrides, f"logging.root='{tmp_path}'"])
    result = rollax.train(experiment, progress=False)
    reported = float(result.eval_returns.mean())
    assert reported >= 475.0
    agent = rollax.load_agent(result.run_dir, checkpoint="last")
    env, returns = gymnasium.make("CartPole-v1"), []
    for episode in range(10):
        observation, _ = env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(agent.predict(observation)[0])
            total, done = total + reward, terminated or truncated
        returns.append(total)
    assert np.mean(returns) == pytest.approx(reported, rel=0.05)
