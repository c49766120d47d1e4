"""An OTP-style supervisor for Trio tasks: restart types, strategies, intensity, backoff.

Anchors: Erlang/OTP ``supervisor`` (child specs, ``permanent`` / ``transient``
/ ``temporary``, ``one_for_one`` / ``one_for_all`` / ``rest_for_one``, restart
intensity, ``shutdown``) and Akka's ``BackoffSupervisor`` (exponential delay with
jitter). DESIGN.md §1.

A child is an async callable ``start(*, task_status)`` that calls
``task_status.started()`` once it is up, then runs until cancelled (or returns:
"finished", or raises: "failed"). Each child runs in its own **shielded** cancel
scope inside the supervisor's nursery, so cancelling the supervisor does not hit
every child at once: the supervisor stops them itself, in reverse start order,
each within its ``shutdown`` deadline.

Times are seconds on the Trio clock (``trio.current_time()``).

Stopping a child, in Trio terms. A Trio task cannot be killed, only cancelled;
cancellation *is* the stop request, and cleanup code may shield itself. So:

* ``shutdown = <seconds>``: if the spec has a graceful ``stop`` hook it is
  called first and the child gets ``shutdown`` seconds to return by itself,
  then it is cancelled. Without a hook it is cancelled at once. When the whole
  tree stops, the supervisor waits at most ``shutdown`` seconds for a child
  before it moves on to the next one (in reverse order); a child that still
  ignores cancellation (a shielded cleanup) is logged and awaited at the very
  end, so it delays only the supervisor's own return, never its siblings' stop.
* ``shutdown = "brutal_kill"``: cancelled at once; the tree stop does not wait
  for it before moving on.
* :meth:`Supervisor.terminate_child` always waits until the child has really
  finished (so, for example, its listening port is released).
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from ..faults.fault_isolation import FaultRecord, IsolationStrategy
from .backoff import Backoff
from .errors import Conflict, NekoBotError

if TYPE_CHECKING:
    from ..config.schema import SupervisorConfig

__all__ = [
    "BRUTAL_KILL",
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildCounts",
    "ChildInfo",
    "ChildNotFound",
    "ChildRunning",
    "ChildSpec",
    "ChildStartError",
    "ChildStatus",
    "RestartIntensityExceeded",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "is_fault",
]

log = logging.getLogger("nekobot.supervisor")

BRUTAL_KILL: Literal["brutal_kill"] = "brutal_kill"
"""``ChildSpec.shutdown`` value: cancel the child at once (OTP ``brutal_kill``)."""


# --------------------------------------------------------------------------
# errors


class SupervisorError(NekoBotError):
    """Base class of the supervisor's errors."""


class ChildNotFound(SupervisorError, LookupError):
    """No child has this id (OTP ``{error, not_found}``)."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"no child {child_id!r}")


class ChildAlreadyStarted(SupervisorError, Conflict):
    """``start_child`` with the id of a running child (OTP ``already_started``)."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"child {child_id!r} is already started")


