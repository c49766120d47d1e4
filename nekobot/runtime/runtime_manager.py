"""The runtime manager: the one owner of platform lifecycle state (an actor).

The public face of the ``platforms`` supervisor (DESIGN.md §1, §5): it adds,
removes, starts, stops, restarts and reconfigures platform children while the
bot runs, and carries out fault isolation's decisions (restart after the
backoff delay, or isolate until the breaker's cooldown passed, then one
half-open trial run as a child of the same supervisor, see :mod:`.trials`).

Requests are typed messages (:mod:`.requests`). The actor queues them per
platform and runs one at a time for each, in a worker task of its own nursery
(different platforms go on in parallel; nothing waits on a lock). Every
public call has a deadline and answers: done, a clear ``Conflict`` (409, e.g.
"platform 'qq' is being removed") or ``CallTimeout`` (503) naming what it
waited for. The config-changing calls (``add_platform``,
``update_platform_config``, ``remove_platform``) go through the config owner
(the config service), which calls back :meth:`RuntimeManager.apply_platforms`.

Each run of a platform is a **new** instance from ``platform_factory``.
A platform going down because someone asked for it is *expected*: the
monitor gets ``expected=True`` and fault isolation does not count it as out.

Times: ``since`` is wall clock (``time.time()``); ``since_clock`` and
``next_restart_at`` are Trio clock (``trio.current_time()``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, cast

import trio

from ..config.schema import PlatformConfig, SupervisorConfig
from ..core.actor import Actor, ActorRef, Call, Mailbox
from ..core.errors import CallTimeout
from ..core.supervisor import ChildStatus, Supervisor
from ..errors import InvalidRequest, PlatformExists, PlatformNotFound
from ..faults.events import BreakerOpened, DisablePlatform, EnablePlatform, RuntimeEvent
from ..faults.fault_isolation import FaultIsolation
from ..platforms.base import PlatformActor
from . import operations as ops
from .changes import BAD_ID, PID, ConfigChanges
from .lifecycle import (
    CHILD_TO_STATE,
    PlatformBusy,
    PlatformDisabled,
    PlatformLifecycleStatus,
    PlatformStartError,
    PlatformState,
)
from .parts import ConfigOwner, DirectChanges, Entry, PlatformMonitor
from .requests import Msg, Put, Register, Restart, Start, Stop, Trial, TrialCheck, TrialDue
from .trials import TIMER_PREFIX, is_timer, timer_child

__all__ = [
    "ConfigOwner",
    "DirectChanges",
    "PlatformBusy",
    "PlatformDisabled",
    "PlatformLifecycleStatus",
    "PlatformMonitor",
    "PlatformStartError",
    "PlatformState",
    "RuntimeManager",
    "is_timer",
]

log = logging.getLogger("nekobot.runtime_manager")


DEFAULT_TIMEOUT = 8.0
"""Seconds (Trio clock) an operator call waits by default (under the API's 9 s)."""

_ACTIVE = (ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING)
_TRANSIENT = (PlatformState.RESTARTING, PlatformState.STARTING, PlatformState.STOPPING)


def _trio_now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0


class RuntimeManager(Actor[Msg, None], ConfigChanges):
    """Adds, removes, starts, stops, restarts and reconfigures platforms.

    Args:
        supervisor_cfg (SupervisorConfig | None): ``[supervisor]``.
        fault_isolation (FaultIsolation | None): Decides what a fault leads to;
            build it with ``events=`` this manager's mailbox address. If None,
            a private one (defaults) runs inside :meth:`run`.
        platform_factory: ``(platform_id, PlatformConfig) -> PlatformActor``;
            called for every run of a platform (a new instance each time).
        monitor (PlatformMonitor | None): Gets ``set_platform_state`` / ``forget_platform``.
        config_owner (ConfigOwner | None): Where config changes go; None:
            :class:`DirectChanges` (no history).
        mailbox (Mailbox | None): Made beforehand (its address was handed to
            fault isolation first).
        rng: Source of backoff jitter (tests pass a seeded ``random.Random``).
        timeout (float): Default deadline of the public calls, seconds (Trio clock).
    """

    def __init__(
        self,
        supervisor_cfg: SupervisorConfig | None = None,
        *,
        fault_isolation: FaultIsolation | None = None,
        platform_factory: Callable[[str, PlatformConfig], PlatformActor],
        monitor: PlatformMonitor | None = None,
        config_owner: ConfigOwner | None = None,
        mailbox: Mailbox[Any] | None = None,
        rng: random.Random | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__("runtime", mailbox=mailbox)
        self.cfg = supervisor_cfg if supervisor_cfg is not None else SupervisorConfig()
        self._own_fi = fault_isolation is None
        # the mailbox takes RuntimeEvent (a part of Msg): the narrower address is sound
        events = cast("ActorRef[RuntimeEvent]", self.ref)
        self.fault_isolation = fault_isolation or FaultIsolation(events=events)
        self.platform_factory = platform_factory
        self.monitor = monitor
        self.config_owner: ConfigOwner = config_owner or DirectChanges(self)
        self.timeout = timeout
        self.supervisor = Supervisor.from_config(
            self.cfg,
            name="platforms",
            on_intensity="isolate",
            fault_handler=self._on_fault,
            on_status=self._on_status,
            on_isolate=self._on_isolate,
            rng=rng,
        )
        self.entries: dict[str, Entry] = {}
        self._configs: dict[str, PlatformConfig] = {}
        self._configs_view = MappingProxyType(self._configs)
        self._nursery: trio.Nursery | None = None
        self.shutting_down = False

    @classmethod
    def from_config(
        cls,
        cfg: SupervisorConfig,
        *,
        fault_isolation: FaultIsolation | None = None,
        platform_factory: Callable[[str, PlatformConfig], PlatformActor],
        monitor: PlatformMonitor | None = None,
        config_owner: ConfigOwner | None = None,
        mailbox: Mailbox[Any] | None = None,
    ) -> RuntimeManager:
        """Build from ``[supervisor]`` (see the class)."""
        return cls(
            cfg,
            fault_isolation=fault_isolation,
            platform_factory=platform_factory,
            monitor=monitor,
            config_owner=config_owner,
            mailbox=mailbox,
        )

    # ---- run -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The platforms supervisor and this actor's loop.

        Cancelling it stops every platform in reverse start order, each within
        ``[supervisor] shutdown`` seconds.
        """
        self.shutting_down = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._own_fi:
                    await nursery.start(self.fault_isolation.run)
                await nursery.start(self.supervisor.run)
                await nursery.start(super().run)
                task_status.started()
        finally:
            self._nursery = None

    async def begin_shutdown(self) -> None:
        """The bot is stopping: platforms going down now are expected, not alerts."""
        self.shutting_down = True  # a one-way flag the status hooks read

    # ---- getters (no round trip) -------------------------------------------

    @property
    def platform_configs(self) -> Mapping[str, PlatformConfig]:
        """The config section of every platform (a read-only live view, O(1))."""
        return self._configs_view

    def get_platform_actor(self, platform_id: str) -> PlatformActor | None:
        """The live instance (starting or running), for sends; None otherwise."""
        e = self.entries.get(platform_id)
        if e is None or e.actor is None:
            return None
        if self._child_status(e) not in (ChildStatus.STARTING, ChildStatus.RUNNING):
            return None
        return e.actor

    def _child_status(self, e: Entry) -> ChildStatus:
        return e.child

    def state_of(self, e: Entry) -> PlatformState:
        """The lifecycle state of an entry (from its supervisor child, overlaid)."""
        status = self._child_status(e)
        if status not in _ACTIVE:
            if e.disabled:
                return PlatformState.DISABLED
            if e.isolated and status is not ChildStatus.RESTARTING:
                return PlatformState.ISOLATED
        return CHILD_TO_STATE[status]

    def _status(self, e: Entry) -> PlatformLifecycleStatus:
        try:
            info = self.supervisor.child_info(e.pid)
            auto, nxt = info.restart_count, info.next_restart_at
        except LookupError:
            auto, nxt = 0, None
        state = self.state_of(e)
        if state is PlatformState.ISOLATED:
            nxt = e.retry_at
        return PlatformLifecycleStatus(
            platform_id=e.pid,
            type=e.config.type,
            enabled=e.config.enabled and not e.disabled,
            state=state,
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
            e = self.entries.get(platform_id)
            if e is None:
                raise PlatformNotFound(platform_id)
            return self._status(e)
        return {pid: self._status(e) for pid, e in self.entries.items()}

    # ---- the seed lifecycle API (facade: runs in the caller's task) ---------

    async def ask(self, msg: Msg, what: str, timeout: float | None) -> Any:
        """Send one request and wait for its answer, naming ``what`` on a timeout.

        Raises:
            CallTimeout: ``"<what>: no answer within <timeout> s (…)"``.
        """
        limit = self.timeout if timeout is None else timeout
        try:
            return await self.ref.call(msg, timeout=limit)
        except CallTimeout:
            pid = getattr(msg, "platform_id", None)
            e = self.entries.get(pid) if isinstance(pid, str) else None
            busy = f" (platform {pid!r} is busy: {e.busy})" if e is not None and e.busy else ""
            raise CallTimeout(f"{what}: no answer within {limit} s{busy}") from None

    async def start_platform(
        self, platform_id: str, *, timeout: float | None = None
    ) -> PlatformLifecycleStatus:
        """Start a platform; returns once it called ``task_status.started()``.

        Starting a running platform does nothing. A platform whose breaker is
        open is started at once (a person's start closes the breaker).

        Raises:
            PlatformNotFound: unknown id.
            PlatformDisabled: disabled by a person.
            PlatformStartError: it failed before ``started()`` (state ERROR).
            CallTimeout: no answer within ``timeout`` seconds (default ``self.timeout``).
        """
        return await self.ask(Start(platform_id), f"start of platform {platform_id!r}", timeout)  # type: ignore[no-any-return]

    async def stop_platform(
        self, platform_id: str, *, timeout: float | None = None
    ) -> PlatformLifecycleStatus:
        """Stop a platform; returns once its task finished (its port is free).

        Raises:
            PlatformNotFound: unknown id.
            CallTimeout: no answer within ``timeout``.
        """
        return await self.ask(Stop(platform_id), f"stop of platform {platform_id!r}", timeout)  # type: ignore[no-any-return]

    async def restart_platform(
        self, platform_id: str, *, timeout: float | None = None
    ) -> PlatformLifecycleStatus:
        """Stop (if running) and start again with a new instance.

        Raises:
            PlatformNotFound: unknown id.
            PlatformDisabled: disabled by a person.
            PlatformStartError: the new instance failed to start.
            CallTimeout: no answer within ``timeout``.
        """
        what = f"restart of platform {platform_id!r}"
        return await self.ask(Restart(platform_id), what, timeout)  # type: ignore[no-any-return]

    # ---- the actor's side ----------------------------------------------------

    async def handle_batch(self, batch: list[Any]) -> None:
        for item in batch:
            if isinstance(item, Call):
                if item.abandoned:
                    continue
                if isinstance(item.msg, Register):
                    self._register(item)
                else:
                    self._enqueue(item)
                continue
            match item:
                case BreakerOpened():
                    await self._isolate(item)
                case TrialDue(pid, gen):
                    e = self.entries.get(pid)
                    if e is not None and e.trial_gen == gen and not e.removing:
                        e.queue.append(Call(Trial(pid, gen)))
                        self._pump(e)
                case TrialCheck(pid, gen, started_at):
                    e = self.entries.get(pid)
                    if e is not None and e.trial_gen == gen and self._started_at(e) == started_at:
                        if self._child_status(e) is ChildStatus.RUNNING:
                            self.fault_isolation.trial_succeeded(pid)
                case _:
                    log.error("runtime manager got an unknown message %r", item)

    def _started_at(self, e: Entry) -> float | None:
        try:
            return self.supervisor.child_info(e.pid).started_at
        except LookupError:
            return None

    def _enqueue(self, call: Call[Any]) -> None:
        msg = call.msg
        pid = getattr(msg, "platform_id", None)
        if not isinstance(pid, str):
            call.fail(InvalidRequest(f"unknown request {msg!r}"))
            return
        e = self.entries.get(pid)
        if e is None:
            if not (isinstance(msg, Put) and msg.config is not None and msg.exists is not True):
                call.fail(PlatformNotFound(pid))
                return
            if not PID.fullmatch(pid):
                call.fail(
                    InvalidRequest(f"platform_id: 1-64 letters, digits, '_' or '-', got {pid!r}")
                )
                return
            e = Entry(pid=pid, config=msg.config, since_clock=_trio_now())
            self.entries[pid] = e
            self._configs[pid] = msg.config
        elif e.removing:
            call.fail(PlatformBusy(pid, "being removed"))
            return
        elif isinstance(msg, Put) and msg.exists is False and not e.fresh:
            call.fail(PlatformExists(pid))
            return
        e.queue.append(call)
        self._pump(e)

    def _register(self, call: Call[Any]) -> None:
        for pid, pc in call.msg.platforms:
            if pid in self.entries:
                log.error("platform %r is loaded twice; the first section stays", pid)
                continue
            if not PID.fullmatch(pid):
                log.error("%s", BAD_ID.format(pid))
                continue
            e = Entry(pid=pid, config=pc, since_clock=_trio_now(), fresh=False)
            self.entries[pid] = e
            self._configs[pid] = pc
            self.supervisor.add_child(ops.spec(self, pid))
            self.report(e, force=True)
        call.reply(None)

    def _pump(self, e: Entry) -> None:
        nursery = self._nursery
        while e.busy is None and e.queue and nursery is not None:
            call = e.queue.popleft()
            if call.abandoned:
                continue
            e.busy = type(call.msg).__name__.lower()
            nursery.start_soon(self._run_op, e, call)

    async def _settle(self) -> None:
        try:
            await self.fault_isolation.settle(timeout=self.timeout)
        except Exception as exc:
            log.warning("fault isolation did not settle: %s", exc)

    async def _run_op(self, e: Entry, call: Call[Any]) -> None:
        was_running = e.shown is PlatformState.RUNNING
        result: Any = None
        error: Exception | None = None
        try:
            result = await ops.run(self, e, call.msg)
        except Exception as exc:
            error = exc
        finally:
            e.busy = None
            here = self.entries.get(e.pid) is e
            if here:
                self.report(e, force=True)
                if was_running and e.shown is not PlatformState.RUNNING:
                    self._down_after_request(e)
        # The caller reads a settled degradation level; ``load`` settles once
        # after all its starts (``recover``) instead of once per platform.
        if not (isinstance(call.msg, Start) and call.msg.recover):
            await self._settle()
        if error is not None:
            call.fail(error)
        else:
            call.reply(result)
        if here:
            self._pump(e)
        else:  # removed: what waited behind the removal finds nothing
            while e.queue:
                e.queue.popleft().fail(PlatformNotFound(e.pid))

    def _down_after_request(self, e: Entry) -> None:
        # a requested restart or rebuild left it down: that is an outage after all
        if self.monitor is None or self.shutting_down or not (e.want and e.config.enabled):
            return
        try:
            self.monitor.set_platform_state(e.pid, False, expected=False)
        except Exception:
            log.exception("monitor.set_platform_state failed")

    def drop_entry(self, e: Entry) -> None:
        """Forget a removed platform (its op worker calls this)."""
        if self.entries.get(e.pid) is e:
            del self.entries[e.pid]
            self._configs.pop(e.pid, None)
        self.cancel_trial(e)
        self.fault_isolation.forget_platform(e.pid)
        if self.monitor is not None:
            try:
                self.monitor.forget_platform(e.pid)
            except LookupError:
                pass
            except Exception:
                log.exception("monitor.forget_platform failed")

    def set_config(self, e: Entry, config: PlatformConfig) -> None:
        """Give an entry a new section (its op worker calls this)."""
        e.config = config
        if self.entries.get(e.pid) is e:
            self._configs[e.pid] = config

    # ---- breaker trials ------------------------------------------------------

    def cancel_trial(self, e: Entry) -> None:
        """Drop a pending trial (a person's start, stop or disable supersedes it)."""
        e.trial_gen += 1
        e.isolated = False
        e.retry_at = None
        if e.trial_scope is not None:
            e.trial_scope.cancel()
            e.trial_scope = None

    async def _isolate(self, ev: BreakerOpened) -> None:
        e = self.entries.get(ev.platform_id)
        if e is None or e.removing or e.disabled:
            return
        if not ev.crashed:  # an adapter fault opened it: stop the running platform
            e.queue.append(Call(ops.Isolate(ev.platform_id)))
            self._pump(e)
        await self.schedule(e, ev.retry_at, lambda gen: TrialDue(e.pid, gen))
        e.isolated = True
        e.retry_at = ev.retry_at
        self.report(e)

    async def schedule(self, e: Entry, at: float, make: Callable[[int], object]) -> None:
        """Start a timer child that sends ``make(gen)`` at Trio clock time ``at``."""
        self.cancel_trial(e)
        gen = e.trial_gen
        spec, scope = timer_child(f"{TIMER_PREFIX}{e.pid}:{gen}", at, self.ref, make(gen))
        e.trial_scope = scope
        try:
            await self.supervisor.start_child(spec)
        except Exception:
            log.exception("could not start the trial timer of %r", e.pid)

    # ---- supervisor hooks (run in the supervisor's tasks) ----------------------

    def _on_status(self, pid: str, status: ChildStatus, error: BaseException | None) -> None:
        e = self.entries.get(pid)
        if e is None:
            return
        e.child = status
        if error is not None:
            e.last_error = f"{type(error).__name__}: {error}"
        e.changed.set()
        e.changed = trio.Event()
        self.report(e)

    def report(self, e: Entry, *, force: bool = False) -> None:
        """Tell the monitor and fault isolation what changed (cheap, sync)."""
        state = self.state_of(e)
        if state is e.shown and not force:
            return
        was_running = e.shown is PlatformState.RUNNING
        if state is not e.shown:
            e.shown = state
            e.since = time.time()
            e.since_clock = _trio_now()
        running = state is PlatformState.RUNNING
        quiet = self.shutting_down or e.busy is not None
        if self.monitor is not None and running != was_running:
            try:
                self.monitor.set_platform_state(
                    e.pid, running, expected=quiet or not (e.want and e.config.enabled)
                )
            except Exception:
                log.exception("monitor.set_platform_state failed")
        if state is PlatformState.STARTING and e.last_error is None:
            wanted = False  # on its way up: nothing a degradation alert would show
        else:
            wanted = ((e.want and e.config.enabled) or e.disabled) and not quiet
        told = e.told
        if told is not None and told[0] == running and told[1] == wanted:
            if running or not wanted or state in _TRANSIENT:
                return  # nothing an isolation status or alert shows changed
        reason = state.value + (f" ({e.last_error})" if e.last_error else "")
        e.told = (running, wanted, reason)
        self.fault_isolation.set_platform_state(
            e.pid, running=running, wanted=wanted, reason=reason
        )

    async def _on_fault(self, pid: str, exc: BaseException, context: dict[str, Any]) -> bool:
        e = self.entries.get(pid)
        if e is not None and context.get("source") == "supervisor" and e.told is not None:
            reason = f"restarting ({type(exc).__name__}: {exc})"
            e.told = (False, e.told[1], reason)  # the fault tells fault isolation it is down
        strategy = await self.fault_isolation.judge_fault(pid, exc, context)
        return ops.may_restart(strategy)

    def _on_isolate(self, pid: str, reason: str) -> None:
        self.fault_isolation.open_breaker(pid, f"restart intensity: {reason}")


# names the API, the console and older code import from here
_ = (DisablePlatform, EnablePlatform, PlatformDisabled, Restart, Start, Stop)
