"""The messages the status monitor actor accepts.

Records are casts put with ``cast_nowait`` by the synchronous recording
methods (a full mailbox drops them and counts the drop); requests are
answered with ``call``. The two hot records are ``NamedTuple`` s (immutable
and the cheapest to build); the rest are frozen attrs classes.

=========================  ==================  ======================================
message                    answer              sent by
=========================  ==================  ======================================
:class:`Record`            (cast)              ``record_message``
:class:`MetricValue`       (cast)              ``record_metric``
:class:`FireAlert`         (cast)              ``fire_alert``
:class:`ClearAlert`        (cast)              ``clear_alert``
:class:`SetPlatformState`  (cast)              ``set_platform_state``
:class:`ForgetPlatform`    (cast)              ``forget_platform``
:class:`Flush`             ``None``            ``flush``
:class:`ResolveAlert`      :class:`Alert`      ``resolve_alert``
:class:`RegisterRule`      ``str`` (its name)  ``register_alert_rule``
:class:`UnregisterRule`    ``None``            ``unregister_alert_rule``
:class:`EvaluateRules`     ``None``            ``evaluate_rules``
:class:`Tick`              ``None``            the monitor's timer
=========================  ==================  ======================================
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from ..core.actor import Request
from .alerts import Alert, AlertLevel, AlertRule

__all__ = [
    "ClearAlert",
    "EvaluateRules",
    "FireAlert",
    "Flush",
    "ForgetPlatform",
    "MetricValue",
    "MonitorMessage",
    "Record",
    "RegisterRule",
    "ResolveAlert",
    "SetPlatformState",
    "Tick",
    "UnregisterRule",
]


class Record(NamedTuple):
    """One handled message."""

    t: float
    """Trio clock seconds when it was recorded."""
    platform_id: str
    message_type: str
    latency_ms: float
    success: bool
    error_type: str | None


class MetricValue(NamedTuple):
    """One checked value of a named metric (declared already by the recorder)."""

    name: str
    """Full metric name (``nekobot_…``; a counter without ``_total``)."""
    label_values: tuple[str, ...]
    """Label values in the metric's label order."""
    value: float


@attrs.frozen
class FireAlert:
    """Open or update the alert of condition ``key``."""

    key: str
    level: AlertLevel
    message: str
    platform_id: str | None
    metric_name: str | None
    t: float
    """Trio clock seconds of the fire."""
    wall: float
    """Wall-clock ``time.time()`` of the fire."""


@attrs.frozen
class ClearAlert:
    """Resolve the open alert of condition ``key``, if any."""

    key: str
    t: float
    """Trio clock seconds of the clear."""


@attrs.frozen
class SetPlatformState:
    """A platform runs (or not); a stop that was not ``expected`` opens "platform down"."""

    platform_id: str
    running: bool
    expected: bool
    t: float
    """Trio clock seconds of the change."""
    wall: float
    """Wall-clock ``time.time()`` of the change."""


@attrs.frozen
class ForgetPlatform:
    """Drop a removed platform's window and resolve its open alerts."""

    platform_id: str
    t: float
    """Trio clock seconds of the removal."""


@attrs.frozen
class Flush(Request[None]):
    """Answered once everything sent before it is applied and published."""


@attrs.frozen
class Tick(Request[None]):
    """The timer's wake-up: publish, move windows, evaluate rules when due."""


@attrs.frozen
class ResolveAlert(Request[Alert]):
    """Resolve an alert by hand; fails with ``AlertNotFound``."""

    alert_id: str


@attrs.frozen
class RegisterRule(Request[str]):
    """Add an alert rule; fails with ``InvalidRequest`` if the name is taken."""

    rule: AlertRule
    name: str


@attrs.frozen
class UnregisterRule(Request[None]):
    """Remove an alert rule and resolve its open alert; fails with ``LookupError``."""

    name: str


@attrs.frozen
class EvaluateRules(Request[None]):
    """Evaluate the built-in and registered rules once, now."""


MonitorMessage = (
    Record
    | MetricValue
    | FireAlert
    | ClearAlert
    | SetPlatformState
    | ForgetPlatform
    | Flush
    | Tick
    | ResolveAlert
    | RegisterRule
    | UnregisterRule
    | EvaluateRules
)
"""Everything the monitor's mailbox carries."""
