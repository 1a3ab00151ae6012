"""Logger, EpisodeStats and run directories, checked against event files read back by hand."""

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from readback import hparams_plugin_data, read_events, read_jsonl, scalar_events

from rollax.logging import EpisodeStats, Logger, make_run_dir


def test_scalars_reach_tensorboard_and_jsonl_with_the_same_values(tmp_path):
    with Logger(tmp_path) as logger:
        logger.log_scalars({"loss": jnp.float32(0.5), "policy_loss": np.array([0.25])}, 128,
                           prefix="train")
        logger.log_scalars({"rollout/ep_rew_mean": 9.0, "time/fps": np.int64(1000)}, 128)
        logger.log_scalars({"loss": 0.125, "eval/mean_reward": jnp.array(3.0)}, 256,
                           prefix="train")
    events = scalar_events(tmp_path)
    assert events == {
        "train/loss": [(128, 0.5), (256, 0.125)],
        "train/policy_loss": [(128, 0.25)],
        "rollout/ep_rew_mean": [(128, 9.0)],
        "time/fps": [(128, 1000.0)],
        "eval/mean_reward": [(256, 3.0)],
    }
    records = read_jsonl(tmp_path / "metrics.jsonl")
    from_jsonl = {}
    for record in records:
        for tag, value in record.items():
            if tag != "step":
                from_jsonl.setdefault(tag, []).append((record["step"], value))
    assert from_jsonl == events


# Each logger: N scalars, flush, then copy its event file as a `kill -9` at that moment would
# leave it; the last logger is followed by os._exit(0) itself. tensorboardX's queue used to lose
# up to 10 records in some of the loggers (flush() did not wait for it).
KILLED_AFTER_FLUSH = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    from rollax.logging import Logger
    root, loggers, records = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for k in range(loggers):
        logger = Logger(root / f"logger_{k}")
        for step in range(records):
            logger.log_scalars({"loss": float(step), "kl": 0.5}, step, prefix="train")
        logger.flush()
        if k == loggers - 1:
            os._exit(0)
        snapshot = root / f"snapshot_{k}"
        snapshot.mkdir()
        for path in logger.log_dir.iterdir():
            shutil.copy(path, snapshot)
