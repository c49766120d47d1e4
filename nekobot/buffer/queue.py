"""One platform's queue: buffered items, replay order, the overflow victim.

A :class:`PlatformQueue` keeps one deque per priority ("lane"), each in
arrival (``seq``) order, with lazy deletion: a removed item is marked dead
and dropped when it reaches a lane's end (or when dead items outnumber live
ones). The replay order of :class:`BufferPolicy` and the victim of
:class:`OverflowStrategy` are read off the lanes' ends, so both cost
O(lanes), not O(queue). Only the buffer actor's loop touches a queue.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio

from .replay import Pacer

if TYPE_CHECKING:
    from ..messages import OutboundMessage
    from .backpressure import Waiter

__all__ = [
    "DROP_REASONS",
    "OVERFLOW_REASONS",
    "BufferPolicy",
    "Item",
    "OverflowStrategy",
    "PlatformQueue",
]


class BufferPolicy(enum.Enum):
    """Replay order of a platform's queue."""

    FIFO = "fifo"
    """Oldest first."""
    LIFO = "lifo"
    """Newest first."""
    PRIORITY = "priority"
    """Highest :class:`~nekobot.messages.MessagePriority` first, FIFO within one priority."""


class OverflowStrategy(enum.Enum):
    """Which one message an overflow drops (see ``nekobot.buffer.message_buffer``)."""

    DROP_OLDEST = "drop_oldest"
    """The oldest buffered message."""
    DROP_NEWEST = "drop_newest"
    """The incoming message."""
    DROP_LOW_PRIORITY = "drop_low_priority"
    """The oldest message of the lowest priority (the incoming one included)."""


DROP_REASONS = (
    "drop_oldest",
    "drop_newest",
    "drop_low_priority",
    "global_full",
    "send_failed",
    "corrupt",
)
"""Reasons a message is dropped, as counted in ``BufferStats.dropped``:
the three overflow strategies (a per-platform or global overflow resolved in the
platform's own queue), ``global_full`` (global cap reached and the platform had
nothing to evict: the incoming message was dropped), ``send_failed``
(``max_send_attempts`` refused replay sends), ``corrupt`` (a stored row that could
not be decoded at load)."""

OVERFLOW_REASONS = ("drop_oldest", "drop_newest", "drop_low_priority", "global_full")
"""The drop reasons that mean "the queue (or the global cap) was full"."""


class Item:
    """One buffered message and its bookkeeping."""

    __slots__ = (
        "added_at",
        "alive",
        "attempts",
        "content_json",
        "expires_at",
        "expires_wall",
        "msg",
        "priority",
        "refusals",
        "seq",
    )

    def __init__(
        self,
        seq: int,
        msg: OutboundMessage,
        content_json: str,
        added_at: float,
        expires_at: float,
        expires_wall: float | None,
    ) -> None:
        self.seq = seq
        """Arrival number, unique in the buffer (and the row's key in the store)."""
        self.msg = msg
        self.content_json = content_json
        """``msg.content`` as stored (JSON text)."""
        self.priority = int(msg.priority)
        self.added_at = added_at
        """Trio clock."""
        self.expires_at = expires_at
        """Trio clock; ``math.inf`` = never."""
        self.expires_wall = expires_wall
        """Wall clock (``time.time()``); ``None`` = never."""
        self.alive = True
        self.attempts = 0
        """Failed sends of any kind."""
        self.refusals = 0
        """Failed sends that were not link failures (they count to ``max_send_attempts``)."""


