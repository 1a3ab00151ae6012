"""The `rollax` command line end to end on tiny budgets: train/eval/plot/envs, exit code 2 with
`rollax train: error: ...` for bad input, and SIGINT -> flushed logs, checkpoint, exit 130, resume."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pytest
from readback import read_jsonl, scalar_events

from rollax.cli import main

ROOT = Path(__file__).resolve().parent.parent
PRESET = str(ROOT / "experiments" / "cartpole_ppo.toml")
TINY = ["budget.total_steps=2000", "budget.num_envs=4", "budget.num_steps=50",
        "budget.iterations_per_chunk=1", "agent.config.num_epochs=1",
        "agent.config.num_minibatches=2", "agent.network.hidden_sizes=[16]", "eval.episodes=2"]


def train_args(*overrides: str) -> list[str]:
    return ["train", PRESET, "--quiet", *[a for o in [*TINY, *overrides] for a in ("--set", o)]]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`rollax train` on 2 seeds; returns the run dir and what it printed."""
    root = tmp_path_factory.mktemp("cli_runs")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*train_args(f"logging.root='{root}'"), "--seeds", "2"])
    printed = out.getvalue()
    assert code == 0, printed
    run_dir = Path(printed.split("run written to ")[1].split()[0])
    return run_dir, printed


def test_train_prints_the_result_table_and_writes_the_run(cli_run):
    run_dir, printed = cli_run
    assert "seed   eval return  train ep_rew_mean" in printed
    assert "2000 env steps per seed" in printed
    assert sorted(p.name for p in run_dir.glob("seed_*")) == ["seed_0", "seed_1"]
    assert (run_dir / "results.json").exists() and (run_dir / "learning_curves.png").exists()


def test_eval_reads_the_newest_checkpoint(cli_run, capsys, caplog):
    run_dir, _ = cli_run
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert not [r.getMessage() for r in caplog.records if r.name == "absl"]  # no orbax chatter
    lines = capsys.readouterr().out.splitlines()
    assert "after 2000 env steps" in lines[0]
    rows = [line.split() for line in lines[1:]]
    assert [row[0] for row in rows] == ["0", "1"]
    assert all(1.0 <= float(row[1]) <= 500.0 for row in rows)  # CartPole returns


def test_plot_writes_the_default_png_and_accepts_a_band(cli_run, capsys, tmp_path):
    run_dir, _ = cli_run
    (run_dir / "learning_curves.png").unlink()
    assert main(["plot", str(run_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run_dir / 'learning_curves.png'}"
    assert matplotlib.image.imread(run_dir / "learning_curves.png")[..., :3].std() > 0.05
    out = tmp_path / "std.png"
    assert main(["plot", str(run_dir), "--band", "std", "--out", str(out)]) == 0
    assert out.exists()
    capsys.readouterr()
    for name, written in (("curves", "curves.png"), ("curves.v2", "curves.v2.png"),
                          ("curves.svg", "curves.svg")):  # the path reported is the one written
        assert main(["plot", str(run_dir), "--out", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.strip() == f"wrote {tmp_path / written}"
        assert (tmp_path / written).stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["plot", str(run_dir), "--band", "iqr"])
    assert main(["plot", str(run_dir), "--metric", "nope/nope"]) == 2
    assert "rollax plot: error: metric 'nope/nope' not found" in capsys.readouterr().err


def test_envs_lists_gymnax_and_probe_ids(capsys):
    assert main(["envs"]) == 0
    ids = capsys.readouterr().out.split()
    assert "CartPole-v1" in ids
    assert {i for i in ids if i.startswith("rollax/Probe")} >= {
        "rollax/ProbeConstant-v0", "rollax/ProbeTruncation-v0"}
    done = subprocess.run([sys.executable, "-m", "rollax", "envs"], capture_output=True, text=True, check=False,
                          timeout=120, cwd=ROOT)
    # other tests in this process may have registered more ids; a fresh process lists the built-in ones
    assert done.returncode == 0 and "CartPole-v1" in done.stdout.split()
    assert set(done.stdout.split()) <= set(ids)


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "env.id=CartPol-v1"], r"unknown env id 'CartPol-v1'\. Did you mean: CartPole-v1"),
    (["--set", "budget.bogus=1"], r"unknown key 'bogus'; valid: \["),
    (["--set", "agent.config.clip_param=-1"], r"clip_param"),
    (["--set", "agent.algorithm=a2c"], r"unknown algorithm 'a2c'"),
    (["--set", "budget.total_steps=10"], r"smaller than one iteration"),
    (["--seeds", "0"], r"--seeds must be >= 1, got 0"),
    (["--resume", "/nonexistent/run"], r"/nonexistent/run: no checkpoints/ folder"),
    (["--resume", "/nonexistent/run", "--no-log"], r"--no-log cannot go with --resume"),
])
def test_bad_input_exits_2_naming_the_problem(extra, message, capsys, tmp_path):
    import re

    code = main([*train_args(f"logging.root='{tmp_path}'"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("rollax train: error: ") and re.search(message, err), err
    assert list(tmp_path.iterdir()) == []  # failed before any run directory was made


def _subprocess_env() -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def test_sigint_flushes_logs_checkpoints_exits_130_and_resumes(tmp_path):
    # a constant learning rate: the resume below may then set a new budget.total_steps
    command = [sys.executable, "-m", "rollax", *train_args(f"logging.root='{tmp_path}'",
                                                           "budget.total_steps=100_000_000",
                                                           "agent.optimizer.anneal_lr=false")]
    process = subprocess.Popen(command, cwd=ROOT, env=_subprocess_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            logs = list(tmp_path.rglob("seed_0/metrics.jsonl"))
            if logs and logs[0].stat().st_size > 0:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    seed_dir = logs[0].parent
    run_dir = seed_dir.parent
    records = read_jsonl(seed_dir / "metrics.jsonl")
    last_step = max(r["step"] for r in records)
    assert [s for s, _ in scalar_events(seed_dir)["train/loss"]][-1] == last_step
    checkpoints = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints == [last_step]

    target = last_step + 400
    resumed = subprocess.run([sys.executable, "-m", "rollax", "train", "--resume", str(run_dir), "--quiet",
                              "--set", f"budget.total_steps={target}"],
                             cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True, check=False,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{target} env steps per seed" in resumed.stdout
    records = read_jsonl(seed_dir / "metrics.jsonl")
    keys = [(r["step"], tag) for r in records for tag in r if tag != "step"]
    assert len(keys) == len(set(keys))
    loss_steps = [r["step"] for r in records if "train/loss" in r]
    assert loss_steps == list(range(200, target + 1, 200))
    assert json.loads((run_dir / "results.json").read_text())["env_steps"] == target
    assert (run_dir / "learning_curves.png").stat().st_size > 0  # written before the fast exit


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["train", "--bogus"], 2),
                                            (["train", "no_such_experiment"], 2)])
def test_the_command_exits_with_mains_status(argv, code):
    """`python -m rollax` (and the `rollax` script) end with `os._exit` after the exit
    handlers: the status is still main's, argparse's included."""
    done = subprocess.run([sys.executable, "-m", "rollax", *argv], capture_output=True,
                          text=True, check=False, timeout=120, cwd=ROOT, env=_subprocess_env())
    assert done.returncode == code, done.stderr
    assert (done.stdout if code == 0 else done.stderr).strip()  # what it said reached the pipe


@pytest.mark.parametrize(("flags", "message"), [
    (["--seed", "7"], r"--seed: seed=7 is not a seed of .*; its seeds: \[0, 1\]"),
    (["--video-episodes", "0"], "--video-episodes must be >= 1, got 0"),
])
def test_a_bad_video_request_is_named_before_the_evaluation_runs(cli_run, capsys, tmp_path, flags,
                                                                 message):
    run_dir, _ = cli_run
    assert main(["eval", str(run_dir), "--video", str(tmp_path / "v.gif"), *flags]) == 2
    printed = capsys.readouterr()
    assert re.search(message, printed.err) and printed.out == ""  # no evaluation table
