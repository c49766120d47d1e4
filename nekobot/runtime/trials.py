"""Breaker trials as children of the platforms supervisor.

When a platform's breaker opens, the runtime manager starts a **temporary**
child (``trial:<platform_id>:<n>``) in the same supervisor as the platforms:
it waits on the Trio clock until the cooldown passed, sends the runtime
manager one message (``TrialDue``), and ends. A second timer of the same kind
checks, ``backoff_reset`` seconds after the trial start, that the platform
still runs (``TrialCheck``). Cancelling the returned scope drops the timer
(a manual start, stop, disable or removal supersedes it). The trial start
itself is queued on the platform like an operator request.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from ..core.actor import ActorRef
from ..core.supervisor import BRUTAL_KILL, ChildSpec

__all__ = ["TIMER_PREFIX", "is_timer", "timer_child"]

log = logging.getLogger("nekobot.runtime_manager")

TIMER_PREFIX = "trial:"
"""Ids of timer children start with this (platform ids cannot contain ``:``)."""


def is_timer(child_id: str) -> bool:
    """Whether a supervisor child id is a trial timer, not a platform."""
    return child_id.startswith(TIMER_PREFIX)


def timer_child(
    child_id: str, at: float, ref: ActorRef[Any], msg: object
) -> tuple[ChildSpec, trio.CancelScope]:
    """A temporary child that sends ``msg`` to ``ref`` at Trio clock time ``at``.

    Args:
        child_id (str): Its id in the supervisor (``trial:…``).
        at (float): Trio clock seconds.
        ref (ActorRef): Where to send ``msg`` (the runtime manager).
        msg: The message (a cast).

    Returns:
        The child spec and the scope that cancels the wait (then nothing is sent).
    """
    scope = trio.CancelScope()

    async def wait(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        with scope:
            await trio.sleep_until(at)
        if not scope.cancelled_caught:
            try:
                await ref.cast(msg)
            except Exception:
                log.debug("runtime manager gone; dropped %r", msg)

    return ChildSpec(id=child_id, start=wait, restart="temporary", shutdown=BRUTAL_KILL), scope
