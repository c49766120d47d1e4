"""Replay: send a queue's messages in order, one at a time, removing each after its ack.

A replay runs in its own task (the buffer's background replay, or the caller's
task for ``replay_messages``) and owns no buffer state: it asks the actor what
to do next (:class:`~.requests.NextToSend`), delivers, and reports the outcome
(:class:`~.requests.Acked` / :class:`~.requests.SendFailed`). The backlog's
rate is a :class:`Pacer` kept by the queue; retries after a failed send wait
out THE backoff (:class:`~nekobot.core.backoff.Backoff`, see :func:`retry_backoff`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ..core.backoff import Backoff
from ..errors import ActorStopped, ConnectionClosed, MailboxFull, PlatformOffline
from .requests import Acked, EndReplay, NextToSend, Send, SendFailed, WaitUntil

if TYPE_CHECKING:
    from ..core.actor import ActorRef
    from ..messages import OutboundMessage, SendReceipt
    from .requests import BufferRequest

__all__ = [
    "MAX_RETRY_INTERVAL",
    "Deliver",
    "Pacer",
    "background_replay",
    "replay",
    "retry_backoff",
]

log = logging.getLogger("nekobot.buffer")

Deliver = Callable[["OutboundMessage"], Awaitable["SendReceipt"]]
"""How the buffer sends: ``async deliver(message) -> SendReceipt``; raising
means "not delivered" (the message stays buffered)."""

MAX_RETRY_INTERVAL = 60.0
"""Cap in seconds of the retry backoff."""


def retry_backoff(retry_interval: float) -> Backoff:
    """The buffer's retry delays: ``retry_interval * 2**n`` seconds, capped at 60, no jitter.

    ``n`` counts the queue's consecutive failed sends from 0; a link marked up
    or down resets it.
    """
    return Backoff(minimum=retry_interval, maximum=MAX_RETRY_INTERVAL, factor=2.0, jitter=0.0)


class Pacer:
    """Spacing of backlog sends: at most ``rate`` per second (Trio clock).

    Backlog send ``k`` (from 0) starts no earlier than ``t0 + k / rate``,
    ``t0`` the first backlog send after :meth:`reset`; nothing waits after
    the last one.
    """

    __slots__ = ("_interval", "_next_at")

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next_at = -math.inf

    def reset(self) -> None:
        """Coming online: the next backlog send may go at once."""
        self._next_at = -math.inf

    def take(self, now: float) -> float | None:
        """Take the slot at ``now``: ``None`` if taken, else the time it opens."""
        if now < self._next_at:
            return self._next_at
        self._next_at = now + self._interval
        return None


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(trio.Cancelled) is not None


async def replay(
    ref: ActorRef[BufferRequest],
    queue: str,
    deliver: Deliver,
    *,
    max_count: int | None,
    background: bool,
    call_timeout: float,
    initial_delay: float = 0.0,
    wake: trio.Event | None = None,
) -> list[OutboundMessage]:
    """Send ``queue``'s messages in policy order; returns what was delivered.

    Args:
        ref: The buffer actor.
        queue (str): The queue to replay.
        deliver (Deliver): The platform's send.
        max_count (int | None): Stop after this many deliveries.
        background (bool): Retry after a failed send (after the backoff the
            actor answers), rather than stop at the first failure.
        call_timeout (float): Seconds (Trio clock) each call into the actor may take.
        initial_delay (float): Seconds to wait first (a retry backoff carried
            over from the previous replay); ``wake`` being set ends it.
        wake (trio.Event | None): Set when the link is marked up or down.

    Any exception ``deliver`` raises (any ``BaseException`` but cancellation:
    a platform's ``KeyboardInterrupt`` or ``SystemExit`` is its own fault) is
    a failed send. The replay always ends by telling the actor (``EndReplay``)
    unless the actor ended it (``NextToSend`` answered ``None``).

    Raises:
        CallTimeout: if the actor did not answer a call in ``call_timeout``.
        ActorStopped: if the buffer stopped.
    """
    replayed: list[OutboundMessage] = []
    ended = False
    try:
        if initial_delay > 0:
            with trio.move_on_after(initial_delay):
                await (wake or trio.Event()).wait()
        while max_count is None or len(replayed) < max_count:
            step = await ref.call(NextToSend(queue), timeout=call_timeout)
            if step is None:
                ended = True  # the actor ended the replay atomically
                break
            if isinstance(step, WaitUntil):  # backlog head: wait for its rate slot
                with trio.move_on_at(step.at):
                    await step.wake.wait()
                continue
            assert isinstance(step, Send)
            msg = step.msg
            try:
                await deliver(msg)
            except BaseException as exc:
                if _is_cancellation(exc):
                    raise
                log.info("buffer: replay of %s to %s failed: %r", msg.message_key, queue, exc)
                link_error = isinstance(exc, ConnectionClosed | PlatformOffline)
                delay = await ref.call(
                    SendFailed(queue, step.seq, repr(exc), link_error), timeout=call_timeout
                )
                if delay is None or not background:
                    break
                with trio.move_on_after(delay):  # a link marked up or down ends the wait
                    await step.link_wake.wait()
                continue
            await ref.call(Acked(queue, step.seq), timeout=call_timeout)
            replayed.append(msg)
    finally:
        if not ended:
            await _end(ref, queue, call_timeout)
    return replayed


async def background_replay(
    ref: ActorRef[BufferRequest],
    queue: str,
    deliver: Deliver,
    call_timeout: float,
    initial_delay: float,
    wake: trio.Event,
) -> None:
    """The buffer's own replay of ``queue`` (a task in its nursery): retries
    after failed sends while the platform is online; never raises."""
    try:
        await replay(
            ref,
            queue,
            deliver,
            max_count=None,
            background=True,
            call_timeout=call_timeout,
            initial_delay=initial_delay,
            wake=wake,
        )
    except ActorStopped:
        pass
    except Exception:  # a bug in the plumbing must not kill the buffer
        log.exception("buffer: replay to %s failed", queue)


async def _end(ref: ActorRef[BufferRequest], queue: str, grace: float) -> None:
    """Tell the actor the replay ended, even while being cancelled."""
    try:
        ref.cast_nowait(EndReplay(queue))
    except MailboxFull:
        with trio.move_on_after(grace) as scope:
            scope.shield = True
            try:
                await ref.cast(EndReplay(queue))
            except ActorStopped:
                pass
        if scope.cancelled_caught:
            log.error("buffer: could not end the replay of %s (mailbox full)", queue)
    except ActorStopped:  # the replay ends with the actor
        pass
