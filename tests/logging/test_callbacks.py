"""Callbacks driven by a hand-written loop around a stand-in trainer (the reference's loop)."""

import dataclasses
import io
import json
import math
import sys
import time
import types

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax.logging import (
    Callback,
    CallbackList,
    CheckpointConfig,
    EarlyStopping,
    JAXProfiler,
    ModelCheckpoint,
    ProfilingConfig,
    ProgressBarCallback,
    TensorBoardLoggerCallback,
    WandbLoggerCallback,
    WandbLoggerConfig,
    available_steps,
)
from rollax.logging.callbacks import significant


@dataclasses.dataclass(frozen=True)
class StandInConfig:
    learning_rate: float = 0.1


class StandInTrainer:
    """The trainer contract: ``model``, ``optimizer``, ``config``, ``train_step(batch)``; the
    reported ``mean_reward`` follows a scripted sequence so tests know the best step."""

    def __init__(self, rewards=(), seed: int = 0) -> None:
        self.config = StandInConfig()
        self.model = nnx.Linear(2, 1, rngs=nnx.Rngs(seed))
        self.optimizer = nnx.Optimizer(self.model, optax.sgd(self.config.learning_rate),
                                       wrt=nnx.Param)
        self.rewards = list(rewards)
        self.calls = 0

    def train_step(self, batch: jnp.ndarray) -> dict:
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(batch) - 1.0) ** 2))(self.model)
        self.optimizer.update(self.model, grads)
        reward = self.rewards[self.calls] if self.rewards else 0.0
        self.calls += 1
        return {"loss": loss, "mean_reward": jnp.float32(reward)}


def train(trainer, callbacks, num_batches: int, steps_per_batch: int = 1):
    """The reference loop, plus the early-stop check; ``step`` = env steps so far."""
    callbacks = CallbackList(callbacks)
    callbacks.on_train_begin(trainer)
    for batch_index in range(num_batches):
        metrics = trainer.train_step(jnp.full((4, 2), 0.1 * batch_index))
        callbacks.on_train_batch_end(trainer, metrics, (batch_index + 1) * steps_per_batch)
        if callbacks.should_stop:
            break
    callbacks.on_train_end(trainer)


class Recorder(Callback):
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def on_train_begin(self, trainer):
        self.log.append((self.name, "begin"))

    def on_train_batch_end(self, trainer, metrics, step):
        self.log.append((self.name, "batch", step, sorted(metrics)))

    def on_train_end(self, trainer):
        self.log.append((self.name, "end"))


def test_hooks_are_called_in_order_around_the_loop():
    log: list = []
    train(StandInTrainer(), [Recorder("a", log), Recorder("b", log)], 2, steps_per_batch=8)
    keys = ["loss", "mean_reward"]
    assert log == [("a", "begin"), ("b", "begin"),
                   ("a", "batch", 8, keys), ("b", "batch", 8, keys),
                   ("a", "batch", 16, keys), ("b", "batch", 16, keys),
                   ("a", "end"), ("b", "end")]
    with pytest.raises(TypeError, match="not a rollax.logging.Callback"):
        CallbackList([object()])


def test_tensorboard_callback_writes_prefixed_tags_at_env_steps(tmp_path):
    train(StandInTrainer([1.0, 2.0, 3.0]), [TensorBoardLoggerCallback(tmp_path)], 3,
          steps_per_batch=64)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [64, 128, 192]
    assert [r["train/mean_reward"] for r in records] == [1.0, 2.0, 3.0]
    assert all(set(r) == {"step", "train/loss", "train/mean_reward"} for r in records)
    assert any(tmp_path.glob("events.out.tfevents.*"))


