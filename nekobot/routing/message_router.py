"""Inbound routing: priority queue, dedup window, handler workers.

Every inbound message passes the :class:`MessageRouter` (DESIGN.md §3):
``route_message`` / ``route`` → dedup check → a priority queue → one of
``max_concurrency`` handler workers runs every handler registered for the
message's type (and every ``"*"`` handler) → ``monitor.record_message``.

Policies (all times on the Trio clock):

- **Strict priority.** A worker always takes the oldest message of the highest
  non-empty priority (CRITICAL > HIGH > NORMAL > LOW; FIFO within one
  priority). There is no aging: while higher priorities keep the workers busy,
  LOW waits. Backpressure (``overflow = "block"``) bounds how long that can
  last in practice; ``"drop_lowest"`` sheds LOW first.
- **Bounded.** At most ``max_queue_size`` messages wait (queued plus waiting
  for a retry). Then ``overflow = "block"`` makes ``route`` wait for room;
  ``"drop_lowest"`` drops the oldest queued message of the lowest priority
  (or the incoming one, if its priority is lower than every queued one) and
  counts it in ``dropped``.
- **Dedup.** The key is ``(platform_id, message.dedup_key)``; ``dedup_key=None``
  is never deduplicated. A key is *pending* from acceptance until its message
  is done; a copy that arrives meanwhile (queued, in flight, or waiting for a
  retry) is dropped and counted in ``deduplicated``. A key is marked *seen* only
  once every handler succeeded, and is remembered ``dedup_window`` seconds (an
  insertion-ordered dict, oldest evicted first in O(1); at most
  ``max_dedup_entries``, beyond which the oldest key is forgotten early). A
  message that was dead-lettered is not marked seen: routed again, it is handled.
- **Handlers.** ``async def h(message) -> None``. A plain function runs in
  ``trio.to_thread.run_sync`` unless registered with ``cheap=True``, which
  runs it inline in the worker (it must not block). Handlers of one message
  run one after the other in registration order, specific type first, then
  ``"*"``.
- **Failures.** A handler that raises (any ``Exception``) is counted in
  ``failed`` and recorded at the monitor as a *handler* fault
  (``nekobot_router_handler_errors_total{message_type,handler,error_type}``),
  never as a platform fault. Only the handlers that failed are retried, up to
  ``max_retries`` times after ``retry_backoff * 2**(n-1)`` seconds; the retry
  waits in a timer heap, not in a worker, so a failing handler never blocks the
  other handlers, the workers or the queue. A retried message rejoins the back
  of its priority's queue. After the last retry the message goes to a bounded
  dead-letter ring (``dead_letter_size``) shown in :meth:`MessageRouter.get_stats`.
- **Monitor.** Every message that is done is recorded with
  ``monitor.record_message(platform_id, message_type, latency_ms, success,
  error_type)``: latency from acceptance to handlers done; ``success=False``
  for a dead-lettered message, with ``error_type = "handler:<exception class>"``
  so the platform's error breakdown shows it was a handler's fault. Drops,
  duplicates and dead letters are also counted in
  ``nekobot_router_messages_total{outcome}``.
- **Never spin.** The queue is the router's inbox and is drained in batches:
  an awake worker takes message after message without a channel hop and
  yields every 64 messages; an idle worker is parked in a
  ``trio.lowlevel.ParkingLot`` (no CPU) until ``route`` unparks it. ``route``
  is a cancellation point on every call but yields to the scheduler only every
  32nd call (or when it waits for room), so a burst is handed over in batches.

Every routed message ends in exactly one counter::

    received == processed + dead_lettered + deduplicated + dropped
                + queued + retry_waiting + in_flight
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import attrs
import trio

from ..config.schema import RouterConfig
from ..errors import InvalidRequest
from ..messages import Message, MessagePriority

__all__ = [
    "DeadLetter",
    "Handler",
    "Message",
    "MessagePriority",
    "MessageRouter",
    "RouterStats",
]

log = logging.getLogger(__name__)

_YIELD_EVERY = 64
"""A busy worker yields to the scheduler after this many messages in a row."""
_ROUTE_YIELD_EVERY = 32
"""``route`` yields to the scheduler on every this many calls (and whenever it waits)."""
_WAIT_SAMPLES = 4096
_PRIORITIES = (4, 3, 2, 1)

Handler = Callable[["Message"], Awaitable[None] | None]
"""``async def h(message: Message) -> None`` (or a plain function, see ``cheap``)."""


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A message whose handlers still failed after ``max_retries`` retries."""

    message: Message
    """The message as routed."""
    handlers: tuple[str, ...]
    """Names of the handlers that failed on the last attempt."""
    error_type: str
    """Class name of the last exception."""
    error: str
    """``repr`` of the last exception."""
    attempts: int
    """Attempts made (``1 + max_retries``)."""
    at: float
    """Trio clock seconds when it was dead-lettered."""


