"""Faults a run must survive (issue 13): a full disk while logging or checkpointing, a resume
whose shapes do not match, a torn metrics.jsonl line, Ctrl-C before the loop, a plot into a
missing folder, and kill -9 at three points followed by a resume that leaves every step once
in metrics.jsonl and every metrics.jsonl record in TensorBoard's view of the event files."""

import errno
import gc
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from readback import read_events, read_jsonl
from test_resume import PRESET, TINY, cli, copy_run, tiny

import rollax.logging.logger as logger_module
from rollax.logging import available_steps
from rollax.logging.plot import plot_runs
from rollax.run import loop, train


def one_line_error(err: str, *parts: str) -> None:
    lines = [line for line in err.splitlines() if not line.startswith("WARNING:absl")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(part in lines[0] for part in parts), lines[0]


def seen_by_tensorboard(seed_dir: Path) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar TensorBoard shows: a file opened on resume starts
    with a SessionLog START at its purge step, which hides earlier files' events at >= it."""
    shown: list[tuple[int, str, float]] = []
    for event in read_events(seed_dir):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            shown = [record for record in shown if record[0] < event.step]
        for value in event.summary.value:
            if value.HasField("simple_value"):
                shown.append((event.step, value.tag, value.simple_value))
    return shown


def check_complete(run_dir: Path, total: int) -> None:
    """Every iteration's step once in metrics.jsonl, and TensorBoard shows exactly its records."""
    seed_dir = run_dir / "seed_0"
    records = read_jsonl(seed_dir / "metrics.jsonl")
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == list(range(200, total + 1, 200))  # 200 env steps per iteration
    from_jsonl = sorted((r["step"], tag, pytest.approx(float(v), rel=1e-6))
                        for r in records for tag, v in r.items() if tag != "step")
    assert sorted(seen_by_tensorboard(seed_dir)) == from_jsonl


# -- plots ------------------------------------------------------------------------------------
def write_metrics(path: Path, lines: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("\n".join(lines), encoding="utf-8")
    return path.parent.parent


def test_plot_skips_a_torn_last_line_naming_the_file(tmp_path):
    good = [json.dumps({"step": s, "rollout/ep_rew_mean": float(s)}) for s in (10, 20, 30)]
    run = write_metrics(tmp_path / "exp" / "run" / "seed_0", [*good, '{"step": 40, "rollout/ep'])
    with pytest.warns(RuntimeWarning, match=r"seed_0/metrics\.jsonl: skipped its torn last line 4"):
        png = plot_runs([run], tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    broken = write_metrics(tmp_path / "bad" / "run" / "seed_0", [good[0], "{oops", good[1]])
    with pytest.raises(ValueError, match=r"seed_0/metrics\.jsonl line 2 is not JSON"):
        plot_runs([broken], tmp_path / "bad.png")


def test_plot_into_a_missing_folder_exits_2_and_creates_nothing(tmp_path):
    good = [json.dumps({"step": s, "rollout/ep_rew_mean": 1.0}) for s in (10, 20)]
    run = write_metrics(tmp_path / "exp" / "run" / "seed_0", good)
    out = tmp_path / "missing" / "deeper" / "x.png"
    code, _, err = cli("plot", str(run), "--out", str(out))
    assert code == 2
    one_line_error(err, "rollax plot: error:", str(out.parent), "does not exist")
    assert not (tmp_path / "missing").exists()


def test_train_with_a_missing_dir_exits_2_instead_of_ignoring_it(tmp_path):
    # found by tools/adversarial.py: a preset given by path trained with a typo in --dir
    code, _, err = cli("train", str(PRESET), "--dir", str(tmp_path / "typo"), "--no-log")
    assert code == 2
    one_line_error(err, f"--dir {tmp_path / 'typo'}: no such folder")


# -- a full disk ------------------------------------------------------------------------------
class FullAfter:
    """A file whose writes fail as a full disk's do (ENOSPC, no file name) after `room` writes."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def write(self, text: str) -> int:
        if self.room == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= 1
        return self.file.write(text)

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_full_disk_while_logging_is_one_line_exit_1_and_keeps_the_records(tmp_path, monkeypatch):
    real_init = logger_module.Logger.__init__

    def init_on_a_small_disk(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._jsonl = FullAfter(self._jsonl, room=5)

    monkeypatch.setattr(logger_module.Logger, "__init__", init_on_a_small_disk)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same full disk again while closing is not news
        code, _, err = cli("train", str(PRESET), "--quiet", *[a for o in [
            *TINY, f"logging.root='{tmp_path}'"] for a in ("--set", o)])
    assert code == 1
    jsonl = next(tmp_path.rglob("metrics.jsonl"))
    one_line_error(err, f"rollax train: error: disk full while writing {jsonl}: No space left")
    assert [r["step"] for r in read_jsonl(jsonl)] == [200, 200, 200, 400, 400]


def test_a_full_disk_while_checkpointing_is_one_line_exit_1(tmp_path, monkeypatch, capfd):
    import orbax.checkpoint as ocp

    def save_on_a_full_disk(self, step, *args, **kwargs):  # as tensorstore reports ENOSPC
        raise ValueError(f'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database: '
                         f'[OS error {errno.ENOSPC}: No space left on device]')

    monkeypatch.setattr(ocp.CheckpointManager, "save", save_on_a_full_disk)
    code, _, err = cli("train", str(PRESET), "--quiet", *[a for o in [
        *TINY, "budget.total_steps=400", f"logging.root='{tmp_path}'"] for a in ("--set", o)])
    assert code == 1
    one_line_error(err + capfd.readouterr().err, "rollax train: error: disk full while writing",
                   "/checkpoints/best/400: No space left on device")  # the first save
    assert [r["step"] for r in read_jsonl(next(tmp_path.rglob("metrics.jsonl")))][-1] == 400


def can_mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    return mounted.returncode == 0


@pytest.mark.slow  # a child process compiles its own program
# tmpfs hands out 4 KiB pages: at 3 (the writer lock takes one) the event file asks for the
# next one first
@pytest.mark.parametrize(("size", "full_at"), [("12k", "events.out.tfevents"), ("300k", "checkpoints")])
def test_a_real_full_disk_is_one_line_and_the_logs_stay_readable(tmp_path, size, full_at):
    small = tmp_path / "small"
    if not can_mount_tmpfs(small, size):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        child = subprocess.run(
            [sys.executable, "-m", "rollax", "train", str(PRESET), "--quiet",
             "--set", "budget.total_steps=4096", "--set", f"logging.root='{small}'"],
            env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=300,
            check=False)
        assert child.returncode == 1
        one_line_error(child.stderr, "rollax train: error: disk full while writing", full_at,
                       "No space left on device")
        run_dir = next((small / "cartpole_ppo").iterdir())
        code, _, err = cli("plot", str(run_dir), "--out", str(tmp_path / "curves.png"))
        assert code == 0, err  # the records written before the disk filled
    finally:
        subprocess.run(["umount", str(small)], check=False)


# -- a resume that does not fit ---------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    return train(tiny(tmp_path_factory.mktemp("runs")), progress=False).run_dir


def test_a_resume_with_other_shapes_prints_only_the_clear_error(finished, tmp_path, caplog):
    run_dir = copy_run(finished, tmp_path)
    # the run's config and its checkpoint's record of it, changed alike (checksum too): what a
    # resume trusts now says 12 hidden units where the stored arrays have 16
    config_path = run_dir / "seed_0" / "config.json"
    config = json.loads(config_path.read_text())
    config["agent"]["network"]["hidden_sizes"] = [12]
    config_path.write_text(json.dumps(config))
    step_dir = max((run_dir / "checkpoints").iterdir(), key=lambda p: int(p.name))  # the newest
    record = step_dir / "metadata" / "metadata"
    metadata = json.loads(record.read_text())
    metadata["experiment"]["agent"]["network"]["hidden_sizes"] = [12]
    record.write_text(json.dumps(metadata))
    manifest = json.loads((step_dir / "rollax_sha256.json").read_text())
    manifest["sha256"]["metadata/metadata"] = hashlib.sha256(record.read_bytes()).hexdigest()
    (step_dir / "rollax_sha256.json").write_text(json.dumps(manifest))
    # orbax's abandoned reads logged "exception was never retrieved" tracebacks when collected,
    # and "Event loop is closed" ones from its threads when the process ended
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert code == 2
    one_line_error(err, "does not match the target", "has shape (1, 16) there, the target (1, 12)")
    child = subprocess.run([sys.executable, "-m", "rollax", "eval", str(run_dir)],
                           env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                           text=True, timeout=300, check=False)
    assert child.returncode == 2
    one_line_error(child.stderr, "does not match the target")


def test_a_numpy_target_of_another_shape_is_refused_not_truncated(tmp_path):
    import numpy as np

    from rollax.logging import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path, 1, {"w": np.arange(8.0, dtype=np.float32)})
    with pytest.raises(ValueError, match=r"'w' has shape \(8,\) there, the target \(6,\)"):
        load_checkpoint(tmp_path, target={"w": np.zeros(6, np.float32)})  # used to return 6 values


# -- Ctrl-C before the loop -------------------------------------------------------------------
def test_ctrl_c_while_compiling_exits_130_and_leaves_no_run_folder(tmp_path, monkeypatch):
    real_default_callbacks = loop.default_callbacks

    def ctrl_c_then_default_callbacks(*args, **kwargs):  # the run folder exists; compiling
        signal.raise_signal(signal.SIGINT)  # handled in this thread before it returns
        return real_default_callbacks(*args, **kwargs)

    monkeypatch.setattr(loop, "default_callbacks", ctrl_c_then_default_callbacks)
    # Python's own Ctrl-C handler, even where the suite was started with SIGINT ignored (a
    # background job of a non-interactive shell, `nohup`)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, _, err = cli("train", str(PRESET), "--quiet", *[a for o in [
            *TINY, f"logging.root='{tmp_path}'"] for a in ("--set", o)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    one_line_error(err, "rollax train: interrupted")
    assert list(tmp_path.iterdir()) == []


# -- kill -9, then resume ---------------------------------------------------------------------
KILLED = textwrap.dedent("""
    import os, signal, sys
    import rollax.logging.checkpoint as checkpoint
    from rollax.cache import enable_compilation_cache
    from rollax.logging import Callback
    from rollax.presets import load_experiment
    from rollax.run import train

    enable_compilation_cache()
    where, at = sys.argv[1], int(sys.argv[2])
    die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)

    class Kill(Callback):
        def on_train_begin(self, run):  # the chunk is compiling in the background
            if where == "compile":
                die()

        def on_chunk_end(self, run, chunk):  # logged and flushed, not yet checkpointed
            if where == "chunk" and chunk.step == at:
                die()

    if where == "final-save":  # orbax has committed the step, its manifest is not written
        real_manifest = checkpoint._write_manifest
        checkpoint._write_manifest = lambda step_dir: (
            die() if step_dir.parent.name == "checkpoints" and step_dir.name == str(at)
            else real_manifest(step_dir))
    train(load_experiment(sys.argv[3], sys.argv[4:], seeds=1), progress=False, callbacks=[Kill()])
""")


def killed_run(tmp_path: Path, where: str, at: int, total: int) -> Path | None:
    overrides = [*TINY, f"budget.total_steps={total}", f"logging.root='{tmp_path}'",
                 "logging.checkpoint_every_seconds=1e-9"]  # a checkpoint after every chunk
    child = subprocess.run([sys.executable, "-c", KILLED, where, str(at), str(PRESET), *overrides],
                           env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                           text=True, timeout=300, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    runs = list((tmp_path / "cartpole_ppo").iterdir())
    return runs[0] if runs else None


@pytest.mark.slow  # a child process compiles its own program
def test_kill_9_while_compiling_then_a_fresh_run_finishes(tmp_path):
    run_dir = killed_run(tmp_path, "compile", 0, 600)
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 2
    one_line_error(err, "rollax train: error: --resume", str(run_dir))  # nothing checkpointed
    code, out, err = cli("train", str(PRESET), "--quiet", *[a for o in [
        *TINY, "budget.total_steps=600", f"logging.root='{tmp_path}'"] for a in ("--set", o)])
    assert code == 0, err
    check_complete(Path(out.split("run written to ")[1].split()[0]), 600)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_logs_every_step_once(tmp_path):
    run_dir = killed_run(tmp_path, "chunk", 600, 1000)
    assert available_steps(run_dir / "checkpoints")[-1] == 400  # 600 was logged, not saved
    code, _, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, err
    check_complete(run_dir, 1000)


@pytest.mark.slow
def test_kill_9_during_the_final_save_then_resume_finishes(tmp_path):
    run_dir = killed_run(tmp_path, "final-save", 600, 600)
    with pytest.warns(RuntimeWarning, match="no checksum manifest"):
        code, out, err = cli("train", "--resume", str(run_dir), "--quiet")
    assert code == 0, err
    assert "(resumed at 600)" in out
    check_complete(run_dir, 600)
