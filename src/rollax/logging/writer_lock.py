"""One writer per run folder: an exclusive `flock` on `<folder>/.writer.lock`, held by a
training run, a resume and a sweep for as long as they write. The kernel drops the lock when
its process ends, however it ends (a kill -9 leaves no stale lock); the file keeps the last
holder's pid, for the message a second writer gets. Readers (`eval`, `plot`, `load_agent`)
take no lock."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Self

from rollax.errors import RunFailed

LOCK_FILE = ".writer.lock"
_held: dict[Path, list] = {}  # folder -> [file descriptor, holds]: this process re-enters
_guard = threading.Lock()


class RunFolderBusy(RunFailed):
    """Another process writes the run folder."""


class WriterLock:
    """This process's hold on a run folder; `release` once per `hold_writer_lock`."""

    def __init__(self, folder: Path):
        self.folder = folder

    def release(self) -> None:
        with _guard:
            entry = _held.get(self.folder)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.folder]
                os.close(entry[0])  # releases the flock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_) -> None:
        self.release()


def hold_writer_lock(folder: str | Path) -> WriterLock:
    """Hold `folder`'s writer lock (again, if this process holds it already). `RunFolderBusy`
    naming the other writer's pid when another process holds it; `PermissionError` naming the
    folder when the lock file cannot be made (a read-only folder)."""
    folder = Path(folder).resolve()
    with _guard:
        if folder in _held:
            _held[folder][1] += 1
            return WriterLock(folder)
        try:
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise PermissionError(f"cannot write to the run folder {folder}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"{folder} is being written by another rollax process (pid "
                                f"{holder}); wait for it to end, or start a new run") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[folder] = [fd, 1]
    return WriterLock(folder)
