"""The one backoff: exponential delays with jitter, capped (Akka ``BackoffSupervisor``).

Used for platform restarts (supervisor), reconnects (connection manager),
buffer replay retries and router handler retries. Seconds throughout.
"""

from __future__ import annotations

import math
import random

import attrs

__all__ = ["Backoff"]


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential restart delay with jitter, capped (Akka ``BackoffSupervisor``).

    Delay of the n-th consecutive restart (n = 0, 1, ...):
    ``min(minimum * factor**n * uniform(1 - jitter, 1 + jitter), maximum)`` —
    jitter is applied before the cap, so no delay ever exceeds ``maximum``.
    """

    minimum: float = 0.5
    """Seconds before the first restart."""
    maximum: float = 30.0
    """Cap in seconds."""
    factor: float = 2.0
    """Growth per consecutive restart."""
    jitter: float = 0.1
    """Relative jitter in [0, 1]."""
    reset_after: float = 30.0
    """Seconds a child must run without failing before ``n`` resets to 0."""

    def base(self, attempt: int) -> float:
        """The un-jittered, uncapped delay of restart number ``attempt`` (seconds)."""
        if self.minimum <= 0:
            return 0.0
        try:
            return self.minimum * self.factor**attempt
        except OverflowError:
            return math.inf

    def bounds(self, attempt: int) -> tuple[float, float]:
        """Smallest and largest delay restart number ``attempt`` can get (seconds)."""
        b = self.base(attempt)
        return min(b * (1 - self.jitter), self.maximum), min(b * (1 + self.jitter), self.maximum)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay of restart number ``attempt`` in seconds (jittered, capped)."""
        b = self.base(attempt)
        if self.jitter and 0 < b < math.inf:
            b *= (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return min(b, self.maximum)
