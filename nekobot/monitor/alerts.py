"""Alerts of the status monitor: levels, the ``Alert`` record, rules, and the alert book.

The :class:`AlertBook` is part of the monitor actor's state: only the actor
calls its methods. It keeps one open alert per condition key, a bounded
history (resolved alerts are pruned first), and an index of open alerts per
platform so a platform's health is found without scanning every alert.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from ..errors import AlertNotFound

if TYPE_CHECKING:
    from .status_monitor import StatusMonitor

__all__ = ["Alert", "AlertBook", "AlertLevel", "AlertRule"]

log = logging.getLogger("nekobot.monitor.status_monitor")


class AlertLevel(enum.IntEnum):
    """Severity of an :class:`Alert`; higher is worse."""

    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4

    @classmethod
    def coerce(cls, value: AlertLevel | int | str) -> AlertLevel:
        """A level from itself, its number, or its name in any case (``"warning"``).

        Raises:
            ValueError: naming the value, if it is no level.
        """
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"unknown alert level {value!r}") from None
        return cls(value)


@attrs.frozen(kw_only=True)
class Alert:
    """One alert, open or resolved (an immutable snapshot; updates replace it).

    A rule registered with :meth:`StatusMonitor.register_alert_rule` returns an
    ``Alert`` built with only ``level`` and ``message`` (and optionally
    ``platform_id``, ``metric_name``, ``key``); the monitor fills in the rest.
    """

    alert_id: str = ""
    """Unique within this bot process (``"alert-<n>"``), assigned by the monitor."""
    level: AlertLevel = AlertLevel.WARNING
    """Severity; an update of an open alert may change it."""
    message: str = ""
    """Human-readable text; an update replaces it."""
    timestamp: float = 0.0
    """Trio clock seconds when the alert opened."""
    platform_id: str | None = None
    """The platform concerned, if any."""
    metric_name: str | None = None
    """The metric behind the alert, if any (e.g. ``nekobot_messages_total``)."""
    resolved: bool = False
    """True once the condition cleared or a person resolved it."""
    resolved_at: float | None = None
    """Trio clock seconds when it was resolved, else ``None``."""
    key: str = ""
    """The condition's key: one open alert per key (``"error_rate:qq"``)."""
    updated_at: float = 0.0
    """Trio clock seconds of the last fire (equals ``timestamp`` at first)."""
    count: int = 1
    """How many times the condition fired while this alert was open."""
    wall_time: float = 0.0
    """Wall-clock ``time.time()`` when the alert opened (for display)."""
    resolved_by: str | None = None
    """``"clear"`` (condition cleared), ``"manual"`` (``resolve_alert``) or ``"pruned"``."""


AlertRule = Callable[["StatusMonitor"], Awaitable[Alert | None]]
"""``async (monitor) -> Alert | None``: ``None`` means the condition is clear.

The monitor's own task awaits it (under ``fail_after(alert_interval)``); it
reads the monitor through the synchronous getters (the last snapshot) and must
not await :meth:`StatusMonitor.flush` or another call to the monitor, which
would wait for the very task running the rule.
"""


