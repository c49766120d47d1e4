"""The monitor's alarm clock: one task that wakes the actor at its next deadline.

The actor's loop only waits for messages, so a coalesced publish, a window
edge and a rule evaluation need a message at the right time: after each batch
the actor sets :meth:`Timer.at` to its next deadline (``math.inf`` when
nothing will change by itself, so an idle monitor never wakes), and the timer
task sends a :class:`~.messages.Tick` call then (and waits for it to be
handled, so it never sends a second one for the same deadline).
"""

from __future__ import annotations

import math

import trio

from ..core.actor import ActorRef
from ..errors import ActorStopped
from .messages import MonitorMessage, Tick

__all__ = ["Timer"]


class Timer:
    """Sends ``Tick()`` to the monitor at the deadline it was last given."""

    def __init__(self) -> None:
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

    async def run(self, ref: ActorRef[MonitorMessage]) -> None:
        """The timer task; returns when the actor stopped."""
        while True:
            with trio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            try:
                await ref.call(Tick(), timeout=math.inf)
            except ActorStopped:
                return
