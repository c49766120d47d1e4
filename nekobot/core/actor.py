"""Actor core: mailboxes, ``ActorRef`` with ``cast``/``call``, snapshots.

An actor is one Trio task that owns its state and a mailbox (a bounded Trio
memory channel). Nobody else mutates the state: they send messages through an
:class:`ActorRef`. After each change the actor may :meth:`Actor.publish` an
immutable snapshot (a frozen attrs instance) that synchronous getters read
without a round trip (DESIGN.md §2).

The loop drains the mailbox in batches: one blocking ``receive()``, then
``receive_nowait()`` until empty, so an idle actor is parked in ``receive()``
and a busy one pays one channel wake-up per batch, not per message.

Messages are small frozen attrs classes, one per request an actor accepts. A
request that is answered subclasses :class:`Request` with the type of its
answer (``class GetStats(Request[RouterStats])``), so ``ref.call(GetStats())``
is typed. Wiring goes down the tree at construction: a component that must
tell a higher one something is given that one's address (an ``ActorRef``, or a
:class:`Mailbox` made before the actor that will own it) when it is built, and
only ever ``cast`` s to it; a lower actor never waits on a higher one.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar, overload

import attrs
import trio

from .errors import ActorStopped, CallTimeout, MailboxFull

__all__ = ["Actor", "ActorRef", "Call", "Mailbox", "MailboxStatistics", "Request"]

M = TypeVar("M")
S = TypeVar("S")
R = TypeVar("R")

_NO_REPLY: Any = object()


class Request(Generic[R]):
    """Base of a message answered by ``call``; ``R`` is the type of the answer.

    Subclass it with a frozen attrs class::

        @attrs.frozen
        class StartPlatform(Request[PlatformLifecycleStatus]):
            platform_id: str
    """

    __slots__ = ()


@attrs.frozen
class MailboxStatistics:
    """A point-in-time view of one actor's mailbox."""

    name: str
    """The actor's name."""
    depth: int
    """Messages waiting in the mailbox now."""
    capacity: float
    """Mailbox bound (``math.inf`` when unbounded)."""
    received_total: int
    """Messages the actor has taken out of its mailbox since it started."""
    batches_total: int
    """Wake-ups of the actor loop; ``received_total / batches_total`` is the mean batch."""
    senders_waiting: int
    """Tasks blocked in ``cast``/``call`` because the mailbox is full."""


class Call(Generic[M]):
    """One ``call`` as it sits in a mailbox: the request and its private reply slot.

    :meth:`Actor.handle_batch` sees these beside plain casts. Answer with
    :meth:`reply` or :meth:`fail`, once; a reply after the caller gave up
    (``abandoned``) is dropped, never delivered to another caller.
    """

    __slots__ = ("_abandoned", "_done", "_error", "_value", "msg")

    def __init__(self, msg: M) -> None:
        self.msg = msg
        self._done = trio.Event()
        self._value: Any = _NO_REPLY
        self._error: BaseException | None = None
        self._abandoned = False

    def reply(self, value: Any = None) -> None:
        """Answer the caller with ``value`` (ignored if already answered or abandoned)."""
        if self._abandoned or self._done.is_set():
            return
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        """Make the caller's ``call`` raise ``error`` (ignored if answered or abandoned)."""
        if self._abandoned or self._done.is_set():
            return
        self._error = error
        self._done.set()

    @property
    def abandoned(self) -> bool:
        """True once the caller stopped waiting (its timeout passed or it was cancelled)."""
        return self._abandoned

    @property
    def answered(self) -> bool:
        """True once :meth:`reply` or :meth:`fail` was called."""
        return self._done.is_set()


class ActorRef(Generic[M]):
    """The address of an actor: send it messages, or ask and await a reply.

    An ``ActorRef`` is cheap to copy and safe to share between tasks.
    """

    __slots__ = ("_send", "name")

    def __init__(self, name: str, send: trio.MemorySendChannel[Any]) -> None:
        self.name = name
        self._send = send

    async def cast(self, msg: M) -> None:
        """Send ``msg`` without waiting for a reply.

        Waits while the mailbox is full (backpressure).

        Raises:
            ActorStopped: if the actor's mailbox is closed.
        """
        await self._put(msg)

    async def _put(self, item: Any) -> None:
        try:
            await self._send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"actor {self.name!r} is not running") from None

    def cast_nowait(self, msg: M) -> None:
        """Send ``msg`` if the mailbox has room, without blocking.

        Raises:
            MailboxFull: if the bounded mailbox is full.
            ActorStopped: if the actor's mailbox is closed.
        """
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            raise MailboxFull(f"mailbox of actor {self.name!r} is full") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"actor {self.name!r} is not running") from None

    @overload
    async def call(self, msg: Request[R], *, timeout: float = 5.0) -> R: ...
    @overload
    async def call(self, msg: M, *, timeout: float = 5.0) -> Any: ...
    async def call(self, msg: Any, *, timeout: float = 5.0) -> Any:
        """Send ``msg`` and wait for the actor's reply.

        Args:
            msg: The request; the actor's ``handle_call`` answers it.
            timeout (float): Seconds on the Trio clock to wait for the reply,
                including time spent waiting for mailbox room. ``math.inf``
                waits forever.

        Returns:
            Whatever the actor answered (``R`` for a ``Request[R]``).

        Raises:
            CallTimeout: if no reply came within ``timeout``; a reply that
                arrives later is dropped, never delivered to another caller.
            ActorStopped: if the actor is not running or stops before replying.
            Exception: whatever ``handle_call`` raised is re-raised here.
        """
        envelope: Call[Any] = Call(msg)
        try:
            with trio.move_on_after(timeout) as scope:
                await self._put(envelope)
                await envelope._done.wait()
        except BaseException:
            envelope._abandoned = True  # cancelled from outside: drop the late reply
            raise
        if scope.cancelled_caught and not envelope._done.is_set():
            envelope._abandoned = True
            raise CallTimeout(
                f"actor {self.name!r} did not answer {type(msg).__name__} within {timeout} s"
            )
        if envelope._error is not None:
            raise envelope._error
        return envelope._value


