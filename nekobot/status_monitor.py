"""Status monitor: metrics, per-platform windows, alerts, Prometheus exposition.

(First cut for integration: :class:`AlertLevel`, :class:`Alert` and the
:class:`StatusMonitor` signatures are final; the windows and rules follow.)
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry

from .config.schema import MonitorConfig

__all__ = ["Alert", "AlertLevel", "MetricType", "StatusMonitor"]


class MetricType(enum.Enum):
    """Kind of a metric recorded with :meth:`StatusMonitor.record_metric`."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


class AlertLevel(enum.IntEnum):
    """Severity of an :class:`Alert`; higher is worse."""

    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4


@attrs.frozen(kw_only=True)
class Alert:
    """One alert, open or resolved."""

    alert_id: str = ""
    level: AlertLevel = AlertLevel.WARNING
    message: str = ""
    timestamp: float = 0.0
    platform_id: str | None = None
    metric_name: str | None = None
    resolved: bool = False
    resolved_at: float | None = None
    key: str = ""


class StatusMonitor:
    """Metrics and alerts of one bot (placeholder; see issue 4)."""

    def __init__(
        self, config: MonitorConfig | None = None, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.config = config or MonitorConfig()
        self.registry = registry if registry is not None else CollectorRegistry()

    @classmethod
    def from_config(
        cls, cfg: MonitorConfig, registry: CollectorRegistry | None = None
    ) -> StatusMonitor:
        return cls(cfg, registry=registry)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def record_message(
        self,
        platform_id: str,
        message_type: str,
        latency_ms: float,
        success: bool,
        error_type: str | None = None,
    ) -> None:
        pass

    def record_metric(self, name: str, value: float, metric_type: Any, **_: Any) -> None:
        pass

    def fire_alert(
        self,
        key: str,
        level: AlertLevel,
        message: str,
        *,
        platform_id: str | None = None,
        metric_name: str | None = None,
    ) -> None:
        pass

    def clear_alert(self, key: str) -> None:
        pass

    def set_platform_state(self, platform_id: str, running: bool) -> None:
        pass
