"""The training loop's outputs, read back from disk: event files and JSONL agree and carry every
documented tag on the env-step axis, per seed; config/results/plot/best checkpoint; resuming a
stopped run gives the same parameters as an uninterrupted one; divergence and bad run dirs."""

import json
import math
import os
import shutil
from pathlib import Path

import jax
import matplotlib.image
import numpy as np
import pytest
from flax import nnx
from readback import read_jsonl, scalar_events

from rollax.logging import available_steps, load_checkpoint
from rollax.logging.writer_lock import LOCK_FILE
from rollax.presets import load_experiment
from rollax.run import TrainingDiverged, train
from rollax.run.learner import build_model
from rollax.run.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
NUM_ENVS, NUM_STEPS, TOTAL = 4, 50, 2000
PER_ITERATION = NUM_ENVS * NUM_STEPS
TINY = [f"budget.total_steps={TOTAL}", f"budget.num_envs={NUM_ENVS}", f"budget.num_steps={NUM_STEPS}",
        "budget.iterations_per_chunk=1", "agent.config.num_epochs=1", "agent.config.num_minibatches=2",
        "agent.network.hidden_sizes=[16]", "eval.episodes=2"]
PPO_TAGS = ["train/loss", "train/policy_loss", "train/value_loss", "train/entropy",
            "train/mean_reward", "train/advantage_mean", "train/kl_divergence", "train/approx_kl",
            "train/clip_fraction", "train/explained_variance", "train/grad_norm"]
EPISODE_TAGS = ["rollout/ep_rew_mean", "rollout/ep_len_mean", "charts/episodic_return",
                "charts/episodic_length"]


def tiny_experiment(root: Path, *extra: str, seeds: int = 2):
    return load_experiment(ROOT / "experiments" / "cartpole_ppo.toml",
                           [*TINY, f"logging.root='{root}'", *extra], seeds=seeds)


def final_params(run_dir: Path) -> list:
    """Leaves of the newest training checkpoint's model+optimizer state, as NumPy arrays."""
    state, _ = load_checkpoint(run_dir / "checkpoints")
    return [np.asarray(x) for x in jax.tree.leaves(state["train"])]


