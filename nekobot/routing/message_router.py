"""The message router actor: accept, dedup, queue by priority, run handlers.

Every inbound message passes the :class:`MessageRouter` (DESIGN.md §3):
``route`` / ``route_message`` → dedup check (:mod:`.dedup`) → a priority queue
(:mod:`.queue`) → one of ``max_concurrency`` handler workers runs every handler
registered for the message's type and every ``"*"`` handler (:mod:`.handlers`)
→ ``monitor.record_message``. Figures are published as a snapshot
(:mod:`.stats`) that ``get_stats()`` / ``get_dead_letters()`` read; control
requests (``drain``, ``stats``) go through the mailbox (:mod:`.requests`) and
are answered within a deadline.

The fast path: ``route`` / ``route_message`` and ``register_handler`` /
``unregister_handler`` do not hop through the mailbox (a channel hop costs more
than routing a message); each runs the router's own method in the caller's
task, as one synchronous section with no ``await`` between reading and writing
the queue, the dedup window, the registry and the counters, then publishes the
snapshot. The router still owns its state because only its own methods touch
it, Trio runs one task at a time, and no section yields half-way; nothing
outside ``routing/`` reaches into it.

Policies (Trio clock), each in its part: strict priority, FIFO within a
priority, no aging, at most ``max_queue_size`` waiting, then ``block`` or
``drop_lowest`` (:mod:`.queue`); dedup (:mod:`.dedup`); anything but
cancellation a handler raises is that handler's failure, retried after the one
:class:`~nekobot.core.backoff.Backoff`, then dead-lettered (:mod:`.handlers`);
``handler_timeout`` (:mod:`.watchdog`). Never spin: a busy worker yields every
64 messages, an idle one is parked; ``route`` yields every 32nd call.

Every routed message ends in exactly one counter::

    received == processed + dead_lettered + deduplicated + dropped
                + queued + retry_waiting + in_flight
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import Hashable, Mapping
from typing import Any

import attrs
import trio

from ..config.schema import RouterConfig
from ..core.actor import Actor, Call
from ..core.backoff import Backoff
from ..core.child_fault import split_fault
from ..errors import ActorStopped, InvalidRequest
from ..messages import Message, MessagePriority
from .dedup import DedupWindow
from .handlers import Handler, HandlerEntry, HandlerRegistry
from .queue import Entry, PriorityQueue, RetryHeap
from .reporting import RouterMonitor, count_outcome, report_dead_letter, report_failure
from .requests import Drain, Refresh, RouterRequest
from .stats import DeadLetter, DeadLetterRing, QueueWaits, RouterSnapshot, RouterStats, stats_from
from .watchdog import Slot, Watchdog

__all__ = [
    "DeadLetter",
    "Handler",
    "Message",
    "MessagePriority",
    "MessageRouter",
    "RouterMonitor",
    "RouterStats",
]

log = logging.getLogger(__name__)

_YIELD_EVERY = 64
"""A busy worker yields to the scheduler after this many messages in a row."""
_ROUTE_YIELD_EVERY = 32
"""``route`` yields to the scheduler on every this many calls (and whenever it waits)."""
_new_snapshot = tuple.__new__
"""Builds the snapshot tuple without the named tuple's Python-level ``__new__``."""
_WAIT_SAMPLES = 4096
"""Queue waits kept for the percentiles; also how many new ones renew them while busy."""


