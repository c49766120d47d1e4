"""The supervisor's decision loop: a child's task, its exit, and what follows.

:class:`RestartLoop` is the behaviour half of
:class:`~nekobot.core.supervisor.Supervisor` (which holds the constructor, ``run``
and the OTP child API): it runs one child's task, contains its faults (anything
but ``trio.Cancelled``, see :mod:`nekobot.core.child_fault`), and decides: stop,
restart after the backoff delay (one child or a group, by strategy), isolate,
or escalate. Times are seconds on the Trio clock; fault timestamps are wall
clock (``time.time()``).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import trio

from .backoff import Backoff
from .child_fault import FaultPhase, contain
from .child_spec import ACTIVE, ChildStatus, RestartType, Strategy
from .child_state import ChildState, StartStatus, stop_child
from .intensity import RestartIntensity
from .supervisor_errors import ChildStartError, RestartIntensityExceeded, SupervisorNotRunning

__all__ = ["FaultHandler", "IsolateHook", "RestartLoop", "StatusHook"]

log = logging.getLogger("nekobot.supervisor")

FaultHandler = Callable[[str, BaseException, dict[str, Any]], Awaitable[bool]]
"""``async (child_id, exc, context) -> bool``: False vetoes the restart."""
StatusHook = Callable[[str, ChildStatus, "BaseException | None"], None]
"""``(child_id, status, error)``, called synchronously on every status change."""
IsolateHook = Callable[[str, str], None]
"""``(child_id, reason)``, called when the restart intensity isolates a child."""


class _StartFailed(Exception):
    """Carries a child's start failure out of ``nursery.start``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(repr(error))