class AlertBook:
    """The monitor's alerts (actor state; only the monitor task calls this).

    Args:
        max_alerts (int): Alerts kept in the history, open and resolved.
    """

    def __init__(self, max_alerts: int) -> None:
        self.max_alerts = max_alerts
        self.alerts: OrderedDict[str, Alert] = OrderedDict()
        """Every kept alert by id, in the order they opened."""
        self.open: dict[str, str] = {}
        """Condition key -> id of its open alert."""
        self._resolved_order: deque[str] = deque()
        self._ids = itertools.count(1)
        self._open_by_pid: dict[str, dict[str, AlertLevel]] = {}
        self.touched: set[str] = set()
        """Platforms whose open alerts changed since the monitor last took this set."""
        self.changed = False
        """True when anything changed since the last :meth:`views`."""
        self._views: tuple[tuple[Alert, ...], Mapping[str, Alert]] = ((), {})

    # ---- the index of open alerts per platform ---------------------------

    def _index(self, alert: Alert) -> None:
        if alert.platform_id is not None:
            self._open_by_pid.setdefault(alert.platform_id, {})[alert.alert_id] = alert.level
            self.touched.add(alert.platform_id)

    def _unindex(self, alert: Alert) -> None:
        pid = alert.platform_id
        if pid is not None:
            ids = self._open_by_pid.get(pid)
            if ids is not None:
                ids.pop(alert.alert_id, None)
                if not ids:
                    del self._open_by_pid[pid]
            self.touched.add(pid)

    def open_for(self, platform_id: str) -> tuple[int, bool]:
        """Open alerts naming ``platform_id``, and whether one is ERROR or worse."""
        ids = self._open_by_pid.get(platform_id)
        if not ids:
            return 0, False
        return len(ids), any(lvl >= AlertLevel.ERROR for lvl in ids.values())

    def open_keys_for(self, platform_id: str) -> list[str]:
        """Keys of the open alerts naming ``platform_id``."""
        ids = self._open_by_pid.get(platform_id, {})
        return [self.alerts[i].key for i in ids]

    # ---- changes ---------------------------------------------------------

    def fire(
        self,
        key: str,
        level: AlertLevel,
        message: str,
        *,
        platform_id: str | None,
        metric_name: str | None,
        now: float,
        wall: float,
    ) -> bool:
        """Open the alert of ``key`` or update its open one.

        Args:
            now (float): Trio clock seconds of the fire.
            wall (float): Wall-clock ``time.time()`` of the fire.

        Returns:
            bool: True if a new alert opened (False: an open one was updated).
        """
        self.changed = True
        alert_id = self.open.get(key)
        if alert_id is not None:
            old = self.alerts[alert_id]
            new = attrs.evolve(
                old,
                level=level,
                message=message,
                platform_id=platform_id if platform_id is not None else old.platform_id,
                metric_name=metric_name if metric_name is not None else old.metric_name,
                updated_at=now,
                count=old.count + 1,
            )
            self._unindex(old)
            self.alerts[alert_id] = new
            self._index(new)
            return False
        alert_id = f"alert-{next(self._ids)}"
        alert = Alert(
            alert_id=alert_id,
            level=level,
            message=message,
            timestamp=now,
            updated_at=now,
            platform_id=platform_id,
            metric_name=metric_name,
            key=key,
            wall_time=wall,
        )
        self.alerts[alert_id] = alert
        self.open[key] = alert_id
        self._index(alert)
        log.log(
            logging.WARNING if level >= AlertLevel.WARNING else logging.INFO,
            "alert %s [%s] %s",
            alert_id,
            level.name,
            message,
        )
        self._prune()
        return True

    def clear(self, key: str, now: float) -> None:
        """Resolve the open alert of ``key``, if there is one (``now``: Trio clock)."""
        alert_id = self.open.pop(key, None)
        if alert_id is not None:
            self._resolve(alert_id, "clear", now)

    def resolve(self, alert_id: str, now: float) -> Alert:
        """Resolve an alert by hand (a resolved one is returned unchanged).

        Raises:
            AlertNotFound: if no alert in the history has this id.
        """
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        if alert.resolved:
            return alert
        if self.open.get(alert.key) == alert_id:
            del self.open[alert.key]
        return self._resolve(alert_id, "manual", now)

    def _resolve(self, alert_id: str, by: str, now: float) -> Alert:
        old = self.alerts[alert_id]
        alert = attrs.evolve(old, resolved=True, resolved_at=now, resolved_by=by)
        self.alerts[alert_id] = alert
        self._unindex(old)
        self._resolved_order.append(alert_id)
        self.changed = True
        return alert

    def _prune(self) -> None:
        alerts = self.alerts
        while len(alerts) > self.max_alerts:
            if self._resolved_order:
                alerts.pop(self._resolved_order.popleft(), None)
                continue
            # Every kept alert is open: forget the oldest one.
            alert_id, alert = alerts.popitem(last=False)
            if self.open.get(alert.key) == alert_id:
                del self.open[alert.key]
            self._unindex(alert)

    # ---- reading (for the snapshot) --------------------------------------

    def open_by_level(self) -> dict[str, int]:
        """Open alerts by level name (every level present, zero included)."""
        counts = {lvl.name: 0 for lvl in AlertLevel}
        for alert_id in self.open.values():
            counts[self.alerts[alert_id].level.name] += 1
        return counts

    def views(self) -> tuple[tuple[Alert, ...], Mapping[str, Alert]]:
        """The history as a tuple (oldest first) and by id; rebuilt only after a change."""
        if self.changed:
            self._views = (tuple(self.alerts.values()), dict(self.alerts))
            self.changed = False
        return self._views
