"""One cache convention: `$ROLLAX_CACHE_DIR` is the root; `jax/` compiled programs, `models/`
pretrained weights."""

from pathlib import Path

import jax
import pytest

from rollax import cache


def test_root_and_folders_follow_rollax_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLAX_CACHE_DIR", str(tmp_path / "root"))
    assert cache.cache_root() == tmp_path / "root"
    assert cache.models_dir() == tmp_path / "root" / "models"
    assert cache.compiled_dir() == tmp_path / "root" / "jax"
    from rollax.generative import pretrained

    assert pretrained.cache_dir() == cache.models_dir()
    assert pretrained.cache_path("classifier").parent == tmp_path / "root" / "models"


def test_default_root_is_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("ROLLAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "rollax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.cache_root() == Path.home() / ".cache" / "rollax"
    assert cache.models_dir() == Path.home() / ".cache" / "rollax" / "models"


@pytest.mark.parametrize("opt_out", [False, True])
def test_compilation_cache_goes_to_root_jax_unless_opted_out(tmp_path, monkeypatch, opt_out):
    updates = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: updates.__setitem__(name, value))
    monkeypatch.setenv("ROLLAX_CACHE_DIR", str(tmp_path))
    if opt_out:
        monkeypatch.setenv("ROLLAX_COMPILATION_CACHE", "0")
    else:
        monkeypatch.delenv("ROLLAX_COMPILATION_CACHE", raising=False)
    cache.enable_compilation_cache()
    if opt_out:
        assert updates == {}
    else:
        assert updates == {"jax_compilation_cache_dir": str(tmp_path / "jax"),
                           "jax_persistent_cache_min_compile_time_secs": 0.2,
                           "jax_persistent_cache_min_entry_size_bytes": 0}


TRAIN_ONCE = """
import sys, time
from pathlib import Path
from flax import nnx
from rollax.generative.pretrained import cached_or_trained

path, log = Path(sys.argv[1]), Path(sys.argv[2])
build = lambda: nnx.Linear(2, 3, rngs=nnx.Rngs(0))
def train():
    with open(log, "a") as file:
        file.write("trained\\n")
    time.sleep(3.0)  # long enough for the other process to ask while this one trains
    return build(), {}
print(cached_or_trained(path, build, train, "a toy model")[1]["source"])
"""


def test_runs_started_together_train_a_missing_model_once(tmp_path):
    """The second process waits on the cache's lock, then reads what the first trained."""
    import os
    import subprocess
    import sys

    args = [sys.executable, "-c", TRAIN_ONCE, str(tmp_path / "toy.npz"), str(tmp_path / "log")]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    children = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert sorted(out.strip() for out, _ in outputs) == ["cache", "trained"]
    assert (tmp_path / "log").read_text() == "trained\n"
