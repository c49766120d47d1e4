"""Prometheus side of the status monitor: built-in series, named metrics, scrape-time figures.

Only the monitor imports ``prometheus_client``; other parts call
``StatusMonitor.record_metric`` and ``StatusMonitor.exposition``.

Who touches what: the monitor task applies every value (the built-in series
and the values of named metrics). A named metric's *declaration* (its name,
type and label names, and the Prometheus object in the registry) is made in
the caller's task on its first ``record_metric``, so that a bad name, a type
clash or other label names are refused to that caller at once
(:class:`~nekobot.errors.InvalidRequest`); the catalogue only grows, and
``prometheus_client``'s registry is thread-safe. The scrape-time figures read
the monitor's last published snapshot.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import InvalidRequest
from .alerts import AlertLevel
from .snapshots import MonitorSnapshot

__all__ = ["BuiltinMetrics", "MetricCatalog", "MetricType", "ScrapeCollector", "metric_type"]

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricType(enum.Enum):
    """Kind of a metric recorded with :meth:`StatusMonitor.record_metric`."""

    COUNTER = "counter"
    """Only goes up; ``value`` is the increment (``>= 0``)."""
    GAUGE = "gauge"
    """``value`` replaces the current value."""
    HISTOGRAM = "histogram"
    """``value`` is one observation (seconds for ``*_seconds`` names)."""


def metric_type(value: MetricType | str) -> MetricType:
    """``value`` as a :class:`MetricType` (its value in any case accepted).

    Raises:
        InvalidRequest: naming ``metric_type``, for anything else.
    """
    if isinstance(value, MetricType):
        return value
    try:
        return MetricType(str(value).lower())
    except ValueError:
        raise InvalidRequest(
            f"metric_type: expected counter, gauge or histogram, got {value!r}"
        ) from None


class _Declared(NamedTuple):
    kind: MetricType
    label_names: tuple[str, ...]
    metric: Counter | Gauge | Histogram


class MetricCatalog:
    """Named metrics, declared on first use by ``StatusMonitor.record_metric``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._metrics: dict[str, _Declared] = {}

    def declare(
        self,
        name: str,
        value: float,
        kind: MetricType,
        labels: Mapping[str, str] | None,
        documentation: str,
    ) -> tuple[str, tuple[str, ...]]:
        """Check one record (declaring the metric on first use); called by the recorder.

        Returns:
            tuple[str, tuple[str, ...]]: The full metric name and the label
            values in the metric's label order (what the monitor task applies).

        Raises:
            InvalidRequest: see ``StatusMonitor.record_metric``.
        """
        full = name if name.startswith("nekobot_") else f"nekobot_{name}"
        if kind is MetricType.COUNTER and full.endswith("_total"):
            full = full[: -len("_total")]
        label_names = tuple(sorted(labels)) if labels else ()
        entry = self._metrics.get(full)
        if entry is None:
            if not _METRIC_NAME.match(full):
                raise InvalidRequest(f"name: invalid metric name {name!r}")
            for ln in label_names:
                if not _LABEL_NAME.match(ln) or ln.startswith("__"):
                    raise InvalidRequest(f"labels: invalid label name {ln!r}")
            if kind is MetricType.COUNTER and value < 0:
                raise InvalidRequest(f"value: a counter cannot decrease ({value!r})")
            cls = {MetricType.COUNTER: Counter, MetricType.GAUGE: Gauge}.get(kind, Histogram)
            try:
                metric = cls(full, documentation or full, label_names, registry=self._registry)
            except ValueError as exc:
                raise InvalidRequest(f"name: {name!r}: {exc}") from None
            entry = self._metrics[full] = _Declared(kind, label_names, metric)
        if entry.kind is not kind:
            raise InvalidRequest(
                f"metric_type: {full!r} is a {entry.kind.value}, not a {kind.value}"
            )
        if entry.label_names != label_names:
            raise InvalidRequest(f"labels: {full!r} has labels {list(entry.label_names)}")
        if kind is MetricType.COUNTER and value < 0:
            raise InvalidRequest(f"value: a counter cannot decrease ({value!r})")
        values = tuple(str(labels[n]) for n in label_names) if labels else ()
        return full, values

    def apply(self, full: str, label_values: tuple[str, ...], value: float) -> None:
        """Apply one checked value (the monitor task)."""
        entry = self._metrics[full]
        metric = entry.metric.labels(*label_values) if label_values else entry.metric
        if entry.kind is MetricType.COUNTER:
            metric.inc(value)  # type: ignore[union-attr]
        elif entry.kind is MetricType.GAUGE:
            metric.set(value)  # type: ignore[union-attr]
        else:
            metric.observe(value)  # type: ignore[union-attr]


