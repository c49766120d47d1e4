"""Status monitor: per-platform windows, alerts, Prometheus exposition.

Every figure an operator reads comes from here. The router and the platforms
record into the monitor without being asked; the HTTP API reads it back.

How it works:

- **Recording is synchronous and cheap.** :meth:`StatusMonitor.record_message`
  appends one tuple to the monitor's mailbox (a bounded ``deque``); it never
  blocks and never raises when the mailbox is full: it counts a drop instead
  (``records_dropped``). The monitor task applies the mailbox in batches
  (window buckets, Prometheus counters grouped per label set): when 512
  records wait, or when the oldest waiting record is 0.5 s old (Trio clock),
  whichever is first. Call these methods from Trio tasks; from a worker thread use
  ``trio.from_thread.run_sync``.
- **Reads are synchronous and exact.** Every getter first applies what is
  still in the mailbox (Trio runs a synchronous call atomically, so nothing
  interleaves), then reads.
- **Windows run on the Trio clock.** Each platform keeps a sliding window of
  ``MonitorConfig.window`` seconds (60 by default) made of 120 buckets: message
  and error counts, error types, and latency sum/min/max are exact for every
  message in the window, with no cap (the window's edge moves in steps of
  ``window / 120`` seconds, 0.5 s by default). Latency percentiles use the
  newest ``history_size`` samples inside the window.
- **Alerts.** :meth:`StatusMonitor.fire_alert` with a key opens an alert, or
  updates the one open alert with that key; :meth:`StatusMonitor.clear_alert`
  resolves it. Built-in rules (error rate, latency p95) and the rules given to
  :meth:`StatusMonitor.register_alert_rule` are evaluated every
  ``alert_interval`` seconds; "platform down" follows
  :meth:`StatusMonitor.set_platform_state` at once; "breaker open" arrives from
  fault isolation through ``fire_alert``. The history is bounded by
  ``max_alerts`` (resolved alerts are pruned first).
- **Prometheus.** Everything lives in the bot's own ``CollectorRegistry``
  (:attr:`StatusMonitor.registry`); :meth:`StatusMonitor.exposition` returns the
  text for ``GET /metrics``, so no other module imports ``prometheus_client``.

Built-in alert keys (``Alert.key``): ``error_rate:<platform_id>`` (ERROR),
``latency_p95:<platform_id>`` (WARNING), ``platform_down:<platform_id>`` (ERROR),
``rule:<rule name>`` (rules registered with :meth:`~StatusMonitor.register_alert_rule`).

Prometheus metrics (all prefixed ``nekobot_``): ``messages_total{platform_id,
message_type,outcome}``, ``message_errors_total{platform_id,error_type}``,
``message_latency_seconds{platform_id,message_type}`` (histogram),
``alerts_fired_total{level}``, ``alerts_open{level}``, ``platform_up{platform_id}``,
``platform_healthy{platform_id}``, ``platform_error_rate{platform_id}``,
``monitor_records_dropped_total``; plus whatever :meth:`~StatusMonitor.record_metric`
creates.
"""

from __future__ import annotations

import enum
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from ..config.schema import MonitorConfig
from ..errors import AlertNotFound, InvalidRequest, PlatformNotFound
from .metrics import CustomMetrics, ScrapeCollector
from .window import Window

__all__ = [
    "Alert",
    "AlertLevel",
    "AlertRule",
    "MetricType",
    "MonitorStatus",
    "PlatformStatus",
    "StatusMonitor",
]

log = logging.getLogger(__name__)

_WAKE_BATCH = 512
"""Records in the mailbox that wake the monitor task at once."""
_FLUSH_INTERVAL = 0.5
"""Seconds (Trio clock) after which the monitor applies a smaller batch anyway."""


class MetricType(enum.Enum):
    """Kind of a metric recorded with :meth:`StatusMonitor.record_metric`."""

    COUNTER = "counter"
    """Only goes up; ``value`` is the increment (``>= 0``)."""
    GAUGE = "gauge"
    """``value`` replaces the current value."""
    HISTOGRAM = "histogram"
    """``value`` is one observation (seconds for ``*_seconds`` names)."""


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
"""``async (monitor) -> Alert | None``: ``None`` means the condition is clear."""


