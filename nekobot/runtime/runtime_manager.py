"""The runtime manager: lifecycle and hot reconfiguration of platforms.

The public face of the ``platforms`` supervisor (DESIGN.md §1, §5): it adds,
removes, starts, stops, restarts and reconfigures platform children while the
bot runs. Every platform is one child of a :class:`~nekobot.supervisor.Supervisor`
that isolates instead of escalating; faults go to
:class:`~nekobot.fault_isolation.FaultIsolation`, which decides between a
restart after the backoff delay and an open circuit breaker (isolated until
the cooldown passes, then one half-open trial, timed here).

Lifecycle calls return once the state is reached (a start returns when the
platform called ``task_status.started()``) or raise a clear error. Calls on one
platform are serialised by a per-platform ``trio.Lock``.

Each run of a platform is a **new** instance from ``platform_factory`` (a
restart after a crash too), so an adapter never keeps a stale config.

Alerts: a platform going down because someone asked for it (``stop_platform``,
``restart_platform``, ``update_platform_config`` / ``apply_config`` rebuilding
it, the bot stopping) is *expected*: the monitor gets ``expected=True`` (no
"platform down" alert) and fault isolation does not count it as out (no
"degraded" alert). A crash, or a requested restart whose new instance fails to
start, is unexpected and alerts as usual.

Times: ``since`` is wall clock (``time.time()``); ``since_clock`` and
``next_restart_at`` are Trio clock (``trio.current_time()``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config.schema import PlatformConfig, platform_to_dict
from ..core.supervisor import ChildRunning, ChildSpec, ChildStartError, ChildStatus, Supervisor
from ..errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NekoBotError,
    PlatformExists,
    PlatformNotFound,
)
from ..faults.fault_isolation import BreakerState, FaultIsolation, IsolationStrategy

if TYPE_CHECKING:
    from ..config.schema import SupervisorConfig
    from ..platforms.base import PlatformActor

__all__ = [
    "PlatformDisabled",
    "PlatformLifecycleStatus",
    "PlatformStartError",
    "PlatformState",
    "RuntimeManager",
]

log = logging.getLogger("nekobot.runtime_manager")

_PID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class PlatformStartError(NekoBotError):
    """A platform failed before it called ``task_status.started()``.

    Attributes:
        platform_id (str): The platform.
        error (BaseException): What it raised (also ``__cause__``).
    """

    def __init__(self, platform_id: str, error: BaseException) -> None:
        self.platform_id = platform_id
        self.error = error
        super().__init__(
            f"platform {platform_id!r} failed to start: {type(error).__name__}: {error}"
        )


class PlatformDisabled(Conflict):
    """The platform was disabled by a person; only ``enable_platform`` starts it."""

    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        super().__init__(f"platform {platform_id!r} is disabled; enable it first (fault isolation)")


class PlatformState(enum.Enum):
    """A platform's lifecycle state."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    """Failed; a restart is scheduled after its backoff delay."""
    ERROR = "error"
    """Failed and not restarted (e.g. it failed to start on request)."""
    ISOLATED = "isolated"
    """Circuit breaker open (or restart intensity exceeded): waits for the cooldown."""
    DISABLED = "disabled"
    """Disabled by a person (fault isolation's manual state)."""


