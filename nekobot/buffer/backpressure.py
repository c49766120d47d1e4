"""Backpressure: ``add_message`` calls held until their online queue has room.

While a platform is online its queue drains at the platform's speed, so an
``add_message`` that finds it full is *held* (its ``Call`` is not answered)
instead of dropping a message: first come, first served, at most
``overflow_wait`` seconds (Trio clock). The actor answers a held call when a
removal made room (:meth:`RoomWaits.admissible`), when its wait ran out
(:meth:`RoomWaits.expired`) or when the platform went offline
(:meth:`RoomWaits.offline`): in the last two cases the overflow strategy decides.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.actor import Call
    from .queue import PlatformQueue
    from .requests import AddMessage
    from .state import BufferState

__all__ = ["RoomWaits", "Waiter", "has_waiters"]


class Waiter:
    """One held ``add_message`` call."""

    __slots__ = ("call", "deadline", "done", "queue")

    def __init__(self, call: Call[AddMessage], queue: PlatformQueue, deadline: float) -> None:
        self.call = call
        self.queue = queue
        self.deadline = deadline
        """Trio clock: then the overflow strategy decides."""
        self.done = False
        """Answered (or its caller gave up)."""

    @property
    def live(self) -> bool:
        return not self.done and not self.call.abandoned


def has_waiters(q: PlatformQueue) -> bool:
    """Whether a call still waits for room in ``q`` (drops the answered and abandoned)."""
    w = q.waiters
    while w and not w[0].live:
        w.popleft().done = True
    return bool(w)


class RoomWaits:
    """Every held call of one buffer, in deadline order.

    Args:
        wait (float): Seconds (Trio clock) a call is held at most.
    """

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._all: collections.deque[Waiter] = collections.deque()

    def hold(self, call: Call[AddMessage], q: PlatformQueue, now: float) -> None:
        """Hold ``call`` until ``q`` has room, at most until ``now + wait``."""
        q.waited_total += 1
        w = Waiter(call, q, now + self.wait)
        q.waiters.append(w)
        self._all.append(w)

    def expired(self, now: float) -> Iterator[Waiter]:
        """The held calls whose wait ran out by ``now`` (each marked answered)."""
        waiting = self._all
        while waiting and waiting[0].deadline <= now:
            w = waiting.popleft()
            if w.live:
                w.done = True
                yield w
            w.done = True

    def admissible(self, state: BufferState) -> Iterator[Waiter]:
        """The held calls of the queues that lost messages, while they fit.

        Check again after each: the caller adds the message before the next.
        """
        rooms = list(state.room)
        state.room.clear()
        for q in rooms:
            while has_waiters(q) and not (q.online and q.size > 0 and state.full(q)):
                w = q.waiters.popleft()
                w.done = True
                yield w

    @staticmethod
    def offline(q: PlatformQueue) -> Iterator[Waiter]:
        """Every call held for ``q`` (its platform went offline)."""
        while q.waiters:
            w = q.waiters.popleft()
            if w.live:
                w.done = True
                yield w

    def next_deadline(self) -> float:
        """Trio clock of the first held call's deadline; ``math.inf`` if none."""
        waiting = self._all
        while waiting and not waiting[0].live:
            waiting.popleft().done = True
        return waiting[0].deadline if waiting else math.inf

    def fail_all(self, error: BaseException) -> None:
        """The buffer stopped: fail every held call (no caller waits out its timeout)."""
        for w in self._all:
            if w.live:
                w.done = True
                w.call.fail(error)
        self._all.clear()
