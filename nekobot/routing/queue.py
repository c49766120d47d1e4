"""The router's queue: one FIFO per priority (strict priority), and the retry heap.

A worker always takes the oldest message of the highest non-empty priority
(CRITICAL > HIGH > NORMAL > LOW; FIFO within one priority); there is no aging.
A message waiting for a retry sits in :class:`RetryHeap` until its time
(Trio clock), then rejoins the back of its priority's queue.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable

import trio

from ..messages import Message
from .handlers import HandlerEntry

__all__ = ["Entry", "PriorityQueue", "RetryHeap"]

_PRIORITIES = (4, 3, 2, 1)


class Entry:
    """One accepted message on its way through the router."""

    __slots__ = ("attempts", "enqueued_at", "key", "message", "remaining")

    def __init__(self, message: Message, key: Hashable | None, now: float) -> None:
        self.message = message
        self.key = key
        """Its dedup key ``(platform_id, dedup_key)``, or ``None``."""
        self.enqueued_at = now
        """Trio clock seconds when it was accepted."""
        self.attempts = 0
        """Attempts that failed so far."""
        self.remaining: tuple[HandlerEntry, ...] | None = None
        """Handlers to retry (those that failed on the last attempt)."""


class PriorityQueue:
    """Four FIFOs indexed by priority value (index 0 unused)."""

    __slots__ = ("_queues", "fifos", "size")

    def __init__(self) -> None:
        self._queues: list[deque[Entry]] = [deque() for _ in range(5)]
        self.fifos: tuple[deque[Entry], ...] = tuple(self._queues)
        """The FIFOs by priority value (read-only for the owner's snapshot)."""
        self.size = 0
        """Messages queued now (all priorities)."""

    def push(self, entry: Entry) -> None:
        """Append ``entry`` at the back of its priority's FIFO."""
        self._queues[entry.message.priority].append(entry)
        self.size += 1

    def pop(self) -> Entry | None:
        """The oldest entry of the highest non-empty priority, or ``None``."""
        if not self.size:
            return None
        queues = self._queues
        for p in _PRIORITIES:
            q = queues[p]
            if q:
                self.size -= 1
                return q.popleft()
        raise AssertionError("queued count out of step")  # pragma: no cover

    def pop_lowest(self, at_most: int) -> Entry | None:
        """Remove the oldest entry of the lowest non-empty priority if that
        priority is not above ``at_most``; else ``None``."""
        for p in (1, 2, 3, 4):
            q = self._queues[p]
            if q:
                if p > at_most:
                    return None
                self.size -= 1
                return q.popleft()
        return None

    def sizes(self) -> tuple[int, int, int, int]:
        """Queued entries by priority value 1..4 (LOW first)."""
        q = self._queues
        return (len(q[1]), len(q[2]), len(q[3]), len(q[4]))


class RetryHeap:
    """Entries waiting for their retry time (Trio clock), earliest first."""

    __slots__ = ("_heap", "_seq", "heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Entry]] = []
        self.heap = self._heap
        """``(due, seq, entry)`` in heap order (read-only for the owner's snapshot)."""
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, entry: Entry) -> None:
        """Hold ``entry`` until ``due`` (Trio clock seconds)."""
        heapq.heappush(self._heap, (due, next(self._seq), entry))

    def next_due(self) -> float | None:
        """The earliest due time, or ``None`` when empty."""
        return self._heap[0][0] if self._heap else None

    async def run(
        self, lot: trio.lowlevel.ParkingLot, release: Callable[[list[Entry]], None]
    ) -> None:
        """The retry timer: hand the entries that came due to ``release``, in due
        order (Trio clock); park on ``lot`` until the next is due or until
        :meth:`push` is followed by ``lot.unpark_all()``. Runs until cancelled."""
        while True:
            due = self.next_due()
            if due is None:
                await lot.park()
                continue
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await lot.park()
                continue
            release(self.pop_due(trio.current_time()))
            await trio.lowlevel.checkpoint()

    def pop_due(self, now: float) -> list[Entry]:
        """Remove and return the entries due at or before ``now``, in due order."""
        heap = self._heap
        out: list[Entry] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out
