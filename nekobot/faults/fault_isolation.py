"""Fault isolation: an actor that owns fault records, breakers and manual state.

Anchors: Akka's ``CircuitBreaker`` (closed / open / half-open with a growing
reset timeout) on top of the OTP-style restarts of :mod:`nekobot.core.supervisor`.
DESIGN.md §3 "Faults". The decision itself is the pure
:func:`nekobot.faults.breaker.decide`; this actor keeps the state, fires and
clears alerts at the monitor, persists records off the restart path, and sends
news up to the runtime manager's mailbox (``events``) as casts.

Per platform: fault records (a ring of ``max_fault_records``), a circuit
breaker (CLOSED: ``failure_threshold`` faults within ``error_window`` open it;
OPEN: not restarted until ``retry_at``, then one half-open trial run by the
runtime manager; a failed trial reopens it with the cooldown doubled up to
``max_cooldown``), the manual disable (who, when, why: nothing automatic ever
starts a disabled platform) and whether it runs and should (the degradation
level).

Times: ``timestamp`` / ``*_at`` are wall clock (``time.time()``); windows,
cooldowns and ``retry_at`` are Trio clock (``trio.current_time()``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ..config.schema import FaultIsolationConfig
from ..core.actor import Actor, ActorRef, Call
from ..monitor.status_monitor import AlertLevel
from ..storage import Store
from . import breaker as br
from . import requests as rq
from .breaker import BreakerPolicy, BreakerSnapshot, BreakerState, Fault
from .events import BreakerOpened, DisablePlatform, EnablePlatform, RuntimeEvent
from .records import FaultRecord, IsolationStrategy, KeptFault, Write, load_records
from .state import STRATEGY, AlertSink, PlatformRecord, view, write_loop
from .status import BreakerStatus, DegradationLevel, IsolationStatus, PlatformIsolation

__all__ = [
    "AlertSink",
    "BreakerState",
    "BreakerStatus",
    "DegradationLevel",
    "FaultIsolation",
    "FaultRecord",
    "IsolationStatus",
    "IsolationStrategy",
    "PlatformIsolation",
]

log = logging.getLogger("nekobot.fault_isolation")

DEFAULT_TIMEOUT = 8.0
"""Seconds (Trio clock) the facade methods wait by default (under the API's 9 s)."""


class FaultIsolation(Actor[rq.Msg, None]):
    """Decides what a platform's fault leads to; owns records, breakers, manual state.

    Run it with ``await nursery.start(fi.run)``. Sync getters
    (:meth:`get_isolation_status`, :meth:`get_fault_records`,
    :attr:`degradation_level`, :meth:`breaker_state`, :meth:`retry_at`,
    :meth:`is_disabled`) read its state without a round trip; everything that
    changes it is a message.

    Args:
        cfg (FaultIsolationConfig | None): ``[fault_isolation]``.
        monitor (AlertSink | None): Gets breaker, disable and degradation alerts.
        store (Store | None): Persist fault records to SQLite too.
        events (ActorRef | None): The runtime manager's mailbox address:
            ``BreakerOpened`` news goes there, and the manual
            disable / enable is carried out there. ``None``: standalone (tests).
    """

    def __init__(
        self,
        cfg: FaultIsolationConfig | None = None,
        *,
        monitor: AlertSink | None = None,
        store: Store | None = None,
        events: ActorRef[RuntimeEvent] | None = None,
    ) -> None:
        super().__init__("fault_isolation", mailbox_size=math.inf)
        self.cfg = cfg = cfg if cfg is not None else FaultIsolationConfig()
        self.policy = BreakerPolicy(
            failure_threshold=cfg.failure_threshold,
            error_window=cfg.error_window,
            cooldown=cfg.cooldown,
            max_cooldown=cfg.max_cooldown,
        )
        self.monitor = monitor
        self.store = store
        self._events = events
        self._platforms: dict[str, PlatformRecord] = {}
        self._in_flight: dict[str, int] = {}
        """Faults sent as casts by ``judge_fault`` and not handled yet (per platform)."""
        self._out: set[str] = set()
        self._wanted = 0
        self._running_wanted = 0
        self._level = DegradationLevel.NONE
        self._out_version = 0
        self._counted = (0, 0)
        self._alerted_version = 0
        self._writer: trio.MemorySendChannel[Write] | None = None
        self.dropped_writes = 0
        """Fault-record writes dropped because the writer's queue was full."""

    @classmethod
    def from_config(
        cls,
        cfg: FaultIsolationConfig,
        *,
        monitor: AlertSink | None = None,
        store: Store | None = None,
        events: ActorRef[RuntimeEvent] | None = None,
    ) -> FaultIsolation:
        """Build from ``[fault_isolation]`` (see the class)."""
        return cls(cfg, monitor=monitor, store=store, events=events)

    # ---- run ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load kept records from the store, then run the actor loop and the writer."""
        async with trio.open_nursery() as nursery:
            if self.store is not None:
                keep = self.cfg.max_fault_records
                store = self.store
                loaded = await store.run(lambda conn: load_records(conn, keep))
                for r in loaded:
                    self._p(r.platform_id).records.append(
                        KeptFault(r.platform_id, None, r.timestamp, r.isolation_strategy, r)
                    )
                send, recv = trio.open_memory_channel[Write](10_000)
                self._writer = send
                nursery.start_soon(write_loop, store, recv, keep)
            await nursery.start(super().run)
            task_status.started()

    def _queue_write(self, item: Write) -> None:
        if self._writer is None:
            return
        try:
            self._writer.send_nowait(item)
        except trio.WouldBlock:
            self.dropped_writes += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def flush(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every record change so far reached the store."""
        with trio.fail_after(timeout):
            done = await self.ref.call(rq.Flush(), timeout=timeout)
            if done is not None:
                await done.wait()

    # ---- the seed API (facade: runs in the caller's task) -------------------

    async def handle_fault(
        self,
        platform_id: str,
        exception: BaseException,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> FaultRecord:
        """Record a fault and decide what it leads to.

        Args:
            platform_id (str): The platform.
            exception (BaseException): What it raised.
            context (Mapping | None): ``source`` is ``"supervisor"`` when the
                platform's task ended with it; anything else (default
                ``"adapter"``) means the platform still runs: when such a
                fault opens the breaker, the runtime manager stops it.
            timeout (float): Seconds (Trio clock) to wait for the actor.

        Returns:
            The :class:`FaultRecord`; its ``isolation_strategy`` is the decision.

        Raises:
            CallTimeout: no answer within ``timeout``.
        """
        kept = await self.decide_fault(platform_id, exception, context, timeout=timeout)
        return kept.record()

    async def decide_fault(
        self,
        platform_id: str,
        exception: BaseException,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> KeptFault:
        """:meth:`handle_fault` without formatting the traceback (the restart path)."""
        crashed = (context or {}).get("source") == "supervisor"
        return await self.ref.call(rq.Fault(platform_id, exception, crashed), timeout=timeout)

    async def judge_fault(
        self,
        platform_id: str,
        exception: BaseException,
        context: Mapping[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> IsolationStrategy:
        """The restart path's decision: :meth:`handle_fault` without a record to return.

        When no fault of this platform is still in the mailbox, the answer
        of :func:`~nekobot.faults.breaker.decide` on the breaker as this actor
        last left it is exact; if it is "restart" (or "continue") the fault is
        sent as a cast and the answer given at once (no round trip). Any other
        answer is asked of the actor (a call), which also keeps it exact.

        Raises:
            CallTimeout: the actor did not answer within ``timeout``.
        """
        crashed = (context or {}).get("source") == "supervisor"
        if not self._in_flight.get(platform_id):
            p = self._platforms.get(platform_id)
            snap = p.breaker if p is not None else BreakerSnapshot(cooldown=self.cfg.cooldown)
            d = br.decide(snap, Fault(crashed=crashed), trio.current_time(), self.policy)
            if d.restart:
                try:
                    self.ref.cast_nowait(rq.Fault(platform_id, exception, crashed, counted=True))
                except Exception:
                    pass  # not running: ask, and time out clearly
                else:
                    self._in_flight[platform_id] = 1
                    return STRATEGY[d.action]
        kept = await self.ref.call(rq.Fault(platform_id, exception, crashed), timeout=timeout)
        return kept.strategy

    async def disable_platform(
        self,
        platform_id: str,
        *,
        by: str = "api",
        reason: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Disable a platform by hand: stop it; nothing automatic starts it again.

        Returns once it is stopped and its lifecycle status says disabled.

        Args:
            by (str): Who or what (``"api"``, ``"console"``, a user name).
            reason (str): Free text, shown in the status.
            timeout (float): Seconds (Trio clock) to wait.

        Raises:
            PlatformNotFound: the runtime manager knows no such platform.
            CallTimeout: not done within ``timeout`` (it may still be done).
        """
        if self._events is not None:
            await self._events.call(DisablePlatform(platform_id, by, reason), timeout=timeout)
        else:
            await self.set_manual(platform_id, disabled=True, by=by, reason=reason, timeout=timeout)

    async def enable_platform(
        self, platform_id: str, *, by: str = "api", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Undo a manual disable, close the breaker, and start the platform.

        Returns once it was started (or is stopped because its config section
        says ``enabled = false``).

        Raises:
            PlatformNotFound: the runtime manager knows no such platform.
            PlatformStartError: it failed to start.
            CallTimeout: not done within ``timeout``.
        """
        if self._events is not None:
            await self._events.call(EnablePlatform(platform_id, by), timeout=timeout)
        else:
            await self.set_manual(platform_id, disabled=False, by=by, timeout=timeout)

    # ---- what the runtime manager sends ---------------------------------------

    async def set_manual(
        self,
        platform_id: str,
        *,
        disabled: bool,
        by: str,
        reason: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Set the manual state (enabling also closes the breaker and resolves records)."""
        await self.ref.call(rq.SetManual(platform_id, disabled, by, reason), timeout=timeout)

    async def settle(self, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Return once every message sent to this actor before it was handled."""
        await self.ref.call(rq.Settle(), timeout=timeout)

    async def begin_trial(self, platform_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """OPEN -> HALF_OPEN; False if the breaker is not open (nothing to try)."""
        return await self.ref.call(rq.BeginTrial(platform_id), timeout=timeout)

    async def reset_breaker(
        self, platform_id: str, *, reason: str = "reset", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Close the breaker at once (a person intervened); the cooldown resets."""
        await self.ref.call(rq.ResetBreaker(platform_id, reason), timeout=timeout)

    def _tell(self, msg: rq.Msg) -> None:
        try:
            self.ref.cast_nowait(msg)
        except Exception:  # stopped: the bot is going down
            log.debug("fault isolation is not running; dropped %r", msg)

    def open_breaker(self, platform_id: str, reason: str) -> None:
        """Open the breaker now (restart intensity exceeded); a cast, sync."""
        self._tell(rq.OpenBreaker(platform_id, reason))

    def trial_succeeded(self, platform_id: str) -> None:
        """HALF_OPEN -> CLOSED after a trial ran long enough; a cast, sync."""
        self._tell(rq.TrialSucceeded(platform_id))

    def mark_recovered(self, platform_id: str) -> None:
        """Mark the platform's open fault records resolved (wall clock now); a cast."""
        self._tell(rq.Recovered(platform_id))

    def set_platform_state(
        self, platform_id: str, *, running: bool, wanted: bool, reason: str = ""
    ) -> None:
        """Whether a platform runs and whether it should (degradation input); a cast."""
        self._tell(rq.State(platform_id, running, wanted, reason))

    def forget_platform(self, platform_id: str) -> None:
        """Drop a removed platform (its alerts are cleared); a cast, sync."""
        self._tell(rq.Forget(platform_id))

    # ---- sync getters -------------------------------------------------------

    def is_disabled(self, platform_id: str) -> bool:
        """True if a person disabled this platform."""
        p = self._platforms.get(platform_id)
        return p is not None and p.breaker.disabled

    def breaker_state(self, platform_id: str) -> BreakerState:
        """The platform's breaker state (CLOSED for one never seen)."""
        p = self._platforms.get(platform_id)
        return p.breaker.state if p is not None else BreakerState.CLOSED

    def retry_at(self, platform_id: str) -> float | None:
        """Trio clock time of the half-open trial, if the breaker is open."""
        p = self._platforms.get(platform_id)
        return None if p is None else p.breaker.retry_at

    def get_fault_records(self, platform_id: str | None = None) -> list[FaultRecord]:
        """Kept fault records, oldest first (one platform, or all)."""
        if platform_id is not None:
            p = self._platforms.get(platform_id)
            return [k.record() for k in p.records] if p is not None else []
        out = [k.record() for p in self._platforms.values() for k in p.records]
        out.sort(key=lambda r: r.timestamp)
        return out

    @property
    def degradation_level(self) -> DegradationLevel:
        """The current :class:`DegradationLevel` (no round trip)."""
        return self._level

    def get_isolation_status(self) -> IsolationStatus:
        """Breakers, manual states and the degradation level (no round trip)."""
        return IsolationStatus(
            degradation_level=self._level,
            total=self._wanted,
            running=self._running_wanted,
            out={pid: self._platforms[pid].why() for pid in sorted(self._out)},
            platforms={pid: view(pid, p) for pid, p in self._platforms.items()},
        )

    # ---- the actor's side ---------------------------------------------------

    def _p(self, pid: str) -> PlatformRecord:
        p = self._platforms.get(pid)
        if p is None:
            p = PlatformRecord(
                breaker=BreakerSnapshot(cooldown=self.cfg.cooldown),
                records=deque(maxlen=self.cfg.max_fault_records),
            )
            self._platforms[pid] = p
        return p

    async def handle_batch(self, batch: list[Any]) -> None:
        for item in batch:
            if isinstance(item, Call):
                if item.abandoned:
                    continue
                try:
                    item.reply(self._answer(item.msg))
                except Exception as exc:
                    item.fail(exc)
            else:
                self._apply(item)
        self._update_degradation()

    def _answer(self, msg: rq.Msg) -> Any:
        match msg:
            case rq.Fault():
                return self._fault(msg)
            case rq.SetManual():
                self._set_manual(msg)
            case rq.BeginTrial(pid):
                p = self._p(pid)
                new = br.begin_trial(p.breaker)
                if new is p.breaker:
                    return False
                self._transition(pid, p, new)
                return True
            case rq.ResetBreaker(pid, reason):
                p = self._p(pid)
                self._transition(pid, p, br.reset(p.breaker, self.policy, reason))
            case rq.Settle():
                return None
            case rq.Flush():
                if self._writer is not None:
                    done = trio.Event()
                    self._queue_write(("flush", done))
                    return done
            case _:
                self._apply(msg)
        return None

    def _apply(self, msg: Any) -> None:
        match msg:
            case rq.OpenBreaker(pid, reason):
                p = self._p(pid)
                now = trio.current_time()
                self._transition(pid, p, br.open_now(p.breaker, now, self.policy, reason))
                self._up(BreakerOpened(pid, p.breaker.retry_at or now, crashed=True))
            case rq.TrialSucceeded(pid):
                p = self._p(pid)
                new = br.trial_succeeded(p.breaker, self.policy)
                if new is not p.breaker:
                    self._transition(pid, p, new)
                    self._resolve(pid, p)
            case rq.State(pid, running, wanted, reason):
                p = self._p(pid)
                self._count(p, -1)
                p.running, p.wanted, p.reason = running, wanted, reason
                self._count(p, +1)
                self._mark_out(pid, p.out)
            case rq.Fault():
                self._fault(msg)
            case rq.Recovered(pid):
                if pid in self._platforms:
                    self._resolve(pid, self._platforms[pid])
            case rq.Forget(pid):
                gone = self._platforms.pop(pid, None)
                if gone is not None:
                    self._count(gone, -1)
                    self._mark_out(pid, False)
                    self._clear(f"fault_isolation:breaker:{pid}")
                    self._clear(f"fault_isolation:disabled:{pid}")
            case _:
                log.error("fault isolation got an unknown message %r", msg)

    def _count(self, p: PlatformRecord, sign: int) -> None:
        if p.wanted:
            self._wanted += sign
            self._running_wanted += sign * p.running

    def _mark_out(self, pid: str, out: bool) -> None:
        if out and pid not in self._out:
            self._out.add(pid)
            self._out_version += 1
        elif not out and pid in self._out:
            self._out.discard(pid)
            self._out_version += 1

    def _fault(self, msg: rq.Fault) -> KeptFault:
        pid, err = msg.platform_id, msg.error
        if msg.counted:
            self._in_flight.pop(pid, None)
        p = self._p(pid)
        if msg.crashed and p.running:  # the fault tells that it is down
            self._count(p, -1)
            p.running, p.reason = False, f"restarting ({type(err).__name__}: {err})"
            self._count(p, +1)
            self._mark_out(pid, p.out)
        now = trio.current_time()
        summary = f"{type(err).__name__}: {err}"
        d = br.decide(p.breaker, Fault(crashed=msg.crashed, summary=summary), now, self.policy)
        if d.state is not p.breaker:
            self._transition(pid, p, d.state)
        kept = KeptFault(pid, err, time.time(), STRATEGY[d.action])
        p.records.append(kept)
        self._queue_write(("insert", kept))
        if d.opened:
            self._up(BreakerOpened(pid, d.state.retry_at or now, crashed=msg.crashed))
        return kept

    def _set_manual(self, msg: rq.SetManual) -> None:
        pid = msg.platform_id
        p = self._p(pid)
        key = f"fault_isolation:disabled:{pid}"
        if msg.disabled:
            p.disabled_by, p.disabled_at, p.disabled_reason = msg.by, time.time(), msg.reason
            p.breaker = attrs.evolve(p.breaker, disabled=True)
            extra = f": {msg.reason}" if msg.reason else ""
            self._fire(key, "warning", f"platform {pid!r} disabled by {msg.by}{extra}", pid)
            return
        p.enabled_by, p.enabled_at = msg.by, time.time()
        self._clear(key)
        p.breaker = attrs.evolve(p.breaker, disabled=False)
        self._transition(pid, p, br.reset(p.breaker, self.policy, f"enabled by {msg.by}"))
        self._resolve(pid, p)

    def _resolve(self, pid: str, p: PlatformRecord) -> None:
        now = time.time()
        changed = False
        for k in p.records:
            if not k.resolved:
                k.resolve(now)
                changed = True
        if changed:
            self._queue_write(("resolve", (pid, now)))

    def _transition(self, pid: str, p: PlatformRecord, new: BreakerSnapshot) -> None:
        old = p.breaker
        p.breaker = new
        if new.state is old.state:
            return
        p.since = time.time()
        key = f"fault_isolation:breaker:{pid}"
        if new.state is BreakerState.OPEN:
            self._fire(key, "error", f"platform {pid!r} isolated (breaker open): {new.reason}", pid)
        elif new.state is BreakerState.HALF_OPEN:
            self._fire(key, "warning", f"platform {pid!r} half-open: one trial start", pid)
        else:
            self._clear(key)
        log.info("platform %r breaker -> %s (%s)", pid, new.state.value, new.reason)

    def _up(self, event: BreakerOpened) -> None:
        if self._events is None:
            return
        try:
            self._events.cast_nowait(event)
        except Exception:
            log.exception("could not tell the runtime manager %r", event)

    def _fire(self, key: str, level: str, message: str, platform_id: str | None = None) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.fire_alert(key, AlertLevel.coerce(level), message, platform_id=platform_id)
        except Exception:
            log.exception("fire_alert failed")

    def _clear(self, key: str) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.clear_alert(key)
        except Exception:
            log.exception("clear_alert failed")

    def _update_degradation(self) -> None:
        if self._counted == (self._out_version, self._wanted):
            return  # nothing the level depends on changed (the common batch)
        self._counted = (self._out_version, self._wanted)
        level = DegradationLevel.from_share(len(self._out), self._wanted)
        old, self._level = self._level, level
        key = "fault_isolation:degraded"
        if level is DegradationLevel.NONE:
            if old is not DegradationLevel.NONE:
                self._clear(key)
            return
        if self.monitor is None or (level is old and self._out_version == self._alerted_version):
            return
        self._alerted_version = self._out_version
        alert = "critical" if level is DegradationLevel.CRITICAL else "warning"
        if level is DegradationLevel.HIGH:
            alert = "error"
        shown = sorted(itertools.islice(self._out, 10))  # O(1): a long list helps nobody
        more = f"; and {len(self._out) - 10} more" if len(self._out) > 10 else ""
        text = "; ".join(f"{pid}: {self._platforms[pid].why()}" for pid in shown)
        self._fire(key, alert, f"degraded ({level.name}): {text}{more}")
