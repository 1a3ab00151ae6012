"""Algorithms through `rollax.run.train` at tiny budgets: RLOO's metrics reach the run
directory, REINFORCE's per-task EMA baseline is fed the env's task ids and checkpointed, and
a groups algorithm on a multi-step env is refused before training."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rollax.logging import load_checkpoint
from rollax.presets import load_experiment
from rollax.run import train

ROOT = Path(__file__).resolve().parents[2]
RLOO_TAGS = ["train/loss", "train/policy_loss", "train/mean_reward", "train/reward_std",
             "train/advantage_mean", "train/kl_penalty", "train/entropy", "train/clip_ratio"]
SMOKE = ["budget.num_envs=32", "budget.total_steps=64", "eval.episodes=20",
         "agent.network.hidden_sizes=[16]", "logging.checkpoint=false", "logging.plot=false",
         "logging.images=false", "logging.progress=false"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tags_by_step(path: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for record in read_jsonl(path):
        for tag, value in record.items():
            if tag != "step":
                out.setdefault(tag, {})[record["step"]] = float(value)
    return out


def test_rloo_logs_every_metric_through_the_loop(digit_models, tmp_path):
    experiment = load_experiment(ROOT / "experiments" / "vae_rloo.toml", seeds=1,
                                 overrides=[f"logging.root='{tmp_path}'", *SMOKE])
    result = train(experiment, progress=False)
    assert result.env_steps == 64
    tags = tags_by_step(result.run_dir / "seed_0" / "metrics.jsonl")
    for tag in RLOO_TAGS:
        assert tag in tags, f"{tag} missing; logged: {sorted(tags)}"
        assert sorted(tags[tag]) == [32, 64], tag  # every iteration
        assert all(math.isfinite(v) for v in tags[tag].values()), tag
    # the preset anchors to the initial policy (beta > 0): no KL before the first update, some after
    assert experiment.agent.config.beta > 0
    assert abs(tags["train/kl_penalty"][32]) < 1e-6 and tags["train/kl_penalty"][64] != 0.0
    assert all(abs(v) < 1e-4 for v in tags["train/advantage_mean"].values())  # leave-one-out


NUM_ENVS, ITERATIONS, KEYS = 40, 3, 10


@pytest.fixture(scope="module")
def reinforce_run(digit_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("reinforce")
    overrides = [f"logging.root='{root}'", "agent.algorithm='reinforce'",
                 f"agent.config={{baseline='ema', num_baseline_keys={KEYS}, ema_decay=0.9}}",
                 "budget.num_steps=1", f"budget.num_envs={NUM_ENVS}",
                 f"budget.total_steps={NUM_ENVS * ITERATIONS}", "eval.episodes=20",
                 "agent.network.hidden_sizes=[16]", "logging.checkpoint=true", "logging.plot=false",
                 "logging.images=false", "logging.progress=false"]
    experiment = load_experiment(ROOT / "experiments" / "vae_rloo.toml", overrides, seeds=1)
    return train(experiment, progress=False)


def test_reinforce_ema_baseline_is_keyed_by_the_envs_task_ids(reinforce_run):
    result = reinforce_run
    assert result.env_steps == NUM_ENVS * ITERATIONS
    state, metadata = load_checkpoint(result.run_dir / "checkpoints")
    assert metadata["env_steps"] == NUM_ENVS * ITERATIONS
    algorithm = state["train"]["algorithm"]
    baseline, count = np.asarray(algorithm["baseline"]), np.asarray(algorithm["count"])
    assert baseline.shape == count.shape == (1, KEYS)  # seeds x keys
    # 40 uniform conditions per batch: (nearly) every class is present, not just key 0
    assert (count > 0).sum() >= 5, count
    assert count.max() <= ITERATIONS and count.sum() > ITERATIONS
    assert np.all(baseline[count > 0] != 0.0) and np.all(baseline[count == 0] == 0.0)
    assert np.all(np.isfinite(baseline))


def test_reinforce_logs_the_baseline_mean(reinforce_run):
    tags = tags_by_step(reinforce_run.run_dir / "seed_0" / "metrics.jsonl")
    assert sorted(tags["train/baseline_mean"]) == [NUM_ENVS * (i + 1) for i in range(ITERATIONS)]
    values = [tags["train/baseline_mean"][NUM_ENVS * (i + 1)] for i in range(ITERATIONS)]
    assert values[0] == 0.0  # the first batch is scored against the initial zeros
    assert all(math.isfinite(v) for v in values) and values[-1] != 0.0


CARTPOLE = ["budget.total_steps=2000", "budget.num_envs=4", "agent.network.hidden_sizes=[16]",
            "eval.episodes=2", "logging.progress=false"]


def cartpole(root: Path, *extra: str):
    return load_experiment(ROOT / "experiments" / "cartpole_ppo.toml",
                           [*CARTPOLE, f"logging.root='{root}'", *extra], seeds=1)


def test_grpo_override_on_a_ppo_preset_names_the_ppo_config_fields(tmp_path):
    # the PPO agent's [config] keys are no GRPOConfig fields: refused when the preset loads
    with pytest.raises(ValueError, match=r"agent.config.*GRPOConfig.*num_epochs"):
        cartpole(tmp_path, "agent.algorithm='grpo'")


def test_grpo_on_cartpole_needs_one_step_generations(tmp_path):
    experiment = cartpole(tmp_path, "agent.algorithm='grpo'", "agent.config={}")
    with pytest.raises(ValueError, match=r"budget.num_steps=\d+: grpo here samples one whole generation.*num_steps = 1"):
        train(experiment, progress=False)
    assert list(tmp_path.iterdir()) == []  # refused before the run directory


def test_grpo_on_cartpole_needs_a_one_step_env(tmp_path):
    experiment = cartpole(tmp_path, "agent.algorithm='grpo'", "agent.config={}",
                          "budget.num_steps=1", "budget.total_steps=8")
    with pytest.raises(ValueError, match=r"grpo in the training loop needs a one-step \(bandit\) env"):
        train(experiment, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_ema_baseline_needs_a_key_per_env_task(digit_models, tmp_path):
    # rollax/VAEDigit-v0 has 10 conditions: one key would merge them silently under jit
    experiment = load_experiment(ROOT / "experiments" / "vae_rloo.toml", [
        f"logging.root='{tmp_path}'", "agent.algorithm='reinforce'",
        "agent.config={baseline='ema'}", "budget.num_steps=1"], seeds=1)
    with pytest.raises(ValueError, match=r"num_baseline_keys=1 is smaller than the env's 10 task keys"):
        train(experiment, progress=False)
    assert list(tmp_path.iterdir()) == []