def test_early_stopping_stops_at_the_step_patience_runs_out():
    # best 3.0 at batch 2; 3.0, 2.5 and 3.05 do not beat it by more than 0.1 -> stop at batch 5
    rewards = [1.0, 2.0, 3.0, 3.0, 2.5, 3.05, 9.0, 9.0]
    trainer = StandInTrainer(rewards)
    stopper = EarlyStopping(monitor="mean_reward", mode="max", patience=3, min_delta=0.1)
    train(trainer, [stopper], len(rewards))
    assert stopper.should_stop and stopper.stopped_step == 6 and trainer.calls == 6
    # mode="min": a strictly falling value never stops, one rise with patience=1 does
    never = EarlyStopping(monitor="mean_reward", mode="min", patience=1)
    train(StandInTrainer([5.0, 4.0, 3.0, 2.0]), [never], 4)
    assert not never.should_stop
    once = EarlyStopping(monitor="mean_reward", mode="min", patience=1)
    train(StandInTrainer([5.0, 4.0, 4.5, 2.0]), [once], 4)
    assert once.stopped_step == 3
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="best")


def test_missing_monitored_metric_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"'eval_return' not in metrics.*'loss', 'mean_reward'"):
        train(StandInTrainer(), [EarlyStopping(monitor="eval_return")], 1)


def test_model_checkpoint_keeps_top_k_and_last_and_restores_the_best(tmp_path):
    rewards = [0.1, 0.5, 0.3, 0.9, 0.2, math.nan]
    trainer = StandInTrainer(rewards)
    kernels = {}

    class RecordKernel(Callback):
        def on_train_batch_end(self, trainer, metrics, step):
            kernels[step] = np.asarray(trainer.model.kernel[...])

    checkpoint = ModelCheckpoint(CheckpointConfig(tmp_path / "ckpt", monitor="mean_reward",
                                                  mode="max", save_top_k=2, save_last=True))
    train(trainer, [RecordKernel(), checkpoint], len(rewards), steps_per_batch=10)
    # top-2 by reward: steps 40 (0.9) and 20 (0.5); last: step 60 (NaN reward ranks last)
    assert available_steps(tmp_path / "ckpt") == [20, 40, 60]
    assert checkpoint.best_step == 40 and checkpoint.best_score == pytest.approx(0.9)

    fresh = StandInTrainer(seed=1)
    metadata = checkpoint.restore(fresh)
    assert metadata["step"] == 40 and metadata["mean_reward"] == pytest.approx(0.9)
    np.testing.assert_array_equal(fresh.model.kernel[...], kernels[40])
    assert int(fresh.optimizer.step[...]) == 4  # the optimizer state came back too
    checkpoint.restore(fresh, step=60)
    np.testing.assert_array_equal(fresh.model.kernel[...], kernels[60])


def test_model_checkpoint_min_mode_keeps_only_the_lowest(tmp_path):
    checkpoint = ModelCheckpoint(CheckpointConfig(tmp_path, monitor="mean_reward", mode="min",
                                                  save_top_k=1, save_last=False))
    train(StandInTrainer([0.4, 0.2, 0.3]), [checkpoint], 3)
    assert available_steps(tmp_path) == [2]
    with pytest.raises(ValueError, match="keep no checkpoint"):
        CheckpointConfig(tmp_path, save_top_k=0, save_last=False)


def test_progress_bar_shows_steps_return_and_one_labelled_rate():
    out = io.StringIO()
    bar = ProgressBarCallback(total=40, file=out, disable=False)  # StringIO is no TTY
    train(StandInTrainer([0.25, 0.5, 0.75, 0.875]), [bar], 4, steps_per_batch=10)
    text = out.getvalue()
    assert "40.0/40.0 step" in text and "ret=0.875" in text and "<00:00" in text
    assert " steps/s" in text and "step/s" not in text  # ours, labelled; not tqdm's own rate
    # a 0-based batch index (the reference loop) still reaches the total
    out = io.StringIO()
    bar = ProgressBarCallback(total=3, file=out, disable=False)
    bar.on_train_begin(None)
    for index in range(3):
        bar.on_train_batch_end(None, {"rollout/ep_rew_mean": 1.0}, index)
    assert bar.bar.n == 3
    bar.on_train_end(None)


