"""Nothing hangs: every operator call that waits on the bot answers within a deadline.

:func:`within` runs one operation (restart a platform, roll the config back …)
and returns its result, or raises :class:`~nekobot.errors.CallTimeout` naming
what it waited for once :data:`OPERATOR_DEADLINE` seconds (Trio clock) have
passed. The operation itself is not cancelled when its caller stops waiting
(it may be half-way through a restart): it goes on in a nursery that outlives
the answer, for at most :data:`LINGER` more seconds, and how it ended is
logged. The HTTP API (:class:`OperationNursery`, one nursery per request) and
the console (one per session) both use it, so both answer with the same message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from ..errors import ActorStopped, CallTimeout

__all__ = ["LINGER", "NURSERY_KEY", "OPERATOR_DEADLINE", "OperationNursery", "within"]

log = logging.getLogger("nekobot.api")

T = TypeVar("T")

OPERATOR_DEADLINE = 9.0
"""Seconds (Trio clock) an operator call may wait on the bot before it answers
503 ``timeout`` (API) or ``error: …`` (console). The bot's own calls have
deadlines under this one, so their :class:`CallTimeout` usually comes first."""

LINGER = 60.0
"""Seconds (Trio clock) an operation may go on after its caller got the timeout
answer; then it is cancelled (and that is logged)."""

NURSERY_KEY = "nekobot.operations"
"""Key of the per-request nursery in the ASGI scope (set by :class:`OperationNursery`)."""


class _Pending:
    """The outcome of one operation run by :func:`within`."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: Exception | None = None
        self.abandoned = False


async def within(
    nursery: trio.Nursery,
    what: str,
    operation: Callable[[], Awaitable[T]],
    *,
    deadline: float = OPERATOR_DEADLINE,
) -> T:
    """Run ``operation()`` in ``nursery`` and wait at most ``deadline`` seconds for it.

    Args:
        nursery: Where the operation runs; it must outlive the caller's wait
            (a request's or a console session's operations nursery).
        what (str): What is waited for, as the operator reads it
            (``"restart of platform 'qq'"``); it starts every error message.
        operation: The call to make.
        deadline (float): Seconds (Trio clock) to wait.

    Returns:
        What the operation returned.

    Raises:
        CallTimeout: ``"<what>: no answer within <deadline> s"`` when the
            deadline passed (the operation goes on, see :data:`LINGER`), or
            ``"<what>: <the bot's own CallTimeout>"``.
        ActorStopped: ``"<what>: <why>"`` if a part of the bot is not running.
        Exception: whatever else the operation raised.
    """
    pending = _Pending()

    async def run() -> None:
        with trio.move_on_after(deadline + LINGER) as scope:
            try:
                pending.value = await operation()
            except Exception as exc:
                pending.error = exc
        pending.done.set()
        if pending.abandoned:
            if scope.cancelled_caught:
                log.error("%s: still running %s s after its deadline; cancelled", what, LINGER)
            elif pending.error is not None:
                log.warning("%s failed after its deadline: %r", what, pending.error)
            else:
                log.info("%s finished after its deadline", what)

    nursery.start_soon(run, name=f"nekobot.operation: {what}")
    with trio.move_on_after(deadline):
        await pending.done.wait()
    if not pending.done.is_set():
        pending.abandoned = True
        raise CallTimeout(f"{what}: no answer within {deadline:g} s")
    error = pending.error
    if error is None:
        result: T = pending.value
        return result
    if isinstance(error, CallTimeout):
        raise CallTimeout(f"{what}: {error}") from error
    if isinstance(error, ActorStopped):
        raise ActorStopped(f"{what}: {error}") from error
    raise error


class OperationNursery:
    """Pure ASGI middleware: one nursery per HTTP request for :func:`within`.

    The request's answer is sent as soon as the handler returns; the nursery
    (and so the request's ASGI call) closes when the operations in it have
    finished. Under Hypercorn the connection serves its next request meanwhile.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        async with trio.open_nursery() as nursery:
            scope[NURSERY_KEY] = nursery
            await self.app(scope, receive, send)
