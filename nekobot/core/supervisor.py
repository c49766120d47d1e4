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
each within its ``shutdown`` deadline (:func:`~nekobot.core.child_state.stop_child`).

Containment: anything but cancellation that a child raises (``SystemExit``,
``KeyboardInterrupt``, ``GeneratorExit``, custom ``BaseException`` subclasses,
groups of them) is a fault of that child (:mod:`nekobot.core.child_fault`):
recorded with its traceback and handled by policy; the siblings and the process
live on. ``trio.Cancelled`` always propagates.

Times are seconds on the Trio clock (``trio.current_time()``); fault timestamps
are wall clock (``time.time()``).

The parts: :mod:`~nekobot.core.child_spec` (specs, statuses),
:mod:`~nekobot.core.child_fault` (the fault rule and record),
:mod:`~nekobot.core.intensity` (the restart window),
:mod:`~nekobot.core.child_state` (per-child bookkeeping, stopping),
:mod:`~nekobot.core.restarts` (the decision loop: a child's exit and what follows),
:mod:`~nekobot.core.supervisor_errors`. Every name is re-exported here.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Literal

import trio

from .backoff import Backoff as Backoff
from .child_fault import ChildFault as ChildFault
from .child_fault import FaultPhase as FaultPhase
from .child_fault import is_fault as is_fault
from .child_spec import ACTIVE
from .child_spec import BRUTAL_KILL as BRUTAL_KILL
from .child_spec import ChildCounts as ChildCounts
from .child_spec import ChildInfo as ChildInfo
from .child_spec import ChildSpec as ChildSpec
from .child_spec import ChildStatus as ChildStatus
from .child_spec import RestartType as RestartType
from .child_spec import Strategy as Strategy
from .child_spec import SupervisorSettings as SupervisorSettings
from .child_state import ChildState, stop_child
from .intensity import RestartIntensity as RestartIntensity
from .restarts import FaultHandler as FaultHandler
from .restarts import IsolateHook as IsolateHook
from .restarts import RestartLoop
from .restarts import StatusHook as StatusHook
from .supervisor_errors import ChildAlreadyPresent as ChildAlreadyPresent
from .supervisor_errors import ChildAlreadyStarted as ChildAlreadyStarted
from .supervisor_errors import ChildNotFound as ChildNotFound
from .supervisor_errors import ChildRunning as ChildRunning
from .supervisor_errors import ChildStartError as ChildStartError
from .supervisor_errors import RestartIntensityExceeded as RestartIntensityExceeded
from .supervisor_errors import SupervisorError as SupervisorError
from .supervisor_errors import SupervisorNotRunning as SupervisorNotRunning

__all__ = [
    "BRUTAL_KILL",
    "Backoff",
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildCounts",
    "ChildFault",
    "ChildInfo",
    "ChildNotFound",
    "ChildRunning",
    "ChildSpec",
    "ChildStartError",
    "ChildStatus",
    "FaultHandler",
    "FaultPhase",
    "IsolateHook",
    "RestartIntensity",
    "RestartIntensityExceeded",
    "RestartType",
    "StatusHook",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorNotRunning",
    "SupervisorSettings",
    "is_fault",
]

log = logging.getLogger("nekobot.supervisor")


class Supervisor(RestartLoop):
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
            every fault that may lead to a restart (context keys: ``phase``
            ``"run"``/``"start"``, ``ran_for`` seconds, ``source``
            ``"supervisor"``); returning False vetoes the restart (child
            ISOLATED). ``exc`` is the child's own exception, whatever
            ``BaseException`` it is (never ``trio.Cancelled``).
        on_status: ``(child_id, status, error)`` called synchronously on every
            status change.
        on_isolate: ``(child_id, reason)`` called when intensity isolates a child.
            A hook that raises (anything but cancellation) is logged; the
            supervisor goes on.
        max_fault_records (int): Fault records kept per child (a ring, see
            :meth:`get_fault_records`).
        start_timeout (float): Seconds (Trio clock) a child gets to call
            ``task_status.started()``; then it is cancelled and its start
            fails with ``trio.TooSlowError``. Default: no limit.
        rng (random.Random | None): Source of jitter (tests pass a seeded one).

    Raises:
        ValueError: ``max_restarts < 0``, ``period <= 0``, ``start_timeout <= 0``,
            or an unknown ``strategy`` / ``on_intensity``.
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
        on_isolate: IsolateHook | None = None,
        max_fault_records: int = 100,
        start_timeout: float = math.inf,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.strategy = strategy if isinstance(strategy, Strategy) else Strategy(strategy)
        self._intensity = RestartIntensity(max_restarts, period)  # raises ValueError
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
        self._children: dict[str, ChildState] = {}
        for spec in children:
            self._add(spec)
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._end = trio.Event()
        self._fatal: BaseException | None = None
        self._group_lock = trio.Lock()

    @classmethod
    def from_config(
        cls,
        cfg: SupervisorSettings,
        children: Sequence[ChildSpec] = (),
        *,
        name: str = "supervisor",
        on_intensity: Literal["escalate", "isolate"] = "escalate",
        auto_shutdown: Literal["never", "any_significant", "all_significant"] = "never",
        fault_handler: FaultHandler | None = None,
        on_status: StatusHook | None = None,
        on_isolate: IsolateHook | None = None,
        max_fault_records: int = 100,
        rng: random.Random | None = None,
    ) -> Supervisor:
        """A supervisor with the strategy, intensity, backoff and start timeout of
        ``[supervisor]`` (``nekobot.config.schema.SupervisorConfig``); the other
        arguments are those of the constructor.

        Raises:
            ValueError: as the constructor.
        """
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
            name=name,
            on_intensity=on_intensity,
            auto_shutdown=auto_shutdown,
            fault_handler=fault_handler,
            on_status=on_status,
            on_isolate=on_isolate,
            max_fault_records=max_fault_records,
            rng=rng,
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
                await stop_child(child, bounded=True, name=self.name)
            self._set_status(child, ChildStatus.STOPPED)

    # ---- dynamic children (OTP API) ----------------------------------------

    def _add(self, spec: ChildSpec) -> ChildState:
        child = ChildState(
            spec,
            intensity=RestartIntensity(self.max_restarts, self.period),
            faults=deque(maxlen=self._max_faults),
        )
        child.status_since = _now()
        self._children[spec.id] = child
        return child

    def _get(self, child_id: str) -> ChildState:
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
            if existing.status in (*ACTIVE, ChildStatus.RESTARTING):
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
                await stop_child(child, bounded=False, name=self.name)
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
            if child.status in ACTIVE:
                raise ChildRunning(child_id, child.status)
            if child.pending is not None:
                child.pending.cancel()
            child.gen += 1
            child.attempt = 0
            child.intensity.clear()
            gen = child.gen
            try:
                await self._start(child, gen)
            except ChildStartError as exc:
                if child.gen != gen:
                    raise  # terminated while starting: not a fault
                if recover:
                    self._nursery_start_soon(self._on_start_failure, child, gen, exc.error)
                else:
                    self._record(child, exc.error, "start")
                raise

    async def delete_child(self, child_id: str) -> None:
        """Forget the spec of a child that is not running.

        Raises:
            ChildNotFound: unknown id.
            ChildRunning: it is starting, running, stopping or restarting.
        """
        child = self._get(child_id)
        if child.status in (*ACTIVE, ChildStatus.RESTARTING):
            raise ChildRunning(child_id, child.status)
        async with child.lock:
            if child.status in (*ACTIVE, ChildStatus.RESTARTING):
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
            active=sum(c.status in ACTIVE for c in cs),
            restarting=sum(c.status is ChildStatus.RESTARTING for c in cs),
            isolated=sum(c.status is ChildStatus.ISOLATED for c in cs),
        )

    def get_fault_records(self, child_id: str | None = None) -> list[ChildFault]:
        """Faults kept for one child or all, oldest first per child.

        Tracebacks are formatted here, on read, from the kept exceptions (the
        real tracebacks), so a restart does not pay for formatting.

        Raises:
            ChildNotFound: unknown ``child_id``.
        """
        children = [self._get(child_id)] if child_id is not None else self._children.values()
        return [
            ChildFault.from_exception(c.spec.id, exc, timestamp=ts, phase=phase)
            for c in children
            for exc, ts, phase in c.faults
        ]


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:
        return 0.0
