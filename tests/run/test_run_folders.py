"""Run folders: runs opened in the same second (one after another, or concurrently) get their
own folder, never a shared one."""

import datetime
import threading
import types
from pathlib import Path

import pytest

import rollax.logging.run_dir as run_dir_module
from rollax.logging.writer_lock import LOCK_FILE
from rollax.presets import load_experiment
from rollax.run.context import open_run

ROOT = Path(__file__).resolve().parents[2]
STAMP = "20250101-000000"


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every run opened in this test starts in the same second."""
    frozen = datetime.datetime(2025, 1, 1, 0, 0, 0)
    clock = types.SimpleNamespace(datetime=types.SimpleNamespace(now=lambda: frozen))
    monkeypatch.setattr(run_dir_module, "datetime", clock)


def test_runs_opened_in_the_same_second_get_their_own_folders(frozen_clock, tmp_path):
    experiment = load_experiment(ROOT / "experiments" / "cartpole_ppo.toml",
                                 [f"logging.root='{tmp_path}'"], seeds=2)
    first = open_run(experiment, None, None, None).run_dir
    second = open_run(experiment, None, None, None).run_dir
    third = open_run(experiment, None, None, None).run_dir
    parent = tmp_path / "cartpole_ppo"
    assert [first, second, third] == [parent / STAMP, parent / f"{STAMP}-2", parent / f"{STAMP}-3"]
    for folder in (first, second, third):
        assert sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) == ["seed_0", "seed_1"]


def test_concurrent_runs_never_share_a_folder(frozen_clock, tmp_path):
    experiment = load_experiment(ROOT / "experiments" / "cartpole_ppo.toml",
                                 [f"logging.root='{tmp_path}'"], seeds=1)
    folders, start = [], threading.Barrier(8)

    def open_one():
        start.wait()
        folders.append(open_run(experiment, None, None, None).run_dir)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(folders)) == 8
    assert all(sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE) == ["seed_0"] for folder in folders)
