"""What the status monitor publishes: per-platform figures, its overview, the snapshot.

All of them are frozen: the monitor task builds a new :class:`MonitorSnapshot`
when something changed and the synchronous getters read the last one.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..config.schema import MonitorConfig
from .alerts import Alert
from .window import Window, WindowFigures

__all__ = ["MonitorSnapshot", "MonitorStatus", "PlatformStatus", "platform_status"]


@attrs.frozen(kw_only=True)
class PlatformStatus:
    """Figures of one platform over the sliding window (Trio clock).

    The figures are those of the window as it was when the monitor last
    published (at most one flush interval, 0.5 s, ago while records arrive;
    ``await monitor.flush()`` publishes them as of now).
    """

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
    """Records (of any kind) dropped because the mailbox was full or closed."""
    rule_errors: int
    """Alert rule evaluations that raised or timed out."""
    alert_rules: tuple[str, ...]
    """Names of the registered (non built-in) alert rules."""


@attrs.frozen(kw_only=True)
class MonitorSnapshot:
    """Everything the getters read, as of one publish (never changed afterwards)."""

    platforms: Mapping[str, PlatformStatus]
    """Figures of every known platform, sorted by id."""
    alerts: tuple[Alert, ...]
    """The alert history, oldest first (open and resolved)."""
    alerts_by_id: Mapping[str, Alert]
    """The same alerts by ``alert_id``."""
    status: MonitorStatus
    """The overview."""
    published_at: float
    """Trio clock seconds of the publish (``-inf`` before the monitor first ran)."""


def platform_status(
    pid: str,
    w: Window,
    f: WindowFigures,
    cfg: MonitorConfig,
    open_alerts: int,
    severe: bool,
) -> PlatformStatus:
    """One platform's :class:`PlatformStatus` from its window's figures.

    Args:
        pid (str): The platform.
        w (Window): Its window (for the running state and the totals).
        f (WindowFigures): The window's figures, pruned to now.
        cfg (MonitorConfig): Thresholds that decide ``healthy``.
        open_alerts (int): Open alerts naming the platform.
        severe (bool): One of them is ERROR or worse.
    """
    total, errors, p95 = f.total, f.errors, f.latency_p95_ms
    rate = errors / total if total else 0.0
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
