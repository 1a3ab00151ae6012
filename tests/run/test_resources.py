"""What a run needs of the machine is checked before the work that would fail on it: each
shortfall is one ValueError naming the need and the setting to change."""

import resource

import pytest

from rollax.presets import load_experiment
from rollax.run import resources, train

TINY = ["budget.total_steps=64", "budget.num_envs=4", "budget.num_steps=16", "logging.plot=false"]


def test_a_model_beyond_the_memory_there_is_fails_before_compiling(tmp_path):
    # 7 matrices of 2**16 x 2**16 float32 weights, with their Adam moments: over 300 GiB
    experiment = load_experiment("cartpole_ppo", [*TINY, f"logging.root='{tmp_path}'",
                                                  "agent.network.hidden_sizes=[65536, 65536, 65536, 65536, 65536, 65536, 65536, 65536]"])
    with pytest.raises(ValueError, match=r"this run needs about \d+\.\d GiB \(training state "
                                         r"\d+\.\d\d GiB\) but \d+\.\d GiB is free on cpu"):
        train(experiment, progress=False)
    assert not any(tmp_path.rglob("seed_0"))  # nothing was written


def test_memory_parts_are_summed_and_named(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 3 * resources.GIB)
    resources.check_memory({"a": resources.GIB, "b": resources.GIB})  # fits
    with pytest.raises(ValueError, match=r"about 4.0 GiB \(a 2.00 GiB, b 2.00 GiB\) but 3.0 GiB"):
        resources.check_memory({"a": 2 * resources.GIB, "b": 2 * resources.GIB})


def test_open_files_for_the_seeds_raise_the_soft_limit_or_are_named(monkeypatch):
    limits = {"soft": 64, "hard": 64}
    set_to = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (limits["soft"], limits["hard"]))
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: set_to.append(value))
    resources.check_open_files(0)
    with pytest.raises(ValueError, match=r"64 seeds keep about 256 files open, but this process "
                                         r"may open 64 \(ulimit -n\)"):
        resources.check_open_files(64)
    limits["hard"] = 4096  # a soft limit below a hard one is raised, not refused
    resources.check_open_files(64)
    assert set_to == [(1024, 4096)]


def test_a_file_size_limit_below_a_checkpoint_is_named(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (2**20, resource.RLIM_INFINITY))
    resources.check_file_size(2**19)
    with pytest.raises(ValueError, match=r"files of about 2.0 MiB .* file-size limit of 1.00 MiB "
                                         r"\(ulimit -f\)"):
        resources.check_file_size(2**21)
