"""What a run reports while and after it trains: the phase lines and the progress bar, the
learning rate actually used, per-seed TensorBoard HPARAMS and fps, periodic evaluation, one
`samples` image tag over steps, and run folders named after their `--set` overrides."""

import contextlib
import io
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
from readback import read_events
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

from rollax.logging import Callback
from rollax.logging.callbacks import Evaluation
from rollax.logging.run_callbacks import MetricsLogger, Samples
from rollax.logging.run_dir import claim_run_folder, newest_run, overrides_label
from rollax.presets import load_experiment
from rollax.run import train

LR, SEEDS, NUM_ENVS, NUM_STEPS, K, TOTAL = 1e-3, 2, 4, 16, 2, 384
EPOCHS, MINIBATCHES = 2, 2  # 4 optimizer updates per iteration
ITERATIONS = TOTAL // (NUM_ENVS * NUM_STEPS)  # 6, in 3 chunks
OVERRIDES = [f"budget.total_steps={TOTAL}", f"budget.num_envs={NUM_ENVS}",
             f"budget.num_steps={NUM_STEPS}", f"budget.iterations_per_chunk={K}",
             f"agent.config.num_epochs={EPOCHS}", f"agent.config.num_minibatches={MINIBATCHES}",
             f"agent.optimizer.learning_rate={LR}", "agent.optimizer.anneal_lr=true",
             "agent.network.hidden_sizes=[8]", "eval.episodes=2",
             f"eval.every_steps={K * NUM_ENVS * NUM_STEPS}"]


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    return [(e.step, v.simple_value) for e in read_events(log_dir) for v in e.summary.value
            if v.tag == tag]