class ChildAlreadyPresent(SupervisorError, Conflict):
    """``start_child`` with the id of a stopped child whose spec is kept
    (OTP ``already_present``): use ``restart_child`` or ``delete_child``."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"child {child_id!r} is already present (not running)")


class ChildRunning(SupervisorError, Conflict):
    """``restart_child`` / ``delete_child`` of a child that runs or is about to
    (OTP ``running`` / ``restarting``)."""

    def __init__(self, child_id: str, status: ChildStatus) -> None:
        self.child_id = child_id
        self.status = status
        super().__init__(f"child {child_id!r} is {status.value}")


class ChildStartError(SupervisorError):
    """A child failed before it called ``task_status.started()``.

    The child's own exception is ``__cause__`` and :attr:`error`.
    """

    def __init__(self, child_id: str, error: BaseException) -> None:
        self.child_id = child_id
        self.error = error
        super().__init__(f"child {child_id!r} failed to start: {type(error).__name__}: {error}")


class RestartIntensityExceeded(SupervisorError):
    """More than ``max_restarts`` restarts within ``period`` seconds: the
    supervisor gave up (escalation; the supervisor's ``run`` raises this)."""


class SupervisorNotRunning(SupervisorError):
    """The call needs the supervisor's ``run`` to be active."""


# --------------------------------------------------------------------------
# data


class RestartType(enum.Enum):
    """When a child that ended is started again (OTP meaning)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only if it failed (raised); returning is "finished"."""
    TEMPORARY = "temporary"
    """Never restarted; its spec is removed once it ends."""


class Strategy(enum.Enum):
    """Which children restart when one fails (OTP meaning)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All running children: stopped in reverse order, started in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and the running children started after it."""


class ChildStatus(enum.Enum):
    """Where a child is."""

    STOPPED = "stopped"
    """Not running (never started, terminated, or finished)."""
    STARTING = "starting"
    """``start`` runs; ``task_status.started()`` not called yet."""
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    """Ended; a restart is scheduled after the backoff delay."""
    ISOLATED = "isolated"
    """Failed and not restarted: the fault handler vetoed the restart, or the
    restart intensity was exceeded (isolating supervisor). Restart it with
    :meth:`Supervisor.restart_child`."""
    FAILED = "failed"
    """Failed and not restarted by its restart type (or failed to start)."""


_ACTIVE = (ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING)


def _convert_restart(value: RestartType | str) -> RestartType:
    return value if isinstance(value, RestartType) else RestartType(value)


def _check_shutdown(_inst: object, _attr: attrs.Attribute[Any], value: Any) -> None:
    if value == BRUTAL_KILL:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"shutdown must be seconds >= 0 or 'brutal_kill', got {value!r}")


@attrs.frozen
class ChildSpec:
    """How to run one child (OTP child specification)."""

    id: str
    """Unique among the supervisor's children."""
    start: Callable[..., Awaitable[Any]]
    """``async def start(*, task_status)``: calls ``task_status.started()`` once
    up, then runs until cancelled. Returning means finished, raising means failed."""
    restart: RestartType = attrs.field(default=RestartType.PERMANENT, converter=_convert_restart)
    """``permanent`` / ``transient`` / ``temporary`` (strings accepted)."""
    shutdown: float | Literal["brutal_kill"] = attrs.field(default=5.0, validator=_check_shutdown)
    """Seconds the child gets to stop (see the module docstring), or ``"brutal_kill"``."""
    significant: bool = False
    """With ``auto_shutdown`` (OTP): the supervisor ends when this child ends
    and is not restarted."""
    stop: Callable[[], Any] | None = attrs.field(default=None, kw_only=True)
    """Optional graceful stop request (sync or async), e.g. an actor's
    ``close_mailbox``; the child is cancelled if it has not returned
    ``shutdown`` seconds later."""


@attrs.frozen(kw_only=True)
class ChildInfo:
    """One row of :meth:`Supervisor.which_children`."""

    id: str
    status: ChildStatus
    restart: RestartType
    significant: bool
    restart_count: int
    """Automatic restarts so far."""
    started_at: float | None
    """Trio clock time the current/last run called ``started()``."""
    status_since: float
    """Trio clock time of the last status change."""
    last_error: BaseException | None
    next_restart_at: float | None
    """Trio clock time of the scheduled restart (status RESTARTING)."""


@attrs.frozen(kw_only=True)
class ChildCounts:
    """:meth:`Supervisor.count_children` (OTP ``count_children``)."""

    specs: int
    active: int
    """Children starting, running or stopping."""
    restarting: int
    isolated: int


def is_fault(exc: BaseException) -> bool:
    """Whether a child's exit by ``exc`` is a fault (vs. something to propagate).

    Any ``Exception`` and ``SystemExit`` are faults; ``trio.Cancelled``,
    ``KeyboardInterrupt`` and ``GeneratorExit`` never are. An exception group
    is a fault unless it holds one of those.
    """
    if isinstance(exc, trio.Cancelled | KeyboardInterrupt | GeneratorExit):
        return False
    if isinstance(exc, BaseExceptionGroup):
        matched, _ = exc.split((trio.Cancelled, KeyboardInterrupt, GeneratorExit))
        return matched is None
    return isinstance(exc, Exception | SystemExit)


