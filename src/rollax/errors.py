"""The failures a run reports on one line (the command line exits 1 with the message): bad
input is a `ValueError` (exit 2) instead."""

from __future__ import annotations


class RunFailed(RuntimeError):
    """A run that could not start or go on, for the reason the message names (a diverged
    update, a run folder another process writes, an unreachable coordinator); what it had
    written is kept."""
