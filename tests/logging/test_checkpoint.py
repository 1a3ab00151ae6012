"""Checkpoint round trips, crash safety (SIGKILL mid-write, SIGTERM), and clear errors."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rollax.logging import available_steps, load_checkpoint, save_checkpoint
from rollax.logging.checkpoint import load_metadata
from rollax.logging.shutdown import ShutdownRequested, graceful_shutdown

CHILD_ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def make_model_and_optimizer(seed: int) -> tuple[nnx.Linear, nnx.Optimizer]:
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
    return model, nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


def take_adam_step(model: nnx.Linear, optimizer: nnx.Optimizer) -> None:
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones((1, 3))) ** 2))(model)
    optimizer.update(model, grads)


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_round_trip_of_nnx_model_optimizer_and_prng_key(tmp_path):
    model, optimizer = make_model_and_optimizer(0)
    take_adam_step(model, optimizer)  # non-trivial Adam moments and step count
    key = jax.random.split(jax.random.key(42))[1]
    state = {"model": nnx.state(model), "optimizer": nnx.state(optimizer), "key": key,
             "env_steps": 4096}
    save_checkpoint(tmp_path / "ckpt", 4096, state, {"seed": 3, "best": float("nan")})
    saved_kernel = np.asarray(model.kernel[...])

    fresh_model, fresh_optimizer = make_model_and_optimizer(1)
    target = {"model": nnx.state(fresh_model), "optimizer": nnx.state(fresh_optimizer),
              "key": jax.random.key(0), "env_steps": 0}
    restored, metadata = load_checkpoint(tmp_path / "ckpt", target=target)
    assert metadata == {"seed": 3, "best": "nan"}
    assert restored["env_steps"] == 4096 and isinstance(restored["env_steps"], int)
    nnx.update(fresh_model, restored["model"])
    nnx.update(fresh_optimizer, restored["optimizer"])
    for got, want in zip(leaves(nnx.state(fresh_model)), leaves(nnx.state(model))):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(leaves(nnx.state(fresh_optimizer)), leaves(nnx.state(optimizer))):
        np.testing.assert_array_equal(got, want)
    assert int(fresh_optimizer.step[...]) == 1
    # the restored key is a typed key drawing the same numbers as the saved one
    np.testing.assert_array_equal(jax.random.normal(restored["key"], (4,)),
                                  jax.random.normal(key, (4,)))
    # the continued run matches: one more Adam step from both
    take_adam_step(model, optimizer)
    take_adam_step(fresh_model, fresh_optimizer)
    np.testing.assert_allclose(fresh_model.kernel[...], model.kernel[...], rtol=1e-6)

    # without a target, typed keys still come back typed, NNX states as pure dicts
    untargeted, _ = load_checkpoint(tmp_path / "ckpt")
    assert jnp.issubdtype(untargeted["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(untargeted["model"]["kernel"], saved_kernel)


def test_newest_step_is_loaded_and_old_ones_pruned(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"x": jnp.full(2, step)}, {"step": step}, max_to_keep=2)
    assert available_steps(tmp_path) == [30, 40]
    state, metadata = load_checkpoint(tmp_path)
    assert metadata["step"] == 40 and list(np.asarray(state["x"])) == [40, 40]
    state, _ = load_checkpoint(tmp_path, step=30)
    assert list(np.asarray(state["x"])) == [30, 30]
    with pytest.raises(ValueError, match="step 40 already exists"):
        save_checkpoint(tmp_path, 40, {"x": jnp.zeros(2)}, {})


def test_missing_checkpoints_raise_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "one", 5, {"x": jnp.zeros(1)}, {})
    with pytest.raises(FileNotFoundError, match=r"step 6 .*available steps: \[5\]"):
        load_checkpoint(tmp_path / "one", step=6)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "two", 0, {"x": jnp.zeros(1)}, {"bad": object()})


def test_corrupt_checkpoint_gives_a_clear_error_and_is_left_untouched(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": jnp.arange(1000.0)}, {"step": 1})
    step_dir = tmp_path / "1"
    for path in step_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d":  # the array data chunks
            path.write_bytes(b"garbage")
    before = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match=f"checkpoint {step_dir} is corrupt"):
        load_checkpoint(tmp_path)
    after = sorted((p.relative_to(tmp_path), p.stat().st_size) for p in tmp_path.rglob("*"))
    assert after == before


def run_child(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=CHILD_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if marker in line:
            return
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"child never printed {marker!r}: {process.stderr.read()[-2000:]}")


def test_sigkill_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    # The child completes step 1, then stalls step 2 just before orbax's atomic rename (its
    # data already written to the temporary directory) and is killed there.
    child = run_child(f"""
        import time, jax.numpy as jnp
        from orbax.checkpoint._src.path import atomicity
        from rollax.logging import save_checkpoint
        save_checkpoint({str(tmp_path)!r}, 1, {{"w": jnp.full(1000, 1.0)}}, {{"step": 1}})
        async def stall(self):
            print("WRITING", flush=True)
            time.sleep(600)
        atomicity.AtomicRenameTemporaryPath.finalize = stall
        save_checkpoint({str(tmp_path)!r}, 2, {{"w": jnp.full(1000, 2.0)}}, {{"step": 2}})
    """)
    wait_for_line(child, "WRITING")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("2")]
    assert leftovers and all("tmp" in name for name in leftovers)  # killed mid-write
    assert available_steps(tmp_path) == [1]
    state, metadata = load_checkpoint(tmp_path)
    assert metadata == {"step": 1} and float(state["w"][0]) == 1.0
    # the next save cleans the leftover up and succeeds
    save_checkpoint(tmp_path, 2, {"w": jnp.full(1000, 2.0)}, {"step": 2})
    assert available_steps(tmp_path) == [1, 2]
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_sigterm_lets_the_loop_write_a_final_checkpoint_and_exit_nonzero(tmp_path):
    child = run_child(f"""
        import jax.numpy as jnp
        from rollax.logging import save_checkpoint
        from rollax.logging.shutdown import graceful_shutdown
        with graceful_shutdown() as shutdown:
            step = 0
            while not shutdown.requested:
                step += 1
                if step == 3:
                    print("RUNNING", flush=True)
            save_checkpoint({str(tmp_path)!r}, step, {{"x": jnp.zeros(1)}}, {{"final": True}})
    """)
    wait_for_line(child, "RUNNING")
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=120) == 128 + signal.SIGTERM
    _, metadata = load_checkpoint(tmp_path)
    assert metadata == {"final": True}


def test_graceful_shutdown_flag_exception_and_handler_restore():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info, graceful_shutdown() as shutdown:
        assert not shutdown.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # Python runs handlers between bytecodes of the main thread
        assert shutdown.requested and shutdown.exit_code == 128 + signal.SIGTERM
        shutdown.check()
        pytest.fail("check() should raise after a signal")
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    with (
        pytest.raises(ShutdownRequested, match="SIGINT"),
        graceful_shutdown(exit_on_signal=False) as shutdown,
    ):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        shutdown.check()
    with graceful_shutdown() as shutdown:  # no signal: a normal exit
        pass
    assert not shutdown.requested


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_bytes(path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = max(0, len(data) // 2 - count // 2)
    for i in range(middle, min(len(data), middle + count)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def saved(tmp_path):
    """One checkpoint step and its largest array-data file."""
    save_checkpoint(tmp_path, 7, {"w": jnp.arange(4096.0), "b": jnp.ones(3)}, {"step": 7})
    state_dir = tmp_path / "7" / "state"
    largest = max((p for p in state_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    return tmp_path, largest


def test_manifest_holds_the_sha256_of_every_file_of_the_step(saved):
    import json

    directory, _ = saved
    step_dir = directory / "7"
    manifest = json.loads((step_dir / "rollax_sha256.json").read_text())
    files = {p.relative_to(step_dir).as_posix(): sha256(p) for p in step_dir.rglob("*")
             if p.is_file() and p.name != "rollax_sha256.json"}
    assert manifest == {"sha256": files} and any(name.startswith("state/") for name in files)
    state, _ = load_checkpoint(directory)
    np.testing.assert_array_equal(state["w"], np.arange(4096.0))
    assert manifest == json.loads((step_dir / "rollax_sha256.json").read_text())  # reading changes nothing


def test_flipped_bytes_in_the_largest_data_file_name_it(saved):
    directory, largest = saved
    flip_bytes(largest)
    with pytest.raises(ValueError, match=f"{largest.relative_to(directory / '7')}.*checksum"):
        load_checkpoint(directory)


def test_metadata_reads_without_the_arrays(saved):
    directory, largest = saved
    flip_bytes(largest)  # damaged arrays: the state cannot be loaded, its metadata still can
    assert load_metadata(directory) == {"step": 7}
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        load_metadata(directory / "elsewhere")


def test_a_missing_or_extra_file_is_named(saved):
    directory, largest = saved
    extra = largest.parent / "stray"
    extra.write_bytes(b"x")
    with pytest.raises(ValueError, match=f"{extra.relative_to(directory / '7')}.*not in"):
        load_checkpoint(directory)
    extra.unlink()
    largest.unlink()
    with pytest.raises(ValueError, match=f"{largest.relative_to(directory / '7')}.*missing"):
        load_checkpoint(directory)


def test_a_checkpoint_without_a_manifest_loads_with_a_warning(saved):
    directory, _ = saved
    (directory / "7" / "rollax_sha256.json").unlink()  # as written by an older rollax
    with pytest.warns(RuntimeWarning, match=f"{directory / '7'} has no checksum manifest"):
        state, _ = load_checkpoint(directory)
    np.testing.assert_array_equal(state["w"], np.arange(4096.0))


def test_a_relative_directory_loads_into_a_target(tmp_path, monkeypatch):
    """`rollax eval runs/<experiment>` passes a relative path: the shape check before the
    restore read orbax's metadata of a relative path as empty and refused every checkpoint."""
    state = {"w": jnp.arange(6.0).reshape(2, 3), "key": jax.random.key(1)}
    save_checkpoint(tmp_path / "run" / "checkpoints", 5, state)
    monkeypatch.chdir(tmp_path)
    restored, _ = load_checkpoint("run/checkpoints", target=state)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert jax.random.key_data(restored["key"]).tolist() == jax.random.key_data(state["key"]).tolist()
