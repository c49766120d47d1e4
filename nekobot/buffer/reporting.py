"""What the buffer tells the monitor: counters, the size gauge, overflow alerts.

After each batch the actor hands :meth:`Reporter.report` the queues the batch
changed. Counters go out as deltas of the queue's own counters (so the metrics
and ``get_buffer_stats`` always agree), the size gauge when it changed. The
first overflow drop of a queue opens the WARNING alert
``buffer:overflow:<queue>``; later ones update it; it clears when the queue
has drained to empty. The monitor never takes the buffer down: a failing
monitor call is logged (``record_metric`` once) and ignored.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from ..monitor.status_monitor import AlertLevel
from .queue import OVERFLOW_REASONS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .queue import PlatformQueue

__all__ = ["BufferMonitor", "Reporter"]

log = logging.getLogger("nekobot.buffer")


class BufferMonitor(Protocol):
    """The part of :class:`~nekobot.monitor.status_monitor.StatusMonitor` the buffer uses."""

    def record_metric(
        self,
        name: str,
        value: float,
        metric_type: str,
        *,
        labels: Mapping[str, str] | None = ...,
        documentation: str = ...,
    ) -> None: ...

    def fire_alert(
        self,
        key: str,
        level: AlertLevel,
        message: str,
        *,
        platform_id: str | None = ...,
        metric_name: str | None = ...,
    ) -> None: ...

    def clear_alert(self, key: str) -> None: ...


_COUNTERS = (
    (
        "nekobot_buffer_added_total",
        "buffered_total",
        "Messages accepted by the outbound buffer (add_message), drops included.",
    ),
    (
        "nekobot_buffer_restored_total",
        "restored_total",
        "Buffered messages loaded back from the database at start.",
    ),
    (
        "nekobot_buffer_replayed_total",
        "replayed_total",
        "Buffered messages the platform acknowledged (delivered from the buffer).",
    ),
    (
        "nekobot_buffer_expired_total",
        "expired_total",
        "Buffered messages whose TTL ran out (never sent).",
    ),
    (
        "nekobot_buffer_full_waits_total",
        "waited_total",
        "add_message calls that waited for room in the full queue of an online platform.",
    ),
)
"""Prometheus counters fed from each queue's own counters: (name, attribute, help)."""


class _Reported:
    """What the monitor was last told about one queue."""

    __slots__ = ("counters", "dropped", "overflow", "overflow_base", "size")

    def __init__(self) -> None:
        self.counters = [0] * len(_COUNTERS)
        self.dropped: dict[str, int] = {}
        self.overflow = 0
        self.overflow_base: int | None = None
        """Overflow drops counted when the open overflow alert opened; ``None``: no alert."""
        self.size: int | None = None


class Reporter:
    """Reports the buffer's queues to a monitor (only the actor's loop calls it).

    Args:
        monitor (BufferMonitor | None): Where to report; ``None`` reports nothing.
        strategy (str): The overflow strategy's name (for the alert text).
        global_max_size (int): The global cap (for the alert text).
    """

    def __init__(self, monitor: BufferMonitor | None, strategy: str, global_max_size: int) -> None:
        self.monitor = monitor
        self.strategy = strategy
        self.global_max_size = global_max_size
        self._reported: dict[str, _Reported] = {}
        self._metric_failed = False

    def report(self, q: PlatformQueue) -> None:
        """Tell the monitor what changed in ``q`` since the last report."""
        rep = self._reported.get(q.name)
        if rep is None:
            rep = self._reported[q.name] = _Reported()
        labels = {"platform_id": q.name}
        for i, (name, attr, doc) in enumerate(_COUNTERS):
            value: int = getattr(q, attr)
            if value > rep.counters[i]:
                self._metric(name, value - rep.counters[i], "counter", labels, doc)
                rep.counters[i] = value
        if q.dropped != rep.dropped:
            for reason, n in q.dropped.items():
                delta = n - rep.dropped.get(reason, 0)
                if delta > 0:
                    self._metric(
                        "nekobot_buffer_dropped_total",
                        delta,
                        "counter",
                        {"platform_id": q.name, "reason": reason},
                        "Buffered messages dropped (never sent), by platform and reason.",
                    )
            rep.dropped = dict(q.dropped)
        if rep.size != q.size:
            rep.size = q.size
            self._metric(
                "nekobot_buffer_size",
                q.size,
                "gauge",
                labels,
                "Messages queued in the outbound buffer now (the one in flight included).",
            )
        self._overflow_alert(q, rep)

    def _overflow_alert(self, q: PlatformQueue, rep: _Reported) -> None:
        overflow = q.overflow_dropped()
        if overflow > rep.overflow:
            if rep.overflow_base is None:
                rep.overflow_base = rep.overflow
                log.warning(
                    "buffer %s overflowed (max_size %d, %s): dropping messages",
                    q.name,
                    q.max_size,
                    self.strategy,
                )
            rep.overflow = overflow
            n = overflow - rep.overflow_base
            reasons = ", ".join(f"{r} {q.dropped[r]}" for r in OVERFLOW_REASONS if q.dropped.get(r))
            self.alert(
                f"buffer:overflow:{q.name}",
                AlertLevel.WARNING,
                f"outbound buffer of platform {q.name!r} overflowed: {n} message(s) dropped"
                f" since this alert opened (queue {q.size}/{q.max_size}, global cap"
                f" {self.global_max_size}; dropped so far by reason: {reasons})",
                platform_id=q.name,
                metric_name="nekobot_buffer_dropped_total",
            )
        if rep.overflow_base is not None and q.size == 0:
            log.info(
                "buffer %s drained after dropping %d message(s)",
                q.name,
                overflow - rep.overflow_base,
            )
            rep.overflow_base = None
            self.clear(f"buffer:overflow:{q.name}")

    def _metric(
        self, name: str, value: float, mtype: str, labels: dict[str, str], doc: str
    ) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.record_metric(name, value, mtype, labels=labels, documentation=doc)
        except Exception:  # the monitor must never take the buffer down
            if not self._metric_failed:
                self._metric_failed = True
                log.exception("buffer: record_metric(%r) failed (logged once)", name)

    def alert(
        self,
        key: str,
        level: AlertLevel,
        message: str,
        *,
        platform_id: str | None = None,
        metric_name: str | None = None,
    ) -> None:
        """Fire (or update) the alert ``key``."""
        if self.monitor is None:
            return
        try:
            self.monitor.fire_alert(
                key, level, message, platform_id=platform_id, metric_name=metric_name
            )
        except Exception:  # the monitor must never take the buffer down
            log.exception("buffer: fire_alert failed")

    def clear(self, key: str) -> None:
        """Clear the alert ``key``, if it is open."""
        if self.monitor is None:
            return
        try:
            self.monitor.clear_alert(key)
        except Exception:  # the monitor must never take the buffer down
            log.exception("buffer: clear_alert failed")
