"""Prometheus side of the status monitor (internal): named metrics and scrape-time figures.

Only the monitor imports ``prometheus_client``; other parts call
``StatusMonitor.record_metric`` and ``StatusMonitor.exposition``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import InvalidRequest

__all__ = ["CustomMetrics", "ScrapeCollector", "in_trio"]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class CustomMetrics:
    """Metrics created on first use by ``StatusMonitor.record_metric``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._metrics: dict[str, tuple[str, tuple[str, ...], Any]] = {}

    def record(
        self,
        name: str,
        value: float,
        mtype: str,
        labels: Mapping[str, str] | None,
        documentation: str,
    ) -> None:
        """See ``StatusMonitor.record_metric``; ``mtype`` is ``counter|gauge|histogram``."""
        full = name if name.startswith("nekobot_") else f"nekobot_{name}"
        if mtype == "counter" and full.endswith("_total"):
            full = full[: -len("_total")]
        label_names = tuple(sorted(labels)) if labels else ()
        entry = self._metrics.get(full)
        if entry is None:
            if not _METRIC_NAME.match(full):
                raise InvalidRequest(f"name: invalid metric name {name!r}")
            for ln in label_names:
                if not _LABEL_NAME.match(ln) or ln.startswith("__"):
                    raise InvalidRequest(f"labels: invalid label name {ln!r}")
            cls = {"counter": Counter, "gauge": Gauge}.get(mtype, Histogram)
            try:
                metric = cls(full, documentation or full, label_names, registry=self._registry)
            except ValueError as exc:
                raise InvalidRequest(f"name: {name!r}: {exc}") from None
            entry = self._metrics[full] = (mtype, label_names, metric)
        if entry[0] != mtype:
            raise InvalidRequest(f"metric_type: {full!r} is a {entry[0]}, not a {mtype}")
        if entry[1] != label_names:
            raise InvalidRequest(f"labels: {full!r} has labels {list(entry[1])}")
        metric = entry[2].labels(**labels) if labels and label_names else entry[2]
        if mtype == "counter":
            if value < 0:
                raise InvalidRequest(f"value: a counter cannot decrease ({value!r})")
            metric.inc(value)
        elif mtype == "gauge":
            metric.set(value)
        else:
            metric.observe(value)


class ScrapeCollector:
    """Figures computed at scrape time from the monitor's state."""

    def __init__(self, monitor: Any, levels: type[enum.IntEnum]) -> None:
        self._monitor = monitor
        self._levels = levels

    def describe(self) -> list[Metric]:
        """Reserve the names (so ``record_metric`` cannot reuse them)."""
        return [
            GaugeMetricFamily("nekobot_alerts_open", "", labels=["level"]),
            GaugeMetricFamily("nekobot_platform_up", "", labels=["platform_id"]),
            GaugeMetricFamily("nekobot_platform_healthy", "", labels=["platform_id"]),
            GaugeMetricFamily("nekobot_platform_error_rate", "", labels=["platform_id"]),
            CounterMetricFamily("nekobot_monitor_records_dropped", ""),
        ]

    def collect(self) -> Iterator[Metric]:
        m = self._monitor
        open_by_level = GaugeMetricFamily(
            "nekobot_alerts_open", "Open alerts by level.", labels=["level"]
        )
        counts = {lvl: 0 for lvl in self._levels}
        for alert_id in list(m._open.values()):
            a = m._alerts.get(alert_id)
            if a is not None:
                counts[a.level] += 1
        for lvl, n in counts.items():
            open_by_level.add_metric([lvl.name.lower()], n)
        yield open_by_level
        up = GaugeMetricFamily(
            "nekobot_platform_up",
            "1 if the platform is running, 0 if it is down (platforms with a known state).",
            labels=["platform_id"],
        )
        healthy = GaugeMetricFamily(
            "nekobot_platform_healthy", "1 if the platform is healthy.", labels=["platform_id"]
        )
        rate = GaugeMetricFamily(
            "nekobot_platform_error_rate",
            "Failed / total messages in the monitor window.",
            labels=["platform_id"],
        )
        now = trio.current_time() if in_trio() else None
        for pid, w in list(m._windows.items()):
            if w.running is not None:
                up.add_metric([pid], 1.0 if w.running else 0.0)
            if now is not None:
                st = m._status(pid, w, now)
                healthy.add_metric([pid], 1.0 if st.healthy else 0.0)
                rate.add_metric([pid], st.error_rate)
        yield up
        yield healthy
        yield rate
        dropped = CounterMetricFamily(
            "nekobot_monitor_records_dropped",
            "Records dropped because the monitor's mailbox was full.",
        )
        dropped.add_metric([], m._records_dropped)
        yield dropped


def in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