class RestartLoop:
    """What happens when a child starts and ends (base of ``Supervisor``).

    The attributes are set by ``Supervisor.__init__``; see its docstring.
    """

    name: str
    strategy: Strategy
    max_restarts: int
    period: float
    on_intensity: Literal["escalate", "isolate"]
    backoff: Backoff
    auto_shutdown: Literal["never", "any_significant", "all_significant"]
    fault_handler: FaultHandler | None
    on_status: StatusHook | None
    on_isolate: IsolateHook | None
    start_timeout: float
    _rng: random.Random
    _children: dict[str, ChildState]
    _intensity: RestartIntensity
    _nursery: trio.Nursery | None
    _end: trio.Event
    _fatal: BaseException | None
    _group_lock: trio.Lock

    # ---- statuses ----------------------------------------------------------

    def _set_status(
        self, child: ChildState, status: ChildStatus, error: BaseException | None = None
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
            except BaseException as exc:
                self._hook_failed("status hook", exc)

    def _hook_failed(self, what: str, exc: BaseException) -> None:
        """Log a hook's failure; re-raise its ``trio.Cancelled`` part."""
        fault, cancelled = contain(exc)
        if fault is not None:
            log.error("%s: %s failed", self.name, what, exc_info=fault)
        if cancelled is not None:
            if fault is None:
                raise cancelled
            raise cancelled from fault

    # ---- one child's task --------------------------------------------------

    async def _child_main(
        self, child: ChildState, gen: int, task_status: trio.TaskStatus[None]
    ) -> None:
        scope = trio.CancelScope(shield=True)
        if self.start_timeout != math.inf:
            scope.deadline = trio.current_time() + self.start_timeout
        child.scope = scope
        child.done = done = trio.Event()
        child.started_at = None
        status = StartStatus(child, task_status, self._on_started)
        self._set_status(child, ChildStatus.STARTING)
        error: BaseException | None = None
        try:
            with scope:
                if child.gen != gen:
                    scope.cancel()
                await child.spec.start(task_status=status)
        except BaseException as exc:
            # containment: all but cancellation is this child's fault
            error, cancelled = contain(exc)
            if cancelled is exc:
                raise
            if cancelled is not None:  # a group of both: the cancellation goes on
                done.set()
                if error is not None:
                    self._fault_beside_cancel(child, gen, error, started=status.started_flag)
                raise cancelled from error
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
        if child.gen != gen:
            if error is not None:  # it failed while being stopped on purpose
                self._record(child, error, "stop")
            return
        await self._on_exit(child, gen, error)

    def _on_started(self, child: ChildState) -> None:
        self._set_status(child, ChildStatus.RUNNING)

    def _record(
        self, child: ChildState, error: BaseException, phase: FaultPhase, ran_for: float = 0.0
    ) -> None:
        """Keep ``error`` in the child's ring (formatted on read) and log it."""
        child.faults.append((error, time.time(), phase))
        log.warning(
            "%s: child %r failed (%s) after %.3f s: %s: %s",
            self.name,
            child.spec.id,
            phase,
            ran_for,
            type(error).__name__,
            error,
        )

    def _fault_beside_cancel(
        self, child: ChildState, gen: int, error: BaseException, *, started: bool
    ) -> None:
        """A child raised a group of a fault and ``trio.Cancelled``: the
        cancellation propagates (not restarted); the rest is recorded."""
        current = child.gen == gen
        self._record(child, error, "run" if started and current else "start" if current else "stop")
        if current:
            self._set_status(child, ChildStatus.FAILED, error)

    async def _start(self, child: ChildState, gen: int) -> None:
        """Start ``child`` as generation ``gen`` (caller holds ``child.lock``)."""
        nursery = self._nursery
        if nursery is None:
            raise SupervisorNotRunning(f"supervisor {self.name!r} is not running")
        try:
            await nursery.start(self._child_main, child, gen, name=f"{self.name}.{child.spec.id}")
        except _StartFailed as sf:
            err = sf.error
            self._set_status(child, ChildStatus.FAILED, err)
            raise ChildStartError(child.spec.id, err) from err

    # ---- exits and restarts ------------------------------------------------

    async def _on_exit(
        self,
        child: ChildState,
        gen: int,
        error: BaseException | None,
        phase: Literal["run", "start"] = "run",
    ) -> None:
        if child.gen != gen:
            return  # stopped on purpose, or already superseded
        spec = child.spec
        now = trio.current_time()
        ran_for = 0.0 if child.started_at is None else now - child.started_at
        if error is not None:
            self._record(child, error, phase, ran_for)
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
            except BaseException as exc:
                self._hook_failed(f"fault handler for {spec.id!r}", exc)
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
                        f"{reason}; giving up (last error: {error!r})",
                        child_id=spec.id,
                        error=error,
                    )
                )
                return
            self._set_status(child, ChildStatus.ISOLATED, error)
            log.error("%s: isolating %r: %s", self.name, spec.id, reason)
            if self.on_isolate is not None:
                try:
                    self.on_isolate(spec.id, reason)
                except BaseException as exc:
                    self._hook_failed("isolate hook", exc)
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

    def _note_restart(self, child: ChildState, now: float) -> bool:
        """Count one restart; False when the intensity is exceeded."""
        intensity = child.intensity if self.on_intensity == "isolate" else self._intensity
        return intensity.note(now)

    def _escalate(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._end.set()

    def _check_auto_shutdown(self, child: ChildState) -> None:
        if not child.spec.significant or self.auto_shutdown == "never":
            return
        if self.auto_shutdown == "any_significant":
            self._end.set()
            return
        others = [c for c in self._children.values() if c.spec.significant]
        if all(c.status not in (*ACTIVE, ChildStatus.RESTARTING) for c in others):
            self._end.set()

    async def _sleep_pending(self, child: ChildState, delay: float) -> bool:
        """Sleep ``delay``; False if the pending restart was cancelled."""
        if delay <= 0:
            return True  # the caller re-checks the generation under the lock
        with trio.CancelScope() as cs:
            child.pending = cs
            await trio.sleep(delay)
        if child.pending is cs:
            child.pending = None
        return not cs.cancelled_caught

    async def _restart_one(self, child: ChildState, gen: int, delay: float) -> None:
        if not await self._sleep_pending(child, delay):
            return
        outcome = await self._restart_if_current(child, gen)
        if outcome is not None:
            new_gen, error = outcome
            if error is not None:
                await self._on_start_failure(child, new_gen, error)

    async def _restart_if_current(
        self, child: ChildState, gen: int
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

    async def _on_start_failure(self, child: ChildState, gen: int, error: BaseException) -> None:
        # a failed (re)start is a fault like any other: same policy, same backoff
        child.started_at = None
        await self._on_exit(child, gen, error, phase="start")

    async def _restart_group(self, failed: ChildState, gen: int, delay: float) -> None:
        async with self._group_lock:
            if failed.gen != gen:
                return
            order = list(self._children.values())
            if failed not in order:
                return
            group = order if self.strategy is Strategy.ONE_FOR_ALL else order[order.index(failed) :]
            members: list[ChildState] = []
            for c in group:
                if c is failed or c.status in (*ACTIVE, ChildStatus.RESTARTING):
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
                    await stop_child(c, bounded=False, name=self.name)
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