class BuiltinMetrics:
    """The monitor's own series (applied by the monitor task only)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "nekobot_messages",
            "Messages handled, by platform, message type and outcome (ok|error).",
            ["platform_id", "message_type", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "nekobot_message_errors",
            "Failed messages by platform and error type.",
            ["platform_id", "error_type"],
            registry=registry,
        )
        self.latency = Histogram(
            "nekobot_message_latency_seconds",
            "Latency from router accept to handlers done.",
            ["platform_id", "message_type"],
            registry=registry,
        )
        self.alerts_fired = Counter(
            "nekobot_alerts_fired", "Alerts opened, by level.", ["level"], registry=registry
        )
        self._children: dict[tuple[str, str], tuple[Counter, Counter, Histogram]] = {}

    def apply(self, records: Iterable[tuple[str, str, float, bool, str | None]]) -> None:
        """Apply ``(platform_id, message_type, latency_ms, success, error_type)`` records.

        Counters are incremented once per label set of the batch.
        """
        cache = self._children
        grouped: dict[tuple[str, str, bool], int] = {}
        errors: dict[tuple[str, str], int] = {}
        for pid, mtype, latency_ms, ok, error_type in records:
            children = cache.get((pid, mtype))
            if children is None:
                children = cache[(pid, mtype)] = (
                    self.messages.labels(pid, mtype, "ok"),
                    self.messages.labels(pid, mtype, "error"),
                    self.latency.labels(pid, mtype),
                )
            children[2].observe(latency_ms / 1000.0)
            gk = (pid, mtype, ok)
            grouped[gk] = grouped.get(gk, 0) + 1
            if not ok:
                ek = (pid, error_type or "error")
                errors[ek] = errors.get(ek, 0) + 1
        for (pid, mtype, ok), count in grouped.items():
            ok_child, error_child, _ = cache[(pid, mtype)]
            (ok_child if ok else error_child).inc(count)
        for (pid, et), count in errors.items():
            self.errors.labels(pid, et).inc(count)

    def fired(self, level: AlertLevel) -> None:
        """Count one alert opened at ``level``."""
        self.alerts_fired.labels(level.name.lower()).inc()


class ScrapeCollector:
    """Figures computed at scrape time from the monitor's last snapshot.

    Args:
        snapshot: Returns the last published snapshot (any thread may call it).
        dropped: Returns the records dropped so far.
    """

    def __init__(self, snapshot: Callable[[], MonitorSnapshot], dropped: Callable[[], int]) -> None:
        self._snapshot = snapshot
        self._dropped = dropped

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
        """The scrape-time families, from one snapshot."""
        snap = self._snapshot()
        open_by_level = GaugeMetricFamily(
            "nekobot_alerts_open", "Open alerts by level.", labels=["level"]
        )
        for name, n in snap.status.open_alerts.items():
            open_by_level.add_metric([name.lower()], n)
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
        for pid, st in snap.platforms.items():
            if st.running is not None:
                up.add_metric([pid], 1.0 if st.running else 0.0)
            healthy.add_metric([pid], 1.0 if st.healthy else 0.0)
            rate.add_metric([pid], st.error_rate)
        yield up
        yield healthy
        yield rate
        dropped = CounterMetricFamily(
            "nekobot_monitor_records_dropped",
            "Records dropped because the monitor's mailbox was full.",
        )
        dropped.add_metric([], self._dropped())
        yield dropped
