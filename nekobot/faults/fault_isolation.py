"""Fault isolation: fault records, a circuit breaker per platform, degraded mode.

Anchors: Akka's ``CircuitBreaker`` (closed / open / half-open with a growing
reset timeout) on top of the OTP-style restarts of :mod:`nekobot.supervisor`.
DESIGN.md §3 "Faults".

Per platform:

* **Faults** (``handle_fault``) become :class:`FaultRecord` s with the real
  traceback, kept in a ring of ``max_fault_records`` (optionally also written
  to the SQLite :class:`~nekobot.storage.Store`, table ``fault_records``).
* **Circuit breaker.** CLOSED: ``failure_threshold`` faults within
  ``error_window`` seconds open it. OPEN: the platform is not restarted; after
  ``cooldown`` seconds the runtime manager makes **one** half-open trial start.
  HALF_OPEN: the trial ran ``backoff_reset`` seconds (``[supervisor]``) ->
  CLOSED; it failed -> OPEN again with the cooldown doubled, up to
  ``max_cooldown``. Every transition fires or clears an alert at the monitor.
* **Manual disable** is a separate state: set by a person (API, console,
  code) with who and when; no automatic path ever starts a manually disabled
  platform, only :meth:`FaultIsolation.enable_platform` does (and it also
  closes the breaker).
* **Degraded mode**: :class:`DegradationLevel` is computed live from the share
  of platforms that should run but do not; the status says which and why.

Times: ``timestamp``/``*_at`` fields are wall clock (``time.time()``); windows,
cooldowns and ``retry_at`` are Trio clock seconds (``trio.current_time()``).

The timers (cooldown, trial) live in the runtime manager's nursery, which
drives this object; ``FaultIsolation`` itself has no task.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ..errors import PlatformNotFound
from ..monitor.status_monitor import AlertLevel

if TYPE_CHECKING:
    from ..config.schema import FaultIsolationConfig
    from ..storage import Store

__all__ = [
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


class IsolationStrategy(enum.Enum):
    """What fault isolation decided for one fault."""

    CONTINUE = "continue"
    """Nothing to do: the platform keeps running (an error the adapter caught)."""
    RESTART_PLATFORM = "restart_platform"
    """Restart it after its backoff delay (breaker closed)."""
    DISABLE_PLATFORM = "disable_platform"
    """It is disabled by a person: stays stopped until ``enable_platform``."""
    DEGRADED_MODE = "degraded_mode"
    """Breaker open: the platform is isolated (not restarted until the cooldown
    passes) and the bot serves on with the others."""


class DegradationLevel(enum.IntEnum):
    """How much of the bot is out: share of platforms that should run but do not."""

    NONE = 0
    """All run."""
    LOW = 1
    """Up to a quarter out."""
    MEDIUM = 2
    """Up to half out."""
    HIGH = 3
    """More than half out, at least one runs."""
    CRITICAL = 4
    """None runs."""

    @classmethod
    def from_share(cls, out: int, total: int) -> DegradationLevel:
        """The level for ``out`` of ``total`` platforms not running."""
        if total <= 0 or out <= 0:
            return cls.NONE
        if out >= total:
            return cls.CRITICAL
        share = out / total
        if share <= 0.25:
            return cls.LOW
        if share <= 0.5:
            return cls.MEDIUM
        return cls.HIGH


class BreakerState(enum.Enum):
    """A platform's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@attrs.frozen(kw_only=True)
