"""The status monitor's state, and how one drained batch of its mailbox is applied.

Only the monitor task calls :meth:`MonitorState.handle_batch`; everything here
is the actor's own. After a batch it knows its next deadline
(:meth:`MonitorState.next_deadline`): the coalesced publish, the next window
edge, or the next rule evaluation, whichever comes first, or ``math.inf`` when
nothing will change by itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ..config.schema import MonitorConfig
from ..core.actor import Call
from .alerts import AlertBook, AlertLevel
from .messages import (
    ClearAlert,
    EvaluateRules,
    FireAlert,
    ForgetPlatform,
    MetricValue,
    Record,
    RegisterRule,
    ResolveAlert,
    SetPlatformState,
    Tick,
    UnregisterRule,
)
from .metrics import BuiltinMetrics, MetricCatalog
from .rules import RuleSet, builtin_open, evaluate_builtin
from .snapshots import MonitorSnapshot, MonitorStatus
from .table import PlatformTable

if TYPE_CHECKING:
    from .status_monitor import StatusMonitor

__all__ = ["FLUSH_INTERVAL", "Answer", "MonitorState"]

FLUSH_INTERVAL = 0.5
"""Seconds (Trio clock) between two publishes of the snapshot, at least (calls excepted)."""

Answer = tuple[Call[Any], Any, bool]
"""A call of the batch, its value or error, and whether it failed."""


class MonitorState:
    """Windows, alerts, rules and Prometheus series of one monitor (actor state).

    Args:
        cfg (MonitorConfig): The monitor's settings.
        catalog (MetricCatalog): Named metrics (declared by the recorders).
        metrics (BuiltinMetrics): The monitor's own Prometheus series.
        dropped (Callable[[], int]): Records dropped so far (counted by the recorders).
    """

    def __init__(
        self,
        cfg: MonitorConfig,
        catalog: MetricCatalog,
        metrics: BuiltinMetrics,
        dropped: Callable[[], int],
    ) -> None:
        self.cfg = cfg
        self.table = PlatformTable(cfg)
        self.book = AlertBook(cfg.max_alerts)
        self.rules = RuleSet()
        self.records_applied = 0
        self._catalog = catalog
        self._metrics = metrics
        self._dropped = dropped
        self._stale = False
        self._last_publish = -math.inf
        self._next_eval = math.inf
        self._eval_armed = False

    def start(self, now: float) -> None:
        """Anchor the rule evaluations: every ``alert_interval`` from ``now`` (Trio clock)."""
        self._next_eval = now + self.cfg.alert_interval

    async def handle_batch(self, batch: list[Any], monitor: StatusMonitor) -> list[Answer]:
        """Apply a drained batch in arrival order, evaluate if due, publish.

        Returns:
            list[Answer]: The calls of the batch with their answers, to be sent
            after the publish (so a caller reads its own writes).
        """
        now = trio.current_time()
        due = now >= self._next_eval
        armed = self._eval_armed
        answers: list[Answer] = []
        records: list[Record] = []
        force = False
        for item in batch:
            if type(item) is Record:
                records.append(item)
                continue
            if records:
                self._apply_records(records)
                records = []
            if type(item) is MetricValue:
                self._catalog.apply(item.name, item.label_values, item.value)
            elif isinstance(item, Call):
                if item.abandoned:
                    continue
                if type(item.msg) is not Tick:
                    force = True
                try:
                    value = await self._on_call(item.msg, monitor)
                except Exception as exc:
                    answers.append((item, exc, True))
                else:
                    answers.append((item, value, False))
            else:
                self._on_cast(item)
        if records:
            self._apply_records(records)
        if due:
            if armed:
                await self._evaluate(monitor)
                force = True
            now = trio.current_time()
            interval = self.cfg.alert_interval
            if now >= self._next_eval:
                self._next_eval += interval * (math.floor((now - self._next_eval) / interval) + 1)
        if force or now >= self._last_publish + FLUSH_INTERVAL:
            self.publish(now, monitor)
        return answers

    # ---- applying messages -------------------------------------------------

    def _apply_records(self, records: list[Record]) -> None:
        wall_offset = time.time() - trio.current_time()
        table = self.table
        for r in records:
            w = table.window(r.platform_id)
            w.add(r.t, r.latency_ms, r.success, r.error_type)
            w.last_wall = r.t + wall_offset
            table.touched(r.platform_id, r.t)
        self._metrics.apply(r[1:] for r in records)
        self.records_applied += len(records)
        self._stale = True

    def _on_cast(self, msg: Any) -> None:
        self._stale = True
        book = self.book
        if type(msg) is FireAlert:
            self._fire_at(
                msg.key, msg.level, msg.message, msg.platform_id, msg.metric_name, msg.t, msg.wall
            )
        elif type(msg) is ClearAlert:
            book.clear(msg.key, msg.t)
        elif type(msg) is SetPlatformState:
            w = self.table.window(msg.platform_id)
            if w.running is not msg.running:
                w.running = msg.running
                self.table.dirty.add(msg.platform_id)
            key = f"platform_down:{msg.platform_id}"
            if msg.running or msg.expected:
                book.clear(key, msg.t)
            else:
                self._fire_at(
                    key,
                    AlertLevel.ERROR,
                    f"platform {msg.platform_id!r} is down",
                    msg.platform_id,
                    "nekobot_platform_up",
                    msg.t,
                    msg.wall,
                )
        elif type(msg) is ForgetPlatform:
            if self.table.forget(msg.platform_id):
                for key in book.open_keys_for(msg.platform_id):
                    book.clear(key, msg.t)

    async def _on_call(self, msg: Any, monitor: StatusMonitor) -> Any:
        if type(msg) is ResolveAlert:
            alert = self.book.resolve(msg.alert_id, trio.current_time())
            self._stale = True
            self.table.changed_since_eval = True  # a condition that holds opens a new one
            return alert
        if type(msg) is RegisterRule:
            return self.rules.add(msg.rule, msg.name)
        if type(msg) is UnregisterRule:
            key = self.rules.remove(msg.name)
            if key is not None:
                self.book.clear(key, trio.current_time())
            self._stale = True
            return None
        if type(msg) is EvaluateRules:
            await self._evaluate(monitor)
            return None
        return None  # Flush, Tick: the batch publishes before answering

    def _fire_at(
        self,
        key: str,
        level: AlertLevel,
        message: str,
        platform_id: str | None,
        metric_name: str | None,
        t: float,
        wall: float,
    ) -> None:
        opened = self.book.fire(
            key, level, message, platform_id=platform_id, metric_name=metric_name, now=t, wall=wall
        )
        if opened:
            self._metrics.fired(level)

    def _fire_now(
        self, key: str, level: AlertLevel, message: str, pid: str | None, metric: str | None
    ) -> None:
        self._fire_at(key, level, message, pid, metric, trio.current_time(), time.time())

    def _clear_now(self, key: str) -> None:
        self.book.clear(key, trio.current_time())

    async def _evaluate(self, monitor: StatusMonitor) -> None:
        now = trio.current_time()
        table = self.table
        table.prune(now)
        table.rebuild(self.book)
        evaluate_builtin(table, self.book, self.cfg, self._fire_now, self._clear_now)
        table.changed_since_eval = False
        self._stale = True
        if self.rules.rules:
            self.publish(now, monitor)  # the rules read the getters: figures as of now
            await self.rules.evaluate(
                monitor, self.cfg.alert_interval, self._fire_now, self._clear_now
            )
            self._stale = True

    # ---- publishing and the next deadline ------------------------------------

    def next_deadline(self) -> float:
        """Trio clock seconds when the monitor must wake next (``inf``: only for a message)."""
        gate = self._last_publish + FLUSH_INTERVAL
        deadline = gate if self._stale else math.inf
        if self.table.next_change < math.inf:
            deadline = min(deadline, max(self.table.next_change, gate))
        self._eval_armed = (
            bool(self.rules.rules) or self.table.changed_since_eval or bool(builtin_open(self.book))
        )
        if self._eval_armed:
            deadline = min(deadline, self._next_eval)
        return deadline

    def overview(self, running: bool) -> MonitorStatus:
        """The monitor's :class:`MonitorStatus` now."""
        return MonitorStatus(
            running=running,
            platforms=len(self.table.windows),
            healthy_platforms=self.table.healthy_count,
            open_alerts=self.book.open_by_level(),
            alerts_kept=len(self.book.alerts),
            records_applied=self.records_applied,
            records_dropped=self._dropped(),
            rule_errors=self.rules.errors,
            alert_rules=tuple(self.rules.rules),
        )

    def publish(self, now: float, monitor: StatusMonitor) -> None:
        """Publish a new snapshot on ``monitor`` if anything changed (``now``: Trio clock)."""
        table = self.table
        table.prune(now)
        rebuilt = table.rebuild(self.book)
        if not (self._stale or rebuilt):
            return
        alerts, by_id = self.book.views()
        monitor.publish(
            MonitorSnapshot(
                platforms=table.mapping(),
                alerts=alerts,
                alerts_by_id=by_id,
                status=self.overview(monitor.running),
                published_at=now,
            )
        )
        self._stale = False
        self._last_publish = now
