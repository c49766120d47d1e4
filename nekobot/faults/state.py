"""Fault isolation's per-platform state and the views it publishes (see :mod:`.fault_isolation`)."""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from typing import Protocol

import attrs
import trio

from ..monitor.status_monitor import AlertLevel
from ..storage import Store
from .breaker import Action, BreakerSnapshot, BreakerState
from .records import IsolationStrategy, KeptFault, Write, write_batch
from .status import BreakerStatus, PlatformIsolation

__all__ = ["STRATEGY", "AlertSink", "PlatformRecord", "view", "write_loop"]

log = logging.getLogger("nekobot.fault_isolation")

STRATEGY = {
    Action.RESTART: IsolationStrategy.RESTART_PLATFORM,
    Action.CONTINUE: IsolationStrategy.CONTINUE,
    Action.OPEN: IsolationStrategy.DEGRADED_MODE,
    Action.REOPEN: IsolationStrategy.DEGRADED_MODE,
    Action.STAY_OPEN: IsolationStrategy.DEGRADED_MODE,
    Action.STAY_DISABLED: IsolationStrategy.DISABLE_PLATFORM,
}


class AlertSink(Protocol):
    """What fault isolation needs of the monitor (sync and cheap)."""

    def fire_alert(
        self, key: str, level: AlertLevel, message: str, *, platform_id: str | None = None
    ) -> None: ...

    def clear_alert(self, key: str) -> None: ...


@attrs.define(eq=False)
class PlatformRecord:
    """What fault isolation keeps of one platform (owned by the actor)."""

    breaker: BreakerSnapshot
    records: deque[KeptFault]
    since: float = attrs.field(factory=time.time)
    running: bool = False
    wanted: bool = False
    reason: str = ""
    disabled_by: str | None = None
    disabled_at: float | None = None
    disabled_reason: str = ""
    enabled_by: str | None = None
    enabled_at: float | None = None

    @property
    def out(self) -> bool:
        return self.wanted and not self.running

    def why(self) -> str:
        if self.breaker.disabled:
            extra = f": {self.disabled_reason}" if self.disabled_reason else ""
            return f"disabled by {self.disabled_by}{extra}"
        if self.breaker.state is BreakerState.OPEN:
            return f"isolated: {self.breaker.reason}"
        return self.reason or "not running"


def view(pid: str, p: PlatformRecord) -> PlatformIsolation:
    """The published view of one platform."""
    b = p.breaker
    return PlatformIsolation(
        platform_id=pid,
        running=p.running,
        breaker=BreakerStatus(
            state=b.state,
            since=p.since,
            recent_failures=len(b.failures),
            cooldown=b.cooldown,
            retry_at=b.retry_at,
            reason=b.reason,
        ),
        manually_disabled=b.disabled,
        disabled_by=p.disabled_by,
        disabled_at=p.disabled_at,
        disabled_reason=p.disabled_reason,
        enabled_by=p.enabled_by,
        enabled_at=p.enabled_at,
        out=p.out,
        out_reason=p.why() if p.out else "",
        fault_count=len(p.records),
    )


async def write_loop(store: Store, recv: trio.MemoryReceiveChannel[Write], keep: int) -> None:
    """Write queued record changes in batches, one transaction each, off the restart path."""
    async with recv:
        while True:
            batch = [await recv.receive()]
            while True:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            flushes = [ev for kind, ev in batch if kind == "flush"]
            writes = [w for w in batch if w[0] != "flush"]
            try:
                if writes:
                    await store.run(functools.partial(write_batch, batch=writes, keep=keep))
            except Exception:
                log.exception("could not persist %d fault record change(s)", len(writes))
            for ev in flushes:
                ev.set()
