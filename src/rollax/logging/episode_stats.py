"""Episode statistics for the ``rollout/`` and ``charts/`` tags, computed on the host."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["EpisodeStats"]


TAGS = ("rollout/ep_rew_mean", "rollout/ep_len_mean", "charts/episodic_return",
        "charts/episodic_length")  # what `metrics` reports once there are episodes


class EpisodeStats:
    """Ring buffer of the last ``window`` finished episodes' returns and lengths (SB3's
    ``ep_info_buffer``): ``rollout/ep_rew_mean`` is the mean return over it."""

    def __init__(self, window: int = 100) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self._returns = np.zeros(self.window, dtype=np.float64)
        self._lengths = np.zeros(self.window, dtype=np.float64)
        self._count = 0  # episodes seen in total; the buffer holds min(count, window)
        self._last_returns = np.zeros(0)
        self._last_lengths = np.zeros(0)

    def update(self, returns: ArrayLike, lengths: ArrayLike, dones: ArrayLike) -> int:
        """Add the episodes that finished where ``dones`` is true; ``returns``/``lengths`` hold
        each episode's total at that step (shape ``[T, N]`` time-major, or ``[N]``). Returns
        the number of episodes added."""
        returns, lengths, dones = (np.asarray(a) for a in (returns, lengths, dones))
        for name, array in (("lengths", lengths), ("dones", dones)):
            if array.shape != returns.shape:
                raise ValueError(
                    f"{name} has shape {array.shape}, expected returns' shape {returns.shape}"
                )
        mask = dones.astype(bool).reshape(-1)  # row-major = time-major order, oldest first
        finished_returns = returns.reshape(-1)[mask].astype(np.float64)
        finished_lengths = lengths.reshape(-1)[mask].astype(np.float64)
        self._last_returns, self._last_lengths = finished_returns, finished_lengths
        for episode_return, episode_length in zip(finished_returns, finished_lengths):
            slot = self._count % self.window
            self._returns[slot] = episode_return
            self._lengths[slot] = episode_length
            self._count += 1
        return int(mask.sum())

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable contents, for checkpoint metadata on resume."""
        return {"window": self.window, "count": self._count,
                "returns": self._returns.tolist(), "lengths": self._lengths.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (same ``window``)."""
        if state.get("window", self.window) != self.window:
            raise ValueError(f"state window {state['window']} != this buffer's {self.window}")
        returns, lengths = np.asarray(state["returns"]), np.asarray(state["lengths"])
        if returns.shape != (self.window,) or lengths.shape != (self.window,):
            raise ValueError(
                f"returns/lengths have shapes {returns.shape}/{lengths.shape}, "
                f"expected ({self.window},)"
            )
        self._returns[:], self._lengths[:] = returns, lengths
        self._count = int(state["count"])

    def __len__(self) -> int:
        return min(self._count, self.window)

    @property
    def ep_rew_mean(self) -> float:
        """Mean return over the buffered episodes (NaN before the first finishes)."""
        return float(self._returns[: len(self)].mean()) if len(self) else float("nan")

    @property
    def ep_len_mean(self) -> float:
        """Mean length over the buffered episodes (NaN before the first finishes)."""
        return float(self._lengths[: len(self)].mean()) if len(self) else float("nan")

    def metrics(self) -> dict[str, float]:
        """Tag -> value for the logger: ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, and
        ``charts/episodic_return``/``_length`` averaged over the episodes of the last update.
        Tags without any episode behind them are left out rather than logged as NaN."""
        out: dict[str, float] = {}
        if len(self):
            out["rollout/ep_rew_mean"] = self.ep_rew_mean
            out["rollout/ep_len_mean"] = self.ep_len_mean
        if self._last_returns.size:
            out["charts/episodic_return"] = float(self._last_returns.mean())
            out["charts/episodic_length"] = float(self._last_lengths.mean())
        return out
