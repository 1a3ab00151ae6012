"""Resuming a run: its own config (as its checkpoint recorded it; an edited config.json is
named) or an error naming every key that differs; one writer at a time; only budget.total_steps may change; a finished run is completed, not damaged; the
result table counts only the steps trained in the resuming process; `rollax eval` of an
experiment folder; a damaged checkpoint is named by the CLI."""

import contextlib
import io
import json
import os
import re
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from readback import read_jsonl

from rollax.cli import main
from rollax.logging import Callback, Logger, available_steps
from rollax.logging.writer_lock import LOCK_FILE
from rollax.presets import load_experiment, preset_names
from rollax.run import train
from rollax.run.experiment import Experiment
from rollax.run.resume import _check_new_total

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "experiments" / "cartpole_ppo.toml"
PER_ITERATION, TOTAL = 200, 1200
TINY = [f"budget.total_steps={TOTAL}", "budget.num_envs=4", "budget.num_steps=50",
        "budget.iterations_per_chunk=1", "agent.config.num_epochs=1", "agent.config.num_minibatches=2",
        "agent.network.hidden_sizes=[16]", "eval.episodes=2", "agent.optimizer.anneal_lr=false"]


def tiny(root: Path, *extra: str) -> Experiment:
    return load_experiment(PRESET, [*TINY, f"logging.root='{root}'", *extra], seeds=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (constant learning rate, so its total may be extended)."""
    root = tmp_path_factory.mktemp("resume_runs")
    experiment = tiny(root)
    return experiment, train(experiment, progress=False).run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to / "cartpole_ppo" / run_dir.name))


def snapshot(folder: Path) -> dict:
    """Every file's size and time, bar the writer lock a resume takes (it records its pid)."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.name != LOCK_FILE}


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_saved_config_reads_back_exactly(finished, tmp_path):
    experiment, run_dir = finished
    saved = json.loads((run_dir / "seed_0" / "config.json").read_text())
    assert Experiment.from_dict(saved) == experiment
    for name in preset_names("experiments"):  # every shipped preset through the Logger's JSON
        preset = load_experiment(name)
        with Logger(tmp_path / name) as logger:
            logger.log_hparams(preset.to_dict())
        assert Experiment.from_dict(json.loads((tmp_path / name / "config.json").read_text())) == preset


def test_a_conflicting_config_is_named_and_the_run_left_untouched(finished, tmp_path):
    experiment, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    before = snapshot(run_dir)
    changed = experiment.replace(agent={"optimizer": replace(experiment.agent.optimizer, learning_rate=3e-4)},
                                 budget={"num_steps": 25})
    with pytest.raises(ValueError, match=r"agent\.optimizer\.learning_rate: 0\.001 -> 0\.0003, "
                                         r"budget\.num_steps: 50 -> 25"):
        train(changed, progress=False, resume=run_dir)
    assert snapshot(run_dir) == before


def test_cli_resume_needs_no_experiment_and_rejects_a_conflicting_set(finished, tmp_path):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet", "--set", "budget.num_steps=25",
                       "--set", "agent.optimizer.learning_rate=0.01")
    assert code == 2
    assert "budget.num_steps: 50 -> 25" in err and "agent.optimizer.learning_rate: 0.001 -> 0.01" in err
    before = snapshot(run_dir)
    code, out, err = cli("train", "--resume", str(run_dir), "--quiet")  # finished: completes it
    assert code == 0, err
    assert f"{TOTAL} env steps per seed (resumed at {TOTAL})" in out and "nothing left to train" in out
    assert {p for p in before if p.name != "config.json" and "events" not in p.name} <= set(snapshot(run_dir))


def test_resuming_a_finished_run_writes_what_is_missing_without_duplicates(finished, tmp_path):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    # as after a kill -9 right after the final checkpoint: no results, no plot
    (run_dir / "results.json").unlink()
    (run_dir / "learning_curves.png").unlink()
    records = read_jsonl(run_dir / "seed_0" / "metrics.jsonl")
    seed_files = snapshot(run_dir / "seed_0")
    for _ in range(2):
        result = train(None, progress=False, resume=run_dir)
        assert result.env_steps == TOTAL and result.start_step == TOTAL and result.train_seconds == 0.0
        assert read_jsonl(run_dir / "seed_0" / "metrics.jsonl") == records
        assert snapshot(run_dir / "seed_0") == seed_files  # no new event file, config, image
        assert available_steps(run_dir / "checkpoints")[-1] == TOTAL
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["env_steps"] == TOTAL and summary["start_step"] == TOTAL
    assert (run_dir / "learning_curves.png").stat().st_size > 0