@attrs.frozen(kw_only=True)
class RouterStats:
    """A snapshot of the router's counters (``GET /api/message/router/stats``)."""

    running: bool
    """The workers are running."""
    received: int
    """Calls of ``route``/``route_message`` that got past backpressure."""
    processed: int
    """Messages whose handlers all succeeded (including after retries, and
    messages no handler was registered for)."""
    unhandled: int
    """Of ``processed``: messages no handler was registered for."""
    failed: int
    """Handler calls that raised."""
    retried: int
    """Retries scheduled."""
    dropped: int
    """Messages dropped by the ``drop_lowest`` overflow (incoming or queued)."""
    deduplicated: int
    """Copies dropped because their key was pending or seen in the window."""
    dead_lettered: int
    """Messages that went to the dead-letter ring (counted even when the ring
    forgot them since)."""
    queued: int
    """Messages waiting in the queue now."""
    queue_size: dict[str, int]
    """Messages waiting now, by priority name (``"CRITICAL"`` … ``"LOW"``)."""
    retry_waiting: int
    """Messages waiting for their retry time."""
    in_flight: int
    """Messages whose handlers are running now."""
    handlers: dict[str, int]
    """Registered handlers by message type (``"*"`` included)."""
    queue_wait_p50_ms: float | None
    """Median wait (milliseconds) from acceptance to a worker taking the message,
    over the last 4096 messages; ``None`` before the first."""
    queue_wait_p99_ms: float | None
    """99th percentile of the same."""
    dedup_entries: int
    """Keys remembered as seen now."""
    dead_letters: tuple[DeadLetter, ...]
    """The dead-letter ring, oldest first (at most ``dead_letter_size``)."""


class _Handler:
    __slots__ = ("active", "cheap", "fn", "is_async", "name")

    def __init__(self, fn: Handler, name: str, is_async: bool, cheap: bool) -> None:
        self.fn = fn
        self.name = name
        self.is_async = is_async
        self.cheap = cheap
        self.active = True


class _Entry:
    __slots__ = ("attempts", "enqueued_at", "key", "message", "remaining")

    def __init__(self, message: Message, key: Hashable | None, now: float) -> None:
        self.message = message
        self.key = key
        self.enqueued_at = now
        self.attempts = 0
        self.remaining: tuple[_Handler, ...] | None = None


class _Slot:
    """One worker's view for the handler-timeout watchdog.

    The worker runs inside ``scope`` (one cancel scope per worker, not per
    message: a Trio cancel scope costs ~6 us, more than routing a message).
    Before each ``async`` handler it records what it is doing; the watchdog
    cancels ``scope`` when ``started_at + handler_timeout`` passes, and the
    worker resumes the message from the saved state in a fresh scope.
    """

    __slots__ = ("entry", "failed", "handlers", "index", "last_exc", "scope", "started_at")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.started_at: float | None = None
        self.entry: _Entry | None = None
        self.handlers: tuple[_Handler, ...] = ()
        self.index = 0
        self.failed: list[_Handler] | None = None
        self.last_exc: Exception | None = None


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def _percentile_ms(sorted_values: list[float], p: float) -> float:
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1] * 1000.0