def fault_record(
    child_id: str,
    exc: BaseException,
    strategy: IsolationStrategy = IsolationStrategy.RESTART_PLATFORM,
) -> FaultRecord:
    """A :class:`FaultRecord` for ``exc`` with its real traceback (wall-clock time)."""
    return FaultRecord(
        platform_id=child_id,
        error_type=type(exc).__name__,
        error_message=str(exc),
        traceback_str="".join(traceback.format_exception(exc)),
        timestamp=time.time(),
        isolation_strategy=strategy,
    )


# --------------------------------------------------------------------------
# internals


class _StartFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(repr(error))


class _Status:
    """The ``task_status`` handed to a child: records ``started()`` first."""

    __slots__ = ("_child", "_real", "_sup", "started_flag")

    def __init__(self, sup: Supervisor, child: _Child, real: trio.TaskStatus[Any]) -> None:
        self._sup = sup
        self._child = child
        self._real = real
        self.started_flag = False

    def started(self, value: Any = None) -> None:
        if self.started_flag:
            raise RuntimeError("called 'started' twice on the same task status")
        self.started_flag = True
        if self._child.scope is not None:
            self._child.scope.deadline = math.inf  # the start timeout no longer applies
        self._child.started_at = trio.current_time()
        self._sup._set_status(self._child, ChildStatus.RUNNING)
        self._real.started(value)


@attrs.define(eq=False)
class _Child:
    spec: ChildSpec
    status: ChildStatus = ChildStatus.STOPPED
    status_since: float = 0.0
    gen: int = 0
    scope: trio.CancelScope | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    pending: trio.CancelScope | None = None
    next_restart_at: float | None = None
    attempt: int = 0
    started_at: float | None = None
    restart_count: int = 0
    restart_times: deque[float] = attrs.field(factory=deque)
    last_error: BaseException | None = None
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    faults: deque[tuple[BaseException, float, IsolationStrategy]] = attrs.field(
        factory=lambda: deque(maxlen=100)
    )
    """(exception, wall-clock time, strategy); formatted on read (cheap restarts)."""

    def __attrs_post_init__(self) -> None:
        self.done.set()  # not running


FaultHandler = Callable[[str, BaseException, dict[str, Any]], Awaitable[bool]]
StatusHook = Callable[[str, ChildStatus, "BaseException | None"], None]


