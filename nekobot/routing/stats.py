"""What the router shows: :class:`RouterStats`, :class:`DeadLetter`, the snapshot.

The router publishes a :class:`RouterSnapshot` (an immutable named tuple, cheap
enough to renew after every change on the hot path); ``get_stats()`` turns the
last one into the public :class:`RouterStats` without touching the router.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

import attrs

from ..messages import Message, MessagePriority

__all__ = ["DeadLetter", "RouterSnapshot", "RouterStats", "percentiles_ms", "stats_from"]


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message whose handlers still failed after ``max_retries`` retries."""

    message: Message
    """The message as routed."""
    handlers: tuple[str, ...]
    """Names of the handlers that failed on the last attempt."""
    error_type: str
    """Class name of the last exception (``"SystemExit"``, ``"ExceptionGroup"`` …)."""
    error: str
    """``repr`` of the last exception."""
    attempts: int
    """Attempts made (``1 + max_retries``)."""
    at: float
    """Trio clock seconds when it was dead-lettered."""


@attrs.frozen(kw_only=True)
class RouterStats:
    """A snapshot of the router's counters (``GET /api/message/router/stats``)."""

    running: bool
    """The workers are running."""
    received: int
    """Calls of ``route``/``route_message`` that got past backpressure."""
    processed: int
    """Messages whose handlers all succeeded (including after retries, and
    messages no handler was registered for)."""
    unhandled: int
    """Of ``processed``: messages no handler was registered for."""
    failed: int
    """Handler calls that raised (any ``BaseException`` but cancellation)."""
    retried: int
    """Retries scheduled."""
    dropped: int
    """Messages dropped by the ``drop_lowest`` overflow (incoming or queued)."""
    deduplicated: int
    """Copies dropped because their key was pending or seen in the window."""
    dead_lettered: int
    """Messages that went to the dead-letter ring (counted even when the ring
    forgot them since)."""
    queued: int
    """Messages waiting in the queue now."""
    queue_size: dict[str, int]
    """Messages waiting now, by priority name (``"CRITICAL"`` … ``"LOW"``)."""
    retry_waiting: int
    """Messages waiting for their retry time."""
    in_flight: int
    """Messages whose handlers are running now."""
    handlers: dict[str, int]
    """Registered handlers by message type (``"*"`` included)."""
    queue_wait_p50_ms: float | None
    """Median wait (milliseconds) from acceptance to a worker taking the message,
    over the last 4096 messages; ``None`` before the first. Renewed when a
    worker goes idle and after every 4096 messages of a busy stretch."""
    queue_wait_p99_ms: float | None
    """99th percentile of the same."""
    dedup_entries: int
    """Keys remembered as seen now."""
    dead_letters: tuple[DeadLetter, ...]
    """The dead-letter ring, oldest first (at most ``dead_letter_size``)."""


class RouterSnapshot(NamedTuple):
    """The router's published state (immutable; every field is a value or a tuple)."""

    running: bool
    received: int
    processed: int
    unhandled: int
    failed: int
    retried: int
    dropped: int
    deduplicated: int
    dead_lettered: int
    queue_sizes: tuple[int, int, int, int]
    """Queued messages by priority value 1..4 (LOW first)."""
    retry_waiting: int
    in_flight: int
    dedup_entries: int
    handlers: tuple[tuple[str, int], ...]
    """``(message_type, count)``, sorted by type."""
    wait_p50_ms: float | None
    wait_p99_ms: float | None
    dead_letters: tuple[DeadLetter, ...]


def stats_from(s: RouterSnapshot) -> RouterStats:
    """The public :class:`RouterStats` view of a published snapshot (pure)."""
    sizes = s.queue_sizes
    return RouterStats(
        running=s.running,
        received=s.received,
        processed=s.processed,
        unhandled=s.unhandled,
        failed=s.failed,
        retried=s.retried,
        dropped=s.dropped,
        deduplicated=s.deduplicated,
        dead_lettered=s.dead_lettered,
        queued=sum(sizes),
        queue_size={p.name: sizes[p - 1] for p in reversed(MessagePriority)},
        retry_waiting=s.retry_waiting,
        in_flight=s.in_flight,
        handlers=dict(s.handlers),
        queue_wait_p50_ms=s.wait_p50_ms,
        queue_wait_p99_ms=s.wait_p99_ms,
        dedup_entries=s.dedup_entries,
        dead_letters=s.dead_letters,
    )


def percentiles_ms(waits: Iterable[float]) -> tuple[float | None, float | None]:
    """Nearest-rank p50 and p99 of ``waits`` (seconds) in milliseconds; ``None`` if empty."""
    values = sorted(waits)
    if not values:
        return None, None

    def rank(p: float) -> float:
        r = max(1, -(-len(values) * p // 100))
        return values[int(r) - 1] * 1000.0

    return rank(50), rank(99)


class QueueWaits:
    """How long messages waited in the queue: the newest ``size`` samples
    (seconds, Trio clock) and their p50 / p99 in milliseconds.

    The percentiles are renewed lazily (sorting is the cost): by
    :meth:`add` once ``size`` new samples arrived, by :meth:`renew_if_due`
    (the router going idle) once 1/8 of the window is new, or by
    :meth:`renew` (a ``stats()`` request).
    """

    __slots__ = ("_new", "_samples", "_size", "p50", "p99")

    def __init__(self, size: int) -> None:
        self._size = size
        self._samples: deque[float] = deque(maxlen=size)
        self._new = 0
        self.p50: float | None = None
        """Milliseconds, as of the last renewal; ``None`` before any sample."""
        self.p99: float | None = None
        """Milliseconds, as of the last renewal; ``None`` before any sample."""

    def add(self, wait: float) -> None:
        """One message's wait in seconds."""
        self._samples.append(wait)
        self._new += 1
        if self._new >= self._size:
            self.renew()

    def renew_if_due(self) -> None:
        """Renew when at least 1/8 of the window is new (amortized)."""
        if self._new * 8 >= len(self._samples) > 0:
            self.renew()

    def renew(self) -> None:
        """Recompute p50 and p99 from the samples now."""
        self._new = 0
        self.p50, self.p99 = percentiles_ms(self._samples)


class DeadLetterRing:
    """The last ``size`` dead letters, oldest first; :attr:`view` is a tuple
    renewed on each :meth:`add` (the snapshot shares it)."""

    __slots__ = ("_ring", "view")

    def __init__(self, size: int) -> None:
        self._ring: deque[DeadLetter] = deque(maxlen=size)
        self.view: tuple[DeadLetter, ...] = ()

    def add(self, letter: DeadLetter) -> None:
        """Keep ``letter``, forgetting the oldest when full."""
        self._ring.append(letter)
        self.view = tuple(self._ring)
