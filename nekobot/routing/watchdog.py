"""The handler watchdog: cancels an ``async`` handler running past ``handler_timeout``.

Each worker runs inside one cancel scope (one per worker, not per message: a
Trio cancel scope costs more than routing a message) and records in its
:class:`Slot` when the running handler started. The watchdog sleeps until the
earliest deadline (Trio clock) and cancels that worker's scope exactly then;
the worker counts the handler as failed (``trio.TooSlowError``) and resumes
the message at the next handler in a fresh scope. While no ``async`` handler
runs, the watchdog is parked (no CPU).
"""

from __future__ import annotations

import trio

from .handlers import HandlerEntry
from .queue import Entry

__all__ = ["Slot", "Watchdog"]


class Slot:
    """One worker's progress through one message, shared with the watchdog."""

    __slots__ = ("entry", "failed", "handlers", "index", "last_exc", "scope", "started_at")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        """The worker's current cancel scope."""
        self.started_at: float | None = None
        """Trio clock time the running ``async`` handler started, else ``None``."""
        self.entry: Entry | None = None
        """The message being handled, else ``None``."""
        self.handlers: tuple[HandlerEntry, ...] = ()
        """The handlers this attempt runs."""
        self.index = 0
        """Index in ``handlers`` of the handler running or next to run."""
        self.failed: list[HandlerEntry] = []
        """Handlers that failed in this attempt."""
        self.last_exc: BaseException | None = None
        """What the last failed handler raised."""


class Watchdog:
    """Watches every worker's :class:`Slot` against ``limit`` seconds (Trio clock)."""

    __slots__ = ("_idle", "_lot", "limit", "slots")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.slots: list[Slot] = []
        self._lot = trio.lowlevel.ParkingLot()
        self._idle = False

    def started(self, slot: Slot) -> None:
        """``slot``'s worker starts an ``async`` handler now (sync, O(1))."""
        slot.started_at = trio.current_time()
        if self._idle:
            self._idle = False
            self._lot.unpark()

    async def run(self) -> None:
        """Cancel overdue handlers exactly at their deadline, until cancelled."""
        limit = self.limit
        while True:
            earliest: float | None = None
            now = trio.current_time()
            for slot in self.slots:
                started = slot.started_at
                if started is None or slot.scope is None:
                    continue
                if now - started >= limit:
                    slot.scope.cancel()
                elif earliest is None or started < earliest:
                    earliest = started
            if earliest is None:
                self._idle = True
                await self._lot.park()
            else:
                await trio.sleep_until(earliest + limit)
