"""Probe environments through `train()`: each trainer learns the closed-form value or policy in a
few thousand env steps (see `rollax.envs.probes`). The truncation probe catches bootstrap bugs:
treating its time limit as termination would give V(s) ~ 3.4 instead of 1/(1-gamma) = 10."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from rollax.logging import load_checkpoint
from rollax.presets import load_experiment
from rollax.run import train
from rollax.run.learner import build_model
from rollax.run.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
OBS = np.array([[0.0], [1.0], [-1.0]], np.float32)


def trained_model(tmp_path: Path, env_id: str, algorithm: str, total_steps: int, config: str):
    """Train one seed and return the final model: with only the closing evaluation, the
    best-model checkpoint holds the final parameters."""
    experiment = load_experiment(ROOT / "experiments" / "cartpole_ppo.toml", [
        f"env.id='{env_id}'", f"agent.algorithm='{algorithm}'", f"agent.config={config}",
        f"budget.total_steps={total_steps}", "budget.num_envs=8", "budget.num_steps=10",
        "agent.network.hidden_sizes=[16]", "agent.optimizer.learning_rate=0.01",
        "agent.optimizer.anneal_lr=false", f"logging.root='{tmp_path}'", "logging.plot=false",
        "eval.every_steps=0", "eval.episodes=2"])
    result = train(experiment, progress=False)
    plan = make_plan(experiment)
    model = build_model(experiment.agent, plan, jax.random.key(0))
    params, _ = load_checkpoint(result.run_dir / "seed_0" / "checkpoints" / "best",
                                target=nnx.state(model, nnx.Param))
    nnx.update(model, params)
    return model


PPO = "{num_epochs=4, num_minibatches=2}"
VALUE_CASES = [  # env, PPO config, observations -> closed-form values
    ("rollax/ProbeConstant-v0", PPO, [0.0], [1.0]),
    ("rollax/ProbeObsReward-v0", PPO, [1.0, -1.0], [1.0, -1.0]),
    ("rollax/ProbeTwoStep-v0", PPO, [0.0, 1.0], [0.99, 1.0]),
    ("rollax/ProbeTruncation-v0", "{gamma=0.9, num_epochs=4, num_minibatches=2}", [0.0], [10.0]),
]


@pytest.mark.parametrize(("env_id", "config", "observations", "values"), VALUE_CASES,
                         ids=[c[0].split("/")[1] for c in VALUE_CASES])
def test_ppo_value_learns_the_closed_form(tmp_path, env_id, config, observations, values):
    steps = 8000 if "Truncation" in env_id else 4000
    model = trained_model(tmp_path, env_id, "ppo", steps, config)
    _, predicted = model(np.asarray(observations, np.float32)[:, None])
    tolerance = 0.5 if "Truncation" in env_id else 0.1
    np.testing.assert_allclose(np.asarray(predicted), values, atol=tolerance)


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_action_probe_policy_picks_the_rewarded_action(tmp_path, algorithm):
    config = PPO if algorithm == "ppo" else "{}"
    model = trained_model(tmp_path, "rollax/ProbeActionReward-v0", algorithm, 4000, config)
    output = model(OBS[1:])  # obs +1 -> action 1, obs -1 -> action 0
    distribution = output.distribution
    probabilities = np.asarray(jax.nn.softmax(distribution.logits))
    assert probabilities[0, 1] > 0.9 and probabilities[1, 0] > 0.9, probabilities


def test_ppo_continuous_probe_mean_moves_to_the_target(tmp_path):
    model = trained_model(tmp_path, "rollax/ProbeContinuousAction-v0", "ppo", 4000, PPO)
    gaussian = model(OBS[:1]).distribution
    np.testing.assert_allclose(np.asarray(gaussian.mean), [[0.5]], atol=0.15)