def records_by_tag(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_jsonl(path):
        for tag, value in record.items():
            if tag != "step":
                out.setdefault(tag, []).append((record["step"], float(value)))
    return out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One logged run of 2 seeds with evaluations every 1000 env steps."""
    root = tmp_path_factory.mktemp("runs")
    experiment = tiny_experiment(root, "eval.every_steps=1000")
    result = train(experiment, progress=False)
    return experiment, result


def test_every_documented_tag_per_seed_on_the_env_step_axis(full_run):
    _experiment, result = full_run
    seed_dirs = sorted(p.name for p in result.run_dir.glob("seed_*"))
    assert seed_dirs == ["seed_0", "seed_1"]
    for seed_dir in seed_dirs:
        events = scalar_events(result.run_dir / seed_dir)
        for tag in [*PPO_TAGS, *EPISODE_TAGS, "time/fps", "eval/mean_reward"]:
            assert tag in events, f"{seed_dir}: {tag} missing from the event file"
            steps = [step for step, _ in events[tag]]
            assert all(step > 0 and step % PER_ITERATION == 0 for step in steps), (tag, steps)
        train_steps = [step for step, _ in events["train/loss"]]
        assert train_steps == list(range(PER_ITERATION, TOTAL + 1, PER_ITERATION))
        assert [step for step, _ in events["eval/mean_reward"]] == [1000, 2000]


def test_jsonl_and_event_files_hold_the_same_records(full_run):
    _, result = full_run
    for seed_dir in sorted(result.run_dir.glob("seed_*")):
        events, jsonl = scalar_events(seed_dir), records_by_tag(seed_dir / "metrics.jsonl")
        assert sorted(events) == sorted(jsonl)
        for tag, records in jsonl.items():
            assert [s for s, _ in events[tag]] == [s for s, _ in records], tag
            np.testing.assert_allclose([v for _, v in events[tag]], [v for _, v in records],
                                       rtol=1e-6, err_msg=tag)  # event files store float32


def test_config_results_and_plot_are_written(full_run):
    experiment, result = full_run
    for seed in (0, 1):
        config = json.loads((result.run_dir / f"seed_{seed}" / "config.json").read_text())
        assert config == json.loads(json.dumps(experiment.to_dict()))
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["env_steps"] == TOTAL
    np.testing.assert_allclose(results["eval_mean_return"], result.eval_returns.mean(axis=1))
    for seed in (0, 1):  # the final evaluation is the last eval/mean_reward record
        last_eval = records_by_tag(result.run_dir / f"seed_{seed}" / "metrics.jsonl")[
            "eval/mean_reward"][-1]
        assert last_eval == (TOTAL, pytest.approx(results["eval_mean_return"][seed]))
    image = matplotlib.image.imread(result.run_dir / "learning_curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image[..., :3].std() > 0.05


def test_best_checkpoint_holds_the_best_evaluation_and_loads_into_the_model(full_run):
    experiment, result = full_run
    plan = make_plan(experiment)
    for seed in (0, 1):
        seed_dir = result.run_dir / f"seed_{seed}"
        evals = records_by_tag(seed_dir / "metrics.jsonl")["eval/mean_reward"]
        best_value = max(v for _, v in evals)
        best_step = next(s for s, v in evals if v == best_value)  # saved on strict improvement
        best_dir = seed_dir / "checkpoints" / "best"
        assert available_steps(best_dir) == [best_step]
        model = build_model(experiment.agent, plan, jax.random.key(123))
        params, metadata = load_checkpoint(best_dir, target=nnx.state(model, nnx.Param))
        assert metadata["eval_mean_reward"] == pytest.approx(best_value)
        nnx.update(model, params)
        if best_step == TOTAL:  # the best model is the final one: same arrays as the run's end
            final, _ = load_checkpoint(result.run_dir / "checkpoints")
            kernel = final["train"]["model_optimizer"]["0"]["policy_head"]["kernel"][seed]
            np.testing.assert_array_equal(np.asarray(model.policy_head.kernel[...]), kernel)
        distribution, _value = model(np.zeros((3, 4), np.float32))
        assert distribution.logits.shape == (3, 2) and np.all(np.isfinite(distribution.logits))


def test_resume_after_a_stop_matches_an_uninterrupted_run(full_run, tmp_path):
    _, full = full_run
    experiment = tiny_experiment(tmp_path)  # no periodic evals: they do not touch the state
    stopped = train(experiment, progress=False, stop_at_step=TOTAL // 2)
    assert stopped.env_steps == TOTAL // 2
    assert available_steps(stopped.run_dir / "checkpoints") == [TOTAL // 2]
    # a kill after logging past the checkpoint leaves records (and a torn line) to drop
    for seed_dir in stopped.run_dir.glob("seed_*"):
        with open(seed_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": TOTAL // 2 + PER_ITERATION, "train/loss": 1.0}) + "\n")
            f.write('{"step": 1')
    resumed = train(experiment, progress=False, resume=stopped.run_dir)
    assert resumed.run_dir == stopped.run_dir and resumed.env_steps == TOTAL
    for ours, reference in zip(final_params(resumed.run_dir), final_params(full.run_dir)):
        np.testing.assert_array_equal(ours, reference)
    for seed in (0, 1):
        records = read_jsonl(resumed.run_dir / f"seed_{seed}" / "metrics.jsonl")
        keys = [(r["step"], tag) for r in records for tag in r if tag != "step"]
        assert len(keys) == len(set(keys)), "duplicated (step, tag) records after resume"
        ours = records_by_tag(resumed.run_dir / f"seed_{seed}" / "metrics.jsonl")
        reference = records_by_tag(full.run_dir / f"seed_{seed}" / "metrics.jsonl")
        for tag in [*PPO_TAGS, *EPISODE_TAGS]:
            assert ours[tag] == reference[tag], tag


def test_resume_of_a_corrupt_checkpoint_names_it_and_leaves_the_run_untouched(full_run, tmp_path):
    experiment, result = full_run
    run_dir = tmp_path / "copy"
    shutil.copytree(result.run_dir, run_dir)
    for path in (run_dir / "checkpoints").rglob("*"):
        if path.is_file() and "state" in path.parts and path.stat().st_size > 0:
            path.write_bytes(b"garbage")
    def files():  # bar the writer lock the resume took (it records its pid)
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")
                if p.name != LOCK_FILE}

    before = files()
    with pytest.raises(ValueError, match=str(run_dir / "checkpoints")):
        train(experiment, progress=False, resume=run_dir)
    assert files() == before


def test_resume_without_a_checkpoint_names_the_path(full_run, tmp_path):
    experiment, _ = full_run
    (tmp_path / "seed_0").mkdir()
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoints")):
        train(experiment, progress=False, resume=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed_0"]


def test_unwritable_log_root_fails_before_training(full_run, tmp_path):
    root = tmp_path / "locked"
    root.mkdir()
    root.chmod(0o500)
    try:
        if os.access(root, os.W_OK):
            pytest.skip("running as a user who can write anyway (root)")
        experiment = tiny_experiment(root)
        with pytest.raises(PermissionError, match=str(root)):
            train(experiment, progress=False)
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o700)


def test_nan_loss_stops_with_training_diverged_after_flushing(tmp_path):
    # learning rate 1e30: the first update blows the weights up, the next losses are NaN/inf
    experiment = tiny_experiment(tmp_path, "agent.optimizer.learning_rate=1e30",
                                 "agent.optimizer.anneal_lr=false", seeds=1)
    with pytest.raises(TrainingDiverged, match=r"loss became .* at iteration \d+") as caught:
        train(experiment, progress=False)
    message = str(caught.value)
    iteration = int(message.split("at iteration ")[1].split()[0])
    records = read_jsonl(next(tmp_path.rglob("metrics.jsonl")))
    losses = {r["step"]: r for r in records if "train/loss" in r}
    step = iteration * PER_ITERATION
    assert step in losses, "the diverged iteration's metrics were not flushed"
    metric = message.split()[0]
    assert not math.isfinite(float(losses[step][f"train/{metric}"]))
    assert all(math.isfinite(float(losses[s][f"train/{metric}"])) for s in losses if s < step)


def test_resuming_a_finished_run_completes_without_duplicates(full_run, tmp_path):
    experiment, result = full_run
    run_dir = tmp_path / "finished"
    shutil.copytree(result.run_dir, run_dir)
    again = train(experiment, progress=False, resume=run_dir)
    assert again.env_steps == TOTAL and again.train_seconds == 0.0
    assert available_steps(run_dir / "checkpoints")[-1] == TOTAL
    for seed in (0, 1):
        records = read_jsonl(run_dir / f"seed_{seed}" / "metrics.jsonl")
        keys = [(r["step"], tag) for r in records for tag in r if tag != "step"]
        assert len(keys) == len(set(keys)), "duplicated (step, tag) records after resume"


def test_a_checkpoint_of_the_earlier_state_format_is_named_incompatible(full_run, tmp_path):
    experiment, _ = full_run
    from rollax.logging import save_checkpoint

    for seed in (0, 1):
        (tmp_path / f"seed_{seed}").mkdir()
        (tmp_path / f"seed_{seed}" / "config.json").write_text(json.dumps(experiment.to_dict()))
    # before the engine change the state was {"train": nnx state, ...} and had no "format"
    save_checkpoint(tmp_path / "checkpoints", 400, {"train": {"kernel": np.zeros((2, 3))}},
                    {"iteration": 2, "env_steps": 400, "episode_stats": []})
    with pytest.raises(ValueError, match="written by an earlier rollax"):
        train(experiment, progress=False, resume=tmp_path)


def test_a_run_compiles_each_program_once(tmp_path, caplog):
    """JAX logs "Compiling <name> with global shapes and types <avals>" for every program it
    lowers (found in its compilation cache or not): none may appear twice in one run, with
    evaluations, best checkpoints and the end's outputs."""
    import logging

    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        train(tiny_experiment(tmp_path, "eval.every_steps=600"), progress=False)
    compiled = [r.getMessage().split(". Argument mapping")[0] for r in caplog.records
                if r.getMessage().startswith("Compiling ")]
    assert sum("jit(batched)" in line for line in compiled) == 2  # the chunk and the evaluation
    assert len(compiled) == len(set(compiled)), sorted(compiled)
