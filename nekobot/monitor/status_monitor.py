"""Status monitor: per-platform windows, alerts, Prometheus exposition (an actor).

Every figure an operator reads comes from here. The router and the platforms
record into the monitor without being asked; the HTTP API reads it back.

How it works (the long version is in ``docs/architecture.md``):

- **Recording is synchronous and cheap.** :meth:`StatusMonitor.record_message`
  and the other recording methods put one small frozen message into the
  monitor's mailbox with ``cast_nowait``; they never block, and a full (or
  closed) mailbox drops the message and counts it (``records_dropped``).
  Call them from Trio tasks; from a worker thread use
  ``trio.from_thread.run_sync``.
- **The monitor task owns the state.** It drains its mailbox in batches
  (:mod:`.messages`), applies them to its windows, alerts and Prometheus
  series, and publishes a frozen :class:`~.snapshots.MonitorSnapshot`.
- **Reads are synchronous and never change anything.** Every getter reads the
  last snapshot. A change is published at once if the last publish is at least
  ``FLUSH_INTERVAL`` (0.5 s, Trio clock) old, else that long after the last
  one: at most one publish per batch and per flush interval, however many
  records arrive. ``await monitor.flush()`` publishes everything sent before
  it, as of now (read-your-writes for tests and the HTTP API).
- **Windows run on the Trio clock.** Each platform keeps a sliding window of
  ``MonitorConfig.window`` seconds (60 by default) made of 120 buckets (see
  :mod:`.window`). The monitor wakes when a window loses its oldest bucket or
  sample, not periodically: a platform with an empty window costs no CPU.
- **Alerts.** :meth:`StatusMonitor.fire_alert` with a key opens an alert, or
  updates the one open alert with that key; :meth:`StatusMonitor.clear_alert`
  resolves it. Built-in rules (error rate, latency p95) and the rules given to
  :meth:`StatusMonitor.register_alert_rule` are evaluated by the monitor task
  every ``alert_interval`` seconds (Trio clock) while something can change
  their outcome (a rule is registered, a window changed, or a built-in alert
  is open); "platform down" follows :meth:`StatusMonitor.set_platform_state`;
  "breaker open" arrives from fault isolation through ``fire_alert``. The
  history is bounded by ``max_alerts`` (resolved alerts are pruned first).
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

import math
import time
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..config.schema import MonitorConfig
from ..core.actor import Actor
from ..core.timer import Timer
from ..errors import ActorStopped, AlertNotFound, MailboxFull, PlatformNotFound
from .alerts import Alert, AlertLevel, AlertRule
from .messages import (
    ClearAlert,
    EvaluateRules,
    FireAlert,
    Flush,
    ForgetPlatform,
    MetricValue,
    MonitorMessage,
    Record,
    RegisterRule,
    ResolveAlert,
    SetPlatformState,
    Tick,
    UnregisterRule,
)
from .metrics import BuiltinMetrics, MetricCatalog, MetricType, ScrapeCollector
from .metrics import metric_type as _metric_type
from .snapshots import MonitorSnapshot, MonitorStatus, PlatformStatus
from .state import FLUSH_INTERVAL, MonitorState

__all__ = [
    "FLUSH_INTERVAL",
    "Alert",
    "AlertLevel",
    "AlertRule",
    "MetricType",
    "MonitorStatus",
    "PlatformStatus",
    "StatusMonitor",
]


class StatusMonitor(Actor[MonitorMessage, MonitorSnapshot]):
    """Metrics and alerts of one bot (an actor; start it with ``nursery.start(monitor.run)``).

    Recording works before :meth:`run` too (records wait in the mailbox and
    are applied when it starts); the getters show them once the monitor task
    has published them; calls (:meth:`flush`, :meth:`resolve_alert`, …) need
    the task running.

    Args:
        config (MonitorConfig | int | None): Window, thresholds, alert interval
            and history bounds; an ``int`` is the seed's ``history_size``
            (``StatusMonitor(1000)``) with the other settings at their defaults.
        registry (CollectorRegistry | None): Where the Prometheus metrics live; a
            new registry (the bot's own, not the global default) if omitted.
        mailbox_size (int): Messages waiting to be applied at most; more are
            dropped and counted (``records_dropped``).
    """

    def __init__(
        self,
        config: MonitorConfig | int | None = None,
        *,
        registry: CollectorRegistry | None = None,
        mailbox_size: int = 100_000,
    ) -> None:
        super().__init__("monitor", mailbox_size=mailbox_size)
        if isinstance(config, int):
            config = MonitorConfig(history_size=config)
        self.config: MonitorConfig = config or MonitorConfig()
        self.registry: CollectorRegistry = (
            registry if registry is not None else CollectorRegistry(auto_describe=True)
        )
        self._records_dropped = 0  # the only counter callers touch (a failed cast)
        self._catalog = MetricCatalog(self.registry)
        self._state = MonitorState(
            self.config,
            self._catalog,
            BuiltinMetrics(self.registry),
            lambda: self._records_dropped,
        )
        self._timer: Timer[MonitorMessage] = Timer(Tick())
        self.registry.register(ScrapeCollector(self._snap, lambda: self._records_dropped))
        self.publish(
            MonitorSnapshot(
                platforms={},
                alerts=(),
                alerts_by_id={},
                status=self._state.overview(False),
                published_at=-math.inf,
            )
        )

    @classmethod
    def from_config(
        cls, cfg: MonitorConfig, registry: CollectorRegistry | None = None
    ) -> StatusMonitor:
        """Build the monitor from ``[monitor]`` (the bot's own registry if none given)."""
        return cls(cfg, registry=registry)

    # ---- running -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the mailbox, and wake at the next deadline, until cancelled.

        Idle, the task is parked (no CPU): it wakes for a message, for a
        coalesced publish, when a window loses its oldest bucket or sample, or
        for a due rule evaluation (all on the Trio clock). Stops when its scope
        is cancelled or its mailbox is closed.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer.run, self.ref)
            try:
                await super().run(task_status=task_status)
            finally:
                nursery.cancel_scope.cancel()

    async def on_start(self) -> None:
        """Anchor the rule evaluations: every ``alert_interval`` from now (Trio clock)."""
        self._state.start(trio.current_time())

    async def handle_batch(self, batch: list[Any]) -> None:
        """Apply a drained batch (:class:`~.state.MonitorState`), then answer its calls."""
        answers = await self._state.handle_batch(batch, self)
        self._timer.at(self._state.next_deadline())
        for call, value, failed in answers:
            if failed:
                call.fail(value)
            else:
                call.reply(value)

    def _snap(self) -> MonitorSnapshot:
        snap = self.snapshot
        assert snap is not None  # published in __init__
        return snap

    # ---- recording (sync, non-blocking) -----------------------------------

    def _cast(self, msg: MonitorMessage) -> None:
        try:
            self.ref.cast_nowait(msg)
        except (MailboxFull, ActorStopped):
            self._records_dropped += 1

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
        try:
            self.ref.cast_nowait(
                Record(
                    trio.current_time(), platform_id, message_type, latency_ms, success, error_type
                )
            )
        except (MailboxFull, ActorStopped):
            self._records_dropped += 1

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
        is added if missing; a counter is exposed as ``<name>_total``. The
        record is checked here (declaring the metric on its first record); the
        monitor task applies the value, in the order of the records.

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
        kind = _metric_type(metric_type)
        full, values = self._catalog.declare(name, value, kind, labels, documentation)
        self._cast(MetricValue(full, values, float(value)))

    def set_platform_state(
        self, platform_id: str, running: bool, *, expected: bool = False
    ) -> None:
        """Record whether a platform runs; feeds the "platform down" alert (sync).

        ``running=False`` opens (or updates) the ERROR alert
        ``platform_down:<platform_id>`` unless ``expected`` is true (a person
        stopped it, or the bot is shutting down); ``running=True`` or an
        expected stop resolves it. The platform is known to
        :meth:`get_platform_status` from the next publish on.
        """
        self._cast(
            SetPlatformState(platform_id, running, expected, trio.current_time(), time.time())
        )

    def forget_platform(self, platform_id: str) -> None:
        """Drop a removed platform's window and resolve its open alerts (sync).

        A platform the monitor does not know is ignored when the message is
        applied (nothing is created).
        """
        self._cast(ForgetPlatform(platform_id, trio.current_time()))

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
        message, sets ``updated_at`` and counts the repeat (``count``). The
        times are those of this call (Trio clock and wall clock).

        Args:
            level (AlertLevel | str): An :class:`AlertLevel` or its name (``"warning"``).

        Raises:
            ValueError: if ``level`` is no level.
        """
        self._cast(
            FireAlert(
                key,
                AlertLevel.coerce(level),
                message,
                platform_id,
                metric_name,
                trio.current_time(),
                time.time(),
            )
        )

    def clear_alert(self, key: str) -> None:
        """Resolve the open alert of condition ``key``, if there is one (sync)."""
        self._cast(ClearAlert(key, trio.current_time()))

    async def resolve_alert(self, alert_id: str, *, timeout: float = 5.0) -> Alert:
        """Resolve an alert by hand (a resolved one is returned unchanged).

        If its condition still holds, the next evaluation opens a new alert.

        Args:
            alert_id (str): The alert.
            timeout (float): Trio clock seconds to wait for the monitor.

        Returns:
            Alert: The resolved alert (already published when this returns).

        Raises:
            AlertNotFound: if no alert in the history has this id.
            CallTimeout: if the monitor did not answer within ``timeout``.
        """
        return await self.ref.call(ResolveAlert(alert_id), timeout=timeout)

    async def flush(self, *, timeout: float = 5.0) -> None:
        """Return once everything sent before this call is applied and published.

        The figures published are those of the windows as of now (Trio clock).

        Args:
            timeout (float): Trio clock seconds to wait for the monitor.

        Raises:
            CallTimeout: if the monitor did not answer within ``timeout`` (is
                its task running?).
        """
        await self.ref.call(Flush(), timeout=timeout)

    async def register_alert_rule(
        self, rule: AlertRule, *, name: str | None = None, timeout: float = 5.0
    ) -> str:
        """Add a rule the monitor task evaluates every ``alert_interval`` seconds.

        The rule is ``async (monitor) -> Alert | None``. A returned ``Alert``
        (only ``level`` and ``message`` are needed) opens or updates the rule's
        one open alert, keyed ``alert.key`` or ``"rule:<name>"``; ``None``
        resolves it. A rule that raises or runs longer than ``alert_interval``
        is counted in ``rule_errors`` and its open alert is left as it is.

        Args:
            rule: The rule.
            name (str | None): Its name; the function's ``__qualname__`` if omitted.
            timeout (float): Trio clock seconds to wait for the monitor.

        Returns:
            str: The name (for :meth:`unregister_alert_rule`).

        Raises:
            InvalidRequest: if a rule with this name is already registered.
            CallTimeout: if the monitor did not answer within ``timeout``.
        """
        name = name or getattr(rule, "__qualname__", None) or repr(rule)
        return await self.ref.call(RegisterRule(rule, name), timeout=timeout)

    async def unregister_alert_rule(self, name: str, *, timeout: float = 5.0) -> None:
        """Remove a rule and resolve its open alert.

        Raises:
            LookupError: if no rule has this name.
            CallTimeout: if the monitor did not answer within ``timeout``.
        """
        await self.ref.call(UnregisterRule(name), timeout=timeout)

    async def evaluate_rules(self, *, timeout: float = 5.0) -> None:
        """Have the monitor task evaluate the built-in and registered rules once, now.

        Raises:
            CallTimeout: if the monitor did not answer within ``timeout``.
        """
        await self.ref.call(EvaluateRules(), timeout=timeout)

    # ---- reading (the last snapshot; nothing changes) ------------------------

    def get_alerts(
        self, level: AlertLevel | None = None, include_resolved: bool = False
    ) -> list[Alert]:
        """Alerts in the order they opened (oldest first).

        Args:
            level (AlertLevel | None): Only alerts of exactly this level.
            include_resolved (bool): Include resolved alerts of the history.
        """
        return [
            a
            for a in self._snap().alerts
            if (include_resolved or not a.resolved) and (level is None or a.level == level)
        ]

    def get_alert(self, alert_id: str) -> Alert:
        """One alert by id.

        Raises:
            AlertNotFound: if no alert in the history has this id.
        """
        alert = self._snap().alerts_by_id.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        return alert

    def platform_ids(self) -> list[str]:
        """Platforms the monitor knows (recorded or given a state), sorted."""
        return list(self._snap().platforms)

    def get_platform_status(self, platform_id: str) -> PlatformStatus:
        """Figures of one platform as of the last publish (Trio clock).

        Raises:
            PlatformNotFound: if nothing was ever recorded for this platform
                (nothing is created by asking).
        """
        st = self._snap().platforms.get(platform_id)
        if st is None:
            raise PlatformNotFound(platform_id)
        return st

    def get_all_platform_status(self) -> dict[str, PlatformStatus]:
        """:meth:`get_platform_status` of every known platform, sorted by id."""
        return dict(self._snap().platforms)

    def get_status(self) -> MonitorStatus:
        """Overview: platforms, open alerts by level, mailbox and rule counters.

        ``running`` and ``records_dropped`` are read as they are now; the rest
        as of the last publish.
        """
        status = self._snap().status
        if status.running is not self.running or status.records_dropped != self._records_dropped:
            status = attrs.evolve(
                status, running=self.running, records_dropped=self._records_dropped
            )
        return status

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text exposition for ``GET /metrics`` (any thread).

        Counters and histograms lag the records by at most one batch of the
        monitor task; the scrape-time figures (``alerts_open``, ``platform_up``,
        ``platform_healthy``, ``platform_error_rate``) are those of the last
        snapshot (at most one flush interval, 0.5 s, old while records arrive).

        Returns:
            tuple[bytes, str]: The body (``generate_latest(registry)``) and its
            ``Content-Type``.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
