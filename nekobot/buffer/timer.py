"""The buffer's alarm clock: one task that wakes the actor at its next deadline.

The actor's loop only waits for messages, so TTL expiry and the end of a held
``add_message`` need a message at the right time: after each batch the actor
sets :meth:`Timer.at` to its next deadline, and the timer task sends a
:class:`~.requests.Tick` call then (and waits for it to be handled, so it never
sends a second one for the same deadline).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import trio

from ..errors import ActorStopped
from .requests import Tick

if TYPE_CHECKING:
    from ..core.actor import ActorRef
    from .requests import BufferRequest

__all__ = ["Timer"]


class Timer:
    """Sends ``Tick()`` to an actor at the deadline it was last given."""

    def __init__(self) -> None:
        self._deadline = math.inf
        self._scope: trio.CancelScope | None = None

    def at(self, deadline: float) -> None:
        """Tick at ``deadline`` (Trio clock; ``math.inf``: never)."""
        self._deadline = deadline
        if self._scope is not None:
            self._scope.deadline = deadline

    async def run(self, ref: ActorRef[BufferRequest]) -> None:
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