class Supervisor:
    """Runs children as Trio tasks and restarts them by OTP rules.

    Start it with ``await nursery.start(sup.run)``; cancel its scope to stop
    every child in reverse start order within their shutdown deadlines.

    Args:
        children: Initial child specs, started in this order by :meth:`run`
            (one that fails to start makes ``run`` raise :class:`ChildStartError`).
        name (str): Shown in logs and errors.
        strategy: ``one_for_one`` / ``one_for_all`` / ``rest_for_one``.
        max_restarts (int): Restart intensity: more than this many restarts
            within ``period`` seconds (Trio clock) ...
        period (float): ... seconds.
        on_intensity: ``"escalate"`` (default; OTP): the supervisor stops all
            children and ``run`` raises :class:`RestartIntensityExceeded`,
            counting restarts over all children. ``"isolate"``: restarts are
            counted per child and only the offending child stops
            (:attr:`ChildStatus.ISOLATED`); ``on_isolate`` is called.
        backoff (Backoff): Delays between restarts; default no delay.
        auto_shutdown: OTP ``auto_shutdown``: ``"never"``, ``"any_significant"``
            or ``"all_significant"``: ``run`` returns when significant
            children ended and are not restarted.
        fault_handler: ``async (child_id, exc, context) -> bool`` called for
            every fault (context keys: ``phase`` ``"run"``/``"start"``,
            ``ran_for`` seconds, ``source`` ``"supervisor"``); returning False
            vetoes the restart (child ISOLATED).
        on_status: ``(child_id, status, error)`` called synchronously on every
            status change.
        on_isolate: ``(child_id, reason)`` called when intensity isolates a child.
        max_fault_records (int): Fault records kept per child (a ring).
        start_timeout (float): Seconds (Trio clock) a child gets to call
            ``task_status.started()``; then it is cancelled and its start
            fails with ``trio.TooSlowError``. Default: no limit.
        rng (random.Random | None): Source of jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        name: str = "supervisor",
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period: float = 5.0,
        on_intensity: Literal["escalate", "isolate"] = "escalate",
        backoff: Backoff | None = None,
        auto_shutdown: Literal["never", "any_significant", "all_significant"] = "never",
        fault_handler: FaultHandler | None = None,
        on_status: StatusHook | None = None,
        on_isolate: Callable[[str, str], None] | None = None,
        max_fault_records: int = 100,
        start_timeout: float = math.inf,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy if isinstance(strategy, Strategy) else Strategy(strategy)
        if max_restarts < 0 or period <= 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        self.max_restarts = max_restarts
        self.period = period
        if on_intensity not in ("escalate", "isolate"):
            raise ValueError(f"on_intensity must be 'escalate' or 'isolate', got {on_intensity!r}")
        self.on_intensity = on_intensity
        self.backoff = backoff or Backoff(minimum=0.0, maximum=0.0, jitter=0.0, reset_after=0.0)
        self.auto_shutdown = auto_shutdown
        self.fault_handler = fault_handler
        self.on_status = on_status
        self.on_isolate = on_isolate
        self._max_faults = max_fault_records
        if not start_timeout > 0:
            raise ValueError(f"start_timeout must be > 0, got {start_timeout!r}")
        self.start_timeout = start_timeout
        self._rng = rng or random.Random()
        self._children: dict[str, _Child] = {}
        for spec in children:
            self._add(spec)
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._end = trio.Event()
        self._fatal: BaseException | None = None
        self._group_lock = trio.Lock()

    @classmethod
    def from_config(
        cls, cfg: SupervisorConfig, children: Sequence[ChildSpec] = (), **kwargs: Any
    ) -> Supervisor:
        """A supervisor with the strategy, intensity and backoff of ``[supervisor]``."""
        return cls(
            children,
            strategy=cfg.strategy,
            max_restarts=cfg.max_restarts,
            period=cfg.period,
            backoff=Backoff(
                minimum=cfg.backoff_min,
                maximum=cfg.backoff_max,
                factor=cfg.backoff_factor,
                jitter=cfg.jitter,
                reset_after=cfg.backoff_reset,
            ),
            start_timeout=cfg.start_timeout,
            **kwargs,
        )

    # ---- run ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``task_status.started()`` and the start of shutdown."""
        return self._running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the initial children in order, then supervise until cancelled.

        Raises:
            ChildStartError: an initial child failed to start (the ones
                already started are stopped first).
            RestartIntensityExceeded: with ``on_intensity="escalate"``, after
                all children were stopped.
        """
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._end = trio.Event()
        self._fatal = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    try:
                        for child in list(self._children.values()):
                            async with child.lock:
                                child.gen += 1
                                await self._start(child, child.gen)
                    except ChildStartError as exc:
                        self._fatal = exc
                    else:
                        self._running = True
                        task_status.started()
                        await self._end.wait()
                finally:
                    self._running = False
                    with trio.CancelScope(shield=True):
                        await self._shutdown_all()
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._running = False
        if self._fatal is not None:
            raise self._fatal

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None or not self._running:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        return self._nursery

    async def _shutdown_all(self) -> None:
        for child in reversed(list(self._children.values())):
            child.gen += 1
            if child.pending is not None:
                child.pending.cancel()
            if not child.done.is_set():
                self._set_status(child, ChildStatus.STOPPING)
                await self._terminate(child, bounded=True)
            self._set_status(child, ChildStatus.STOPPED)

    # ---- statuses ----------------------------------------------------------

    def _set_status(
        self, child: _Child, status: ChildStatus, error: BaseException | None = None
    ) -> None:
        if error is not None:
            child.last_error = error
        if child.status is status and error is None:
            return
        child.status = status
        child.status_since = trio.current_time()
        if status is not ChildStatus.RESTARTING:
            child.next_restart_at = None
        if self.on_status is not None:
            try:
                self.on_status(child.spec.id, status, error)
            except Exception:
                log.exception("%s: status hook failed", self.name)

    # ---- one child's task --------------------------------------------------

    async def _child_main(self, child: _Child, gen: int, task_status: trio.TaskStatus[Any]) -> None:
        scope = trio.CancelScope(shield=True)
        if self.start_timeout != math.inf:
            scope.deadline = trio.current_time() + self.start_timeout
        child.scope = scope
        child.done = done = trio.Event()
        child.started_at = None
        status = _Status(self, child, task_status)
        self._set_status(child, ChildStatus.STARTING)
        error: BaseException | None = None
        try:
            with scope:
                if child.gen != gen:
                    scope.cancel()
                await child.spec.start(task_status=status)
        except BaseException as exc:
            if not is_fault(exc):
                done.set()
                raise
            error = exc
        finally:
            done.set()
        if not status.started_flag:
            if error is None:
                if scope.cancelled_caught and child.gen == gen:
                    error = trio.TooSlowError(
                        f"did not call task_status.started() within {self.start_timeout} s"
                    )
                elif scope.cancelled_caught:
                    error = trio.TooSlowError("stopped before it started")
                else:
                    error = RuntimeError("returned without calling task_status.started()")
            raise _StartFailed(error) from error
        await self._on_exit(child, gen, error)

    async def _start(self, child: _Child, gen: int) -> None:
        """Start ``child`` as generation ``gen`` (caller holds ``child.lock``)."""
        nursery = self._nursery
        if nursery is None:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        try:
            await nursery.start(self._child_main, child, gen)
        except _StartFailed as sf:
            err = sf.error
            self._set_status(child, ChildStatus.FAILED, err)
            raise ChildStartError(child.spec.id, err) from err

    async def _terminate(self, child: _Child, *, bounded: bool) -> None:
        """Stop the running ``child`` (see the module docstring)."""
        spec = child.spec
        scope = child.scope
        if scope is None:
            return
        if spec.shutdown == BRUTAL_KILL:
            scope.cancel()
            if not bounded:
                await child.done.wait()
            return
        grace = float(spec.shutdown)
        if spec.stop is not None:
            try:
                res = spec.stop()
                if inspect.isawaitable(res):
                    with trio.move_on_after(grace):
                        await res
            except Exception:
                log.exception("%s: graceful stop of %r failed", self.name, spec.id)
            with trio.move_on_after(grace):
                await child.done.wait()
            scope.cancel()
            if not bounded:
                await child.done.wait()
            return
        scope.cancel()
        if bounded:
            with trio.move_on_after(grace):
                await child.done.wait()
            if not child.done.is_set():
                log.warning(
                    "%s: child %r did not stop within %s s; stopping the others",
                    self.name,
                    spec.id,
                    grace,
                )
        else:
            await child.done.wait()

    # ---- exits and restarts ------------------------------------------------

    async def _on_exit(
        self, child: _Child, gen: int, error: BaseException | None, phase: str = "run"
    ) -> None:
        if child.gen != gen:
            return  # stopped on purpose, or already superseded
        spec = child.spec
        now = trio.current_time()
        ran_for = 0.0 if child.started_at is None else now - child.started_at
        if error is not None:
            child.faults.append((error, time.time(), IsolationStrategy.RESTART_PLATFORM))
            log.warning(
                "%s: child %r failed after %.3f s: %s: %s",
                self.name,
                spec.id,
                ran_for,
                type(error).__name__,
                error,
            )
        if child.started_at is not None and ran_for >= self.backoff.reset_after:
            child.attempt = 0  # it ran healthy long enough: the delay starts over
        restart = spec.restart is RestartType.PERMANENT or (
            spec.restart is RestartType.TRANSIENT and error is not None
        )
        allowed = True
        if error is not None and self.fault_handler is not None:
            try:
                allowed = await self.fault_handler(
                    spec.id,
                    error,
                    {"phase": phase, "ran_for": ran_for, "source": "supervisor"},
                )
            except Exception:
                log.exception("%s: fault handler failed for %r", self.name, spec.id)
            if child.gen != gen:
                return
            now = trio.current_time()  # the handler may have taken a while
        if not restart:
            self._set_status(
                child, ChildStatus.STOPPED if error is None else ChildStatus.FAILED, error
            )
            if spec.restart is RestartType.TEMPORARY and self._children.get(spec.id) is child:
                del self._children[spec.id]
            self._check_auto_shutdown(child)
            return
        if not allowed:
            self._set_status(child, ChildStatus.ISOLATED, error)
            return
        if not self._note_restart(child, now):
            reason = f"more than {self.max_restarts} restarts within {self.period} s"
            if self.on_intensity == "escalate":
                self._set_status(child, ChildStatus.FAILED, error)
                self._escalate(
                    RestartIntensityExceeded(
                        f"supervisor {self.name!r}: child {spec.id!r} failed and there were "
                        f"{reason}; giving up (last error: {error!r})"
                    )
                )
                return
            self._set_status(child, ChildStatus.ISOLATED, error)
            log.error("%s: isolating %r: %s", self.name, spec.id, reason)
            if self.on_isolate is not None:
                try:
                    self.on_isolate(spec.id, reason)
                except Exception:
                    log.exception("%s: isolate hook failed", self.name)
            return
        delay = self.backoff.delay(child.attempt, self._rng)
        child.attempt += 1
        self._set_status(child, ChildStatus.RESTARTING, error)
        child.next_restart_at = now + delay
        nursery = self._nursery
        if nursery is None:
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            nursery.start_soon(self._restart_one, child, gen, delay)
        else:
            nursery.start_soon(self._restart_group, child, gen, delay)

    def _note_restart(self, child: _Child, now: float) -> bool:
        """Count one restart; False when the intensity is exceeded."""
        times = child.restart_times if self.on_intensity == "isolate" else self._restart_times
        times.append(now)
        while times and times[0] <= now - self.period:
            times.popleft()
        return len(times) <= self.max_restarts

    def _escalate(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._end.set()

    def _check_auto_shutdown(self, child: _Child) -> None:
        if not child.spec.significant or self.auto_shutdown == "never":
            return
        if self.auto_shutdown == "any_significant":
            self._end.set()
            return
        others = [c for c in self._children.values() if c.spec.significant]
        if all(c.status not in (*_ACTIVE, ChildStatus.RESTARTING) for c in others):
            self._end.set()

    async def _sleep_pending(self, child: _Child, delay: float) -> bool:
        """Sleep ``delay``; False if the pending restart was cancelled."""
        if delay <= 0:
            return True  # the caller re-checks the generation under the lock
        with trio.CancelScope() as cs:
            child.pending = cs
            await trio.sleep(delay)
        if child.pending is cs:
            child.pending = None
        return not cs.cancelled_caught

    async def _restart_one(self, child: _Child, gen: int, delay: float) -> None:
        if not await self._sleep_pending(child, delay):
            return
        outcome = await self._restart_if_current(child, gen)
        if outcome is not None:
            new_gen, error = outcome
            if error is not None:
                await self._on_start_failure(child, new_gen, error)

    async def _restart_if_current(
        self, child: _Child, gen: int
    ) -> tuple[int, BaseException | None] | None:
        """Start ``child`` again if it is still generation ``gen``.

        Returns ``None`` when it was terminated or restarted meanwhile, else
        ``(new_gen, error)`` with the start error (``None`` when it started).
        """
        async with child.lock:
            if child.gen != gen:
                return None
            child.gen += 1
            new_gen = child.gen
            child.restart_count += 1
            try:
                await self._start(child, new_gen)
            except ChildStartError as exc:
                return new_gen, exc.error
            return new_gen, None

    async def _on_start_failure(self, child: _Child, gen: int, error: BaseException) -> None:
        # a failed (re)start is a fault like any other: same policy, same backoff
        child.started_at = None
        await self._on_exit(child, gen, error, phase="start")

    async def _restart_group(self, failed: _Child, gen: int, delay: float) -> None:
        async with self._group_lock:
            if failed.gen != gen:
                return
            order = list(self._children.values())
            if failed not in order:
                return
            group = order if self.strategy is Strategy.ONE_FOR_ALL else order[order.index(failed) :]
            members: list[_Child] = []
            for c in group:
                if c is failed or c.status in (*_ACTIVE, ChildStatus.RESTARTING):
                    members.append(c)
            gens: dict[int, int] = {id(failed): failed.gen}
            # stop the others, in reverse order
            for c in reversed(members):
                if c is failed:
                    continue
                c.gen += 1
                if c.pending is not None:
                    c.pending.cancel()
                if not c.done.is_set():
                    self._set_status(c, ChildStatus.STOPPING)
                    await self._terminate(c, bounded=False)
                if c.spec.restart is RestartType.TEMPORARY:
                    self._set_status(c, ChildStatus.STOPPED)
                    if self._children.get(c.spec.id) is c:
                        del self._children[c.spec.id]
                    continue
                self._set_status(c, ChildStatus.RESTARTING)
                c.next_restart_at = trio.current_time() + delay
                gens[id(c)] = c.gen
            if not await self._sleep_pending(failed, delay):
                # the failed child was terminated meanwhile: restart the others now
                gens.pop(id(failed), None)
            for c in members:
                if id(c) not in gens:
                    continue
                outcome = await self._restart_if_current(c, gens[id(c)])
                if outcome is None:
                    continue  # terminated meanwhile
                new_gen, error = outcome
                if error is not None:
                    # leave the rest RESTARTING: the next group restart includes them
                    self._nursery_start_soon(self._on_start_failure, c, new_gen, error)
                    return

    def _nursery_start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # ---- dynamic children (OTP API) ----------------------------------------

    def _add(self, spec: ChildSpec) -> _Child:
        child = _Child(spec)
        child.faults = deque(maxlen=self._max_faults)
        child.status_since = _now()
        self._children[spec.id] = child
        return child

    def _get(self, child_id: str) -> _Child:
        try:
            return self._children[child_id]
        except KeyError:
            raise ChildNotFound(child_id) from None

    def add_child(self, spec: ChildSpec) -> None:
        """Register ``spec`` without starting it (status STOPPED).

        Start it later with :meth:`restart_child`. Works before :meth:`run` too
        (it is then started with the initial children).

        Raises:
            ChildAlreadyPresent: if a child with this id exists.
        """
        if spec.id in self._children:
            raise ChildAlreadyPresent(spec.id)
        self._add(spec)

    async def start_child(self, spec: ChildSpec) -> None:
        """Add ``spec`` and start it; returns once it called ``task_status.started()``.

        Raises:
            ChildAlreadyStarted: a child with this id runs.
            ChildAlreadyPresent: a child with this id exists but does not run.
            ChildStartError: it failed before ``started()``; the spec is not kept.
            SupervisorNotRunning: ``run`` is not active.
        """
        self._require_nursery()
        existing = self._children.get(spec.id)
        if existing is not None:
            if existing.status in (*_ACTIVE, ChildStatus.RESTARTING):
                raise ChildAlreadyStarted(spec.id)
            raise ChildAlreadyPresent(spec.id)
        child = self._add(spec)
        async with child.lock:
            child.gen += 1
            try:
                await self._start(child, child.gen)
            except BaseException:
                if self._children.get(spec.id) is child:
                    del self._children[spec.id]
                raise

    async def terminate_child(self, child_id: str) -> None:
        """Stop a child and keep its spec (a temporary child's spec is removed).

        Cancels a scheduled restart too. Returns once the child's task has
        really finished. Stopping a stopped child does nothing.

        Raises:
            ChildNotFound: unknown id.
        """
        child = self._get(child_id)
        child.gen += 1
        if child.pending is not None:
            child.pending.cancel()
        if child.scope is not None and not child.done.is_set():
            self._set_status(child, ChildStatus.STOPPING)
            if child.spec.stop is None or child.spec.shutdown == BRUTAL_KILL:
                child.scope.cancel()  # interrupt a start that holds the lock
        async with child.lock:
            child.gen += 1
            if not child.done.is_set():
                self._set_status(child, ChildStatus.STOPPING)
                await self._terminate(child, bounded=False)
            self._set_status(child, ChildStatus.STOPPED)
        if child.spec.restart is RestartType.TEMPORARY and self._children.get(child_id) is child:
            del self._children[child_id]

    async def restart_child(self, child_id: str, *, recover: bool = False) -> None:
        """Start a child that is not running (OTP ``restart_child``).

        A scheduled restart is done now instead. Returns once the child
        called ``task_status.started()``. Does not count towards the restart
        intensity (its window and backoff start over).

        Args:
            recover (bool): If it fails to start, also hand the failure to the
                normal fault path (fault handler, intensity, restart after the
                backoff delay), as if it had crashed; the error is still raised.

        Raises:
            ChildNotFound: unknown id.
            ChildRunning: it is starting, running or stopping.
            ChildStartError: it failed before ``started()`` (status FAILED).
            SupervisorNotRunning: ``run`` is not active.
        """
        self._require_nursery()
        child = self._get(child_id)
        async with child.lock:
            if child.status in _ACTIVE:
                raise ChildRunning(child_id, child.status)
            if child.pending is not None:
                child.pending.cancel()
            child.gen += 1
            child.attempt = 0
            child.restart_times.clear()
            gen = child.gen
            try:
                await self._start(child, gen)
            except ChildStartError as exc:
                if child.gen != gen:
                    raise  # terminated while starting: not a fault
                if recover:
                    self._nursery_start_soon(self._on_start_failure, child, gen, exc.error)
                else:
                    child.faults.append((exc.error, time.time(), IsolationStrategy.CONTINUE))
                raise

    async def delete_child(self, child_id: str) -> None:
        """Forget the spec of a child that is not running.

        Raises:
            ChildNotFound: unknown id.
            ChildRunning: it is starting, running, stopping or restarting.
        """
        child = self._get(child_id)
        if child.status in (*_ACTIVE, ChildStatus.RESTARTING):
            raise ChildRunning(child_id, child.status)
        async with child.lock:
            if child.status in (*_ACTIVE, ChildStatus.RESTARTING):
                raise ChildRunning(child_id, child.status)
            child.gen += 1
            if self._children.get(child_id) is child:
                del self._children[child_id]

    def which_children(self) -> list[ChildInfo]:
        """Every child, in start order."""
        return [self.child_info(cid) for cid in self._children]

    def child_info(self, child_id: str) -> ChildInfo:
        """One child's row.

        Raises:
            ChildNotFound: unknown id.
        """
        c = self._get(child_id)
        return ChildInfo(
            id=c.spec.id,
            status=c.status,
            restart=c.spec.restart,
            significant=c.spec.significant,
            restart_count=c.restart_count,
            started_at=c.started_at,
            status_since=c.status_since,
            last_error=c.last_error,
            next_restart_at=c.next_restart_at,
        )

    def count_children(self) -> ChildCounts:
        """Counts by status (OTP ``count_children``)."""
        cs = list(self._children.values())
        return ChildCounts(
            specs=len(cs),
            active=sum(c.status in _ACTIVE for c in cs),
            restarting=sum(c.status is ChildStatus.RESTARTING for c in cs),
            isolated=sum(c.status is ChildStatus.ISOLATED for c in cs),
        )

    def get_fault_records(self, child_id: str | None = None) -> list[FaultRecord]:
        """Fault records kept for one child or all (oldest first per child)."""
        children = [self._get(child_id)] if child_id is not None else self._children.values()
        return [
            attrs.evolve(fault_record(c.spec.id, exc, strategy), timestamp=ts)
            for c in children
            for exc, ts, strategy in c.faults
        ]


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0