class FaultRecord:
    """One fault of one platform."""

    platform_id: str
    error_type: str
    """The exception's class name."""
    error_message: str
    traceback_str: str
    """The real traceback, ``traceback.format_exception``."""
    timestamp: float
    """Wall clock ``time.time()``."""
    isolation_strategy: IsolationStrategy
    resolved: bool = False
    """The platform recovered (ran healthy again, or was enabled by a person)."""
    resolved_at: float | None = None
    """Wall clock ``time.time()`` of the resolution."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""
        d = attrs.asdict(self)
        d["isolation_strategy"] = self.isolation_strategy.value
        return d


@attrs.frozen(kw_only=True)
class BreakerStatus:
    """A breaker as :meth:`FaultIsolation.get_isolation_status` shows it."""

    state: BreakerState
    since: float
    """Wall clock time of the last transition."""
    recent_failures: int
    """Faults inside the error window (Trio clock)."""
    cooldown: float
    """Seconds the current/next open period lasts."""
    retry_at: float | None
    """Trio clock time of the half-open trial (state OPEN)."""
    reason: str
    """Why it is in this state."""


@attrs.frozen(kw_only=True)
class PlatformIsolation:
    """Isolation state of one platform."""

    platform_id: str
    running: bool
    breaker: BreakerStatus
    manually_disabled: bool
    disabled_by: str | None
    disabled_at: float | None
    """Wall clock."""
    disabled_reason: str
    enabled_by: str | None
    enabled_at: float | None
    """Wall clock."""
    out: bool
    """It should run but does not."""
    out_reason: str
    fault_count: int
    """Fault records kept."""


@attrs.frozen(kw_only=True)
class IsolationStatus:
    """What :meth:`FaultIsolation.get_isolation_status` returns."""

    degradation_level: DegradationLevel
    total: int
    """Platforms that should run."""
    running: int
    out: dict[str, str]
    """Platforms that should run but do not: ``{platform_id: why}``."""
    platforms: dict[str, PlatformIsolation]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""

        def conv(v: Any) -> Any:
            if isinstance(v, enum.Enum):
                return v.value if not isinstance(v, enum.IntEnum) else v.name
            return v

        return attrs.asdict(self, value_serializer=lambda _i, _a, v: conv(v))


class PlatformController(Protocol):
    """What fault isolation needs of the runtime manager (it binds itself)."""

    def fi_knows(self, platform_id: str) -> bool: ...
    async def fi_stop(self, platform_id: str) -> None: ...
    async def fi_start(self, platform_id: str) -> None: ...
    def fi_isolate(self, platform_id: str) -> None: ...


@attrs.define(eq=False)
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    since: float = attrs.field(factory=time.time)
    failures: deque[float] = attrs.field(factory=deque)
    cooldown: float = 0.0
    retry_at: float | None = None
    reason: str = ""


@attrs.define(eq=False)
class _Platform:
    breaker: _Breaker
    records: deque[FaultRecord]
    running: bool = False
    wanted: bool = False
    reason: str = ""
    disabled: bool = False
    disabled_by: str | None = None
    disabled_at: float | None = None
    disabled_reason: str = ""
    enabled_by: str | None = None
    enabled_at: float | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id TEXT NOT NULL,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    timestamp REAL NOT NULL,
    isolation_strategy TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    resolved_at REAL
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS fault_records_platform ON fault_records (platform_id, id)"

_Write = tuple[str, Any]
"""("insert", FaultRecord), ("resolve", (platform_id, wall-clock time)) or
("flush", trio.Event)."""


def _write_batch(conn: Any, *, batch: list[_Write], keep: int, ready: bool) -> None:
    from ..storage import transaction

    with transaction(conn):
        if not ready:
            conn.execute(_SCHEMA)
            conn.execute(_INDEX)
        touched: set[str] = set()
        for kind, item in batch:
            if kind == "insert":
                r: FaultRecord = item
                conn.execute(
                    "INSERT INTO fault_records (platform_id, error_type, error_message,"
                    " traceback, timestamp, isolation_strategy) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        r.platform_id,
                        r.error_type,
                        r.error_message,
                        r.traceback_str,
                        r.timestamp,
                        r.isolation_strategy.value,
                    ),
                )
                touched.add(r.platform_id)
            else:
                pid, at = item
                conn.execute(
                    "UPDATE fault_records SET resolved = 1, resolved_at = ?"
                    " WHERE platform_id = ? AND resolved = 0 AND timestamp <= ?",
                    (at, pid, at),
                )
        for pid in touched:  # the table is a ring per platform too
            conn.execute(
                "DELETE FROM fault_records WHERE platform_id = ? AND id NOT IN"
                " (SELECT id FROM fault_records WHERE platform_id = ? ORDER BY id DESC LIMIT ?)",
                (pid, pid, keep),
            )


def _load_records(conn: Any, keep: int) -> list[FaultRecord]:
    conn.execute(_SCHEMA)
    conn.execute(_INDEX)
    rows = conn.execute(
        "SELECT platform_id, error_type, error_message, traceback, timestamp,"
        " isolation_strategy, resolved, resolved_at FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY platform_id ORDER BY id DESC) AS n"
        "  FROM fault_records) WHERE n <= ? ORDER BY id",
        (keep,),
    ).fetchall()
    out = []
    for pid, et, em, tb, ts, strat, resolved, resolved_at in rows:
        try:
            strategy = IsolationStrategy(strat)
        except ValueError:
            strategy = IsolationStrategy.CONTINUE
        out.append(
            FaultRecord(
                platform_id=pid,
                error_type=et,
                error_message=em,
                traceback_str=tb,
                timestamp=ts,
                isolation_strategy=strategy,
                resolved=bool(resolved),
                resolved_at=resolved_at,
            )
        )
    return out


class FaultIsolation:
    """Decides what a platform's fault leads to; keeps records, breakers, manual state.

    Args:
        cfg (FaultIsolationConfig): ``[fault_isolation]``.
        monitor: A ``StatusMonitor`` (``fire_alert`` / ``clear_alert``), or None.
        store (Store | None): Persist fault records to SQLite too (optional).
    """

    def __init__(
        self,
        cfg: FaultIsolationConfig | None = None,
        *,
        monitor: Any = None,
        store: Store | None = None,
    ) -> None:
        if cfg is None:
            from ..config.schema import FaultIsolationConfig

            cfg = FaultIsolationConfig()
        self.cfg = cfg
        self.monitor = monitor
        self.store = store
        self._platforms: dict[str, _Platform] = {}
        self._controller: PlatformController | None = None
        self._table_ready = False
        self._writer: trio.MemorySendChannel[_Write] | None = None
        self.dropped_writes = 0
        """Fault-record writes dropped because the writer's queue was full."""
        self._last_level = DegradationLevel.NONE
        self._last_out: frozenset[str] = frozenset()
        self._listeners: list[Callable[[str, BreakerState], None]] = []

    @classmethod
    def from_config(
        cls, cfg: FaultIsolationConfig, monitor: Any = None, store: Store | None = None
    ) -> FaultIsolation:
        """Build from ``[fault_isolation]`` (the contract's constructor)."""
        return cls(cfg, monitor=monitor, store=store)

    def bind_controller(self, controller: PlatformController) -> None:
        """Let ``enable_platform`` / ``disable_platform`` start and stop platforms
        (the runtime manager calls this on itself)."""
        self._controller = controller

    # ---- helpers ----------------------------------------------------------

    def _p(self, platform_id: str) -> _Platform:
        p = self._platforms.get(platform_id)
        if p is None:
            p = _Platform(
                breaker=_Breaker(cooldown=self.cfg.cooldown),
                records=deque(maxlen=self.cfg.max_fault_records),
            )
            self._platforms[platform_id] = p
        return p

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

    def _transition(self, pid: str, state: BreakerState, reason: str) -> None:
        br = self._p(pid).breaker
        br.state = state
        br.since = time.time()
        br.reason = reason
        key = f"fault_isolation:breaker:{pid}"
        if state is BreakerState.OPEN:
            self._fire(key, "error", f"platform {pid!r} isolated (breaker open): {reason}", pid)
        elif state is BreakerState.HALF_OPEN:
            self._fire(key, "warning", f"platform {pid!r} half-open: one trial start", pid)
        else:
            self._clear(key)
        log.info("platform %r breaker -> %s (%s)", pid, state.value, reason)
        for fn in self._listeners:
            fn(pid, state)

    # ---- the seed API --------------------------------------------------------

    async def handle_fault(
        self, platform_id: str, exception: BaseException, context: dict[str, Any] | None = None
    ) -> FaultRecord:
        """Record a fault and decide what it leads to.

        Also for errors an adapter caught itself (the platform still runs):
        those give CONTINUE while the breaker stays closed; when they open it,
        the runtime manager is asked to stop (isolate) the platform.

        Args:
            platform_id (str): The platform.
            exception: What it raised.
            context (dict | None): ``source`` is ``"supervisor"`` when the
                platform's task ended with this error; anything else (default
                ``"adapter"``) means the platform still runs.

        Returns:
            The :class:`FaultRecord`, whose ``isolation_strategy`` is the decision.
        """
        import traceback

        ctx = context or {}
        crashed = ctx.get("source") == "supervisor"
        p = self._p(platform_id)
        br = p.breaker
        now = trio.current_time()
        opened = False
        if p.disabled:
            strategy = IsolationStrategy.DISABLE_PLATFORM
        elif br.state is BreakerState.HALF_OPEN:
            br.cooldown = min(br.cooldown * 2, self.cfg.max_cooldown)
            br.retry_at = now + br.cooldown
            br.failures.clear()
            self._transition(
                platform_id,
                BreakerState.OPEN,
                f"half-open trial failed: {type(exception).__name__}: {exception}",
            )
            strategy = IsolationStrategy.DEGRADED_MODE
            opened = True
        elif br.state is BreakerState.OPEN:
            strategy = IsolationStrategy.DEGRADED_MODE
        else:
            br.failures.append(now)
            while br.failures and br.failures[0] <= now - self.cfg.error_window:
                br.failures.popleft()
            if len(br.failures) >= self.cfg.failure_threshold:
                br.retry_at = now + br.cooldown
                self._transition(
                    platform_id,
                    BreakerState.OPEN,
                    f"{len(br.failures)} faults within {self.cfg.error_window} s "
                    f"(last: {type(exception).__name__}: {exception})",
                )
                br.failures.clear()
                strategy = IsolationStrategy.DEGRADED_MODE
                opened = True
            else:
                strategy = (
                    IsolationStrategy.RESTART_PLATFORM if crashed else IsolationStrategy.CONTINUE
                )
        record = FaultRecord(
            platform_id=platform_id,
            error_type=type(exception).__name__,
            error_message=str(exception),
            traceback_str="".join(traceback.format_exception(exception)),
            timestamp=time.time(),
            isolation_strategy=strategy,
        )
        p.records.append(record)
        if opened and not crashed and self._controller is not None:
            self._controller.fi_isolate(platform_id)
        await self._queue_write(("insert", record))
        return record

    async def _queue_write(self, item: _Write) -> None:
        if self.store is None:
            return
        if self._writer is not None:  # run() writes in batches, off the restart path
            try:
                self._writer.send_nowait(item)
            except trio.WouldBlock:
                self.dropped_writes += 1
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass
            return
        try:  # no writer task: write now
            ready, keep = self._table_ready, self.cfg.max_fault_records
            await self.store.run(
                functools.partial(_write_batch, batch=[item], keep=keep, ready=ready)
            )
            self._table_ready = True
        except Exception:
            log.exception("could not persist a fault record")

    async def flush(self) -> None:
        """Wait until every write queued so far reached the store (``run`` active)."""
        if self._writer is None:
            return
        done = trio.Event()
        await self._writer.send(("flush", done))
        await done.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load kept fault records from the store, then write new ones in batches.

        Optional: without it, records are written one by one inside
        ``handle_fault`` (when a store was given). The table keeps at most
        ``max_fault_records`` rows per platform. With no store it only waits.
        """
        if self.store is None:
            task_status.started()
            await trio.sleep_forever()
        keep = self.cfg.max_fault_records
        loaded = await self.store.run(lambda conn: _load_records(conn, keep))
        self._table_ready = True
        for r in loaded:
            p = self._p(r.platform_id)
            p.records.append(r)
        for p in self._platforms.values():
            p.records = deque(sorted(p.records, key=lambda r: r.timestamp), maxlen=keep)
        send, recv = trio.open_memory_channel[_Write](10_000)
        self._writer = send
        task_status.started()
        try:
            async with recv:
                while True:
                    batch = [await recv.receive()]
                    while True:
                        try:
                            batch.append(recv.receive_nowait())
                        except trio.WouldBlock:
                            break
                    flushes = [ev for kind, ev in batch if kind == "flush"]
                    batch = [w for w in batch if w[0] != "flush"]
                    try:
                        if batch:
                            await self.store.run(
                                functools.partial(_write_batch, batch=batch, keep=keep, ready=True)
                            )
                    except Exception:
                        log.exception("could not persist %d fault record change(s)", len(batch))
                    for ev in flushes:
                        ev.set()
        finally:
            self._writer = None

    async def disable_platform(
        self, platform_id: str, *, by: str = "api", reason: str = ""
    ) -> None:
        """Disable a platform by hand: stop it; nothing automatic starts it again.

        Args:
            by (str): Who or what (``"api"``, ``"console"``, a user name).
            reason (str): Free text, shown in the status.

        Raises:
            PlatformNotFound: the runtime manager knows no such platform.
        """
        ctl = self._controller
        if ctl is not None and not ctl.fi_knows(platform_id):
            raise PlatformNotFound(platform_id)
        p = self._p(platform_id)
        p.disabled = True
        p.disabled_by = by
        p.disabled_at = time.time()
        p.disabled_reason = reason
        self._fire(
            f"fault_isolation:disabled:{platform_id}",
            "warning",
            f"platform {platform_id!r} disabled by {by}" + (f": {reason}" if reason else ""),
            platform_id,
        )
        if ctl is not None:
            await ctl.fi_stop(platform_id)

    async def enable_platform(self, platform_id: str, *, by: str = "api") -> None:
        """Undo a manual disable, close the breaker, and start the platform.

        Raises:
            PlatformNotFound: the runtime manager knows no such platform.
            Exception: what the platform raised if it failed to start.
        """
        ctl = self._controller
        if ctl is not None and not ctl.fi_knows(platform_id):
            raise PlatformNotFound(platform_id)
        p = self._p(platform_id)
        p.disabled = False
        p.enabled_by = by
        p.enabled_at = time.time()
        self._clear(f"fault_isolation:disabled:{platform_id}")
        self.reset_breaker(platform_id, reason=f"enabled by {by}")
        self.mark_recovered(platform_id)
        if ctl is not None:
            await ctl.fi_start(platform_id)

    def get_fault_records(self, platform_id: str | None = None) -> list[FaultRecord]:
        """Kept fault records, oldest first (one platform, or all)."""
        if platform_id is not None:
            p = self._platforms.get(platform_id)
            return list(p.records) if p is not None else []
        out = [r for p in self._platforms.values() for r in p.records]
        out.sort(key=lambda r: r.timestamp)
        return out

    def get_isolation_status(self) -> IsolationStatus:
        """Breakers, manual states and the degradation level, computed now."""
        plats: dict[str, PlatformIsolation] = {}
        out: dict[str, str] = {}
        total = running = 0
        for pid, p in self._platforms.items():
            is_out = self._is_out(p)
            why = self._why(p) if is_out else ""
            if p.wanted:
                total += 1
                running += p.running
            if is_out:
                out[pid] = why
            br = p.breaker
            plats[pid] = PlatformIsolation(
                platform_id=pid,
                running=p.running,
                breaker=BreakerStatus(
                    state=br.state,
                    since=br.since,
                    recent_failures=len(br.failures),
                    cooldown=br.cooldown,
                    retry_at=br.retry_at if br.state is BreakerState.OPEN else None,
                    reason=br.reason,
                ),
                manually_disabled=p.disabled,
                disabled_by=p.disabled_by,
                disabled_at=p.disabled_at,
                disabled_reason=p.disabled_reason,
                enabled_by=p.enabled_by,
                enabled_at=p.enabled_at,
                out=is_out,
                out_reason=why,
                fault_count=len(p.records),
            )
        return IsolationStatus(
            degradation_level=DegradationLevel.from_share(len(out), total),
            total=total,
            running=running,
            out=out,
            platforms=plats,
        )

    # ---- what the runtime manager drives ------------------------------------

    @staticmethod
    def _is_out(p: _Platform) -> bool:
        return p.wanted and not p.running

    @staticmethod
    def _why(p: _Platform) -> str:
        if p.disabled:
            return f"disabled by {p.disabled_by}" + (
                f": {p.disabled_reason}" if p.disabled_reason else ""
            )
        if p.breaker.state is BreakerState.OPEN:
            return f"isolated: {p.breaker.reason}"
        return p.reason or "not running"

    def degradation_level(self) -> DegradationLevel:
        """The current :class:`DegradationLevel`."""
        return self.get_isolation_status().degradation_level

    def set_platform_state(
        self, platform_id: str, *, running: bool, wanted: bool, reason: str = ""
    ) -> None:
        """Tell whether a platform runs and whether it should (degradation input)."""
        p = self._p(platform_id)
        p.running = running
        p.wanted = wanted
        p.reason = reason
        self._update_degradation()

    def forget_platform(self, platform_id: str) -> None:
        """Drop a removed platform (its alerts are cleared)."""
        if self._platforms.pop(platform_id, None) is not None:
            self._clear(f"fault_isolation:breaker:{platform_id}")
            self._clear(f"fault_isolation:disabled:{platform_id}")
            self._update_degradation()

    def _update_degradation(self) -> None:
        out = frozenset(pid for pid, p in self._platforms.items() if self._is_out(p))
        wanted = sum(p.wanted for p in self._platforms.values())
        level = DegradationLevel.from_share(len(out), wanted)
        if level is self._last_level and out == self._last_out:
            return  # cheap path: nothing an alert would show changed
        self._last_out = out
        st = self.get_isolation_status()
        key = "fault_isolation:degraded"
        if level is DegradationLevel.NONE:
            if self._last_level is not DegradationLevel.NONE:
                self._clear(key)
        else:
            alert = {
                DegradationLevel.LOW: "warning",
                DegradationLevel.MEDIUM: "warning",
                DegradationLevel.HIGH: "error",
                DegradationLevel.CRITICAL: "critical",
            }[level]
            self._fire(
                key,
                alert,
                f"degraded ({level.name}): "
                + "; ".join(f"{pid}: {why}" for pid, why in sorted(st.out.items())),
            )
        self._last_level = level

    def is_disabled(self, platform_id: str) -> bool:
        """True if a person disabled this platform."""
        p = self._platforms.get(platform_id)
        return p is not None and p.disabled

    def breaker_state(self, platform_id: str) -> BreakerState:
        """The platform's breaker state (CLOSED for one never seen)."""
        p = self._platforms.get(platform_id)
        return p.breaker.state if p is not None else BreakerState.CLOSED

    def retry_at(self, platform_id: str) -> float | None:
        """Trio clock time of the half-open trial, if the breaker is open."""
        p = self._platforms.get(platform_id)
        if p is None or p.breaker.state is not BreakerState.OPEN:
            return None
        return p.breaker.retry_at

    def open_breaker(self, platform_id: str, reason: str) -> None:
        """Open the breaker now (e.g. the supervisor's restart intensity was exceeded)."""
        p = self._p(platform_id)
        br = p.breaker
        now = trio.current_time()
        if br.state is BreakerState.HALF_OPEN:
            br.cooldown = min(br.cooldown * 2, self.cfg.max_cooldown)
        br.retry_at = now + br.cooldown
        br.failures.clear()
        self._transition(platform_id, BreakerState.OPEN, reason)

    def begin_trial(self, platform_id: str) -> None:
        """OPEN -> HALF_OPEN: the runtime manager makes the one trial start."""
        self._transition(platform_id, BreakerState.HALF_OPEN, "cooldown passed")

    def trial_succeeded(self, platform_id: str) -> None:
        """HALF_OPEN -> CLOSED: the trial ran long enough; the cooldown resets."""
        p = self._p(platform_id)
        if p.breaker.state is not BreakerState.HALF_OPEN:
            return
        p.breaker.cooldown = self.cfg.cooldown
        p.breaker.retry_at = None
        self._transition(platform_id, BreakerState.CLOSED, "half-open trial succeeded")
        self.mark_recovered(platform_id)

    def reset_breaker(self, platform_id: str, *, reason: str = "reset") -> None:
        """Close the breaker at once (a person intervened); the cooldown resets."""
        p = self._p(platform_id)
        br = p.breaker
        br.failures.clear()
        br.cooldown = self.cfg.cooldown
        br.retry_at = None
        if br.state is not BreakerState.CLOSED:
            self._transition(platform_id, BreakerState.CLOSED, reason)

    def mark_recovered(self, platform_id: str) -> None:
        """Mark the platform's open fault records resolved (wall clock now)."""
        p = self._platforms.get(platform_id)
        if p is None:
            return
        now = time.time()
        if any(not r.resolved for r in p.records):
            p.records = deque(
                (
                    r if r.resolved else attrs.evolve(r, resolved=True, resolved_at=now)
                    for r in p.records
                ),
                maxlen=self.cfg.max_fault_records,
            )
            if self._writer is not None:
                try:
                    self._writer.send_nowait(("resolve", (platform_id, now)))
                except trio.WouldBlock:
                    self.dropped_writes += 1
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass
