"""A run sharded over devices (and over processes) computes what one device computes.

JAX fixes its device count when it starts, so every run here is its own `rollax train`
process with `JAX_NUM_CPU_DEVICES` host devices; the test compares their logged metrics and
final parameters. The single-device run is the reference: the same preset, seeds and global
batch, with no mesh at all.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from readback import train_metrics

from rollax import load_agent
from rollax.run.parallel import initialize_distributed

CARTPOLE = ["cartpole_ppo", "--seeds", "2", "--set", "budget.total_steps=512",
            "--set", "budget.iterations_per_chunk=1", "--set", "eval.episodes=2",
            "--set", "logging.plot=false"]
TIMEOUT = 240  # seconds per process: a hang fails the test instead of stalling the suite


def device_env(devices: int | None) -> dict:
    """A CPU-only environment with `devices` host devices (None: JAX_NUM_CPU_DEVICES unset,
    the run asks for its own)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(devices)}
    return env if devices is not None else {k: v for k, v in env.items() if k != "JAX_NUM_CPU_DEVICES"}


def rollax_train(root: Path, args: list[str], devices: int | None, *, process: tuple | None = None,
                 timeout: int = 60, background: bool = False, expect_failure: bool = False):
    """`rollax train ARGS` in a fresh process that sees `devices` CPU devices, writing runs
    under `root` (process k of n, with coordinator address, when `process=(k, n, address)`);
    its output, or the process itself when `background`."""
    command = [sys.executable, "-m", "rollax", "train", *args, "--quiet",
               "--set", f"logging.root={root}"]
    if process is not None:
        k, n, address = process
        command += ["--coordinator", address, "--num-processes", str(n), "--process-id", str(k),
                    "--coordinator-timeout", str(timeout)]
    child = subprocess.Popen(command, env=device_env(devices), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    return child if background else finished(child, expect_failure)


def finished(child: subprocess.Popen, expect_failure: bool = False) -> str:
    """The output of a child process that ended (with an error, when `expect_failure`)."""
    try:
        output, _ = child.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail(f"{child.args} did not finish in {TIMEOUT} s (a hang)")
    assert (child.returncode != 0) == expect_failure, output
    return output


def run_dir(root: Path) -> Path:
    (run,) = [p.parent for p in root.glob("*/*/results.json")]
    return run


def final_params(run: Path, seed: int) -> list[np.ndarray]:
    model = load_agent(run, seed=seed, checkpoint="last").model
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def assert_same_run(run: Path, reference: Path, seeds=(0, 1)):
    for seed in seeds:
        mine, theirs = train_metrics(run, seed), train_metrics(reference, seed)
        assert mine.keys() == theirs.keys() and len(mine) >= 2
        for step in theirs:
            for name, value in theirs[step].items():
                assert mine[step][name] == pytest.approx(value, rel=1e-3, abs=1e-5), (seed, step, name)
        for a, b in zip(final_params(run, seed), final_params(reference, seed), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def one_device_cartpole(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_device")
    rollax_train(root, CARTPOLE, devices=1)
    return run_dir(root)


def test_four_devices_train_as_one(one_device_cartpole, tmp_path):
    """2 seeds x 8 envs on a 2 x 2 (seeds x data) mesh: same metrics, same final parameters."""
    rollax_train(tmp_path, [*CARTPOLE, "--devices", "4", "--set", "parallel.seed_devices=2"], devices=4)
    assert_same_run(run_dir(tmp_path), one_device_cartpole)


def test_two_processes_train_as_one_device(one_device_cartpole, tmp_path):
    """2 processes x 2 devices (gloo collectives), the env batch split over all 4: the same as
    one device, and only process 0 writes."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        address = f"localhost:{s.getsockname()[1]}"
    roots = [tmp_path / f"process_{k}" for k in range(2)]
    children = [rollax_train(roots[k], [*CARTPOLE, "--devices", "4"], devices=2,
                             process=(k, 2, address), background=True) for k in range(2)]
    outputs = [finished(child) for child in children]
    assert not roots[1].exists() and "eval return" not in outputs[1]  # process 1 writes nothing
    assert "eval return" in outputs[0]
    assert_same_run(run_dir(roots[0]), one_device_cartpole)


def test_sharded_run_resumes_as_it_would_have_run(one_device_cartpole, tmp_path):
    """Stopped after its first iteration on 4 devices, resumed on 2: the same run. The resumed
    process is not told JAX_NUM_CPU_DEVICES: `--devices 2` splits the CPU itself."""
    script = ("import rollax; rollax.train(rollax.load_experiment('cartpole_ppo', seeds=2, overrides=["
              "'budget.total_steps=512', 'budget.iterations_per_chunk=1', 'eval.episodes=2', "
              f"'logging.plot=false', 'parallel.devices=4', 'logging.root={tmp_path}']), "
              "stop_at_step=256, progress=False)")
    finished(subprocess.Popen([sys.executable, "-c", script], env=device_env(4), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    (run,) = [p.parent for p in tmp_path.glob("*/*/checkpoints")]
    rollax_train(tmp_path, ["--resume", str(run), "--devices", "2"], devices=None)
    assert_same_run(run, one_device_cartpole)


def test_grouped_generation_run_shards_its_generations(tmp_path):
    """GRPO on a one-step env: the prompt x generation batch (4 prompts x 4 samples) split over
    4 devices, as on one."""
    args = ["cartpole_ppo", "--seeds", "1", "--set", "env.id='rollax/ProbeActionReward-v0'",
            "--set", "agent.algorithm=grpo", "--set", "agent.config={num_generations = 4}",
            "--set", "budget.num_steps=1", "--set", "budget.num_envs=16",
            "--set", "budget.total_steps=32", "--set", "budget.iterations_per_chunk=1",
            "--set", "eval.episodes=4", "--set", "logging.plot=false"]
    rollax_train(tmp_path / "one", args, devices=1)
    rollax_train(tmp_path / "four", [*args, "--devices", "4"], devices=4)
    assert_same_run(run_dir(tmp_path / "four"), run_dir(tmp_path / "one"), seeds=(0,))


# ------------------------------------------------------------------------------ bad input


def test_batch_must_divide_over_the_data_devices(tmp_path):
    output = rollax_train(tmp_path, [*CARTPOLE, "--devices", "3"], devices=3, expect_failure=True)
    assert "budget.num_envs=8 must be a multiple of the 3 devices" in output


@pytest.mark.parametrize("flags, message", [
    (("localhost:1234", 2, 2), "--process-id=2 must be in [0, 1]"),
    (("localhost:1234", 0, 0), "--num-processes=0 must be >= 1"),
    (("localhost", 2, 0), "must be HOST:PORT"),
    (("localhost:1234", None, 0), "go together"),
])
def test_bad_process_flags_are_named(flags, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        initialize_distributed(*flags)


def test_unreachable_coordinator_fails_within_its_timeout(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    output = rollax_train(tmp_path, CARTPOLE, devices=1, process=(1, 2, f"localhost:{port}"),
                          timeout=5, expect_failure=True)
    assert f"could not join the multi-process run at coordinator 'localhost:{port}' within 5 s" \
        in output