def test_progress_bar_in_the_loop_shows_the_all_seeds_rate_with_significant_digits():
    out = io.StringIO()
    run = types.SimpleNamespace(seeds=[0, 1, 2])  # what the bar reads of rollax's RunContext
    bar = ProgressBarCallback(total=200, file=out, disable=False, mininterval=0)
    bar.on_train_begin(run)
    bar.on_train_batch_end(run, {"rollout/ep_rew_mean": -0.073421, "time/fps": 12345.6}, 100)
    assert bar.bar.postfix == "ret=-0.0734, 12346 env steps/s (all 3 seeds)"
    bar.on_train_batch_end(run, {"rollout/ep_rew_mean": 499.87, "time/fps": 812.04}, 200)
    bar.on_train_end(run)
    assert "ret=500, 812 env steps/s (all 3 seeds)" in out.getvalue()


def test_progress_bar_clock_starts_with_the_first_chunk_not_the_compile(monkeypatch):
    run = types.SimpleNamespace(seeds=[0, 1, 2])
    bar = ProgressBarCallback(total=200, file=io.StringIO(), disable=False)
    bar.on_train_begin(run)  # the loop compiles after this
    monkeypatch.setattr(time, "time", lambda: 5000.0)
    bar.on_train_batch_end(run, {"time/fps": 600.0}, 100)  # 300 env steps at 600/s: 0.5 s
    assert bar.bar.start_t == 4999.5
    bar.on_train_batch_end(run, {"time/fps": 300.0}, 200)  # later chunks leave the clock alone
    assert bar.bar.start_t == 4999.5
    bar.on_train_end(run)


@pytest.mark.parametrize(("value", "expected"), [
    (-0.073421, "-0.0734"), (499.87, "500"), (500.0, "500"), (9.5, "9.5"), (0.1, "0.1"),
    (12345.6, "12346"), (-1234.4, "-1234"), (0.00012345, "0.000123"), (0.0, "0"),
    (float("nan"), "nan"), (float("-inf"), "-inf")])
def test_significant_digits_suit_the_scale(value, expected):
    assert significant(value) == expected


def test_jax_profiler_traces_the_window(tmp_path):
    profiler = JAXProfiler(ProfilingConfig(tmp_path / "trace", start_step=1, end_step=3))
    states = []

    class Watch(Callback):
        def on_train_batch_end(self, trainer, metrics, step):
            states.append(profiler.active)

    train(StandInTrainer(), [profiler, Watch()], 5)
    assert states == [True, True, False, False, False]  # traced: batches ending at 2, 3
    assert list((tmp_path / "trace").rglob("*.xplane.pb"))
    with pytest.raises(ValueError, match="start_step < end_step"):
        ProfilingConfig(tmp_path, start_step=3, end_step=3)


def test_wandb_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` fail
    with pytest.raises(ImportError, match=r"pip install 'rollax\[wandb\]'"):
        WandbLoggerCallback(WandbLoggerConfig(project="p"))


def test_wandb_callback_logs_every_n_steps_through_the_wandb_api(monkeypatch):
    calls = []

    class FakeRun:
        def log(self, data, step):
            calls.append(("log", data, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    callback = WandbLoggerCallback(WandbLoggerConfig(
        project="rl", name="grpo", config={"beta": 0.01}, log_every_n_steps=2))
    train(StandInTrainer([1.0, 2.0, 3.0, 4.0]), [callback], 4, steps_per_batch=5)
    assert calls[0] == ("init", {"project": "rl", "name": "grpo", "mode": "offline",
                                 "config": {"beta": 0.01}, "dir": None})
    assert [(c[0], c[1]["train/mean_reward"], c[2]) for c in calls[1:3]] == [
        ("log", 2.0, 10), ("log", 4.0, 20)]
    assert calls[3:] == [("finish",)]
