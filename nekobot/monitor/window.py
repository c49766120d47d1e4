"""Sliding windows behind the status monitor's per-platform figures (internal).

A :class:`Window` covers ``span`` seconds of the Trio clock with
:data:`BUCKETS_PER_WINDOW` fixed-width buckets. Each bucket holds exact counts
(messages, errors, errors by type) and the latency sum/min/max of every message
that fell into it, so counts are exact and uncapped; the window's edge moves in
steps of one bucket. Latency percentiles come from a bounded ring of the newest
samples (``history_size``).

A window changes only when a record is added or when its oldest bucket or
sample leaves it; :meth:`Window.next_change` says when the latter happens, so
the monitor wakes for a window only then (an empty window never wakes it).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, NamedTuple

__all__ = ["BUCKETS_PER_WINDOW", "Window", "WindowFigures", "percentile"]

BUCKETS_PER_WINDOW = 120
"""Buckets per window: the edge moves in steps of ``span / 120`` seconds."""


class WindowFigures(NamedTuple):
    """Sums over one window (latencies in milliseconds; ``None`` when empty)."""

    total: int
    errors: int
    breakdown: dict[str, int]
    latency_avg_ms: float | None
    latency_min_ms: float | None
    latency_max_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty sorted list."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


class Window:
    """One platform's sliding window: fixed-width buckets plus latency samples."""

    __slots__ = (
        "buckets",
        "errors_total",
        "last_t",
        "last_wall",
        "messages_total",
        "running",
        "samples",
        "span",
        "width",
    )

    def __init__(self, span: float, history_size: int) -> None:
        self.span = span
        self.width = span / BUCKETS_PER_WINDOW
        # [start, count, errors, latency_sum, latency_min, latency_max, breakdown|None]
        self.buckets: deque[list[Any]] = deque()
        self.samples: deque[tuple[float, float]] = deque(maxlen=history_size)
        self.messages_total = 0
        self.errors_total = 0
        self.last_t: float | None = None
        self.last_wall: float | None = None
        self.running: bool | None = None

    def add(self, t: float, latency_ms: float, ok: bool, error_type: str | None) -> None:
        start = math.floor(t / self.width) * self.width
        buckets = self.buckets
        if buckets and buckets[-1][0] >= start:
            b = buckets[-1]
        else:
            b = [start, 0, 0, 0.0, latency_ms, latency_ms, None]
            buckets.append(b)
        b[1] += 1
        b[3] += latency_ms
        if latency_ms < b[4]:
            b[4] = latency_ms
        if latency_ms > b[5]:
            b[5] = latency_ms
        self.messages_total += 1
        if not ok:
            b[2] += 1
            self.errors_total += 1
            if b[6] is None:
                b[6] = {}
            et = error_type or "error"
            b[6][et] = b[6].get(et, 0) + 1
        self.samples.append((t, latency_ms))
        self.last_t = t

    @property
    def live(self) -> bool:
        """True while the window holds a bucket or a latency sample."""
        return bool(self.buckets) or bool(self.samples)

    def next_change(self) -> float:
        """Trio clock seconds when the oldest bucket or sample leaves (``inf``: empty).

        Uses the same sums as :meth:`prune`, so ``prune(next_change())``
        always removes something (no float rounding can make the monitor wake
        twice for one change).
        """
        t = math.inf
        if self.buckets:
            t = self.buckets[0][0] + self.width + self.span
        if self.samples:
            t = min(t, self.samples[0][0] + self.span)
        return t

    def prune(self, now: float) -> bool:
        """Drop what is older than the window ending at ``now`` (Trio clock).

        Returns:
            bool: True if anything was dropped (the figures changed).
        """
        span = self.span
        width = self.width
        buckets = self.buckets
        samples = self.samples
        before = len(buckets) + len(samples)
        while buckets and buckets[0][0] + width + span <= now:
            buckets.popleft()
        while samples and samples[0][0] + span <= now:
            samples.popleft()
        return len(buckets) + len(samples) != before

    def figures(self) -> WindowFigures:
        """Sum up what the window holds (call :meth:`prune` first to move its edge)."""
        total = errors = 0
        lat_sum = 0.0
        lat_min = math.inf
        lat_max = -math.inf
        breakdown: dict[str, int] = {}
        for b in self.buckets:
            total += b[1]
            errors += b[2]
            lat_sum += b[3]
            lat_min = min(lat_min, b[4])
            lat_max = max(lat_max, b[5])
            if b[6]:
                for et, n in b[6].items():
                    breakdown[et] = breakdown.get(et, 0) + n
        samples = sorted(lat for _, lat in self.samples)
        p50 = p95 = p99 = None
        if samples:
            p50 = percentile(samples, 50)
            p95 = percentile(samples, 95)
            p99 = percentile(samples, 99)
        return WindowFigures(
            total=total,
            errors=errors,
            breakdown=breakdown,
            latency_avg_ms=lat_sum / total if total else None,
            latency_min_ms=lat_min if total else None,
            latency_max_ms=lat_max if total else None,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            latency_p99_ms=p99,
        )