class MessageRouter:
    """Priority routing with a dedup window and handler workers (an actor).

    Start it with ``await nursery.start(router.run)``; ``route`` works before
    that too (messages wait in the queue, with backpressure).

    Args:
        max_queue_size (int | None): Overrides ``config.max_queue_size``.
        enable_dedup (bool | None): Overrides ``config.enable_dedup``.
        config (RouterConfig | None): ``[router]``; defaults if omitted.
        monitor: A :class:`~nekobot.status_monitor.StatusMonitor`, or ``None``
            to record nothing.
    """

    def __init__(
        self,
        max_queue_size: int | None = None,
        enable_dedup: bool | None = None,
        *,
        config: RouterConfig | None = None,
        monitor: Any = None,
    ) -> None:
        cfg = config or RouterConfig()
        if max_queue_size is not None:
            cfg = attrs.evolve(cfg, max_queue_size=max_queue_size)
        if enable_dedup is not None:
            cfg = attrs.evolve(cfg, enable_dedup=enable_dedup)
        self.config = cfg
        self.monitor = monitor
        self.running = False
        self._max_queue = cfg.max_queue_size
        self._block = cfg.overflow == "block"
        self._dedup = cfg.enable_dedup
        self._window = cfg.dedup_window
        self._max_seen = cfg.max_dedup_entries
        # index = priority value; index 0 unused
        self._queues: list[deque[_Entry]] = [deque() for _ in range(5)]
        self._queued = 0
        self._in_flight = 0
        self._retry_heap: list[tuple[float, int, _Entry]] = []
        self._retry_seq = itertools.count()
        self._pending: set[Hashable] = set()
        self._seen: OrderedDict[Hashable, float] = OrderedDict()
        self._handlers: dict[str, list[_Handler]] = {}
        self._by_type: dict[str, tuple[_Handler, ...]] = {}
        self._dead: deque[DeadLetter] = deque(maxlen=cfg.dead_letter_size)
        self._waits: deque[float] = deque(maxlen=_WAIT_SAMPLES)
        self._ids = itertools.count(1)
        self._since_yield = 0
        self._work_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._retry_lot = trio.lowlevel.ParkingLot()
        self._slots: list[_Slot] = []
        self._watchdog_lot = trio.lowlevel.ParkingLot()
        self._watchdog_idle = False
        self._drained: trio.Event | None = None
        self._received = 0
        self._processed = 0
        self._unhandled = 0
        self._failed = 0
        self._retried = 0
        self._dropped = 0
        self._deduplicated = 0
        self._dead_lettered = 0

    @classmethod
    def from_config(cls, cfg: RouterConfig, monitor: Any = None) -> MessageRouter:
        """Build the router from ``[router]``; ``monitor=None`` records nothing."""
        return cls(config=cfg, monitor=monitor)

    # ---- handlers ------------------------------------------------------------

    def register_handler(
        self, message_type: str, handler: Handler, *, cheap: bool = False, name: str | None = None
    ) -> None:
        """Run ``handler`` for every message of ``message_type`` (``"*"``: every message).

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
        if not callable(handler):
            raise InvalidRequest(f"handler: not callable: {handler!r}")
        hs = self._handlers.setdefault(message_type, [])
        if any(h.fn is handler for h in hs):
            raise InvalidRequest(f"handler: already registered for {message_type!r}")
        label = name or getattr(handler, "__qualname__", None) or repr(handler)
        hs.append(_Handler(handler, label, _is_async(handler), cheap))
        self._by_type.clear()

    def unregister_handler(self, message_type: str, handler: Handler | str) -> bool:
        """Stop running ``handler`` (the function or its name) for ``message_type``.

        A message waiting for a retry of this handler no longer retries it.

        Returns:
            bool: False if it was not registered.
        """
        hs = self._handlers.get(message_type, [])
        for i, h in enumerate(hs):
            if h.fn is handler or h.name == handler:
                h.active = False
                del hs[i]
                if not hs:
                    del self._handlers[message_type]
                self._by_type.clear()
                return True
        return False

    def _handlers_for(self, message_type: str) -> tuple[_Handler, ...]:
        hs = self._by_type.get(message_type)
        if hs is None:
            hs = tuple(self._handlers.get(message_type, ()))
            if message_type != "*":
                hs += tuple(self._handlers.get("*", ()))
            self._by_type[message_type] = hs
        return hs

    # ---- routing -------------------------------------------------------------

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
        if self._queued + len(self._retry_heap) >= self._max_queue and self._block:
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

        The router stamps a copy with ``message_id`` and ``received_at``. With
        ``overflow = "block"`` this waits while the queue is full; a cancelled
        wait routes nothing.

        Every call is a cancellation point (``checkpoint_if_cancelled``); to
        keep the hot path free of per-message scheduler round trips, a call
        yields to the scheduler only every 32nd time, or when it waits for room.

        Returns:
            bool: True if accepted; False if deduplicated or dropped.

        Raises:
            InvalidRequest: if ``message.priority`` is not 1..4.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._queued + len(self._retry_heap) >= self._max_queue and self._block:
            await self._wait_for_room()
        accepted = self._accept(
            message.platform_id,
            message.message_type,
            message.content,
            message.priority,
            message.dedup_key,
            trio.current_time(),
        )
        self._since_yield += 1
        if self._since_yield >= _ROUTE_YIELD_EVERY:
            self._since_yield = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    async def _wait_for_room(self) -> None:
        while self._queued + len(self._retry_heap) >= self._max_queue:
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
        key: Hashable | None = None
        if dedup_key is not None and self._dedup:
            key = (platform_id, dedup_key)
            if key in self._pending:
                self._deduplicated += 1
                self._count("deduplicated")
                return False
            expires = self._seen.get(key)
            if expires is not None:
                if expires > now:
                    self._deduplicated += 1
                    self._count("deduplicated")
                    return False
                del self._seen[key]
        if self._queued + len(self._retry_heap) >= self._max_queue and not self._drop_for(priority):
            self._dropped += 1
            self._count("dropped")
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
        if key is not None:
            self._pending.add(key)
        self._queues[priority].append(_Entry(message, key, now))
        self._queued += 1
        if self._work_lot:
            self._work_lot.unpark()
        return True

    def _drop_for(self, priority: int) -> bool:
        """Make room for a message of ``priority``: drop the oldest queued one of
        the lowest priority if that is not above ``priority``. Returns False
        if the incoming message is the one to drop (or ``block`` mode is full)."""
        if self._block:
            return False  # only reached when route() was not given room
        for p in (1, 2, 3, 4):
            q = self._queues[p]
            if q:
                if p > priority:
                    return False
                victim = q.popleft()
                self._queued -= 1
                if victim.key is not None:
                    self._pending.discard(victim.key)
                self._dropped += 1
                self._count("dropped")
                return True
        return False

    def _count(self, outcome: str) -> None:
        if self.monitor is not None:
            try:
                self.monitor.record_metric(
                    "router_messages_total",
                    1,
                    "counter",
                    labels={"outcome": outcome},
                    documentation="Messages the router dropped, deduplicated or dead-lettered.",
                )
            except Exception:  # a metric never breaks routing
                log.exception("router: record_metric failed")

    # ---- workers -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``max_concurrency`` handler workers and the retry timer until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.config.max_concurrency):
                    nursery.start_soon(self._worker)
                nursery.start_soon(self._retry_timer)
                if self.config.handler_timeout != math.inf:
                    nursery.start_soon(self._watchdog)
                self.running = True
                task_status.started()
        finally:
            self.running = False

    async def drain(self) -> None:
        """Wait until every queued message was handled and no handler runs.

        The bot calls it at shutdown, after the platforms stopped (so nothing
        new arrives), within the router's shutdown deadline: messages already
        accepted are handled rather than lost, and their handlers' replies go
        to the durable buffer. Retries scheduled for later are not waited for.
        """
        if self._drained is None:
            self._drained = trio.Event()
        if self._queued == 0 and self._in_flight == 0:
            self._drained.set()
        await self._drained.wait()

    def _pop(self) -> _Entry | None:
        if not self._queued:
            return None
        queues = self._queues
        for p in _PRIORITIES:
            q = queues[p]
            if q:
                self._queued -= 1
                if self._space_lot:
                    self._space_lot.unpark()
                return q.popleft()
        raise AssertionError("queued count out of step")  # pragma: no cover

    async def _worker(self) -> None:
        slot = _Slot()
        self._slots.append(slot)
        try:
            while True:
                with trio.CancelScope() as scope:
                    slot.scope = scope
                    if slot.entry is not None:  # resume after a timed-out handler
                        await self._handle(
                            slot.entry, slot, slot.handlers, slot.index, slot.failed, slot.last_exc
                        )
                    await self._work(slot)
                if slot.started_at is not None:
                    self._timed_out(slot)
        finally:
            self._slots.remove(slot)

    async def _work(self, slot: _Slot) -> None:
        streak = 0
        while True:
            entry = self._pop()
            if entry is None:
                streak = 0
                if self._drained is not None and self._in_flight == 0:
                    self._drained.set()
                await self._work_lot.park()
                continue
            await self._handle(entry, slot)
            streak += 1
            if streak >= _YIELD_EVERY:
                streak = 0
                await trio.lowlevel.checkpoint()

    def _timed_out(self, slot: _Slot) -> None:
        """The watchdog cancelled the handler at ``slot.index``: count it as failed
        and leave the slot set to resume the message after it."""
        assert slot.entry is not None
        h = slot.handlers[slot.index]
        exc = trio.TooSlowError(
            f"handler {h.name!r} ran longer than {self.config.handler_timeout:g} s"
        )
        self._handler_failed(h, slot.entry.message, exc)
        slot.failed = [*(slot.failed or ()), h]
        slot.last_exc = exc
        slot.index += 1
        slot.started_at = None

    async def _watchdog(self) -> None:
        """Cancels any ``async`` handler running past ``handler_timeout`` (Trio clock),
        exactly at its deadline; parked while no handler runs."""
        limit = self.config.handler_timeout
        while True:
            earliest: float | None = None
            now = trio.current_time()
            for slot in self._slots:
                started = slot.started_at
                if started is None or slot.scope is None:
                    continue
                if now - started >= limit:
                    slot.scope.cancel()
                elif earliest is None or started < earliest:
                    earliest = started
            if earliest is None:
                self._watchdog_idle = True
                await self._watchdog_lot.park()
            else:
                await trio.sleep_until(earliest + limit)

    async def _handle(
        self,
        entry: _Entry,
        slot: _Slot,
        handlers: tuple[_Handler, ...] | None = None,
        start: int = 0,
        failed: list[_Handler] | None = None,
        last_exc: Exception | None = None,
    ) -> None:
        msg = entry.message
        if handlers is None:
            if entry.attempts == 0:
                self._waits.append(trio.current_time() - entry.enqueued_at)
                handlers = self._handlers_for(msg.message_type)
            else:
                handlers = tuple(h for h in entry.remaining or () if h.active)
        self._in_flight += 1
        slot.entry = entry
        slot.handlers = handlers
        try:
            for i in range(start, len(handlers)):
                h = handlers[i]
                try:
                    if h.is_async:
                        slot.index = i
                        slot.failed = failed
                        slot.last_exc = last_exc
                        slot.started_at = trio.current_time()
                        if self._watchdog_idle:
                            self._watchdog_idle = False
                            self._watchdog_lot.unpark()
                        await h.fn(msg)  # type: ignore[misc]
                        slot.started_at = None
                    elif h.cheap:
                        result = h.fn(msg)
                        if inspect.isawaitable(result):
                            await result
                    else:
                        await trio.to_thread.run_sync(h.fn, msg)
                except Exception as exc:
                    slot.started_at = None
                    if failed is None:
                        failed = []
                    failed.append(h)
                    last_exc = exc
                    self._handler_failed(h, msg, exc)
        finally:
            self._in_flight -= 1
        slot.entry = None
        slot.started_at = None
        now = trio.current_time()
        if failed is None:
            self._processed += 1
            if not handlers and entry.attempts == 0:
                self._unhandled += 1
            key = entry.key
            if key is not None:
                self._pending.discard(key)
                self._mark_seen(key, now)
            if self.monitor is not None:
                self.monitor.record_message(
                    msg.platform_id, msg.message_type, (now - msg.received_at) * 1000.0, True
                )
            return
        entry.attempts += 1
        if entry.attempts <= self.config.max_retries:
            self._retried += 1
            entry.remaining = tuple(failed)
            due = now + self.config.retry_backoff * 2 ** (entry.attempts - 1)
            heapq.heappush(self._retry_heap, (due, next(self._retry_seq), entry))
            if self._retry_lot:
                self._retry_lot.unpark()
            return
        assert last_exc is not None
        self._dead_lettered += 1
        if entry.key is not None:
            self._pending.discard(entry.key)
        self._dead.append(
            DeadLetter(
                message=msg,
                handlers=tuple(h.name for h in failed),
                error_type=type(last_exc).__name__,
                error=repr(last_exc),
                attempts=entry.attempts,
                at=now,
            )
        )
        self._count("dead_lettered")
        log.warning(
            "dead-lettered %s message %s from %r after %d attempts: %s failed with %r",
            msg.message_type,
            msg.message_id,
            msg.platform_id,
            entry.attempts,
            ", ".join(h.name for h in failed),
            last_exc,
        )
        if self.monitor is not None:
            self.monitor.record_message(
                msg.platform_id,
                msg.message_type,
                (now - msg.received_at) * 1000.0,
                False,
                f"handler:{type(last_exc).__name__}",
            )

    def _handler_failed(self, h: _Handler, msg: Message, exc: Exception) -> None:
        self._failed += 1
        log.debug(
            "handler %s failed on %s message %s from %r",
            h.name,
            msg.message_type,
            msg.message_id,
            msg.platform_id,
            exc_info=exc,
        )
        if self.monitor is not None:
            try:
                self.monitor.record_metric(
                    "router_handler_errors_total",
                    1,
                    "counter",
                    labels={
                        "message_type": msg.message_type,
                        "handler": h.name,
                        "error_type": type(exc).__name__,
                    },
                    documentation="Handler calls that raised (a handler fault, not a platform's).",
                )
            except Exception:  # a metric never breaks routing
                log.exception("router: record_metric failed")

    def _mark_seen(self, key: Hashable, now: float) -> None:
        seen = self._seen
        seen[key] = now + self._window
        seen.move_to_end(key)
        if len(seen) > self._max_seen:
            seen.popitem(last=False)
        while seen:
            first = next(iter(seen))
            if seen[first] > now:
                break
            del seen[first]

    async def _retry_timer(self) -> None:
        heap = self._retry_heap
        while True:
            if not heap:
                await self._retry_lot.park()
                continue
            due = heap[0][0]
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self._retry_lot.park()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, entry = heapq.heappop(heap)
                self._queues[entry.message.priority].append(entry)
                self._queued += 1
                if self._work_lot:
                    self._work_lot.unpark()
            await trio.lowlevel.checkpoint()

    # ---- reading -------------------------------------------------------------

    def get_stats(self) -> RouterStats:
        """A snapshot of the counters, queue sizes and queue-wait percentiles (sync)."""
        waits = sorted(self._waits)
        return RouterStats(
            running=self.running,
            received=self._received,
            processed=self._processed,
            unhandled=self._unhandled,
            failed=self._failed,
            retried=self._retried,
            dropped=self._dropped,
            deduplicated=self._deduplicated,
            dead_lettered=self._dead_lettered,
            queued=self._queued,
            queue_size={p.name: len(self._queues[p]) for p in reversed(MessagePriority)},
            retry_waiting=len(self._retry_heap),
            in_flight=self._in_flight,
            handlers={t: len(hs) for t, hs in sorted(self._handlers.items())},
            queue_wait_p50_ms=_percentile_ms(waits, 50) if waits else None,
            queue_wait_p99_ms=_percentile_ms(waits, 99) if waits else None,
            dedup_entries=len(self._seen),
            dead_letters=tuple(self._dead),
        )

    def get_dead_letters(self) -> list[DeadLetter]:
        """The dead-letter ring, oldest first."""
        return list(self._dead)
