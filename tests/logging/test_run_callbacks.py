"""User callbacks in `rollax.run.train`: hook order and arguments, early stopping chosen by the
preset, a user's `should_stop`, a failing `on_train_end` that cannot keep logs unflushed, and
bad `[logging]` callback tables."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ROLLAX_CACHE_DIR", str(Path(tempfile.gettempdir()) / "rollax-test-cache"))

from rollax.cache import enable_compilation_cache
from rollax.logging import Callback, available_steps
from rollax.presets import load_experiment
from rollax.run import train

enable_compilation_cache()  # every run below has the same program shape: compile it once

ROOT = Path(__file__).resolve().parents[2]
SEEDS, NUM_ENVS, NUM_STEPS, K, TOTAL = 2, 4, 50, 2, 1200
PER_ITERATION = NUM_ENVS * NUM_STEPS
PER_CHUNK = K * PER_ITERATION  # 3 chunks of 2 iterations
TINY = [f"budget.total_steps={TOTAL}", f"budget.num_envs={NUM_ENVS}", f"budget.num_steps={NUM_STEPS}",
        f"budget.iterations_per_chunk={K}", "agent.config.num_epochs=1",
        "agent.config.num_minibatches=2", "agent.network.hidden_sizes=[16]", "eval.episodes=2",
        "logging.progress=false"]


def tiny(*extra: str, root: Path | None = None):
    logging = [f"logging.root='{root}'", "logging.plot=false"] if root else ["logging.enabled=false"]
    return load_experiment(ROOT / "experiments" / "cartpole_ppo.toml", [*TINY, *logging, *extra],
                           seeds=SEEDS)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Recorder(Callback):
    """Records every hook call with its arguments (keeping the default chunk -> batch forward)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_train_begin(self, run):
        self.calls.append(("begin", run.outcome, run.step))

    def on_chunk_end(self, run, chunk):
        self.calls.append(("chunk", chunk))
        super().on_chunk_end(run, chunk)

    def on_train_batch_end(self, run, metrics, step):
        self.calls.append(("batch", dict(metrics), step))

    def on_evaluation(self, run, evaluation):
        self.calls.append(("evaluation", evaluation))

    def on_train_end(self, run):
        self.calls.append(("end", run.outcome, run.result))


@pytest.fixture(scope="module")
def recorded():
    recorder = Recorder()
    result = train(tiny(), callbacks=[recorder], progress=False)
    return recorder.calls, result


def test_hooks_run_in_order(recorded):
    calls, result = recorded
    kinds = [call[0] for call in calls]
    chunks = TOTAL // PER_CHUNK
    assert kinds == ["begin", *["chunk", "batch"] * chunks, "evaluation", "end"]
    assert calls[0][1:] == ("running", 0)
    assert calls[-1][1] == "finished" and calls[-1][2] is result
    assert result.env_steps == TOTAL


def test_chunks_carry_every_seeds_per_iteration_metrics(recorded):
    calls, _ = recorded
    chunks = [call[1] for call in calls if call[0] == "chunk"]
    assert [chunk.step for chunk in chunks] == list(range(PER_CHUNK, TOTAL + 1, PER_CHUNK))
    for i, chunk in enumerate(chunks):
        assert chunk.first_iteration == i * K and chunk.steps_per_iteration == PER_ITERATION
        assert "loss" in chunk.metrics
        for name, values in chunk.metrics.items():
            assert np.shape(values) == (SEEDS, K), name
        assert len(chunk.rollout) == SEEDS
        assert all(len(seed) == K and all(isinstance(d, dict) for d in seed) for seed in chunk.rollout)
        assert chunk.iteration_step(K - 1) == chunk.step


def test_batch_end_gets_the_chunk_summary(recorded):
    calls, _ = recorded
    for (_, chunk), (kind, summary, step) in zip(calls[1:-2:2], calls[2:-2:2]):
        assert kind == "batch" and step == chunk.step
        assert summary == dict(chunk.summary)
        assert {"train/loss", "time/fps"} <= set(summary)
        assert summary["time/fps"] > 0
        # independent: the seed mean of the last iteration's loss
        expected = float(np.mean(np.asarray(chunk.metrics["loss"])[:, -1]))
        assert summary["train/loss"] == pytest.approx(expected, rel=1e-6)
        for name, values in chunk.metrics.items():
            assert summary[f"train/{name}"] == pytest.approx(float(np.mean(values[:, -1])), rel=1e-6)


def test_final_evaluation_has_every_seeds_returns(recorded):
    calls, result = recorded
    evaluation = calls[-2][1]
    assert evaluation.final and evaluation.step == TOTAL
    assert evaluation.returns.shape == (SEEDS, 2)
    np.testing.assert_array_equal(evaluation.returns, result.eval_returns)


