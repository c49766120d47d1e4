"""An actor's alarm clock: one task that wakes the actor at its next deadline.

An actor's loop only waits for messages, so anything due at a time (a TTL, a
coalesced publish, a window edge) needs a message then: after each batch the
actor sets :meth:`Timer.at` to its next deadline (``math.inf`` when nothing will
change by itself, so an idle actor never wakes), and the timer task sends the
actor's tick request at that time, waiting for it to be handled so it never
sends a second one for the same deadline. Used by the buffer and the monitor.
"""

from __future__ import annotations

import math
from typing import Generic, TypeVar

import trio

from .actor import ActorRef
from .errors import ActorStopped

__all__ = ["Timer"]

M = TypeVar("M")


class Timer(Generic[M]):
    """Sends ``tick`` to an actor at the deadline it was last given.

    Args:
        tick: The request the actor handles as "a deadline passed" (sent with
            ``call``, so the actor answers it like any other request).
    """

    def __init__(self, tick: M) -> None:
        self._tick = tick
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None

    @property
    def deadline(self) -> float:
        """The deadline (Trio clock seconds; ``math.inf``: none)."""
        return self._deadline

    def at(self, deadline: float) -> None:
        """Tick at ``deadline`` (Trio clock seconds; ``math.inf``: never)."""
        self._deadline = deadline
        if self._scope is not None:
            self._scope.deadline = deadline

    async def run(self, ref: ActorRef[M]) -> None:
        """The timer task; returns when the actor stopped."""
        while True:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            try:
                await ref.call(self._tick, timeout=math.inf)
            except ActorStopped:
                return