class PlatformQueue:
    """One platform's queue (or one account's: ``"qq@10001"``) and its counters."""

    def __init__(self, name: str, max_size: int, replay_rate: float) -> None:
        self.name = name
        self.max_size = max_size
        self.lanes: dict[int, collections.deque[Item]] = {}
        """Priority -> its items in seq order; ascending priority."""
        self.size = 0
        self._dead = 0
        self.online = False
        self.replaying = False
        """A replay task owns this queue's head (background or explicit)."""
        self.inflight: Item | None = None
        """The item being sent now: never an overflow victim, never expired mid-send."""
        self.failures = 0
        """Consecutive failed sends; the retry backoff's attempt number + 1."""
        self.link_wake = trio.Event()
        """Set (and replaced) whenever the link is marked up or down: a replay
        waiting out a retry backoff stops waiting."""
        self.rate_wake: trio.Event | None = None
        """Given to a replay waiting for the next backlog slot; set when the
        link changes or a live message becomes the head."""
        self.pacer = Pacer(replay_rate)
        self.backlog_seq = 0
        """Items with ``seq <= backlog_seq`` are the backlog: they were queued
        when the platform last came online, and only they are rate-limited."""
        self.waiters: collections.deque[Waiter] = collections.deque()
        """``add_message`` calls waiting for room, first come first served."""
        self.buffered_total = 0
        self.restored_total = 0
        self.replayed_total = 0
        self.expired_total = 0
        self.waited_total = 0
        self.dropped: dict[str, int] = {}

    # ---- membership ------------------------------------------------------

    def push(self, item: Item) -> None:
        lane = self.lanes.get(item.priority)
        if lane is None:
            lane = self.lanes[item.priority] = collections.deque()
            self.lanes = dict(sorted(self.lanes.items()))
        lane.append(item)
        self.size += 1

    def remove(self, item: Item) -> None:
        item.alive = False
        self.size -= 1
        self._dead += 1
        lane = self.lanes[item.priority]
        while lane and not lane[0].alive:
            lane.popleft()
            self._dead -= 1
        while lane and not lane[-1].alive:
            lane.pop()
            self._dead -= 1
        if self._dead > 64 and self._dead > self.size:
            for p, ln in self.lanes.items():
                self.lanes[p] = collections.deque(i for i in ln if i.alive)
            self._dead = 0

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def overflow_dropped(self) -> int:
        """Messages dropped because the queue (or the global cap) was full."""
        return sum(self.dropped.get(r, 0) for r in OVERFLOW_REASONS)

    # ---- order -----------------------------------------------------------

    @staticmethod
    def _first(lane: collections.deque[Item], exclude: Item | None) -> Item | None:
        for it in lane:
            if it.alive and it is not exclude:
                return it
        return None

    @staticmethod
    def _last(lane: collections.deque[Item], exclude: Item | None) -> Item | None:
        for it in reversed(lane):
            if it.alive and it is not exclude:
                return it
        return None

    def oldest(self, exclude: Item | None = None) -> Item | None:
        best: Item | None = None
        for lane in self.lanes.values():
            it = self._first(lane, exclude)
            if it is not None and (best is None or it.seq < best.seq):
                best = it
        return best

    def newest(self, exclude: Item | None = None) -> Item | None:
        best: Item | None = None
        for lane in self.lanes.values():
            it = self._last(lane, exclude)
            if it is not None and (best is None or it.seq > best.seq):
                best = it
        return best

    def lowest_oldest(self, exclude: Item | None = None) -> Item | None:
        for lane in self.lanes.values():  # ascending priority
            it = self._first(lane, exclude)
            if it is not None:
                return it
        return None

    def highest_oldest(self) -> Item | None:
        for lane in reversed(self.lanes.values()):
            it = self._first(lane, None)
            if it is not None:
                return it
        return None

    def head(self, policy: BufferPolicy) -> Item | None:
        """The item the policy replays next."""
        if policy is BufferPolicy.FIFO:
            return self.oldest()
        if policy is BufferPolicy.LIFO:
            return self.newest()
        return self.highest_oldest()

    def in_order(self, policy: BufferPolicy) -> Iterator[Item]:
        """All live items in replay order."""
        items = [i for lane in self.lanes.values() for i in lane if i.alive]
        if policy is BufferPolicy.FIFO:
            items.sort(key=lambda i: i.seq)
        elif policy is BufferPolicy.LIFO:
            items.sort(key=lambda i: -i.seq)
        else:
            items.sort(key=lambda i: (-i.priority, i.seq))
        return iter(items)

    def victim(self, strategy: OverflowStrategy, incoming: Item) -> Item:
        """The one message an overflow drops: one of this queue's, or ``incoming``.

        The item in flight is never a candidate.
        """
        pinned = self.inflight
        if strategy is OverflowStrategy.DROP_NEWEST:
            return incoming
        if strategy is OverflowStrategy.DROP_OLDEST:
            return self.oldest(pinned) or incoming
        low = self.lowest_oldest(pinned)
        if low is None or incoming.priority < low.priority:
            return incoming
        return low

    # ---- replay ----------------------------------------------------------

    def mark_link(self, online: bool, next_seq: int) -> None:
        """The link was marked up or down; wakes a replay that waits for it.

        Coming online makes what is queued now the backlog (rate-limited);
        whatever is added from now on is live traffic (not throttled).
        """
        if online and not self.online:
            self.backlog_seq = next_seq - 1
            self.pacer.reset()
        self.online = online
        self.failures = 0
        self.link_wake.set()
        self.link_wake = trio.Event()
        self.wake_rate_wait()

    def wake_rate_wait(self) -> None:
        if self.rate_wake is not None:
            self.rate_wake.set()
            self.rate_wake = None

    def oldest_added_at(self) -> float | None:
        o = self.oldest()
        return None if o is None else o.added_at