def test_early_stopping_from_the_preset_stops_and_checkpoints(tmp_path):
    # min_delta=1e9 in "max" mode: the first chunk sets the best, the second cannot beat it
    experiment = tiny("logging.early_stopping={monitor='train/loss', mode='max', patience=1, "
                      "min_delta=1e9}", root=tmp_path)
    recorder = Recorder()
    result = train(experiment, callbacks=[recorder], progress=False)
    assert result.env_steps == 2 * PER_CHUNK < TOTAL
    assert recorder.calls[-1][1] == "stopped"
    assert available_steps(result.run_dir / "checkpoints") == [2 * PER_CHUNK]
    for seed in range(SEEDS):
        records = read_jsonl(result.run_dir / f"seed_{seed}" / "metrics.jsonl")
        assert max(r["step"] for r in records if "train/loss" in r) == 2 * PER_CHUNK


class StopAfterFirstChunk(Callback):
    def on_chunk_end(self, run, chunk):
        self.should_stop = True


def test_user_should_stop_ends_after_one_chunk():
    recorder = Recorder()
    result = train(tiny(), callbacks=[StopAfterFirstChunk(), recorder], progress=False)
    assert result.env_steps == PER_CHUNK
    assert [call[0] for call in recorder.calls] == ["begin", "chunk", "batch", "evaluation", "end"]
    assert recorder.calls[-1][1] == "stopped"


class FailingEnd(Callback):
    def on_train_end(self, run):
        raise RuntimeError("callback broke at the end")


def test_failing_train_end_still_flushes_the_metrics(tmp_path):
    experiment = tiny("logging.checkpoint=false", root=tmp_path)
    with pytest.raises(RuntimeError, match="callback broke at the end"):
        train(experiment, callbacks=[FailingEnd()], progress=False)
    paths = sorted(tmp_path.rglob("metrics.jsonl"))
    assert len(paths) == SEEDS
    for path in paths:
        records = read_jsonl(path)
        steps = [r["step"] for r in records if "train/loss" in r]
        assert steps == list(range(PER_ITERATION, TOTAL + 1, PER_ITERATION))
        assert any(r.get("eval/mean_reward") is not None and r["step"] == TOTAL for r in records)


@pytest.mark.parametrize("table", ["{patience=0}", "{bogus=1}", "{mode='sideways'}", "{min_delta=-1.0}"])
def test_bad_early_stopping_table_names_the_key(table):
    with pytest.raises(ValueError, match="logging.early_stopping"):
        train(tiny(f"logging.early_stopping={table}"), progress=False)


def test_bad_profiler_table_names_the_key():
    with pytest.raises(ValueError, match="logging.profiler"):
        train(tiny("logging.profiler={start_step=5, end_step=1}"), progress=False)


def test_early_stopping_on_a_sparse_metric_skips_chunks_without_it(tmp_path):
    # eval/mean_reward exists only on chunks that ended with an evaluation (every 800 steps
    # here, the 2nd chunk): the others are skipped, not errors, and patience counts the rest
    experiment = tiny("eval.every_steps=800", "logging.early_stopping={monitor='eval/mean_reward', "
                      "patience=1, min_delta=1e9}")
    recorder = Recorder()
    result = train(experiment, callbacks=[recorder], progress=False)
    assert result.env_steps == TOTAL  # one evaluation inside the run: never a second to compare
    assert recorder.calls[-1][1] == "finished"


def test_a_monitor_the_run_never_reports_is_an_error_before_training(tmp_path):
    experiment = tiny("logging.early_stopping={monitor='eval/judge_success'}", root=tmp_path)
    recorder = Recorder()
    with pytest.raises(ValueError, match=r"EarlyStopping: monitor 'eval/judge_success' is not a "
                                         r"metric this run reports; its metrics: .*'train/loss'"):
        train(experiment, callbacks=[recorder], progress=False)
    assert [call[0] for call in recorder.calls] == ["end"]  # no chunk trained
    assert not any(tmp_path.rglob("metrics.jsonl"))


def test_results_never_hold_nan_and_name_what_was_not_finite(tmp_path):
    from rollax.logging.run_callbacks import write_results
    from rollax.run.result import TrainResult

    result = TrainResult(name="x", run_dir=tmp_path, seeds=[0, 1],
                         eval_returns=np.array([[1.0, 3.0], [np.nan, 2.0]]),
                         eval_metrics={"judge": np.array([0.5, np.inf])}, ep_rew_mean=[2.0, np.nan],
                         env_steps=10, compile_seconds=1.0, train_seconds=1.0, solved_threshold=None)
    with pytest.warns(RuntimeWarning, match=r"eval_mean_return\[1\], eval_metrics.judge\[1\], "
                      r"train_ep_rew_mean\[1\]"):
        write_results(result)
    saved = json.loads((tmp_path / "results.json").read_text())  # strict JSON: no NaN token
    assert saved["eval_mean_return"] == [2.0, None] and saved["eval_metrics"]["judge"] == [0.5, None]
    read = TrainResult.read(tmp_path, None)
    assert read.eval_returns[0, 0] == 2.0 and np.isnan(read.eval_returns[1, 0])
    assert np.isnan(read.ep_rew_mean[1]) and "nan" in read.table()
