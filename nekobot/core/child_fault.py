"""Faults of supervised children: what counts as one, and the record of one.

The containment rule: any ``BaseException`` other than ``trio.Cancelled`` that
a child raises (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``,
custom subclasses, and groups of them) is a fault of that child; cancellation
propagates. A group holding both is split: the ``trio.Cancelled`` part
propagates, the rest is the fault (see :func:`contain` for a stray
``trio.Cancelled``).
"""

from __future__ import annotations

import math
import traceback
from typing import Literal

import attrs
import trio

__all__ = ["ChildFault", "FaultPhase", "contain", "is_fault", "split_fault"]

FaultPhase = Literal["start", "run", "stop"]
"""When a child failed: before ``task_status.started()``, while running, or
while being stopped on purpose."""


def split_fault(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` into ``(fault, cancelled)``.

    Args:
        exc (BaseException): What a child (or a hook) raised.

    Returns:
        tuple: ``fault`` is everything but ``trio.Cancelled`` (``exc`` itself,
        or a group of the non-cancellation leaves), ``None`` when nothing is
        left; ``cancelled`` is the ``trio.Cancelled`` part to re-raise, ``None``
        when there is none.
    """
    if isinstance(exc, trio.Cancelled):
        return None, exc
    if isinstance(exc, BaseExceptionGroup):
        cancelled, rest = exc.split(trio.Cancelled)
        return rest, cancelled
    return exc, None


def contain(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """Split ``exc`` at a containment boundary into ``(fault, cancellation)``.

    Use in ``except BaseException as exc:`` around code the supervisor does not
    own (a child, a hook): record or log ``fault`` when it is not ``None``, then
    re-raise ``cancellation`` when it is not ``None``.

    The ``trio.Cancelled`` part is handed back for re-raising only while a
    cancellation is in effect for the calling task
    (``trio.current_effective_deadline() == -inf``): then it belongs to a scope
    above and must reach it. A ``trio.Cancelled`` raised while nothing above is
    cancelled is stray (a child re-raised one it caught earlier); re-raised, it
    would silently end the supervisor's nursery, so it stays part of the
    fault: ``(exc, None)``.
    """
    fault, cancelled = split_fault(exc)
    if cancelled is not None and trio.current_effective_deadline() != -math.inf:
        return exc, None
    return fault, cancelled


def is_fault(exc: BaseException) -> bool:
    """Whether a child's exit by ``exc`` is wholly a fault of that child.

    True for every ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``, custom subclasses, groups of them) that is not and
    does not hold a ``trio.Cancelled``; use :func:`split_fault` to separate a
    group that holds both.
    """
    if isinstance(exc, trio.Cancelled):
        return False
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is None
    return True


@attrs.frozen(kw_only=True)
class ChildFault:
    """One fault of a supervised child, as :meth:`Supervisor.get_fault_records` reports it."""

    child_id: str
    """The child's id."""
    error_type: str
    """Class name of the exception (``"KeyboardInterrupt"``, ``"ExceptionGroup"``, …)."""
    error_message: str
    """``str()`` of the exception."""
    traceback_str: str
    """The exception's real traceback, formatted (``traceback.format_exception``)."""
    timestamp: float
    """Wall-clock time (``time.time()``) the supervisor saw the fault."""
    phase: FaultPhase
    """``"start"`` (before ``started()``), ``"run"`` or ``"stop"`` (while being stopped)."""

    @classmethod
    def from_exception(
        cls, child_id: str, exc: BaseException, *, timestamp: float, phase: FaultPhase
    ) -> ChildFault:
        """The record of ``exc``; formats its traceback now (call it on read, not per crash).

        Args:
            child_id (str): The child's id.
            exc (BaseException): The fault.
            timestamp (float): Wall-clock seconds (``time.time()``) of the fault.
            phase: When it happened.
        """
        return cls(
            child_id=child_id,
            error_type=type(exc).__name__,
            error_message=str(exc),
            traceback_str="".join(traceback.format_exception(exc)),
            timestamp=timestamp,
            phase=phase,
        )