class MessageRouter(Actor[RouterRequest, RouterSnapshot]):
    """Priority routing with a dedup window and handler workers (an actor).

    Start it with ``await nursery.start(router.run)``; ``route`` works before
    that too (messages wait in the queue, with backpressure).

    Args:
        max_queue_size (int | None): Overrides ``config.max_queue_size``.
        enable_dedup (bool | None): Overrides ``config.enable_dedup``.
        config (RouterConfig | None): ``[router]``; defaults if omitted.
        monitor (RouterMonitor | None): Where messages and metrics are
            recorded (a ``StatusMonitor``), or ``None`` to record nothing.
    """

    def __init__(
        self,
        max_queue_size: int | None = None,
        enable_dedup: bool | None = None,
        *,
        config: RouterConfig | None = None,
        monitor: RouterMonitor | None = None,
    ) -> None:
        super().__init__("router", mailbox_size=math.inf)
        cfg = config or RouterConfig()
        if max_queue_size is not None:
            cfg = attrs.evolve(cfg, max_queue_size=max_queue_size)
        if enable_dedup is not None:
            cfg = attrs.evolve(cfg, enable_dedup=enable_dedup)
        self.config = cfg
        self.monitor = monitor
        self._max_queue = cfg.max_queue_size
        self._block = cfg.overflow == "block"
        self._dedup: DedupWindow | None = (
            DedupWindow(cfg.dedup_window, cfg.max_dedup_entries) if cfg.enable_dedup else None
        )
        self._backoff = Backoff(minimum=cfg.retry_backoff, maximum=math.inf, factor=2.0, jitter=0.0)
        self._queue = PriorityQueue()
        self._fifos = self._queue.fifos
        self._retry = RetryHeap()
        self._retry_heap = self._retry.heap
        self._seen: Mapping[Hashable, float] = {} if self._dedup is None else self._dedup.seen
        self._registry = HandlerRegistry()
        self._handler_counts: tuple[tuple[str, int], ...] = ()
        self._in_flight = 0
        self._dead = DeadLetterRing(cfg.dead_letter_size)
        self._waits = QueueWaits(_WAIT_SAMPLES)
        self._ids = itertools.count(1)
        self._since_yield = 0
        self._work_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._retry_lot = trio.lowlevel.ParkingLot()
        self._watchdog = Watchdog(cfg.handler_timeout)
        self._drains: list[Call[Any]] = []
        self._received = 0
        self._processed = 0
        self._unhandled = 0
        self._failed = 0
        self._retried = 0
        self._dropped = 0
        self._deduplicated = 0
        self._dead_lettered = 0
        self._publish()

    @classmethod
    def from_config(cls, cfg: RouterConfig, monitor: RouterMonitor | None = None) -> MessageRouter:
        """Build the router from ``[router]``; ``monitor=None`` records nothing."""
        return cls(config=cfg, monitor=monitor)

    # ---- handlers and routing (fast path: in the caller's task) ---------------

    def register_handler(
        self, message_type: str, handler: Handler, *, cheap: bool = False, name: str | None = None
    ) -> None:
        """Run ``handler`` for every message of ``message_type`` (``"*"``: every message).

        Synchronous; takes effect for the next message a worker takes.

        Args:
            message_type (str): The type, or ``"*"``.
            handler: ``async def h(message: Message) -> None``; a plain function
                runs in ``trio.to_thread.run_sync``, or inline if ``cheap``.
            cheap (bool): A plain function that never blocks: run it inline.
            name (str | None): Shown in stats, dead letters and metrics; the
                function's ``__qualname__`` if omitted.

        Raises:
            InvalidRequest: if ``handler`` is not callable or is already
                registered for this type.
        """
        self._registry.add(message_type, handler, cheap=cheap, name=name)
        self._handler_counts = self._registry.counts()
        self._publish()

    def unregister_handler(self, message_type: str, handler: Handler | str) -> bool:
        """Stop running ``handler`` (the function or its name) for ``message_type``.

        Synchronous. A message waiting for a retry of this handler no longer
        retries it.

        Returns:
            bool: False if it was not registered.
        """
        removed = self._registry.remove(message_type, handler)
        if removed:
            self._handler_counts = self._registry.counts()
            self._publish()
        return removed

    async def route_message(
        self,
        platform_id: str,
        message_type: str,
        content: Any,
        priority: MessagePriority = MessagePriority.NORMAL,
        *,
        dedup_key: Hashable | None = None,
    ) -> bool:
        """Route one inbound message (seed API); see :meth:`route`.

        Returns:
            bool: False if it was deduplicated or dropped.

        Raises:
            InvalidRequest: if ``priority`` is not 1..4.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._block and self._queue.size + len(self._retry_heap) >= self._max_queue:
            await self._wait_for_room()
        accepted = self._accept(
            platform_id, message_type, content, priority, dedup_key, trio.current_time()
        )
        self._since_yield += 1
        if self._since_yield >= _ROUTE_YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    async def route(self, message: Message) -> bool:
        """Route one inbound :class:`Message` (what ``PlatformActor.emit`` calls).

        The router stamps a copy with ``message_id`` and ``received_at`` (Trio
        clock). With ``overflow = "block"`` this waits while the queue is full;
        a cancelled wait routes nothing. Every call is a cancellation point; a
        call yields to the scheduler only every 32nd time, or when it waits.

        Returns:
            bool: True if accepted; False if deduplicated or dropped.

        Raises:
            InvalidRequest: if ``message.priority`` is not 1..4.
        """
        return await self.route_message(
            message.platform_id,
            message.message_type,
            message.content,
            message.priority,
            dedup_key=message.dedup_key,
        )

    async def _wait_for_room(self) -> None:
        while self._queue.size + len(self._retry_heap) >= self._max_queue:
            await self._space_lot.park()
        self._since_yield = 0

    def _accept(
        self,
        platform_id: str,
        message_type: str,
        content: Any,
        priority: int,
        dedup_key: Hashable | None,
        now: float,
    ) -> bool:
        if not 1 <= priority <= 4:
            raise InvalidRequest(f"priority: expected 1..4, got {priority!r}")
        self._received += 1
        accepted = self._admit(platform_id, message_type, content, priority, dedup_key, now)
        self._publish()
        return accepted

    def _admit(
        self,
        platform_id: str,
        message_type: str,
        content: Any,
        priority: int,
        dedup_key: Hashable | None,
        now: float,
    ) -> bool:
        key: Hashable | None = None
        dedup = self._dedup
        if dedup_key is not None and dedup is not None:
            key = (platform_id, dedup_key)
            if dedup.is_duplicate(key, now):
                self._deduplicated += 1
                count_outcome(self.monitor, "deduplicated")
                return False
        if self._queue.size + len(self._retry_heap) >= self._max_queue and not self._drop_for(
            priority
        ):
            self._dropped += 1
            count_outcome(self.monitor, "dropped")
            return False
        message = Message(
            platform_id=platform_id,
            message_type=message_type,
            content=content,
            priority=priority if type(priority) is MessagePriority else MessagePriority(priority),
            dedup_key=dedup_key,
            message_id=str(next(self._ids)),
            received_at=now,
        )
        if key is not None and dedup is not None:
            dedup.begin(key)
        self._queue.push(Entry(message, key, now))
        if self._work_lot:
            self._work_lot.unpark()
        return True

    def _drop_for(self, priority: int) -> bool:
        """Drop the oldest queued message of the lowest priority, if not above
        ``priority``; False if the incoming one is to drop (or ``block`` is full)."""
        if self._block:
            return False  # only reached when route() was not given room
        victim = self._queue.pop_lowest(priority)
        if victim is None:
            return False
        if victim.key is not None and self._dedup is not None:
            self._dedup.release(victim.key)
        self._dropped += 1
        count_outcome(self.monitor, "dropped")
        return True

    # ---- the actor -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the mailbox loop, ``max_concurrency`` handler workers and the
        retry timer (and the handler watchdog) until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.max_concurrency):
                    nursery.start_soon(self._worker)
                nursery.start_soon(self._retry.run, self._retry_lot, self._release)
                if self.config.handler_timeout != math.inf:
                    nursery.start_soon(self._watchdog.run)
                await nursery.start(super().run)
                self._publish()
                task_status.started()
        finally:
            self.running = False
            stopped = ActorStopped(f"actor {self.name!r} stopped")
            for call in self._drains:
                call.fail(stopped)
            self._drains.clear()
            self._publish()

    async def handle_batch(self, batch: list[Any]) -> None:
        """Answer the control requests of one drained mailbox batch."""
        for item in batch:
            if not isinstance(item, Call):
                log.warning("router: ignored a cast it does not accept: %r", item)
                continue
            if item.abandoned:
                continue
            msg = item.msg
            if isinstance(msg, Drain):
                if self._queue.size == 0 and self._in_flight == 0:
                    item.reply(None)
                else:
                    self._drains.append(item)
            elif isinstance(msg, Refresh):
                self._waits.renew()
                self._publish()
                item.reply(self.get_stats())
            else:
                item.fail(InvalidRequest(f"router: unknown request {type(msg).__name__}"))

    async def drain(self, *, timeout: float = math.inf) -> None:
        """Wait until every queued message was handled and no handler runs.

        The bot calls it at shutdown, after the platforms stopped (so nothing
        new arrives), within the router's shutdown deadline: messages already
        accepted are handled rather than lost. Retries scheduled for later are
        not waited for.

        Args:
            timeout (float): Seconds (Trio clock) to wait; ``math.inf`` leaves
                the bound to the caller's cancel scope (the root's shutdown
                deadline).

        Raises:
            CallTimeout: if the queue did not empty within ``timeout``.
            ActorStopped: if the router stopped before it emptied.
        """
        snap = self._snap()
        if not any(snap.queue_sizes) and snap.in_flight == 0:
            await trio.lowlevel.checkpoint()
            return
        await self.ref.call(Drain(), timeout=timeout)

    async def stats(self, *, timeout: float = 5.0) -> RouterStats:
        """Fresh figures from the router itself (queue-wait percentiles renewed).

        Raises:
            CallTimeout: if the router did not answer within ``timeout`` seconds
                (Trio clock), e.g. because it is not running.
        """
        return await self.ref.call(Refresh(), timeout=timeout)

    # ---- workers -------------------------------------------------------------

    async def _worker(self) -> None:
        slot = Slot()
        self._watchdog.slots.append(slot)
        try:
            while True:
                with trio.CancelScope() as scope:
                    slot.scope = scope
                    if slot.entry is not None:  # resume after a timed-out handler
                        await self._handle(slot.entry, slot)
                    await self._work(slot)
                if slot.started_at is not None:
                    self._timed_out(slot)
        finally:
            self._watchdog.slots.remove(slot)

    async def _work(self, slot: Slot) -> None:
        streak = 0
        queue = self._queue
        registry = self._registry
        while True:
            entry = queue.pop()
            if entry is None:
                streak = 0
                if self._in_flight == 0:
                    self._idle()
                self._publish()
                await self._work_lot.park()
                continue
            if self._space_lot:
                self._space_lot.unpark()
            slot.entry = entry
            slot.index = 0
            slot.failed = []
            slot.last_exc = None
            if entry.attempts == 0:
                self._waits.add(trio.current_time() - entry.enqueued_at)
                slot.handlers = registry.for_type(entry.message.message_type)
            else:
                slot.handlers = tuple(h for h in entry.remaining or () if h.active)
            await self._handle(entry, slot)
            streak += 1
            if streak >= _YIELD_EVERY:
                streak = 0
                self._publish()
                await trio.lowlevel.checkpoint()

    def _idle(self) -> None:
        """No message queued or in flight: answer drains, renew the percentiles."""
        self._waits.renew_if_due()
        if self._drains:
            for call in self._drains:
                call.reply(None)
            self._drains.clear()

    async def _handle(self, entry: Entry, slot: Slot) -> None:
        """Run the slot's handlers from ``slot.index`` on; contain their failures."""
        msg = entry.message
        handlers = slot.handlers
        self._in_flight += 1
        self._publish()
        try:
            while slot.index < len(handlers):
                h = handlers[slot.index]
                try:
                    if h.is_async:
                        self._watchdog.started(slot)
                        await h.fn(msg)  # type: ignore[misc]
                        slot.started_at = None
                    elif h.cheap:
                        result = h.fn(msg)
                        if inspect.isawaitable(result):
                            await result
                    else:
                        await trio.to_thread.run_sync(h.fn, msg)
                except BaseException as exc:
                    failure, cancel = split_fault(exc)
                    if failure is None:
                        raise  # cancellation: the watchdog's (started_at kept) or shutdown
                    slot.started_at = None
                    self._handler_failed(slot, h, msg, failure)
                    slot.index += 1
                    if cancel is not None:
                        raise cancel from None
                    continue
                slot.index += 1
        finally:
            self._in_flight -= 1
        slot.entry = None
        slot.started_at = None
        self._done(entry, slot)  # published by the next _handle, or before the worker yields

    def _done(self, entry: Entry, slot: Slot) -> None:
        """The message ran every handler: success, retry later, or dead letter."""
        msg = entry.message
        now = trio.current_time()
        failed = slot.failed
        if not failed:
            self._processed += 1
            if not slot.handlers and entry.attempts == 0:
                self._unhandled += 1
            if entry.key is not None and self._dedup is not None:
                self._dedup.done(entry.key, now)
            if self.monitor is not None:
                self.monitor.record_message(
                    msg.platform_id, msg.message_type, (now - msg.received_at) * 1000.0, True
                )
            return
        entry.attempts += 1
        if entry.attempts <= self.config.max_retries:
            self._retried += 1
            entry.remaining = tuple(failed)
            self._retry.push(now + self._backoff.delay(entry.attempts - 1), entry)
            if self._retry_lot:
                self._retry_lot.unpark()
            return
        self._dead_letter(entry, failed, slot.last_exc, now)

    def _dead_letter(
        self, entry: Entry, failed: list[HandlerEntry], exc: BaseException | None, now: float
    ) -> None:
        self._dead_lettered += 1
        if entry.key is not None and self._dedup is not None:
            self._dedup.release(entry.key)
        dl = DeadLetter(
            message=entry.message,
            handlers=tuple(h.name for h in failed),
            error_type=type(exc).__name__,
            error=repr(exc),
            attempts=entry.attempts,
            at=now,
        )
        self._dead.add(dl)
        report_dead_letter(self.monitor, dl)

    def _handler_failed(
        self, slot: Slot, h: HandlerEntry, msg: Message, exc: BaseException
    ) -> None:
        self._failed += 1
        slot.failed.append(h)
        slot.last_exc = exc
        attempt = (slot.entry.attempts if slot.entry is not None else 0) + 1
        report_failure(self.monitor, h.name, msg, attempt, exc)

    def _timed_out(self, slot: Slot) -> None:
        """The watchdog cancelled the handler at ``slot.index``: count it as
        failed and leave the slot set to resume the message after it."""
        assert slot.entry is not None
        h = slot.handlers[slot.index]
        exc = trio.TooSlowError(
            f"handler {h.name!r} ran longer than {self.config.handler_timeout:g} s"
        )
        slot.started_at = None
        self._handler_failed(slot, h, slot.entry.message, exc)
        slot.index += 1

    def _release(self, entries: list[Entry]) -> None:
        """Retries that came due rejoin the back of their priority's queue."""
        for entry in entries:
            self._queue.push(entry)
        self._publish()
        if self._work_lot:
            self._work_lot.unpark_all()

    # ---- reading (sync, from the published snapshot) -------------------------

    def _publish(self) -> None:
        """Publish the state as it is now (a named tuple: cheap enough for the hot path)."""
        f = self._fifos
        self.publish(
            _new_snapshot(
                RouterSnapshot,
                (
                    self.running,
                    self._received,
                    self._processed,
                    self._unhandled,
                    self._failed,
                    self._retried,
                    self._dropped,
                    self._deduplicated,
                    self._dead_lettered,
                    (len(f[1]), len(f[2]), len(f[3]), len(f[4])),
                    len(self._retry_heap),
                    self._in_flight,
                    len(self._seen),
                    self._handler_counts,
                    self._waits.p50,
                    self._waits.p99,
                    self._dead.view,
                ),
            )
        )

    def _snap(self) -> RouterSnapshot:
        snap = self.snapshot
        assert snap is not None  # published in __init__
        return snap

    def get_stats(self) -> RouterStats:
        """The counters, queue sizes and queue-wait percentiles of the last
        published snapshot (sync; never touches the router's state)."""
        return stats_from(self._snap())

    def get_dead_letters(self) -> list[DeadLetter]:
        """The dead-letter ring of the last published snapshot, oldest first (sync)."""
        return list(self._snap().dead_letters)
