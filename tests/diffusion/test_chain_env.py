"""The chain env and its batch source with a tiny denoiser and a plain reward: bad input named,
one training iteration of every algorithm, and the sampled batch against a plain loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rollax
from rollax.diffusion.env import DenoisingChain, to_images
from rollax.diffusion.models import Denoiser
from rollax.diffusion.samplers import DDIMSampler, FlowSampler


def brightness(images, conditions):
    """A plain reward: mean pixel, plus the class index / 10 (so conditions matter)."""
    return jnp.mean(images, -1) + jnp.argmax(conditions, -1) / 10


def tiny_chain(sampler=None, reward=brightness, denoiser=None, **kwargs):
    denoiser = denoiser or Denoiser(hidden_dim=16, depth=2, time_dim=8, rngs=nnx.Rngs(0))
    return DenoisingChain(denoiser, sampler or FlowSampler(3), reward, num_conditions=10, **kwargs)


def make_tiny(noise: float = 0.7, steps: int = 3):
    env = tiny_chain(FlowSampler(steps, noise), name="rollax/TestTinyChain-v0")
    return env, env.default_params


rollax.register("rollax/TestTinyChain-v0", make_tiny)


def test_a_chain_longer_than_the_schedule_is_refused():
    with pytest.raises(ValueError, match="num_steps=1001 is longer than the DDPM's train_steps"):
        DDIMSampler(1001)


@pytest.mark.parametrize("reward, message", [
    (lambda images, conditions: jnp.mean(images), "must return shape \\[B\\]"),
    (lambda images, conditions: jnp.full(images.shape[:1], jnp.nan), "non-finite rewards"),
])
def test_a_bad_reward_is_named(reward, message):
    with pytest.raises(ValueError, match=message):
        tiny_chain(reward=reward)


def test_a_denoiser_of_the_wrong_shape_is_named():
    wrong = Denoiser(data_dim=32, hidden_dim=8, depth=1, time_dim=8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="the denoiser failed on images \\[1, 64\\]"):
        tiny_chain(denoiser=wrong)


def test_the_episode_is_k_steps_rewarded_at_the_last():
    env = tiny_chain()
    params = env.default_params.replace(target_index=3)
    obs, state = env.reset(jax.random.key(0), params)
    assert obs.shape == (64 + 1 + 10,) and int(np.argmax(obs[65:])) == 3
    rewards, dones = [], []
    for k in range(3):
        action = jnp.full((64,), 0.5 * k)
        obs, state, reward, done, *_ = env.step(jax.random.key(k), state, action, params)
        rewards.append(float(reward)), dones.append(bool(done))
    assert dones == [False, False, True] and rewards[:2] == [0.0, 0.0]
    np.testing.assert_allclose(rewards[2], float(jnp.mean(to_images(jnp.full(64, 1.0)))) + 0.3)


def preset(algorithm: str, noise: float = 0.7, **config):
    group = {"grpo": 4, "rloo": 4, "dpo": 4}.get(algorithm)
    agent = {"algorithm": algorithm, "network": {"kind": "denoiser"},
             "config": {**config, **({"num_generations": group} if group else {})}}
    return {"env": {"id": "rollax/TestTinyChain-v0", "params": {"noise": noise}}, "agent": agent,
            "budget": {"total_steps": 16, "num_envs": 8, "num_steps": 1}, "eval": {"episodes": 4}}


# GRPO (group source, exact KL, pictures, video) and PPO (the critic) in the default suite; the
# other converters' math is checked in test_chain_math.py, their whole runs under -m slow
SLOW = pytest.mark.slow


@pytest.mark.parametrize("algorithm", [pytest.param("reinforce", marks=SLOW), "ppo", "grpo",
                                       pytest.param("rloo", marks=SLOW),
                                       pytest.param("dpo", marks=SLOW)])
def test_every_algorithm_trains_on_the_chain(algorithm, tmp_path, monkeypatch):
    config = {"grpo": {"beta": 0.1, "kl_estimator": "exact"}, "rloo": {"beta": 0.1},
              "ppo": {"kl_coeff": 0.1}}.get(algorithm, {})
    monkeypatch.chdir(tmp_path)  # the run folder goes under ./runs
    experiment = {**preset(algorithm, **config), "logging": {"plot": False}}
    result = rollax.train(experiment, progress=False)
    assert result.env_steps == 16 and np.isfinite(result.eval_returns).all()
    assert set(result.eval_metrics) == set()  # the tiny env has no judge
    if algorithm == "grpo":  # a chain run draws pictures of the requested classes
        agent = rollax.load_agent(result.run_dir, checkpoint="last")
        pictures = agent.sample_images(classes=[2, 5, 5])
        assert pictures.shape == (3, 8, 8) and 0 <= pictures.min() and pictures.max() <= 1
        np.testing.assert_array_equal(pictures, agent.sample_images(classes=[2, 5, 5]))
        assert not np.array_equal(pictures, agent.sample_images(classes=[2, 5, 5], seed=1))
        assert agent.sample_images(n=4, greedy=True).shape == (4, 8, 8)
        path, frames = rollax.record_video(result.run_dir, tmp_path / "chain.gif")
        assert frames == 3 + 1 and path.stat().st_size > 0  # the noise, then each step's images


def test_a_deterministic_sampler_is_refused_by_name():
    with pytest.raises(ValueError, match="deterministic sampler .*noise > 0"):
        rollax.train(preset("grpo", noise=0.0), progress=False)


TINY = {"epochs": 2, "hidden_dim": 16, "depth": 1}  # a base model trained in a second


@pytest.mark.parametrize("env_id", ["rollax/DiffusionDigit-v0", "rollax/FlowDigit-v0"])
def test_the_digit_chains_and_their_bad_settings(env_id):
    env, params = rollax.make(env_id, denoiser=TINY, num_steps=4, target_class=7)
    assert env.num_steps == 4 and env.sampler.stochastic
    obs, _ = env.reset(jax.random.key(0), params)
    assert int(np.argmax(obs[65:])) == 7
    with pytest.raises(ValueError, match="target_class=10 must be -1"):
        rollax.make(env_id, denoiser=TINY, target_class=10)
    with pytest.raises(ValueError, match="denoiser: unknown key\\(s\\) \\['width'\\]"):
        rollax.make(env_id, denoiser={"width": 3})
    if env_id == "rollax/DiffusionDigit-v0":
        with pytest.raises(ValueError, match="num_steps=1000 is longer than the DDPM"):
            rollax.make(env_id, denoiser=TINY, num_steps=1000)


def test_a_base_model_reports_its_quality():
    from rollax.diffusion import load_denoiser

    _, report = load_denoiser({**TINY, "model": "flow"})
    assert len(report["judge_class_histogram"]) == 10 and sum(report["judge_class_histogram"]) == 2000
    assert 0 <= report["realistic"] <= 1 and report["diversity_by_judged_class"] > 0
