"""A supervisor's bookkeeping for one child, and how a running child is stopped.

Internal to :mod:`nekobot.core.supervisor`: only the supervisor's own task
code touches a :class:`ChildState`. Times are seconds on the Trio clock,
except fault timestamps (wall clock, ``time.time()``).

Stopping a child, in Trio terms: a task cannot be killed, only cancelled;
cancellation *is* the stop request, and cleanup code may shield itself.
See :func:`stop_child`.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable

import attrs
import trio

from .child_fault import FaultPhase, contain
from .child_spec import BRUTAL_KILL, ChildSpec, ChildStatus
from .intensity import RestartIntensity

__all__ = ["ChildState", "StartStatus", "stop_child"]

log = logging.getLogger("nekobot.supervisor")


@attrs.define(eq=False)
class ChildState:
    """Everything the supervisor knows about one child (mutated by the supervisor only)."""

    spec: ChildSpec
    """How to run it."""
    intensity: RestartIntensity
    """Its own restart window (used by an isolating supervisor)."""
    faults: deque[tuple[BaseException, float, FaultPhase]]
    """(exception, wall-clock time, phase), a ring; formatted on read so a
    restart stays cheap."""
    status: ChildStatus = ChildStatus.STOPPED
    status_since: float = 0.0
    """Trio clock time of the last status change."""
    gen: int = 0
    """Generation: bumped by every start and every deliberate stop, so a stale
    exit or a stale scheduled restart is recognised and ignored."""
    scope: trio.CancelScope | None = None
    """The shielded cancel scope of the current run."""
    done: trio.Event = attrs.field(factory=trio.Event)
    """Set when the current run's task has finished."""
    pending: trio.CancelScope | None = None
    """The scope of the sleep before a scheduled restart."""
    next_restart_at: float | None = None
    attempt: int = 0
    """Consecutive restarts: the backoff's ``n``."""
    started_at: float | None = None
    restart_count: int = 0
    last_error: BaseException | None = None
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    """Held while the child starts, so starts and stops of one child do not interleave."""

    def __attrs_post_init__(self) -> None:
        self.done.set()  # not running


class StartStatus:
    """The ``task_status`` handed to a child: notes ``started()`` first.

    Args:
        child (ChildState): The child it belongs to.
        real (trio.TaskStatus): The status of ``nursery.start``.
        on_started: Called with the child right before ``real.started()``.
    """

    __slots__ = ("_child", "_on_started", "_real", "started_flag")

    def __init__(
        self,
        child: ChildState,
        real: trio.TaskStatus[None],
        on_started: Callable[[ChildState], None],
    ) -> None:
        self._child = child
        self._real = real
        self._on_started = on_started
        self.started_flag = False

    def started(self, value: None = None) -> None:
        """Report that the child is up (``trio.TaskStatus.started``).

        Raises:
            RuntimeError: if called twice.
        """
        if self.started_flag:
            raise RuntimeError("called 'started' twice on the same task status")
        self.started_flag = True
        child = self._child
        if child.scope is not None:
            child.scope.deadline = float("inf")  # the start timeout no longer applies
        child.started_at = trio.current_time()
        self._on_started(child)
        self._real.started(value)


async def stop_child(child: ChildState, *, bounded: bool, name: str) -> None:
    """Stop the running ``child`` within its ``shutdown`` (Trio clock seconds).

    * ``shutdown = <seconds>``: with a graceful ``stop`` hook, the hook is
      called first and the child gets ``shutdown`` seconds to return by
      itself, then it is cancelled. Without a hook it is cancelled at once.
    * ``shutdown = "brutal_kill"``: cancelled at once.

    Args:
        child (ChildState): The child.
        bounded (bool): Wait at most ``shutdown`` seconds after cancelling
            (tree shutdown: a child that ignores cancellation is logged and
            left to finish on its own); else wait until its task has really
            finished (``terminate_child``: its port is released on return).
            A ``brutal_kill`` child is not waited for when ``bounded``.
        name (str): The supervisor's name, for logs.

    A ``stop`` hook that raises (anything but cancellation) is logged.
    """
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
        except BaseException as exc:
            fault, cancelled = contain(exc)
            if fault is not None:
                log.error("%s: graceful stop of %r failed", name, spec.id, exc_info=fault)
            if cancelled is not None:
                raise cancelled from fault
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
                name,
                spec.id,
                grace,
            )
    else:
        await child.done.wait()