def test_extending_total_steps_trains_on_and_counts_only_the_new_steps(finished, tmp_path):
    experiment, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    longer = experiment.replace(budget={"total_steps": TOTAL + 4 * PER_ITERATION})
    result = train(longer, progress=False, resume=run_dir)
    assert result.env_steps == TOTAL + 4 * PER_ITERATION and result.start_step == TOTAL
    saved = json.loads((run_dir / "seed_0" / "config.json").read_text())
    assert Experiment.from_dict(saved) == longer
    steps = [r["step"] for r in read_jsonl(run_dir / "seed_0" / "metrics.jsonl") if "train/loss" in r]
    assert steps == list(range(PER_ITERATION, TOTAL + 4 * PER_ITERATION + 1, PER_ITERATION))
    printed = re.search(r"train ([\d.]+) s \(([\d,]+) steps/s\)", result.table())
    assert printed and int(printed[2].replace(",", "")) == round(4 * PER_ITERATION / result.train_seconds)


def test_a_new_total_is_refused_past_the_checkpoint_off_the_chunks_or_annealed(finished, tmp_path):
    experiment, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    with pytest.raises(ValueError, match=r"already at env step 1200"):
        train(experiment.replace(budget={"total_steps": TOTAL - PER_ITERATION}), progress=False,
              resume=run_dir)
    # the rules on the run's recorded experiment, without training runs for each
    default_chunks = experiment.replace(budget={"iterations_per_chunk": 0})  # 5 of 150 iterations
    with pytest.raises(ValueError, match=r"144 iterations after the checkpoint .* chunks of 5"):
        _check_new_total(default_chunks, 150 * PER_ITERATION, TOTAL)
    annealed = experiment.replace(agent={"optimizer": replace(experiment.agent.optimizer, anneal_lr=True)})
    with pytest.raises(ValueError, match=r"budget\.total_steps 1200 -> 2000: .*anneal_lr is true"):
        _check_new_total(annealed, 2000, TOTAL)


def edit_config(run_dir: Path, change) -> Path:
    path = run_dir / "seed_0" / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("change", "named"), [
    (lambda c: c["agent"]["config"].update(clip_param=0.9), "agent.config.clip_param: 0.2 -> 0.9"),
    (lambda c: c["logging"].update(profiler={"log_dir": "/tmp/elsewhere"}),
     "logging.profiler.log_dir: None -> '/tmp/elsewhere'"),
    (lambda c: c["agent"]["optimizer"].update(anneal_lr=True), "anneal_lr: False -> True"),
])
def test_a_config_json_edited_after_the_checkpoint_is_named_and_nothing_runs(finished, tmp_path,
                                                                            change, named):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    path = edit_config(run_dir, change)
    before = snapshot(run_dir / "seed_0")
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and f"{path} was changed after the checkpoint" in err and named in err, err
    assert snapshot(run_dir / "seed_0") == before
    code, _, err = cli("eval", str(run_dir), "--episodes", "1")  # a reader trusts it no more
    assert code == 2 and named in err, err


def test_an_edited_total_in_config_json_is_not_trusted(finished, tmp_path):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    edit_config(run_dir, lambda c: c["budget"].update(total_steps=2 * TOTAL))
    result = train(None, progress=False, resume=run_dir)  # the checkpoint's total: finished
    assert result.env_steps == TOTAL and result.train_seconds == 0.0


def test_a_missing_or_truncated_seed_log_is_named(finished, tmp_path):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    log = run_dir / "seed_0" / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:len(lines) // 2]))
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and f"{log} ends at env step" in err and "truncated" in err, err
    log.unlink()
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and f"{log} (seed 0's log) is missing" in err, err