@attrs.frozen(kw_only=True)
class PlatformStatus:
    """Figures of one platform over the sliding window (Trio clock)."""

    platform_id: str
    running: bool | None
    """Last state given to ``set_platform_state``; ``None`` if never given."""
    healthy: bool
    """Running (or unknown), error rate and p95 latency within the thresholds,
    and no open alert of level ERROR or worse for this platform."""
    window: float
    """Seconds of the window the figures below cover."""
    throughput_last_minute: int
    """Messages recorded in the window (``window`` = 60 s by default), exact, no cap."""
    error_count: int
    """Failed messages in the window."""
    error_rate: float
    """``error_count / throughput_last_minute`` (0.0 when the window is empty)."""
    error_breakdown: dict[str, int]
    """Failed messages in the window by error type."""
    latency_avg_ms: float | None
    """Mean latency (milliseconds) of the messages in the window, exact."""
    latency_min_ms: float | None
    latency_max_ms: float | None
    latency_p50_ms: float | None
    """Percentiles (nearest rank, milliseconds) over the newest ``history_size``
    samples in the window; ``None`` when the window is empty."""
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    messages_total: int
    """Messages recorded since the monitor started."""
    errors_total: int
    """Failed messages recorded since the monitor started."""
    last_message_at: float | None
    """Trio clock seconds of the newest record, else ``None``."""
    last_message_wall: float | None
    """The same moment in wall-clock ``time.time()`` seconds."""
    open_alerts: int
    """Open alerts naming this platform."""


@attrs.frozen(kw_only=True)
class MonitorStatus:
    """Overview of the monitor (``GET /api/monitor/status``)."""

    running: bool
    """The monitor task is running."""
    platforms: int
    healthy_platforms: int
    open_alerts: dict[str, int]
    """Open alerts by level name."""
    alerts_kept: int
    """Alerts in the bounded history (open and resolved)."""
    records_applied: int
    """Message records applied since start."""
    records_dropped: int
    """Records dropped because the mailbox was full."""
    rule_errors: int
    """Alert rule evaluations that raised or timed out."""
    alert_rules: tuple[str, ...]
    """Names of the registered (non built-in) alert rules."""


def _metric_type(value: MetricType | str) -> MetricType:
    if isinstance(value, MetricType):
        return value
    try:
        return MetricType(str(value).lower())
    except ValueError:
        raise InvalidRequest(
            f"metric_type: expected counter, gauge or histogram, got {value!r}"
        ) from None


