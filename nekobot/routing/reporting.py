"""What the router tells the monitor: a small Protocol, and the two metrics it records.

The router is given its monitor at construction (anything with the two sync,
cheap methods of :class:`RouterMonitor`, e.g. ``StatusMonitor``); it never
imports ``monitor/``. A metric that fails to record never breaks routing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from ..messages import Message
from .stats import DeadLetter

__all__ = [
    "RouterMonitor",
    "count_handler_error",
    "count_outcome",
    "report_dead_letter",
    "report_failure",
]

log = logging.getLogger("nekobot.routing.message_router")


class RouterMonitor(Protocol):
    """The part of the status monitor the router uses (both sync and cheap)."""

    def record_message(
        self,
        platform_id: str,
        message_type: str,
        latency_ms: float,
        success: bool,
        error_type: str | None = None,
    ) -> None:
        """One message done: latency in milliseconds (Trio clock), success or not."""

    def record_metric(
        self,
        name: str,
        value: float,
        metric_type: str,
        *,
        labels: Mapping[str, str] | None = None,
        documentation: str = "",
    ) -> None:
        """One value of a named metric."""


def count_outcome(monitor: RouterMonitor | None, outcome: str) -> None:
    """Count one message ``dropped`` / ``deduplicated`` / ``dead_lettered``."""
    if monitor is None:
        return
    try:
        monitor.record_metric(
            "router_messages_total",
            1,
            "counter",
            labels={"outcome": outcome},
            documentation="Messages the router dropped, deduplicated or dead-lettered.",
        )
    except Exception:  # a metric never breaks routing
        log.exception("router: record_metric failed")


def count_handler_error(
    monitor: RouterMonitor | None, message_type: str, handler: str, error_type: str
) -> None:
    """Count one handler call that raised (a handler fault, not a platform's)."""
    if monitor is None:
        return
    try:
        monitor.record_metric(
            "router_handler_errors_total",
            1,
            "counter",
            labels={"message_type": message_type, "handler": handler, "error_type": error_type},
            documentation="Handler calls that raised (a handler fault, not a platform's).",
        )
    except Exception:  # a metric never breaks routing
        log.exception("router: record_metric failed")


def report_failure(
    monitor: RouterMonitor | None, handler: str, msg: Message, attempt: int, exc: BaseException
) -> None:
    """One handler call raised: log it with its traceback, count it at the monitor."""
    log.warning(
        "handler %s failed on %s message %s from %r (attempt %d)",
        handler,
        msg.message_type,
        msg.message_id,
        msg.platform_id,
        attempt,
        exc_info=exc,
    )
    count_handler_error(monitor, msg.message_type, handler, type(exc).__name__)


def report_dead_letter(monitor: RouterMonitor | None, dl: DeadLetter) -> None:
    """One message dead-lettered: log it, count it, record it as a failed message
    with ``error_type = "handler:<class>"`` (latency from acceptance, Trio clock)."""
    msg = dl.message
    count_outcome(monitor, "dead_lettered")
    log.warning(
        "dead-lettered %s message %s from %r after %d attempts: %s failed with %s",
        msg.message_type,
        msg.message_id,
        msg.platform_id,
        dl.attempts,
        ", ".join(dl.handlers),
        dl.error,
    )
    if monitor is not None:
        monitor.record_message(
            msg.platform_id,
            msg.message_type,
            (dl.at - msg.received_at) * 1000.0,
            False,
            f"handler:{dl.error_type}",
        )
