"""Alert rules of the status monitor: the built-in ones and those registered by name.

Evaluated by the monitor task every ``alert_interval`` seconds (Trio clock),
never in a caller's task. Built-in keys: ``error_rate:<platform_id>`` (ERROR)
and ``latency_p95:<platform_id>`` (WARNING); a registered rule's alert is
keyed ``alert.key`` or ``"rule:<name>"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..config.schema import MonitorConfig
from ..errors import InvalidRequest
from .alerts import AlertBook, AlertLevel, AlertRule
from .table import PlatformTable

if TYPE_CHECKING:
    from .status_monitor import StatusMonitor

__all__ = ["BUILTIN_PREFIXES", "Fire", "RuleSet", "evaluate_builtin"]

log = logging.getLogger("nekobot.monitor.status_monitor")

BUILTIN_PREFIXES = ("error_rate:", "latency_p95:")
"""Key prefixes of the built-in rules' alerts."""

Fire = Callable[[str, AlertLevel, str, "str | None", "str | None"], None]
"""``fire(key, level, message, platform_id, metric_name)``."""


def builtin_open(book: AlertBook) -> set[str]:
    """Platforms with an open alert of a built-in rule."""
    return {
        book.alerts[aid].platform_id or ""
        for key, aid in book.open.items()
        if key.startswith(BUILTIN_PREFIXES)
    }


def evaluate_builtin(
    table: PlatformTable,
    book: AlertBook,
    cfg: MonitorConfig,
    fire: Fire,
    clear: Callable[[str], None],
) -> None:
    """Fire or clear the error-rate and p95-latency alerts.

    Looks only at platforms whose window holds something or that have such an
    alert open (an empty window can fire neither); the figures must be
    rebuilt to now first (:meth:`PlatformTable.rebuild`).
    """
    for pid in sorted(table.live | (builtin_open(book) & table.windows.keys())):
        st = table.statuses[pid]
        key = f"error_rate:{pid}"
        if (
            st.throughput_last_minute >= max(1, cfg.min_messages_for_error_rate)
            and st.error_rate > cfg.error_rate_threshold
        ):
            fire(
                key,
                AlertLevel.ERROR,
                f"platform {pid!r}: error rate {st.error_rate:.1%} over the last "
                f"{cfg.window:g} s (threshold {cfg.error_rate_threshold:.1%})",
                pid,
                "nekobot_messages_total",
            )
        else:
            clear(key)
        key = f"latency_p95:{pid}"
        p95 = st.latency_p95_ms
        if p95 is not None and p95 > cfg.latency_p95_threshold_ms:
            fire(
                key,
                AlertLevel.WARNING,
                f"platform {pid!r}: p95 latency {p95:.1f} ms "
                f"(threshold {cfg.latency_p95_threshold_ms:g} ms)",
                pid,
                "nekobot_message_latency_seconds",
            )
        else:
            clear(key)


class RuleSet:
    """Rules registered by name, with the key of each one's open alert."""

    def __init__(self) -> None:
        self.rules: dict[str, AlertRule] = {}
        self.keys: dict[str, str] = {}
        self.errors = 0
        """Evaluations that raised or timed out."""

    def add(self, rule: AlertRule, name: str) -> str:
        """Register ``rule`` as ``name``.

        Raises:
            InvalidRequest: if a rule with this name is already registered.
        """
        if name in self.rules:
            raise InvalidRequest(f"name: an alert rule named {name!r} exists")
        self.rules[name] = rule
        return name

    def remove(self, name: str) -> str | None:
        """Unregister ``name``; returns the key of its open alert, if any.

        Raises:
            LookupError: if no rule has this name.
        """
        if self.rules.pop(name, None) is None:
            raise LookupError(f"unknown alert rule {name!r}")
        return self.keys.pop(name, None)

    async def evaluate(
        self,
        monitor: StatusMonitor,
        timeout: float,
        fire: Fire,
        clear: Callable[[str], None],
    ) -> None:
        """Run every rule once (each under ``fail_after(timeout)``, Trio clock seconds).

        A rule that raises or times out is counted in :attr:`errors` and its
        open alert is left as it is.
        """
        for name, rule in list(self.rules.items()):
            try:
                with trio.fail_after(timeout):
                    result = await rule(monitor)
            except Exception:
                self.errors += 1
                log.exception("alert rule %r failed", name)
                continue
            if name not in self.rules:
                continue
            old_key = self.keys.get(name)
            if result is None:
                if old_key is not None:
                    clear(old_key)
                    del self.keys[name]
                continue
            key = result.key or f"rule:{name}"
            if old_key is not None and old_key != key:
                clear(old_key)
            self.keys[name] = key
            fire(key, result.level, result.message, result.platform_id, result.metric_name)