HOLD_THE_LOCK = """
import sys, time
from rollax.logging.writer_lock import hold_writer_lock
hold_writer_lock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(
        finished, tmp_path):
    import subprocess
    import sys

    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_dir)
        code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
        assert code == 1 and f"another rollax process (pid {holder.pid})" in err, err
        assert snapshot(run_dir) == before
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, err


class SignalAtEnd(Callback):
    """A SIGINT arriving while the run ends (before the final checkpoint is written)."""

    def on_train_end(self, run):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_while_the_run_ends_still_saves_it(tmp_path):
    experiment = tiny(tmp_path, "budget.total_steps=400")
    with pytest.raises(SystemExit) as stopped:
        train(experiment, progress=False, callbacks=[SignalAtEnd()])
    assert stopped.value.code == 130
    run_dir = next((tmp_path / "cartpole_ppo").iterdir())
    assert available_steps(run_dir / "checkpoints") == [400]
    assert json.loads((run_dir / "results.json").read_text())["env_steps"] == 400


def test_eval_of_an_experiment_folder_takes_its_newest_run(finished, tmp_path):
    _, run_dir = finished
    experiment_dir = copy_run(run_dir, tmp_path).parent
    for name in ("29991231-235959-2", "29991231-235959-10"):  # -10 is newer than -2
        shutil.copytree(run_dir, experiment_dir / name)
    shutil.copytree(run_dir / "seed_0", experiment_dir / "29991231-235959-11" / "seed_0")  # no checkpoints
    code, out, err = cli("eval", str(experiment_dir), "--episodes", "1")
    assert code == 0, err
    assert f"after {TOTAL} env steps, {experiment_dir / '29991231-235959-10'})" in out.splitlines()[0]


def test_eval_names_a_damaged_checkpoint_file(finished, tmp_path):
    _, run_dir = finished
    run_dir = copy_run(run_dir, tmp_path)
    state_dir = run_dir / "checkpoints" / str(TOTAL) / "state"
    largest = max((p for p in state_dir.rglob("*") if p.is_file() and p.parent.name == "d"),
                  key=lambda p: p.stat().st_size)  # the array data
    data = bytearray(largest.read_bytes())
    middle = len(data) // 2 - 32
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    largest.write_bytes(bytes(data))
    code, _, err = cli("eval", str(run_dir), "--episodes", "1")
    assert code == 2 and str(largest.relative_to(state_dir.parent)) in err
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2 and str(largest.relative_to(state_dir.parent)) in err


def test_a_periodic_checkpoint_on_the_last_chunk_is_not_saved_twice(tmp_path):
    # every chunk is due for a periodic save, the last one too: the final save must not repeat it
    code, out, err = cli("train", str(PRESET), "--quiet", *[a for o in [
        *TINY, "budget.total_steps=600", f"logging.root='{tmp_path}'",
        "logging.checkpoint_every_seconds=1e-9"] for a in ("--set", o)])
    assert code == 0, err
    run_dir = Path(out.split("run written to ")[1].split()[0])
    assert available_steps(run_dir / "checkpoints") == [400, 600]
    assert json.loads((run_dir / "results.json").read_text())["env_steps"] == 600


KILLED_AFTER_FINAL_CHECKPOINT = """
import os, signal, sys
import rollax.logging.run_callbacks as run_callbacks
from rollax.presets import load_experiment
from rollax.run import train


# the results are written right after the final checkpoint: die there, as kill -9 would
run_callbacks.write_results = lambda result: os.kill(os.getpid(), signal.SIGKILL)
train(load_experiment(sys.argv[1], sys.argv[2:], seeds=1), progress=False)
"""


@pytest.mark.slow  # a child process compiles its own program: ~15-45 s
def test_kill_9_right_after_the_final_checkpoint_then_resume_finishes_the_run(tmp_path):
    import subprocess
    import sys

    overrides = [*TINY, "budget.total_steps=600", f"logging.root='{tmp_path}'"]
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER_FINAL_CHECKPOINT, str(PRESET), *overrides],
                           env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                           timeout=300, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    run_dir = next((tmp_path / "cartpole_ppo").iterdir())
    assert available_steps(run_dir / "checkpoints") == [600] and not (run_dir / "results.json").exists()
    records = read_jsonl(run_dir / "seed_0" / "metrics.jsonl")
    code, out, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, err
    assert "600 env steps per seed (resumed at 600)" in out
    assert json.loads((run_dir / "results.json").read_text())["env_steps"] == 600
    assert (run_dir / "learning_curves.png").exists()
    assert read_jsonl(run_dir / "seed_0" / "metrics.jsonl") == records