class StatusMonitor:
    """Metrics and alerts of one bot (an actor; start it with ``nursery.start(monitor.run)``).

    Recording works before :meth:`run` too (records wait in the mailbox and
    every getter applies them); rules are only evaluated while it runs.

    Args:
        config (MonitorConfig): Window, thresholds, alert interval and history bounds.
        registry (CollectorRegistry | None): Where the Prometheus metrics live; a
            new registry (the bot's own, not the global default) if omitted.
        mailbox_size (int): Records waiting to be applied at most; more are
            dropped and counted (``records_dropped``).
    """

    def __init__(
        self,
        config: MonitorConfig | None = None,
        *,
        registry: CollectorRegistry | None = None,
        mailbox_size: int = 100_000,
    ) -> None:
        self.config = config or MonitorConfig()
        self.registry: CollectorRegistry = (
            registry if registry is not None else CollectorRegistry(auto_describe=True)
        )
        self.running = False
        self._mailbox_size = mailbox_size
        self._pending: deque[tuple[float, str, str, float, bool, str | None]] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._records_dropped = 0
        self._records_applied = 0
        self._rule_errors = 0
        self._windows: dict[str, Window] = {}
        self._alerts: OrderedDict[str, Alert] = OrderedDict()
        self._open: dict[str, str] = {}  # key -> alert_id
        self._resolved_order: deque[str] = deque()
        self._alert_ids = itertools.count(1)
        self._rules: dict[str, AlertRule] = {}
        self._rule_keys: dict[str, str] = {}  # rule name -> key of its open alert
        self._custom = CustomMetrics(self.registry)

        reg = self.registry
        self._m_messages = Counter(
            "nekobot_messages",
            "Messages handled, by platform, message type and outcome (ok|error).",
            ["platform_id", "message_type", "outcome"],
            registry=reg,
        )
        self._m_errors = Counter(
            "nekobot_message_errors",
            "Failed messages by platform and error type.",
            ["platform_id", "error_type"],
            registry=reg,
        )
        self._m_latency = Histogram(
            "nekobot_message_latency_seconds",
            "Latency from router accept to handlers done.",
            ["platform_id", "message_type"],
            registry=reg,
        )
        self._m_alerts_fired = Counter(
            "nekobot_alerts_fired", "Alerts opened, by level.", ["level"], registry=reg
        )
        reg.register(ScrapeCollector(self, AlertLevel))
        self._child_cache: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    @classmethod
    def from_config(
        cls, cfg: MonitorConfig, registry: CollectorRegistry | None = None
    ) -> StatusMonitor:
        """Build the monitor from ``[monitor]`` (the bot's own registry if none given)."""
        return cls(cfg, registry=registry)

    # ---- the actor loop ----------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply recorded batches and evaluate the alert rules every ``alert_interval``.

        Idle, the task is parked (no CPU) until 512 records wait, the oldest
        waiting record is 0.5 s old, or the next evaluation is due (Trio
        clock); when nothing is recorded it wakes only for the evaluations.
        Stops when its scope is cancelled.
        """
        self.running = True
        task_status.started()
        interval = self.config.alert_interval
        next_eval = trio.current_time() + interval
        pending = self._pending
        try:
            while True:
                now = trio.current_time()
                if len(pending) >= _WAKE_BATCH or (
                    pending and pending[0][0] + _FLUSH_INTERVAL <= now
                ):
                    self._flush()
                if now >= next_eval:
                    await self.evaluate_rules()
                    next_eval += interval
                    now = trio.current_time()
                    if next_eval <= now:
                        next_eval = now + interval
                deadline = next_eval
                if pending:
                    deadline = min(deadline, pending[0][0] + _FLUSH_INTERVAL)
                with trio.move_on_at(deadline):
                    await self._lot.park()
        finally:
            self.running = False

    def _flush(self) -> None:
        """Apply every record waiting in the mailbox (sync, atomic under Trio)."""
        pending = self._pending
        if not pending:
            return
        wall_offset = time.time() - trio.current_time()
        windows = self._windows
        cache = self._child_cache
        grouped: dict[tuple[str, str, bool], int] = {}
        errors: dict[tuple[str, str], int] = {}
        cfg = self.config
        n = 0
        for t, pid, mtype, latency_ms, ok, error_type in pending:
            n += 1
            w = windows.get(pid)
            if w is None:
                w = windows[pid] = Window(cfg.window, cfg.history_size)
            w.add(t, latency_ms, ok, error_type)
            w.last_wall = t + wall_offset
            children = cache.get((pid, mtype))
            if children is None:
                children = (
                    self._m_messages.labels(pid, mtype, "ok"),
                    self._m_messages.labels(pid, mtype, "error"),
                    self._m_latency.labels(pid, mtype),
                )
                cache[(pid, mtype)] = children
            children[2].observe(latency_ms / 1000.0)
            gk = (pid, mtype, ok)
            grouped[gk] = grouped.get(gk, 0) + 1
            if not ok:
                ek = (pid, error_type or "error")
                errors[ek] = errors.get(ek, 0) + 1
        pending.clear()
        self._records_applied += n
        for (pid, mtype, ok), count in grouped.items():
            cache[(pid, mtype)][0 if ok else 1].inc(count)
        for (pid, et), count in errors.items():
            self._m_errors.labels(pid, et).inc(count)

    # ---- recording (sync, non-blocking) -----------------------------------

    def record_message(
        self,
        platform_id: str,
        message_type: str,
        latency_ms: float,
        success: bool,
        error_type: str | None = None,
    ) -> None:
        """Record one handled message (sync, never blocks, never raises on a full mailbox).

        Args:
            platform_id (str): The platform it came from (created on first record).
            message_type (str): Its type (``Message.message_type``).
            latency_ms (float): Milliseconds from router accept to handlers done.
            success (bool): False if its handling failed.
            error_type (str | None): Kind of failure (e.g. the exception's class
                name) for ``error_breakdown``; ``"error"`` if omitted.
        """
        pending = self._pending
        if len(pending) >= self._mailbox_size:
            self._records_dropped += 1
            return
        pending.append(
            (trio.current_time(), platform_id, message_type, latency_ms, success, error_type)
        )
        n = len(pending)
        if (n == 1 or n >= _WAKE_BATCH) and self._lot:
            self._lot.unpark()

    def record_metric(
        self,
        name: str,
        value: float,
        metric_type: MetricType | str,
        *,
        labels: Mapping[str, str] | None = None,
        documentation: str = "",
    ) -> None:
        """Record one value of a named metric in the bot's registry (sync, cheap).

        The name is completed by Prometheus conventions: the ``nekobot_`` prefix
        is added if missing; a counter is exposed as ``<name>_total``.

        Args:
            name (str): Metric name, e.g. ``"onebot_frames_rejected_total"``.
            value (float): Counter increment (``>= 0``), gauge value, or one
                histogram observation.
            metric_type (MetricType | str): ``COUNTER``/``GAUGE``/``HISTOGRAM``
                (or ``"counter"``/``"gauge"``/``"histogram"``).
            labels (Mapping[str, str] | None): Label values; a metric keeps the
                label names of its first record.
            documentation (str): Help text used when the metric is created.

        Raises:
            InvalidRequest: for an invalid name or label name, a name already
                used with another type or other label names, or a negative
                counter increment.
        """
        self._custom.record(name, value, _metric_type(metric_type).value, labels, documentation)

    def set_platform_state(
        self, platform_id: str, running: bool, *, expected: bool = False
    ) -> None:
        """Record whether a platform runs; feeds the "platform down" alert at once.

        ``running=False`` opens (or updates) the ERROR alert
        ``platform_down:<platform_id>`` unless ``expected`` is true (a person
        stopped it, or the bot is shutting down); ``running=True`` or an
        expected stop resolves it. The platform is known to
        :meth:`get_platform_status` from then on.
        """
        w = self._windows.get(platform_id)
        if w is None:
            w = self._windows[platform_id] = Window(self.config.window, self.config.history_size)
        w.running = running
        key = f"platform_down:{platform_id}"
        if running or expected:
            self.clear_alert(key)
        else:
            self.fire_alert(
                key,
                AlertLevel.ERROR,
                f"platform {platform_id!r} is down",
                platform_id=platform_id,
                metric_name="nekobot_platform_up",
            )

    def forget_platform(self, platform_id: str) -> None:
        """Drop a removed platform's window and resolve its open alerts.

        Raises:
            PlatformNotFound: if the monitor does not know this platform.
        """
        if self._windows.pop(platform_id, None) is None:
            raise PlatformNotFound(platform_id)
        for key, alert_id in list(self._open.items()):
            if self._alerts[alert_id].platform_id == platform_id:
                self.clear_alert(key)

    # ---- alerts -------------------------------------------------------------

    def fire_alert(
        self,
        key: str,
        level: AlertLevel | str,
        message: str,
        *,
        platform_id: str | None = None,
        metric_name: str | None = None,
    ) -> None:
        """Open the alert for condition ``key``, or update its one open alert (sync).

        An update keeps ``alert_id`` and ``timestamp``, replaces level and
        message, sets ``updated_at`` and counts the repeat (``count``).
        ``level`` may be an :class:`AlertLevel` or its name (``"warning"``).
        """
        level = AlertLevel.coerce(level)
        now = trio.current_time()
        alert_id = self._open.get(key)
        if alert_id is not None:
            old = self._alerts[alert_id]
            self._alerts[alert_id] = attrs.evolve(
                old,
                level=AlertLevel(level),
                message=message,
                platform_id=platform_id if platform_id is not None else old.platform_id,
                metric_name=metric_name if metric_name is not None else old.metric_name,
                updated_at=now,
                count=old.count + 1,
            )
            return
        alert_id = f"alert-{next(self._alert_ids)}"
        level = AlertLevel(level)
        self._alerts[alert_id] = Alert(
            alert_id=alert_id,
            level=level,
            message=message,
            timestamp=now,
            updated_at=now,
            platform_id=platform_id,
            metric_name=metric_name,
            key=key,
            wall_time=time.time(),
        )
        self._open[key] = alert_id
        self._m_alerts_fired.labels(level.name.lower()).inc()
        log.log(
            logging.WARNING if level >= AlertLevel.WARNING else logging.INFO,
            "alert %s [%s] %s",
            alert_id,
            level.name,
            message,
        )
        self._prune_alerts()

    def clear_alert(self, key: str) -> None:
        """Resolve the open alert of condition ``key``, if there is one (sync)."""
        alert_id = self._open.pop(key, None)
        if alert_id is not None:
            self._resolve(alert_id, "clear")

    def resolve_alert(self, alert_id: str) -> Alert:
        """Resolve an alert by hand (a resolved one is returned unchanged).

        If its condition still holds, the next evaluation opens a new alert.

        Returns:
            Alert: The resolved alert.

        Raises:
            AlertNotFound: if no alert in the history has this id.
        """
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        if alert.resolved:
            return alert
        if self._open.get(alert.key) == alert_id:
            del self._open[alert.key]
        return self._resolve(alert_id, "manual")

    def _resolve(self, alert_id: str, by: str) -> Alert:
        alert = attrs.evolve(
            self._alerts[alert_id],
            resolved=True,
            resolved_at=trio.current_time(),
            resolved_by=by,
        )
        self._alerts[alert_id] = alert
        self._resolved_order.append(alert_id)
        return alert

    def _prune_alerts(self) -> None:
        alerts = self._alerts
        while len(alerts) > self.config.max_alerts:
            if self._resolved_order:
                alerts.pop(self._resolved_order.popleft(), None)
                continue
            # Every kept alert is open: forget the oldest one.
            alert_id, alert = alerts.popitem(last=False)
            if self._open.get(alert.key) == alert_id:
                del self._open[alert.key]

    def get_alerts(
        self, level: AlertLevel | None = None, include_resolved: bool = False
    ) -> list[Alert]:
        """Alerts in the order they opened (oldest first).

        Args:
            level (AlertLevel | None): Only alerts of exactly this level.
            include_resolved (bool): Include resolved alerts of the history.
        """
        self._flush()
        return [
            a
            for a in self._alerts.values()
            if (include_resolved or not a.resolved) and (level is None or a.level == level)
        ]

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id.

        Raises:
            AlertNotFound: if no alert in the history has this id.
        """
        alert = self._alerts.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    def register_alert_rule(self, rule: AlertRule, *, name: str | None = None) -> str:
        """Add a rule evaluated every ``alert_interval`` seconds while the monitor runs.

        The rule is ``async (monitor) -> Alert | None``. A returned ``Alert``
        (only ``level`` and ``message`` are needed) opens or updates the rule's
        one open alert, keyed ``alert.key`` or ``"rule:<name>"``; ``None``
        resolves it. A rule that raises or runs longer than ``alert_interval``
        is counted in ``rule_errors`` and its open alert is left as it is.

        Args:
            rule: The rule.
            name (str | None): Its name; the function's ``__qualname__`` if omitted.

        Returns:
            str: The name (for :meth:`unregister_alert_rule`).

        Raises:
            InvalidRequest: if a rule with this name is already registered.
        """
        name = name or getattr(rule, "__qualname__", None) or repr(rule)
        if name in self._rules:
            raise InvalidRequest(f"name: an alert rule named {name!r} exists")
        self._rules[name] = rule
        return name

    def unregister_alert_rule(self, name: str) -> None:
        """Remove a rule and resolve its open alert.

        Raises:
            LookupError: if no rule has this name.
        """
        if self._rules.pop(name, None) is None:
            raise LookupError(f"unknown alert rule {name!r}")
        key = self._rule_keys.pop(name, None)
        if key is not None:
            self.clear_alert(key)

    async def evaluate_rules(self) -> None:
        """Evaluate the built-in rules and every registered rule once, now."""
        self._flush()
        cfg = self.config
        now = trio.current_time()
        for pid, w in list(self._windows.items()):
            st = self._status(pid, w, now)
            key = f"error_rate:{pid}"
            if (
                st.throughput_last_minute >= max(1, cfg.min_messages_for_error_rate)
                and st.error_rate > cfg.error_rate_threshold
            ):
                self.fire_alert(
                    key,
                    AlertLevel.ERROR,
                    f"platform {pid!r}: error rate {st.error_rate:.1%} over the last "
                    f"{cfg.window:g} s (threshold {cfg.error_rate_threshold:.1%})",
                    platform_id=pid,
                    metric_name="nekobot_messages_total",
                )
            else:
                self.clear_alert(key)
            key = f"latency_p95:{pid}"
            p95 = st.latency_p95_ms
            if p95 is not None and p95 > cfg.latency_p95_threshold_ms:
                self.fire_alert(
                    key,
                    AlertLevel.WARNING,
                    f"platform {pid!r}: p95 latency {p95:.1f} ms "
                    f"(threshold {cfg.latency_p95_threshold_ms:g} ms)",
                    platform_id=pid,
                    metric_name="nekobot_message_latency_seconds",
                )
            else:
                self.clear_alert(key)
        for name, rule in list(self._rules.items()):
            result: Alert | None
            try:
                with trio.fail_after(cfg.alert_interval):
                    result = await rule(self)
            except Exception:
                self._rule_errors += 1
                log.exception("alert rule %r failed", name)
                continue
            if name not in self._rules:
                continue
            old_key = self._rule_keys.get(name)
            if result is None:
                if old_key is not None:
                    self.clear_alert(old_key)
                    del self._rule_keys[name]
                continue
            key = result.key or f"rule:{name}"
            if old_key is not None and old_key != key:
                self.clear_alert(old_key)
            self._rule_keys[name] = key
            self.fire_alert(
                key,
                result.level,
                result.message,
                platform_id=result.platform_id,
                metric_name=result.metric_name,
            )

    # ---- reading --------------------------------------------------------------

    def platform_ids(self) -> list[str]:
        """Platforms the monitor knows (recorded or given a state), sorted."""
        self._flush()
        return sorted(self._windows)

    def get_platform_status(self, platform_id: str) -> PlatformStatus:
        """Figures of one platform over the window ending now (Trio clock).

        Raises:
            PlatformNotFound: if nothing was ever recorded for this platform
                (nothing is created by asking).
        """
        self._flush()
        w = self._windows.get(platform_id)
        if w is None:
            raise PlatformNotFound(platform_id)
        return self._status(platform_id, w, trio.current_time())

    def get_all_platform_status(self) -> dict[str, PlatformStatus]:
        """:meth:`get_platform_status` of every known platform."""
        self._flush()
        now = trio.current_time()
        return {pid: self._status(pid, w, now) for pid, w in sorted(self._windows.items())}

    def _status(self, pid: str, w: Window, now: float) -> PlatformStatus:
        cfg = self.config
        f = w.figures(now)
        total, errors, p95 = f.total, f.errors, f.latency_p95_ms
        rate = errors / total if total else 0.0
        open_alerts = 0
        severe = False
        for alert_id in self._open.values():
            a = self._alerts[alert_id]
            if a.platform_id == pid:
                open_alerts += 1
                if a.level >= AlertLevel.ERROR:
                    severe = True
        healthy = (
            w.running is not False
            and not severe
            and not (
                total >= max(1, cfg.min_messages_for_error_rate) and rate > cfg.error_rate_threshold
            )
            and not (p95 is not None and p95 > cfg.latency_p95_threshold_ms)
        )
        return PlatformStatus(
            platform_id=pid,
            running=w.running,
            healthy=healthy,
            window=cfg.window,
            throughput_last_minute=total,
            error_count=errors,
            error_rate=rate,
            error_breakdown=f.breakdown,
            latency_avg_ms=f.latency_avg_ms,
            latency_min_ms=f.latency_min_ms,
            latency_max_ms=f.latency_max_ms,
            latency_p50_ms=f.latency_p50_ms,
            latency_p95_ms=p95,
            latency_p99_ms=f.latency_p99_ms,
            messages_total=w.messages_total,
            errors_total=w.errors_total,
            last_message_at=w.last_t,
            last_message_wall=w.last_wall,
            open_alerts=open_alerts,
        )

    def get_status(self) -> MonitorStatus:
        """Overview: platforms, open alerts by level, mailbox and rule counters."""
        self._flush()
        now = trio.current_time()
        open_by_level = {lvl.name: 0 for lvl in AlertLevel}
        for alert_id in self._open.values():
            open_by_level[self._alerts[alert_id].level.name] += 1
        healthy = sum(1 for pid, w in self._windows.items() if self._status(pid, w, now).healthy)
        return MonitorStatus(
            running=self.running,
            platforms=len(self._windows),
            healthy_platforms=healthy,
            open_alerts=open_by_level,
            alerts_kept=len(self._alerts),
            records_applied=self._records_applied,
            records_dropped=self._records_dropped,
            rule_errors=self._rule_errors,
            alert_rules=tuple(self._rules),
        )

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition for ``GET /metrics``.

        Call it in the Trio thread (it applies pending records first).

        Returns:
            tuple[bytes, str]: The body (``generate_latest(registry)``) and its
            ``Content-Type``.
        """
        self._flush()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
