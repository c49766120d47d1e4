"""Restart intensity: at most ``max_restarts`` restarts within a sliding window (OTP).

Times are seconds on the Trio clock.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RestartIntensity"]


class RestartIntensity:
    """A sliding window of restart times (OTP ``intensity`` / ``period``).

    Args:
        max_restarts (int): Restarts allowed within ``period``.
        period (float): Window length in seconds (Trio clock).

    Raises:
        ValueError: if ``max_restarts < 0`` or ``period <= 0``.
    """

    __slots__ = ("_times", "max_restarts", "period")

    def __init__(self, max_restarts: int, period: float) -> None:
        if max_restarts < 0 or not period > 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        self.max_restarts = max_restarts
        self.period = period
        self._times: deque[float] = deque()

    def note(self, now: float) -> bool:
        """Count one restart at ``now`` (Trio clock seconds).

        Returns:
            bool: False when this restart makes more than ``max_restarts``
            within the last ``period`` seconds (the intensity is exceeded).
        """
        times = self._times
        times.append(now)
        horizon = now - self.period
        while times[0] <= horizon:
            times.popleft()
        return len(times) <= self.max_restarts

    def clear(self) -> None:
        """Forget every counted restart (a person restarted the child)."""
        self._times.clear()

    def __len__(self) -> int:
        """Restarts counted in the window (as of the last :meth:`note`)."""
        return len(self._times)