class Mailbox(Generic[M]):
    """A mailbox and its address, made before the actor that will own it.

    Lets a lower component be given the address of a higher one at
    construction (events flow up as casts) when the higher one is built later:
    ``mb = Mailbox("runtime")``; ``FaultIsolation(..., events=mb.ref)``;
    ``RuntimeManager(..., mailbox=mb)``.

    Args:
        name (str): The owning actor's name.
        size (float): Bound of the mailbox; ``math.inf`` for unbounded.
    """

    __slots__ = ("name", "recv", "ref", "send", "size")

    def __init__(self, name: str, size: float = 10_000) -> None:
        self.name = name
        self.size = size
        self.send: trio.MemorySendChannel[Any]
        self.recv: trio.MemoryReceiveChannel[Any]
        self.send, self.recv = trio.open_memory_channel(size)
        self.ref: ActorRef[M] = ActorRef(name, self.send)


class Actor(Generic[M, S]):
    """Base class of NekoBot's actors.

    Subclasses implement :meth:`handle_cast` and/or :meth:`handle_call` (or
    :meth:`handle_batch` to see a whole drained batch), and may override
    :meth:`on_start` / :meth:`on_stop`. Start the actor with
    ``await nursery.start(actor.run)``; stop it by cancelling its scope or by
    :meth:`close_mailbox`, which lets it finish the queued messages first.

    Args:
        name (str): Shown in logs, statistics and the console's ``actors``.
        mailbox_size (float): Bound of the mailbox; ``math.inf`` for unbounded.
        mailbox (Mailbox | None): A mailbox made beforehand (its address was
            handed to others first); ``mailbox_size`` is then ignored.
    """

    def __init__(
        self, name: str, *, mailbox_size: float = 10_000, mailbox: Mailbox[M] | None = None
    ) -> None:
        self.name = name
        mb: Mailbox[M] = mailbox if mailbox is not None else Mailbox(name, mailbox_size)
        self._mailbox_size = mb.size
        self._send = mb.send
        self._recv = mb.recv
        self.ref: ActorRef[M] = mb.ref
        self._snapshot: S | None = None
        self._received_total = 0
        self._batches_total = 0
        self.running = False

    # ---- snapshots -------------------------------------------------------

    def publish(self, snapshot: S) -> None:
        """Publish an immutable snapshot for synchronous readers."""
        self._snapshot = snapshot

    @property
    def snapshot(self) -> S | None:
        """The last published snapshot, or ``None`` before the first."""
        return self._snapshot

    def mailbox_statistics(self) -> MailboxStatistics:
        """Depth and counters of this actor's mailbox (no round trip)."""
        st = self._send.statistics()
        return MailboxStatistics(
            name=self.name,
            depth=st.current_buffer_used,
            capacity=math.inf if self._mailbox_size == math.inf else float(self._mailbox_size),
            received_total=self._received_total,
            batches_total=self._batches_total,
            senders_waiting=st.tasks_waiting_send,
        )

    # ---- hooks -----------------------------------------------------------

    async def on_start(self) -> None:
        """Runs in the actor task before ``task_status.started()``."""

    async def on_stop(self) -> None:
        """Runs in the actor task after the loop ends (not when cancelled)."""

    async def handle_cast(self, msg: M) -> None:
        """Handle one message sent with ``cast``."""
        raise NotImplementedError(f"{type(self).__name__} does not accept casts")

    async def handle_call(self, msg: M) -> Any:
        """Answer one message sent with ``call``; raise to fail the caller."""
        raise NotImplementedError(f"{type(self).__name__} does not accept calls")

    async def handle_batch(self, batch: list[Any]) -> None:
        """Handle one drained batch (casts and :class:`Call` s, in arrival order).

        The default dispatches each in order: a ``Call`` to :meth:`handle_call`
        (its answer or its ``Exception`` goes back to the caller), anything
        else to :meth:`handle_cast`.
        """
        for item in batch:
            if isinstance(item, Call):
                if item.abandoned:
                    continue
                try:
                    result = await self.handle_call(item.msg)
                except Exception as exc:
                    item.fail(exc)
                else:
                    item.reply(result)
            else:
                await self.handle_cast(item)

    # ---- loop ------------------------------------------------------------

    def close_mailbox(self) -> None:
        """Stop accepting messages; the actor drains what is queued, then ends."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor loop: wait in ``receive()``, then drain a batch."""
        await self.on_start()
        self.running = True
        task_status.started()
        recv = self._recv
        try:
            while True:
                try:
                    first = await recv.receive()
                except trio.EndOfChannel:
                    break
                batch = [first]
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                self._batches_total += 1
                self._received_total += len(batch)
                await self.handle_batch(batch)
            await self.on_stop()
        finally:
            self.running = False
            # Fail calls still queued so their callers do not wait out their timeout.
            while True:
                try:
                    item = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                if isinstance(item, Call):
                    item.fail(ActorStopped(f"actor {self.name!r} stopped"))