class ChunkRates(Callback):
    def __init__(self):
        self.fps = []

    def on_chunk_end(self, run, chunk):
        self.fps.append((chunk.step, chunk.fps))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny PPO run on CartPole, 2 seeds, annealed rate, its progress output captured."""
    root = tmp_path_factory.mktemp("runs")
    experiment = load_experiment("cartpole_ppo", [*OVERRIDES, f"logging.root='{root}'",
                                                  "logging.plot=false"], seeds=SEEDS)
    rates, err = ChunkRates(), io.StringIO()
    with contextlib.redirect_stderr(err):
        result = train(experiment, callbacks=[rates])
    return result, rates.fps, err.getvalue()


def test_progress_names_each_phase_and_one_labelled_rate(finished):
    _, _, err = finished
    assert "compiling the training and evaluation programs for 2 seed(s)..." in err
    assert re.search(r"compiled in \d+\.\d s; training", err)
    assert re.search(r"ret=[-\d.]+, \d+ env steps/s \(all 2 seeds\)", err)
    assert f"{TOTAL}/{TOTAL} env steps per seed" in err


def test_learning_rate_is_the_annealed_rate_each_iteration_used(finished):
    result, _, _ = finished
    updates, total = EPOCHS * MINIBATCHES, ITERATIONS * EPOCHS * MINIBATCHES
    # optax.linear_schedule(LR, 0, total) at the count of the iteration's last update
    expected = [(i * NUM_ENVS * NUM_STEPS, LR * (1 - (i * updates - 1) / total))
                for i in range(1, ITERATIONS + 1)]
    for seed in result.seeds:
        logged = scalars(result.run_dir / f"seed_{seed}", "train/learning_rate")
        assert [step for step, _ in logged] == [step for step, _ in expected]
        np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-5)


@pytest.mark.parametrize("anneal", [False, True])
def test_learning_rate_warms_up_linearly_then_holds_or_anneals(tmp_path, anneal):
    """`agent.optimizer.warmup_steps` (env steps, here 2 iterations' worth = 8 updates): the
    rate of update c is LR * c / 8 until c = 8, then LR (or LR decaying linearly to 0 over
    the remaining updates)."""
    warmup, updates = 2 * NUM_ENVS * NUM_STEPS, EPOCHS * MINIBATCHES
    total, ramp = ITERATIONS * updates, 2 * updates
    experiment = load_experiment("cartpole_ppo", [*OVERRIDES, f"agent.optimizer.anneal_lr={str(anneal).lower()}",
                                                  f"agent.optimizer.warmup_steps={warmup}",
                                                  f"logging.root='{tmp_path}'", "logging.plot=false"], seeds=1)
    result = train(experiment, progress=False)

    def rate(count):
        if count < ramp:
            return LR * count / ramp
        return LR * (1 - (count - ramp) / (total - ramp)) if anneal else LR

    logged = scalars(result.run_dir / "seed_0", "train/learning_rate")
    np.testing.assert_allclose([v for _, v in logged],
                               [rate(i * updates - 1) for i in range(1, ITERATIONS + 1)], rtol=1e-5)


def test_a_warmup_as_long_as_the_run_is_named(tmp_path):
    experiment = load_experiment("cartpole_ppo", [*OVERRIDES, f"agent.optimizer.warmup_steps={TOTAL}",
                                                  f"logging.root='{tmp_path}'"])
    with pytest.raises(ValueError, match=rf"warmup_steps={TOTAL} must be below budget.total_steps={TOTAL}"):
        train(experiment, progress=False)


def test_each_seed_folder_has_hparams_with_its_own_seed(finished):
    result, _, _ = finished
    for seed in result.seeds:
        plugin = {v.tag: HParamsPluginData.FromString(v.metadata.plugin_data.content)
                  for e in read_events(result.run_dir / f"seed_{seed}") for v in e.summary.value
                  if v.metadata.plugin_data.plugin_name == "hparams"}
        values = plugin["_hparams_/session_start_info"].session_start_info.hparams
        assert values["seed"].number_value == seed
        assert values["agent.optimizer.learning_rate"].number_value == pytest.approx(LR)
        assert values["agent.optimizer.anneal_lr"].bool_value is True
        metrics = plugin["_hparams_/experiment"].experiment.metric_infos
        assert [m.name.tag for m in metrics] == ["eval/mean_reward", "rollout/ep_rew_mean"]
        config = json.loads((result.run_dir / f"seed_{seed}" / "config.json").read_text())
        assert config["seed"] == 0  # the run's first seed: config.json is the experiment


def test_fps_in_each_seed_folder_is_that_seeds_share(finished):
    result, chunk_rates, _ = finished
    for seed in result.seeds:
        logged = scalars(result.run_dir / f"seed_{seed}", "time/fps")
        assert [step for step, _ in logged] == [step for step, _ in chunk_rates]
        np.testing.assert_allclose([v for _, v in logged],
                                   [fps / SEEDS for _, fps in chunk_rates], rtol=1e-6)


def test_evaluation_runs_every_eval_steps(finished):
    result, _, _ = finished
    chunk_steps = K * NUM_ENVS * NUM_STEPS
    logged = scalars(result.run_dir / "seed_0", "eval/mean_reward")
    assert [step for step, _ in logged] == list(range(chunk_steps, TOTAL + 1, chunk_steps))


def test_run_folder_is_labelled_by_the_overrides(finished):
    result, _, _ = finished
    # whole overrides up to 80 characters, then a digest of them all; logging.* keys left out
    label = "total_steps=384,num_envs=4,num_steps=16,iterations_per_chunk=2,"
    assert re.fullmatch(rf"\d{{8}}-\d{{6}}_{re.escape(label)}\+[0-9a-f]{{8}}", result.run_dir.name)
    assert newest_run(result.run_dir.parent) == result.run_dir


def test_overrides_label_keeps_key_ends_and_safe_characters():
    assert overrides_label([("agent.optimizer.learning_rate", 0.001), ("seed", 3)]) == \
        "learning_rate=0.001,seed=3"
    assert overrides_label([("logging.root", "/tmp/x"), ("agent.network.hidden_sizes", [8, 8]),
                            ("env.id", "rollax/VAEDigit-v0")]) == \
        "hidden_sizes=-8--8-,id=rollax-VAEDigit-v0"
    assert overrides_label([]) == ""
    long = overrides_label([("name", "x" * 100)])
    assert len(long) == 80 and long.startswith("name=xxx") and re.fullmatch(r".*\+[0-9a-f]{8}", long)
    two = overrides_label([("a", 1), ("name", "x" * 100)])
    assert two.startswith("a=1,+") and len(two) == 13  # whole parts, then the digest
    assert two != overrides_label([("a", 1), ("name", "x" * 99 + "y")])  # never the same label
    # a key set twice is labelled with the value used, its last
    assert overrides_label([("agent.config.clip_param", 0.1), ("seed", 2),
                            ("agent.config.clip_param", 0.3)]) == "seed=2,clip_param=0.3"


def test_labelled_run_folders_stay_apart_and_bad_labels_are_named(tmp_path):
    first = claim_run_folder(tmp_path, "exp", "lr=0.1")
    second = claim_run_folder(tmp_path, "exp", "lr=0.1")
    assert first.name.endswith("_lr=0.1") and first != second
    with pytest.raises(ValueError, match=r"run label 'a/b'"):
        claim_run_folder(tmp_path, "exp", "a/b")
    with pytest.raises(ValueError, match=r"logging.run_name='\.\./x'"):
        load_experiment("cartpole_ppo", ["logging.run_name='../x'"])


def test_samples_are_one_tag_over_env_steps(tmp_path):
    seed_dirs = [tmp_path / "seed_0", tmp_path / "seed_1"]
    for folder in seed_dirs:
        folder.mkdir()
    experiment = load_experiment("cartpole_ppo")
    run = types.SimpleNamespace(resume_step=None, seed_dirs=seed_dirs, seeds=[0, 1], step=0,
                                experiment=experiment, seed_experiments=[experiment] * 2)
    run.render_samples = lambda: np.full((2, 3, 4, 4), run.step / 200)  # [S, B, H, W]
    run.sample_texts = lambda: None
    metrics = MetricsLogger()
    samples = Samples(metrics)
    metrics.on_train_begin(run)
    samples.on_train_begin(run)
    for step, final in [(100, False), (200, True)]:
        run.step = step
        samples.on_evaluation(run, Evaluation(step, np.zeros((2, 1)), {}, final=final))
    metrics.on_train_end(run)
    images = [(v.tag, e.step) for e in read_events(seed_dirs[1]) for v in e.summary.value
              if v.HasField("image")]
    assert images == [("samples", 0), ("samples", 100), ("samples", 200)]
    assert sorted(p.name for p in (seed_dirs[1] / "images").iterdir()) == [
        "samples_0.png", "samples_100.png", "samples_200.png"]


def test_pretraining_on_first_use_says_so_and_how_long(tmp_path, monkeypatch, capsys):
    from rollax.generative import pretrained

    monkeypatch.setenv("ROLLAX_CACHE_DIR", str(tmp_path))
    # the real training takes tens of seconds: an untrained model stands in for its result
    monkeypatch.setattr(pretrained, "_train", lambda name, config: (
        pretrained._build(name, config), {"stand_in": True}))
    pretrained.load_pretrained("vae")
    err = capsys.readouterr().err
    assert f"pretraining vae (first use; cached afterwards in {tmp_path / 'models'})..." in err
    assert re.search(r"pretrained vae in \d+\.\d s", err)
    pretrained.load_pretrained("vae")  # from the cache: silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["acrobot_ppo", "cartpole_ppo", "cartpole_reinforce",
                                  "gymnasium_cartpole_ppo", "pendulum_ppo"])
def test_classic_control_experiments_evaluate_during_training(name):
    experiment = load_experiment(name)
    evaluations = experiment.budget.total_steps // experiment.eval.every_steps  # 0 would fail
    assert 5 <= evaluations <= 20  # a curve of eval/mean_reward, not one dot at the end
