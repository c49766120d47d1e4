"""Typed messages of the fault-isolation actor (see :mod:`.fault_isolation`)."""

from __future__ import annotations

import attrs
import trio

from ..core.actor import Request
from .records import KeptFault

__all__ = ["Msg"]


@attrs.frozen
class Fault(Request[KeptFault]):
    platform_id: str
    error: BaseException
    crashed: bool
    counted: bool = False
    """Sent as a cast by ``judge_fault`` (its in-flight count goes down when handled)."""


@attrs.frozen
class SetManual(Request[None]):
    platform_id: str
    disabled: bool
    by: str
    reason: str = ""


@attrs.frozen
class OpenBreaker:
    platform_id: str
    reason: str


@attrs.frozen
class BeginTrial(Request[bool]):
    platform_id: str


@attrs.frozen
class TrialSucceeded:
    platform_id: str


@attrs.frozen
class ResetBreaker(Request[None]):
    platform_id: str
    reason: str


@attrs.frozen
class State:
    platform_id: str
    running: bool
    wanted: bool
    reason: str


@attrs.frozen
class Forget:
    platform_id: str


@attrs.frozen
class Flush(Request[trio.Event | None]):
    pass


@attrs.frozen
class Recovered:
    platform_id: str


@attrs.frozen
class Settle(Request[None]):
    pass


Msg = (
    Fault
    | SetManual
    | OpenBreaker
    | BeginTrial
    | TrialSucceeded
    | ResetBreaker
    | State
    | Forget
    | Flush
    | Settle
    | Recovered
)