@attrs.frozen(kw_only=True)
class PlatformLifecycleStatus:
    """One platform's lifecycle, as ``get_platform_lifecycle_status`` returns it."""

    platform_id: str
    type: str
    """The platform's ``type``."""
    enabled: bool
    """``enabled`` of its config section."""
    state: PlatformState
    since: float
    """Wall clock ``time.time()`` the state was entered."""
    since_clock: float
    """Trio clock time the state was entered."""
    restart_count: int
    """Restarts so far: automatic ones and ``restart_platform`` calls."""
    last_error: str | None
    """``"Type: message"`` of the last failure, if any."""
    config_revision: int
    """Starts at 1; +1 for every applied change of this platform's section."""
    next_restart_at: float | None = None
    """Trio clock time of the scheduled restart or half-open trial, if any."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""
        d = attrs.asdict(self)
        d["state"] = self.state.value
        return d


_CHILD_TO_STATE = {
    ChildStatus.STOPPED: PlatformState.STOPPED,
    ChildStatus.STARTING: PlatformState.STARTING,
    ChildStatus.RUNNING: PlatformState.RUNNING,
    ChildStatus.STOPPING: PlatformState.STOPPING,
    ChildStatus.RESTARTING: PlatformState.RESTARTING,
    ChildStatus.ISOLATED: PlatformState.ISOLATED,
    ChildStatus.FAILED: PlatformState.ERROR,
}


@attrs.define(eq=False)
class _Entry:
    pid: str
    config: PlatformConfig
    revision: int = 1
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    state: PlatformState = PlatformState.STOPPED
    since: float = attrs.field(factory=time.time)
    since_clock: float = 0.0
    last_error: str | None = None
    manual_restarts: int = 0
    actor: PlatformActor | None = None
    want: bool = False
    """The platform should run (started, not stopped on purpose)."""
    trial_token: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)
    requested: int = 0
    """Requested operations under way (restart, rebuild, first start of an added
    platform): going down meanwhile is expected, not an outage."""


def _deep_merge(base: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in updates.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _state_of(e: _Entry) -> PlatformState:
    return e.state


def _trio_now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


class RuntimeManager:
    """Adds, removes, starts, stops, restarts and reconfigures platforms.

    Args:
        supervisor_cfg (SupervisorConfig): ``[supervisor]``.
        fault_isolation (FaultIsolation | None): Decides what a fault leads to;
            a private one with defaults if None.
        platform_factory: ``(platform_id, PlatformConfig) -> PlatformActor``;
            called for every run of a platform (a new instance each time).
        monitor: A ``StatusMonitor`` (``set_platform_state``) or None.
    """

    def __init__(
        self,
        supervisor_cfg: SupervisorConfig | None = None,
        *,
        fault_isolation: FaultIsolation | None = None,
        platform_factory: Callable[[str, PlatformConfig], PlatformActor],
        monitor: Any = None,
        rng: Any = None,
    ) -> None:
        if supervisor_cfg is None:
            from ..config.schema import SupervisorConfig

            supervisor_cfg = SupervisorConfig()
        self.cfg = supervisor_cfg
        self.fault_isolation = fault_isolation or FaultIsolation()
        self.fault_isolation.bind_controller(self)
        self.platform_factory = platform_factory
        self.monitor = monitor
        self.supervisor = Supervisor.from_config(
            supervisor_cfg,
            name="platforms",
            on_intensity="isolate",
            fault_handler=self._on_fault,
            on_status=self._on_status,
            on_isolate=self._on_isolate,
            rng=rng,
        )
        self._entries: dict[str, _Entry] = {}
        self._nursery: trio.Nursery | None = None
        self._shutting_down = False
        self._change_hook: Callable[[str], Awaitable[None]] | None = None
        self._apply_lock = trio.Lock()

    @classmethod
    def from_config(
        cls,
        supervisor_cfg: SupervisorConfig,
        *,
        fault_isolation: FaultIsolation | None = None,
        platform_factory: Callable[[str, PlatformConfig], PlatformActor],
        monitor: Any = None,
    ) -> RuntimeManager:
        """The contract's constructor (see the class)."""
        return cls(
            supervisor_cfg,
            fault_isolation=fault_isolation,
            platform_factory=platform_factory,
            monitor=monitor,
        )

    # ---- run -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The platform supervisor's task.

        Cancelling it stops every platform in reverse start order, each within
        ``[supervisor] shutdown`` seconds.
        """
        self._shutting_down = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.supervisor.run)
                task_status.started()
        finally:
            self._nursery = None

    async def begin_shutdown(self) -> None:
        """The bot is stopping: platforms going down now are expected, not alerts."""
        self._shutting_down = True

    async def load(self, platforms: Mapping[str, PlatformConfig]) -> None:
        """Add every platform and start the enabled ones, in order.

        A platform that fails to start does not stop the others: it is
        recorded as a fault and restarted by policy (its status shows it).
        The change hook is not called (this is the initial config).
        """
        for pid, pc in platforms.items():
            entry = self._add_entry(pid, pc)
            if pc.enabled:
                async with entry.lock:
                    try:
                        await self._start_locked(entry, recover=True)
                    except PlatformStartError as exc:
                        log.error("%s", exc)

    def set_change_hook(self, hook: Callable[[str], Awaitable[None]] | None) -> None:
        """``async hook(description)``: called once after every applied config change
        (``add_platform``, ``update_platform_config``, ``remove_platform``,
        ``apply_config``), never for ``load``."""
        self._change_hook = hook

    async def _changed(self, description: str) -> None:
        if self._change_hook is None:
            return
        try:
            await self._change_hook(description)
        except Exception:
            log.exception("change hook failed for %r", description)

    # ---- getters ---------------------------------------------------------------

    @property
    def platform_configs(self) -> dict[str, PlatformConfig]:
        """The current config section of every platform (a copy)."""
        return {pid: e.config for pid, e in self._entries.items()}

    def _get(self, platform_id: str) -> _Entry:
        try:
            return self._entries[platform_id]
        except KeyError:
            raise PlatformNotFound(platform_id) from None

    def get_platform_actor(self, platform_id: str) -> PlatformActor | None:
        """The live instance (starting or running), for sends; None otherwise."""
        e = self._entries.get(platform_id)
        if e is None or e.state not in (PlatformState.STARTING, PlatformState.RUNNING):
            return None
        return e.actor

    def _status(self, e: _Entry) -> PlatformLifecycleStatus:
        try:
            info = self.supervisor.child_info(e.pid)
            auto, nxt = info.restart_count, info.next_restart_at
        except LookupError:
            auto, nxt = 0, None
        if e.state is PlatformState.ISOLATED:
            nxt = self.fault_isolation.retry_at(e.pid)
        return PlatformLifecycleStatus(
            platform_id=e.pid,
            type=e.config.type,
            enabled=e.config.enabled,
            state=e.state,
            since=e.since,
            since_clock=e.since_clock,
            restart_count=auto + e.manual_restarts,
            last_error=e.last_error,
            config_revision=e.revision,
            next_restart_at=nxt,
        )

    def get_platform_lifecycle_status(
        self, platform_id: str | None = None
    ) -> PlatformLifecycleStatus | dict[str, PlatformLifecycleStatus]:
        """One platform's status, or ``{platform_id: status}`` of all.

        Raises:
            PlatformNotFound: unknown ``platform_id``.
        """
        if platform_id is not None:
            return self._status(self._get(platform_id))
        return {pid: self._status(e) for pid, e in self._entries.items()}

    # ---- state bookkeeping -----------------------------------------------------

    def _set_state(
        self, e: _Entry, state: PlatformState, error: BaseException | None = None
    ) -> None:
        if error is not None:
            e.last_error = f"{type(error).__name__}: {error}"
        if state in (
            PlatformState.STOPPED,
            PlatformState.ISOLATED,
            PlatformState.ERROR,
        ) and self.fault_isolation.is_disabled(e.pid):
            state = PlatformState.DISABLED  # the person's decision shows first
        if state is not e.state:
            was_running = e.state is PlatformState.RUNNING
            e.state = state
            e.since = time.time()
            e.since_clock = _trio_now()
            running = state is PlatformState.RUNNING
            if self.monitor is not None and running != was_running:
                try:
                    self.monitor.set_platform_state(
                        e.pid,
                        running,
                        expected=self._shutting_down or e.requested > 0 or not self._wanted(e),
                    )
                except Exception:
                    log.exception("monitor.set_platform_state failed")
        e.changed.set()
        e.changed = trio.Event()
        self._report(e)

    def _wanted(self, e: _Entry) -> bool:
        return (e.want and e.config.enabled) or self.fault_isolation.is_disabled(e.pid)

    def _report(self, e: _Entry) -> None:
        fi = self.fault_isolation
        wanted = self._wanted(e)
        if (
            self._shutting_down
            or e.requested > 0
            or (e.state is PlatformState.STARTING and e.last_error is None)
        ):
            # Not "out": the bot is stopping, a person's restart or rebuild is
            # under way, or the platform is on its way up for the first time.
            # None is a degradation to alert about.
            wanted = False
        reason = e.state.value + (f" ({e.last_error})" if e.last_error else "")
        fi.set_platform_state(
            e.pid, running=e.state is PlatformState.RUNNING, wanted=wanted, reason=reason
        )

    @contextlib.contextmanager
    def _requested(self, e: _Entry) -> Iterator[None]:
        """A requested operation (restart, rebuild, first start) is under way.

        Meanwhile the platform going down is expected: no "platform down"
        alert, not "out" for the degradation level. If it ran before and is
        down afterwards (the new instance failed), that is reported as an
        unexpected outage when the operation ends.
        """
        was_running = e.state is PlatformState.RUNNING
        e.requested += 1
        try:
            yield
        finally:
            e.requested -= 1
            if e.requested == 0 and self._entries.get(e.pid) is e:
                self._report(e)
                if (
                    was_running
                    and e.state is not PlatformState.RUNNING
                    and self._wanted(e)
                    and not self._shutting_down
                    and self.monitor is not None
                ):
                    try:
                        self.monitor.set_platform_state(e.pid, False, expected=False)
                    except Exception:
                        log.exception("monitor.set_platform_state failed")

    def _on_status(self, pid: str, status: ChildStatus, error: BaseException | None) -> None:
        e = self._entries.get(pid)
        if e is not None:
            self._set_state(e, _CHILD_TO_STATE[status], error)

    async def _on_fault(self, pid: str, exc: BaseException, context: dict[str, Any]) -> bool:
        rec = await self.fault_isolation.handle_fault(pid, exc, context)
        if rec.isolation_strategy in (
            IsolationStrategy.RESTART_PLATFORM,
            IsolationStrategy.CONTINUE,
        ):
            return True
        if rec.isolation_strategy is IsolationStrategy.DEGRADED_MODE:
            self._schedule_trial(pid)
        return False

    def _on_isolate(self, pid: str, reason: str) -> None:
        self.fault_isolation.open_breaker(pid, f"restart intensity: {reason}")
        self._schedule_trial(pid)

    # ---- breaker trials ----------------------------------------------------------

    def _schedule_trial(self, pid: str) -> None:
        e = self._entries.get(pid)
        if e is None or self._nursery is None:
            return
        e.trial_token += 1
        self._nursery.start_soon(self._trial, e, e.trial_token)

    async def _trial(self, e: _Entry, token: int) -> None:
        fi = self.fault_isolation
        at = fi.retry_at(e.pid)
        if at is None:
            return
        await trio.sleep_until(at)
        async with e.lock:
            if (
                e.trial_token != token
                or self._entries.get(e.pid) is not e
                or fi.is_disabled(e.pid)
                or not e.want
                or fi.breaker_state(e.pid) is not BreakerState.OPEN
                or e.state
                not in (PlatformState.ISOLATED, PlatformState.ERROR, PlatformState.STOPPED)
            ):
                return
            fi.begin_trial(e.pid)
            try:
                await self.supervisor.restart_child(e.pid)
            except ChildStartError as exc:
                await fi.handle_fault(e.pid, exc.error, {"source": "supervisor", "phase": "start"})
                self._set_state(e, PlatformState.ISOLATED, exc.error)
                self._schedule_trial(e.pid)
                return
        await trio.sleep(self.cfg.backoff_reset)
        if (
            e.trial_token == token
            and _state_of(e) is PlatformState.RUNNING  # (re-read after the sleep)
            and fi.breaker_state(e.pid) is BreakerState.HALF_OPEN
        ):
            fi.trial_succeeded(e.pid)

    # ---- fault isolation's controller interface ----------------------------------

    def fi_knows(self, platform_id: str) -> bool:
        """Whether the platform exists (for fault isolation)."""
        return platform_id in self._entries

    async def fi_stop(self, platform_id: str) -> None:
        """Stop for a manual disable (fault isolation calls this)."""
        e = self._get(platform_id)
        async with e.lock:
            e.trial_token += 1
            await self.supervisor.terminate_child(platform_id)
            self._set_state(e, PlatformState.DISABLED)

    async def fi_start(self, platform_id: str) -> None:
        """Start after ``enable_platform`` (if its config is enabled)."""
        e = self._get(platform_id)
        async with e.lock:
            if not e.config.enabled:
                self._set_state(e, PlatformState.STOPPED)
                return
            await self._start_locked(e)

    def fi_isolate(self, platform_id: str) -> None:
        """The breaker opened on an adapter-reported fault: stop it, wait the cooldown."""
        if self._nursery is not None:
            self._nursery.start_soon(self._isolate, platform_id)

    async def _isolate(self, platform_id: str) -> None:
        e = self._entries.get(platform_id)
        if e is None:
            return
        async with e.lock:
            if self.fault_isolation.breaker_state(platform_id) is not BreakerState.OPEN:
                return
            await self.supervisor.terminate_child(platform_id)
            self._set_state(e, PlatformState.ISOLATED)
        self._schedule_trial(platform_id)

    # ---- lifecycle ------------------------------------------------------------------

    def _spec(self, pid: str) -> ChildSpec:
        async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            e = self._entries[pid]
            actor = self.platform_factory(pid, e.config)
            e.actor = actor
            try:
                await actor.run(task_status=task_status)
            finally:
                if e.actor is actor:
                    e.actor = None

        return ChildSpec(id=pid, start=start, restart="permanent", shutdown=self.cfg.shutdown)

    def _coerce(
        self, pid: str, platform_config: PlatformConfig | Mapping[str, Any]
    ) -> PlatformConfig:
        if isinstance(platform_config, PlatformConfig):
            return platform_config
        if not isinstance(platform_config, Mapping):
            raise InvalidRequest(
                f"platform_config: expected a PlatformConfig or a table, got {platform_config!r}"
            )
        from ..config.loader import parse_platform

        pc, problems = parse_platform(pid, platform_config)
        if problems or pc is None:
            raise ConfigError(problems or [f"platforms.{pid}: invalid"])
        return pc

    def _add_entry(self, pid: str, pc: PlatformConfig | Mapping[str, Any]) -> _Entry:
        if not isinstance(pid, str) or not _PID.fullmatch(pid):
            raise InvalidRequest(f"platform_id: 1-64 letters, digits, '_' or '-', got {pid!r}")
        config = self._coerce(pid, pc)
        if pid in self._entries:
            raise PlatformExists(pid)
        e = _Entry(pid=pid, config=config, since_clock=_trio_now())
        self._entries[pid] = e
        self.supervisor.add_child(self._spec(pid))
        self._report(e)
        return e

    async def _start_locked(self, e: _Entry, *, recover: bool = False) -> None:
        fi = self.fault_isolation
        if fi.is_disabled(e.pid):
            raise PlatformDisabled(e.pid)
        e.want = True
        e.trial_token += 1  # a manual start supersedes a pending half-open trial
        if fi.breaker_state(e.pid) is not BreakerState.CLOSED:
            fi.reset_breaker(e.pid, reason="started on request")
        while True:
            if e.state is PlatformState.RUNNING:
                return
            try:
                await self.supervisor.restart_child(e.pid, recover=recover)
                return
            except ChildRunning:
                await e.changed.wait()  # an automatic restart is under way
            except ChildStartError as exc:
                if not recover:
                    rec = await fi.handle_fault(
                        e.pid, exc.error, {"source": "supervisor", "phase": "start"}
                    )
                    if rec.isolation_strategy is IsolationStrategy.DEGRADED_MODE:
                        self._set_state(e, PlatformState.ISOLATED, exc.error)
                        self._schedule_trial(e.pid)
                raise PlatformStartError(e.pid, exc.error) from exc.error

    async def _stop_locked(self, e: _Entry) -> None:
        e.want = False
        e.trial_token += 1
        await self.supervisor.terminate_child(e.pid)
        self._set_state(e, PlatformState.STOPPED)

    async def add_platform(
        self,
        platform_id: str,
        platform_config: PlatformConfig | Mapping[str, Any],
        auto_start: bool = True,
    ) -> PlatformLifecycleStatus:
        """Add a platform; start it if ``auto_start`` and its ``enabled``.

        Args:
            platform_config: A ``PlatformConfig`` or the dict of its TOML table.

        Returns:
            Its status once started (or added).

        Raises:
            PlatformExists: the id is taken.
            InvalidRequest: a bad id.
            ConfigError: a bad config dict (problems by key path).
            PlatformStartError: ``auto_start`` and it failed to start (e.g. its
                port is in use): it is removed again, as if never added (no
                change hook, so no config version).
        """
        e = self._add_entry(platform_id, platform_config)
        if not (auto_start and e.config.enabled):
            await self._changed(f"add platform {platform_id}")
            return self._status(e)
        failed = False
        with self._requested(e):  # a failed first start is no outage: it is undone
            try:
                async with e.lock:
                    await self._start_locked(e)
            except PlatformStartError:
                failed = True
                await self._remove(platform_id)
                raise
            finally:
                if not failed:
                    await self._changed(f"add platform {platform_id}")
        return self._status(e)

    async def start_platform(self, platform_id: str) -> PlatformLifecycleStatus:
        """Start a platform; returns once it called ``task_status.started()``.

        Starting a running platform does nothing. A platform whose breaker is
        open is started at once (a person's start closes the breaker).

        Raises:
            PlatformNotFound: unknown id.
            PlatformDisabled: disabled by a person.
            PlatformStartError: it failed before ``started()`` (state ERROR).
        """
        e = self._get(platform_id)
        async with e.lock:
            await self._start_locked(e)
        return self._status(e)

    async def stop_platform(self, platform_id: str) -> PlatformLifecycleStatus:
        """Stop a platform; returns once its task finished (its port is free).

        Raises:
            PlatformNotFound: unknown id.
        """
        e = self._get(platform_id)
        async with e.lock:
            await self._stop_locked(e)
        return self._status(e)

    async def restart_platform(self, platform_id: str) -> PlatformLifecycleStatus:
        """Stop (if running) and start again with a new instance.

        Raises:
            PlatformNotFound: unknown id.
            PlatformDisabled: disabled by a person.
            PlatformStartError: the new instance failed to start.
        """
        e = self._get(platform_id)
        async with e.lock:
            if self.fault_isolation.is_disabled(platform_id):
                raise PlatformDisabled(platform_id)
            with self._requested(e):
                await self.supervisor.terminate_child(platform_id)
                e.manual_restarts += 1
                self._set_state(e, PlatformState.STOPPED)
                await self._start_locked(e)
        return self._status(e)

    async def remove_platform(self, platform_id: str) -> None:
        """Stop and forget a platform.

        Raises:
            PlatformNotFound: unknown id.
        """
        await self._remove(platform_id)
        await self._changed(f"remove platform {platform_id}")

    async def _remove(self, platform_id: str) -> None:
        e = self._get(platform_id)
        async with e.lock:
            await self._stop_locked(e)
            await self.supervisor.delete_child(platform_id)
            if self._entries.get(platform_id) is e:
                del self._entries[platform_id]
            self.fault_isolation.forget_platform(platform_id)
            forget = getattr(self.monitor, "forget_platform", None)
            if forget is not None:
                try:
                    forget(platform_id)  # its window and "platform down" alert go too
                except LookupError:
                    pass
                except Exception:
                    log.exception("monitor.forget_platform failed")

    async def update_platform_config(
        self,
        platform_id: str,
        config_updates: Mapping[str, Any],
        apply_immediately: bool = True,
    ) -> PlatformLifecycleStatus:
        """Merge ``config_updates`` into the platform's section and apply it.

        ``config_updates`` has the shape of the ``[platforms.<id>]`` table
        (nested tables such as ``connection`` are merged key by key). With
        ``apply_immediately`` a platform that should run is rebuilt: the old
        instance is stopped first (its port released), then a **new** one is
        built from the merged config and started. If that fails, the previous
        config is restored and started, and the error is raised. Without
        ``apply_immediately`` the config is stored and used at the next start.

        Raises:
            PlatformNotFound: unknown id.
            InvalidRequest: ``config_updates`` is not a dict.
            ConfigError: the merged section is invalid (problems by key path,
                e.g. ``platforms.qq.port: expected int, got 'x'``).
            PlatformStartError: the new config failed to start (rolled back).
        """
        if not isinstance(config_updates, Mapping):
            raise InvalidRequest(f"config_updates: expected a table, got {config_updates!r}")
        e = self._get(platform_id)
        async with e.lock:
            merged = _deep_merge(platform_to_dict(e.config), config_updates)
            new = self._coerce(platform_id, merged)
            if new == e.config:
                return self._status(e)
            keys = ", ".join(sorted(config_updates))
            if apply_immediately:
                await self._replace_locked(e, new)
            else:
                e.config = new
                e.revision += 1
        await self._changed(f"update platform {platform_id}: {keys}")
        return self._status(e)

    async def _replace_locked(self, e: _Entry, new: PlatformConfig) -> None:
        with self._requested(e):
            await self._replace_requested(e, new)

    async def _replace_requested(self, e: _Entry, new: PlatformConfig) -> None:
        old, old_rev = e.config, e.revision
        fi = self.fault_isolation
        should_run = (e.want or (new.enabled and not old.enabled)) and not fi.is_disabled(e.pid)
        await self.supervisor.terminate_child(e.pid)  # old instance gone, port released
        e.config = new
        e.revision += 1
        if not new.enabled:
            e.want = False
            self._set_state(e, PlatformState.STOPPED)
            return
        if not should_run:
            self._set_state(e, PlatformState.STOPPED)
            return
        try:
            await self._start_locked(e)
        except PlatformStartError as exc:
            log.error("%s; restoring the previous config", exc)
            await self.supervisor.terminate_child(e.pid)
            e.config, e.revision = old, old_rev
            if old.enabled:
                try:
                    await self._start_locked(e, recover=True)
                except PlatformStartError as again:
                    log.error("the previous config failed to start too: %s", again)
            else:
                e.want = False
                self._set_state(e, PlatformState.STOPPED)
            raise

    async def apply_config(self, platforms: Mapping[str, PlatformConfig]) -> None:
        """Make the platforms match ``platforms``, touching only what changed.

        Removed platforms are stopped and forgotten, added ones are added (and
        started if enabled), and platforms whose section differs are rebuilt
        (as in :meth:`update_platform_config`, with the same rollback). Equal
        sections are not touched. The change hook is called once if anything
        was applied, even when an error is raised.

        Raises:
            PlatformStartError: the first platform that failed to start: a
                changed one got its previous config back; an added one was
                removed again. The other changes stay applied.
        """
        async with self._apply_lock:
            removed = [pid for pid in self._entries if pid not in platforms]
            changed = [
                pid
                for pid, pc in platforms.items()
                if pid in self._entries and self._entries[pid].config != pc
            ]
            added = [pid for pid in platforms if pid not in self._entries]
            errors: list[BaseException] = []
            done: list[str] = []
            for pid in removed:
                await self._remove(pid)
                done.append(f"removed {pid}")
            for pid in changed:
                e = self._entries[pid]
                async with e.lock:
                    try:
                        await self._replace_locked(e, platforms[pid])
                        done.append(f"changed {pid}")
                    except PlatformStartError as exc:
                        errors.append(exc)
            for pid in added:
                e = self._add_entry(pid, platforms[pid])
                if not e.config.enabled:
                    done.append(f"added {pid}")
                    continue
                with self._requested(e):
                    try:
                        async with e.lock:
                            await self._start_locked(e)
                        done.append(f"added {pid}")
                    except PlatformStartError as exc:
                        errors.append(exc)
                        await self._remove(pid)
            if done:
                await self._changed("apply config: " + ", ".join(done))
            if errors:
                raise errors[0]
