"""Observation and reward normalisation in whole runs: the learner merges each batch's
observations into the policy's statistics after the update (so the update scores actions with
the statistics that chose them), the statistics are per seed, checkpointed, restored on resume
and frozen in a loaded agent; bad settings are named."""

import jax
import numpy as np
import pytest
from networks.test_normalization import numpy_running_statistics

import rollax
from rollax.networks.normalization import NormalizedPolicy
from rollax.presets import PresetError, load_experiment
from rollax.run.learner import Learner
from rollax.run.plan import _reward_scaling, make_plan

TINY = ["budget.total_steps=1600", "budget.num_envs=4", "budget.num_steps=50",
        "budget.iterations_per_chunk=2", "agent.config.num_epochs=1", "agent.config.num_minibatches=1",
        "agent.network.hidden_sizes=[16]", "eval.episodes=2", "agent.optimizer.anneal_lr=false",
        "env.normalize_observations=true", "env.normalize_rewards=true"]


def tiny(root, *extra):
    return load_experiment("cartpole_ppo", [*TINY, f"logging.root='{root}'", *extra], seeds=2)


def test_the_learner_merges_every_batch_after_scoring_with_the_old_statistics(tmp_path):
    plan = make_plan(tiny(tmp_path))
    learner = Learner(tiny(tmp_path).agent, plan)

    @jax.jit
    def iteration(train, source_state, key):  # what a chunk does once
        source_state, batch, _, _ = plan.source.sample(learner.model(train), None, source_state, key)
        train, metrics = learner.update(train, batch, key)
        return train, source_state, batch.observations, metrics["approx_kl"]

    train, _ = learner.init(jax.random.key(0))
    source_state = plan.source.init(jax.random.key(1))
    batches = []
    for key in jax.random.split(jax.random.key(2), 3):
        train, source_state, observations, approx_kl = iteration(train, source_state, key)
        batches.append(np.asarray(observations))
        # one epoch, one minibatch: the update's ratio is 1 only if it scores with the statistics
        # the actions were sampled with (after the first batch, those differ from the new ones)
        assert float(approx_kl) < 1e-6
    model = learner.model(train)
    assert isinstance(model, NormalizedPolicy)
    mean, var, count = numpy_running_statistics(batches)
    np.testing.assert_allclose(model.mean[...], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.var[...], var, rtol=1e-3)
    assert float(model.count[...]) == pytest.approx(count)


def test_a_loaded_agent_acts_on_the_runs_frozen_statistics_and_a_resume_restores_them(tmp_path):
    full = rollax.train(tiny(tmp_path / "full"), progress=False)
    stopped = rollax.train(tiny(tmp_path / "parts"), progress=False, stop_at_step=800)
    resumed = rollax.train(tiny(tmp_path / "parts"), progress=False, resume=stopped.run_dir)
    observations = np.random.default_rng(0).normal(0.0, 0.3, (32, 4)).astype(np.float32)
    for seed in (0, 1):
        agent = rollax.load_agent(full.run_dir, seed=seed, checkpoint="last")
        model = agent.model
        assert float(model.count[...]) == pytest.approx(1600 + 1e-4)  # every step seen, per seed
        again = rollax.load_agent(resumed.run_dir, seed=seed, checkpoint="last").model
        for name in ("mean", "var", "count"):
            np.testing.assert_array_equal(getattr(again, name)[...], getattr(model, name)[...])
        normalised = np.clip((observations - model.mean[...]) / np.sqrt(model.var[...] + 1e-8), -10, 10)
        expected = np.asarray(model.policy(normalised)[0].mode())
        np.testing.assert_array_equal(agent.predict(observations)[0], expected)
        best = rollax.load_agent(full.run_dir, seed=seed, checkpoint="best").model
        assert float(best.count[...]) > 1.0  # the best model keeps the statistics it acted on
    assert not np.allclose(rollax.load_agent(full.run_dir, seed=0, checkpoint="last").model.mean[...],
                           rollax.load_agent(full.run_dir, seed=1, checkpoint="last").model.mean[...])


@pytest.mark.parametrize(("override", "message"), [
    ("env.clip_observations=0", "env.clip_observations=0 must be > 0.0"),
    ("env.clip_rewards=-1.0", "env.clip_rewards=-1.0 must be > 0.0"),
    ("env.normalize_rewards='yes'", "env.normalize_rewards must be"),
])
def test_bad_normalisation_settings_are_named(tmp_path, override, message):
    with pytest.raises(PresetError, match=message):
        tiny(tmp_path, override)


@pytest.mark.parametrize(("experiment", "overrides", "message"), [
    ("gymnasium_cartpole_ppo", ["env.normalize_rewards=true"],
     "env.normalize_rewards is for the env rollouts of a jittable env; this run samples from a Gym"),
    ("vae_grpo", ["env.normalize_rewards=true"], "this run samples from GenerationGroups"),
    ("vae_grpo", ["env.normalize_observations=true"], "env.normalize_observations is for env steps"),
])
def test_normalisation_where_it_does_not_apply_is_refused(tmp_path, experiment, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_plan(load_experiment(experiment, [*overrides, f"logging.root='{tmp_path}'"]))


def test_reward_normalisation_needs_the_algorithms_discount(tmp_path):
    spec = tiny(tmp_path).env
    with pytest.raises(ValueError, match="mine has no discount"):
        _reward_scaling(spec, "mine", object())


def test_a_gymnasium_env_stepped_on_the_host_normalises_observations_too(tmp_path):
    experiment = load_experiment("gymnasium_cartpole_ppo", [*TINY[:-1], f"logging.root='{tmp_path}'"])
    result = rollax.train(experiment, progress=False)
    model = rollax.load_agent(result.run_dir, checkpoint="last").model
    assert isinstance(model, NormalizedPolicy)
    assert float(model.count[...]) == pytest.approx(result.env_steps + 1e-4)
    assert np.abs(model.mean[...]).max() > 0.0
