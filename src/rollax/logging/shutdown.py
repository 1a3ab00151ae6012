"""Turn SIGINT/SIGTERM into a flag the training loop checks between jitted chunks.

A signal arriving in the middle of a jitted chunk cannot stop XLA anyway; what matters is that
the loop notices it at the next chunk boundary, flushes logs, writes a final checkpoint, and
exits non-zero (``128 + signal``, the shell convention) instead of dying mid-write::

    with graceful_shutdown() as shutdown:
        for chunk in range(num_chunks):
            metrics = run_chunk()
            logger.log_scalars(metrics, step)
            if shutdown.requested:
                save_checkpoint(...); logger.close()
                break
    # leaving the block after a signal raises SystemExit(128 + signum)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Iterator
from types import FrameType

__all__ = ["ShutdownRequested", "ShutdownSignal", "graceful_shutdown"]


class ShutdownRequested(Exception):
    """Raised by ``ShutdownSignal.check()``; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}; stopping at a chunk boundary")
        self.signum = signum


class ShutdownSignal:
    """The flag set by the handlers: ``requested``, ``signum`` and ``exit_code``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """``128 + signum`` after a signal, else 0."""
        return 0 if self.signum is None else 128 + self.signum

    def check(self) -> None:
        """Raise ``ShutdownRequested`` if a signal arrived (for loops that prefer exceptions)."""
        if self.signum is not None:
            raise ShutdownRequested(self.signum)


@contextlib.contextmanager
def graceful_shutdown(
    signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM),
    exit_on_signal: bool = True,
) -> Iterator[ShutdownSignal]:
    """Install handlers that set the yielded flag on the first signal; a second signal raises
    ``KeyboardInterrupt`` at once. On leaving after a signal (or with ``ShutdownRequested``
    propagating) raise ``SystemExit(128 + signum)`` when ``exit_on_signal``; handlers are
    restored either way. Outside the main thread no handler can be installed: warns."""
    flag = ShutdownSignal()
    if threading.current_thread() is not threading.main_thread():
        warnings.warn("graceful_shutdown only works in the main thread", RuntimeWarning,
                      stacklevel=3)
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        flag.signum = signum

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield flag
    except ShutdownRequested as err:
        flag.signum = flag.signum or err.signum
        if not exit_on_signal:
            raise
    finally:
        for sig, old_handler in previous.items():
            signal.signal(sig, old_handler)
    if exit_on_signal and flag.requested:
        raise SystemExit(flag.exit_code)
