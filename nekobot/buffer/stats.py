"""What the buffer shows: listed messages, per-queue and total counters, snapshots.

The actor publishes a :class:`BufferSnapshot` after every batch. It holds one
frozen :class:`QueueSnapshot` per queue; a batch rebuilds only the entries of
the queues it touched, so a queue going online costs O(1), not O(queues).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs

from ..messages import OutboundMessage

if TYPE_CHECKING:
    from .queue import BufferPolicy, OverflowStrategy, PlatformQueue

__all__ = [
    "BufferSnapshot",
    "BufferStats",
    "BufferedMessage",
    "PlatformBufferStats",
    "QueueSnapshot",
    "Snapshots",
    "buffer_stats",
    "queue_snapshot",
]


@attrs.frozen(kw_only=True)
class BufferedMessage:
    """One buffered message as ``MessageBuffer.get_messages`` lists it."""

    message: OutboundMessage
    """The message as it will be replayed."""
    age: float
    """Seconds (Trio clock) since it was buffered (restored ones count from
    their wall-clock ``created_at``)."""
    expires_in: float
    """Seconds (Trio clock) until it expires; ``math.inf`` never."""
    attempts: int
    """Failed replay sends so far."""


@attrs.frozen(kw_only=True)
class PlatformBufferStats:
    """Counters and size of one platform's queue."""

    platform_id: str
    size: int
    """Messages queued now (the one in flight included)."""
    max_size: int
    """This queue's bound."""
    online: bool
    """The platform is marked online (its link is up)."""
    replaying: bool
    """A replay to it is running (or waiting to retry)."""
    buffered_total: int
    """Messages accepted by ``add_message`` since start (drops included)."""
    restored_total: int
    """Messages loaded from the database at start."""
    replayed_total: int
    """Messages the platform acknowledged during replay."""
    expired_total: int
    """Messages removed because their TTL ran out (never sent)."""
    dropped: Mapping[str, int]
    """Dropped messages by reason (``DROP_REASONS``)."""
    waited_total: int = 0
    """``add_message`` calls that found the queue of the online platform full
    and waited for room (backpressure) instead of dropping."""
    oldest_age: float | None
    """Seconds (Trio clock) the oldest queued message has waited; ``None`` if empty."""


@attrs.frozen(kw_only=True)
class BufferStats:
    """What ``MessageBuffer.get_buffer_stats`` returns (a consistent snapshot).

    Invariant per platform and in total: ``buffered_total + restored_total ==
    size + replayed_total + expired_total + sum(dropped.values())``.
    """

    size: int
    """Messages queued over all platforms."""
    global_max_size: int
    policy: BufferPolicy
    overflow_strategy: OverflowStrategy
    durable: bool
    """The queues are kept in SQLite."""
    buffered_total: int
    restored_total: int
    replayed_total: int
    expired_total: int
    dropped: Mapping[str, int]
    """Dropped messages by reason, all platforms."""
    global_cap_hits: int
    """``add_message`` calls that found the global cap reached while their
    platform was below its own bound (the global cap forced the drop)."""
    oldest_age: float | None
    """Seconds (Trio clock) the oldest queued message of any platform has waited."""
    platforms: Mapping[str, PlatformBufferStats]


@attrs.frozen
class QueueSnapshot:
    """One queue as of the end of the batch that last changed it."""

    stats: PlatformBufferStats
    """With ``oldest_age=None``: the age is computed when it is read."""
    oldest_added_at: float | None
    """Trio clock time the oldest queued message was buffered; ``None`` if empty."""


@attrs.frozen
class BufferSnapshot:
    """What the actor publishes after each batch; the sync getters read it."""

    queues: Mapping[str, QueueSnapshot]
    """Every queue by name (read-only; never changed after it was handed out)."""
    size: int
    """Messages queued over all queues."""
    global_cap_hits: int


def queue_snapshot(q: PlatformQueue) -> QueueSnapshot:
    """Freeze the current state of ``q`` (O(1) in the number of queues)."""
    return QueueSnapshot(
        PlatformBufferStats(
            platform_id=q.name,
            size=q.size,
            max_size=q.max_size,
            online=q.online,
            replaying=q.replaying,
            buffered_total=q.buffered_total,
            restored_total=q.restored_total,
            replayed_total=q.replayed_total,
            expired_total=q.expired_total,
            dropped=dict(q.dropped),
            waited_total=q.waited_total,
            oldest_age=None,
        ),
        q.oldest_added_at(),
    )


class Snapshots:
    """The per-queue snapshots, copied on write once a reader holds the mapping.

    :meth:`renew` replaces the entries of the queues a batch changed: O(changed
    queues). The mapping a :class:`BufferSnapshot` hands out is never changed
    afterwards: once :meth:`share` was called, the next renewal copies it first.
    """

    __slots__ = ("_by_name", "_shared")

    def __init__(self) -> None:
        self._by_name: dict[str, QueueSnapshot] = {}
        self._shared = False

    def get(self, name: str) -> QueueSnapshot | None:
        """The current snapshot of queue ``name`` (no copy, no sharing)."""
        return self._by_name.get(name)

    def share(self) -> None:
        """A reader now holds the mapping."""
        self._shared = True

    def renew(self, queues: Iterable[PlatformQueue], size: int, cap_hits: int) -> BufferSnapshot:
        """Snapshot ``queues`` (the changed ones) and return the buffer's snapshot."""
        for q in queues:
            if self._shared:
                self._by_name = dict(self._by_name)
                self._shared = False
            self._by_name[q.name] = queue_snapshot(q)
        return BufferSnapshot(MappingProxyType(self._by_name), size, cap_hits)


def buffer_stats(
    snap: BufferSnapshot,
    now: float,
    *,
    global_max_size: int,
    policy: BufferPolicy,
    overflow_strategy: OverflowStrategy,
    durable: bool,
) -> BufferStats:
    """Totals over ``snap``'s queues, ages computed at ``now`` (Trio clock)."""
    platforms: dict[str, PlatformBufferStats] = {}
    dropped: dict[str, int] = {}
    totals = [0, 0, 0, 0]
    oldest: float | None = None
    for name, qs in snap.queues.items():
        st = qs.stats
        if qs.oldest_added_at is not None:
            age = now - qs.oldest_added_at
            st = attrs.evolve(st, oldest_age=age)
            oldest = age if oldest is None or age > oldest else oldest
        platforms[name] = st
        for reason, n in st.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        totals[0] += st.buffered_total
        totals[1] += st.restored_total
        totals[2] += st.replayed_total
        totals[3] += st.expired_total
    return BufferStats(
        size=snap.size,
        global_max_size=global_max_size,
        policy=policy,
        overflow_strategy=overflow_strategy,
        durable=durable,
        buffered_total=totals[0],
        restored_total=totals[1],
        replayed_total=totals[2],
        expired_total=totals[3],
        dropped=dropped,
        global_cap_hits=snap.global_cap_hits,
        oldest_age=oldest,
        platforms=platforms,
    )