""")


def test_flush_puts_every_record_in_the_event_files_before_a_kill(tmp_path):
    loggers, records = 20, 100
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", KILLED_AFTER_FLUSH, str(tmp_path), str(loggers), str(records)],
                   check=True, env=env, timeout=120)
    dirs = [tmp_path / f"snapshot_{k}" for k in range(loggers - 1)] + [tmp_path / f"logger_{loggers - 1}"]
    for directory in dirs:
        from_jsonl = [(r["step"], r["train/loss"]) for r in read_jsonl(directory / "metrics.jsonl")]
        events = scalar_events(directory)
        assert len(from_jsonl) == records, directory.name
        assert events["train/loss"] == from_jsonl, directory.name
        assert len(events["train/kl"]) == records, directory.name


def test_non_finite_values_are_kept_valid_json_and_reported_once_per_tag(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Logger(tmp_path) as logger:
            logger.log_scalars({"train/loss": float("nan"), "train/kl": 1.0}, 10)
            logger.log_scalars({"train/loss": float("inf"), "train/kl": -np.inf}, 20)
            logger.log_scalars({"train/loss": 2.0}, 30)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2
    assert any("'train/loss'" in m and "step 10" in m for m in messages)
    assert any("'train/kl'" in m and "step 20" in m for m in messages)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # strict JSON
    assert [float(r["train/loss"]) for r in records[1:]] == [math.inf, 2.0]
    assert math.isnan(float(records[0]["train/loss"]))
    assert float(records[1]["train/kl"]) == -math.inf
    tb = scalar_events(tmp_path)["train/loss"]
    assert math.isnan(tb[0][1]) and tb[1] == (20, math.inf)


def test_bad_inputs_name_the_problem(tmp_path):
    with Logger(tmp_path) as logger:
        with pytest.raises(ValueError, match="'train/loss'.*shape \\(2,\\)"):
            logger.log_scalars({"loss": np.ones(2)}, 0, prefix="train")
        with pytest.raises(ValueError, match="step"):
            logger.log_scalars({"loss": 1.0}, -1)
        with pytest.raises(ValueError, match=r"\[B, H, W\]"):
            logger.log_images("samples", np.zeros((4, 4)), 0)
        with pytest.raises(ValueError, match="in \\[0, 1\\]"):
            logger.log_images("samples", np.full((1, 2, 2), 2.0), 0)
    with pytest.raises(RuntimeError, match="closed"):
        logger.log_scalar("x", 1.0, 0)


def test_hparams_go_to_the_hparams_tab_and_config_files(tmp_path):
    with Logger(tmp_path) as logger:
        logger.log_hparams({"agent": {"lr": 3e-4, "sizes": [64, 64], "anneal": True},
                            "name": "x", "seed": 1, "threshold": None},
                           toml_text="seed = 1\n", session={"seed": 4})
        logger.log_text("notes", "hello", step=5)
    assert json.loads((tmp_path / "config.json").read_text()) == {  # session is not the config
        "agent": {"lr": 3e-4, "sizes": [64, 64], "anneal": True}, "name": "x", "seed": 1,
        "threshold": None}
    assert (tmp_path / "config.toml").read_text() == "seed = 1\n"
    plugin = hparams_plugin_data(tmp_path)
    assert set(plugin) == {"_hparams_/experiment", "_hparams_/session_start_info"}
    experiment = plugin["_hparams_/experiment"].experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["eval/mean_reward",
                                                              "rollout/ep_rew_mean"]
    assert sorted(h.name for h in experiment.hparam_infos) == [
        "agent.anneal", "agent.lr", "agent.sizes", "name", "seed"]
    values = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert values["agent.lr"].number_value == pytest.approx(3e-4)
    assert values["agent.sizes"].string_value == "[64, 64]"
    assert values["agent.anneal"].bool_value is True
    assert values["name"].string_value == "x" and values["seed"].number_value == 4
    texts = {value.tag for event in read_events(tmp_path) for value in event.summary.value
             if value.HasField("tensor")}
    assert texts == {"config_toml/text_summary", "notes/text_summary"}  # no Markdown table


def test_images_grid_goes_to_png_and_tensorboard(tmp_path):
    import matplotlib.image

    images = np.zeros((3, 4, 5))
    images[1] = 1.0  # second tile white, others black
    with Logger(tmp_path) as logger:
        png = logger.log_images("samples/digits", images, 7)
    scale = 256 // (2 * 5 + 1)  # small grids are enlarged (nearest neighbour) in the PNG
    grid = matplotlib.image.imread(png)
    assert grid.shape[:2] == ((2 * 4 + 1) * scale, (2 * 5 + 1) * scale)  # 2x2 grid, 1 px padding
    grid = grid[::scale, ::scale]
    assert np.all(grid[:4, :5, :3] == 0) and np.all(grid[:4, 6:11, :3] == 1)
    tags = [(v.tag, e.step) for e in read_events(tmp_path) for v in e.summary.value
            if v.HasField("image")]
    assert tags == [("samples/digits", 7)]


def test_episode_stats_matches_a_python_window_over_finished_episodes():
    rng = np.random.default_rng(0)
    stats = EpisodeStats(window=5)
    finished: list[tuple[float, float]] = []
    assert stats.metrics() == {} and math.isnan(stats.ep_rew_mean)
    for _ in range(4):
        returns, lengths = rng.normal(size=(3, 2)), rng.integers(1, 50, size=(3, 2))
        dones = rng.random((3, 2)) < 0.4
        chunk = [(returns[t, n], lengths[t, n]) for t in range(3) for n in range(2) if dones[t, n]]
        finished.extend(chunk)
        assert stats.update(returns, lengths, dones) == len(chunk)
    window = finished[-5:]
    assert len(stats) == min(5, len(finished))
    assert stats.ep_rew_mean == pytest.approx(np.mean([r for r, _ in window]))
    assert stats.ep_len_mean == pytest.approx(np.mean([n for _, n in window]))
    metrics = stats.metrics()
    assert metrics["rollout/ep_rew_mean"] == pytest.approx(stats.ep_rew_mean)
    assert metrics["charts/episodic_return"] == pytest.approx(np.mean([r for r, _ in chunk]))
    with pytest.raises(ValueError, match="dones has shape"):
        stats.update(np.zeros(3), np.zeros(3), np.zeros(2))
    resumed = EpisodeStats(window=5)
    resumed.load_state_dict(json.loads(json.dumps(stats.state_dict())))
    assert resumed.ep_rew_mean == stats.ep_rew_mean and len(resumed) == len(stats)
    resumed.update([7.0], [3], [True])
    assert resumed.ep_rew_mean == pytest.approx(np.mean([r for r, _ in finished[-4:]] + [7.0]))


def test_run_dirs_are_fresh_and_never_overwritten(tmp_path):
    first = make_run_dir(tmp_path, experiment="cartpole_ppo", seed=0, timestamp="20250101-000000")
    assert first == tmp_path / "cartpole_ppo" / "20250101-000000" / "seed_0"
    (first / "metrics.jsonl").write_text("keep")
    again = make_run_dir(tmp_path, experiment="cartpole_ppo", seed=0, timestamp="20250101-000000")
    assert again != first and again.name == "seed_0-2" and not any(again.iterdir())
    assert (first / "metrics.jsonl").read_text() == "keep"
    other_seed = make_run_dir(tmp_path, experiment="cartpole_ppo", seed=1,
                              timestamp="20250101-000000")
    assert other_seed.parent == first.parent and other_seed.name == "seed_1"
    assert make_run_dir(tmp_path, experiment="x", seed=2).parent.parent == tmp_path / "x"


def test_unwritable_run_root_fails_before_training(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs directory should be")
    with pytest.raises(PermissionError, match="runs"):
        make_run_dir(blocker, experiment="cartpole_ppo", seed=0)
    with pytest.raises(ValueError, match="experiment"):
        make_run_dir(tmp_path, experiment="../escape", seed=0)
