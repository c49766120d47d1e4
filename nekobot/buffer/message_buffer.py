"""The buffer actor: owns every queue, answers the requests of :mod:`.requests`.

Behaviour (queues and caps, replay order and rate, TTL, backpressure,
monitoring, durability) is described in the package docstring
(``nekobot.buffer``). Only this actor's loop changes its state; replay tasks
and callers talk to it with the typed messages of :mod:`.requests`, and the
synchronous getters read the :class:`~.stats.BufferSnapshot` it publishes
after each batch (rebuilt only for the queues the batch changed).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..core.actor import Actor, Call
from ..core.timer import Timer
from ..errors import ActorStopped, Conflict, InvalidRequest, NekoBotError, PlatformOffline
from ..messages import MessagePriority, OutboundMessage, new_message_key
from ..monitor.status_monitor import AlertLevel
from .backpressure import RoomWaits, Waiter, has_waiters
from .persistence import BufferTable, decode_row
from .queue import DROP_REASONS, BufferPolicy, Item, OverflowStrategy, PlatformQueue
from .replay import Deliver, background_replay, replay, retry_backoff
from .reporting import Reporter
from .requests import (
    Acked,
    AddMessage,
    BufferRequest,
    EndReplay,
    ListMessages,
    NextToSend,
    Send,
    SendFailed,
    SetOnline,
    StartReplay,
    Tick,
    WaitUntil,
    check_count,
    check_priority,
    check_settings,
    check_text,
    check_ttl,
    encode_content,
)
from .state import BufferState
from .stats import (
    BufferedMessage,
    BufferSnapshot,
    BufferStats,
    PlatformBufferStats,
    Snapshots,
    buffer_stats,
)

if TYPE_CHECKING:
    from ..config.schema import BufferConfig
    from ..storage import Store
    from .reporting import BufferMonitor

__all__ = [
    "DROP_REASONS",
    "BufferPolicy",
    "BufferStats",
    "BufferedMessage",
    "Deliver",
    "MessageBuffer",
    "OverflowStrategy",
    "PlatformBufferStats",
]

log = logging.getLogger("nekobot.buffer")


class MessageBuffer(Actor[BufferRequest, BufferSnapshot]):
    """Per-platform outbound queues with TTL, overflow strategies and durable replay.

    Build it with :meth:`from_config` and start it with
    ``await nursery.start(buffer.run)``; it stops when its scope is cancelled.

    Args:
        max_size (int): Default bound of one platform's queue.
        buffer_policy (BufferPolicy | str): Replay order.
        overflow_strategy (OverflowStrategy | str): Which message one overflow drops.
        global_max_size (int): Messages held over all platforms at most.
        platform_max_size (Mapping[str, int] | None): Per-platform bounds.
        default_ttl (float): Seconds a message may wait when ``add_message``
            gives no ``ttl``; ``math.inf`` never expires.
        replay_rate (float): Backlog messages per second at most while
            replaying (messages added while online are not throttled).
        max_send_attempts (int): Refused replay sends of one message before it
            is dropped as ``send_failed``; 0 = never. Failures of the link
            (:class:`~nekobot.errors.ConnectionClosed`,
            :class:`~nekobot.errors.PlatformOffline`) never count: they are
            retried with backoff until the link returns.
        retry_interval (float): Seconds (Trio clock) before a background replay
            retries after a failed send; doubles per failure, capped at 60.
        overflow_wait (float): Seconds (Trio clock) an ``add_message`` to a
            full queue of an *online* platform waits for room (backpressure)
            before the overflow strategy drops; 0 = never wait.
        store (Store | None): Keep the queues in this SQLite store; ``None``
            keeps them in memory only.
        monitor (BufferMonitor | None): A ``StatusMonitor`` for metrics and alerts.
        deliver (Deliver | None): How replay sends: ``async deliver(message)
            -> SendReceipt``, raising if not delivered (in the bot: the
            platform's ``send``). ``None``: nothing is ever replayed.
        auto_replay (bool): Replay in the background whenever a queue's
            platform is online and the queue holds something; ``False``: only
            :meth:`replay_messages` sends.
        call_timeout (float): Seconds (Trio clock) a call into the actor may
            take (``add_message`` includes its group commit, plus
            ``overflow_wait``) before :class:`~nekobot.errors.CallTimeout`.

    Raises:
        ValueError: if a size, rate or TTL is not positive.
    """

    def __init__(
        self,
        max_size: int = 1000,
        buffer_policy: BufferPolicy | str = BufferPolicy.FIFO,
        *,
        overflow_strategy: OverflowStrategy | str = OverflowStrategy.DROP_OLDEST,
        global_max_size: int = 100_000,
        platform_max_size: Mapping[str, int] | None = None,
        default_ttl: float = 3600.0,
        replay_rate: float = 50.0,
        max_send_attempts: int = 5,
        retry_interval: float = 1.0,
        overflow_wait: float = 10.0,
        store: Store | None = None,
        monitor: BufferMonitor | None = None,
        deliver: Deliver | None = None,
        auto_replay: bool = True,
        call_timeout: float = 60.0,
        name: str = "buffer",
    ) -> None:
        super().__init__(name, mailbox_size=10_000)
        positive: dict[str, float] = {"max_size": max_size, "replay_rate": replay_rate}
        positive |= {"global_max_size": global_max_size, "retry_interval": retry_interval}
        positive |= {f"platform_max_size[{p!r}]": n for p, n in (platform_max_size or {}).items()}
        check_settings(positive, overflow_wait=overflow_wait)
        self.max_size = int(max_size)
        self.policy = BufferPolicy(buffer_policy)
        self.overflow_strategy = OverflowStrategy(overflow_strategy)
        self.global_max_size = int(global_max_size)
        self.platform_max_size = dict(platform_max_size or {})
        self.default_ttl = check_ttl(default_ttl, 3600.0)
        self.replay_rate = float(replay_rate)
        self.max_send_attempts = int(max_send_attempts)
        self.retry_interval = float(retry_interval)
        self.overflow_wait = float(overflow_wait)
        self.store = store
        self.call_timeout = call_timeout
        self._deliver = deliver
        self._auto_replay = auto_replay and deliver is not None
        self._backoff = retry_backoff(self.retry_interval)
        self._table = BufferTable(store) if store is not None else None
        self._reporter = Reporter(monitor, self.overflow_strategy.value, self.global_max_size)
        self._state = BufferState(
            max_size=self.max_size,
            platform_max_size=self.platform_max_size,
            global_max_size=self.global_max_size,
            policy=self.policy,
            strategy=self.overflow_strategy,
            replay_rate=self.replay_rate,
            durable=store is not None,
        )
        self._waits = RoomWaits(self.overflow_wait)
        self._answers: list[tuple[Call[Any], Any, bool]] = []
        """This batch's answers, sent once its writes committed."""
        self._added: list[tuple[Call[Any], Item]] = []
        """This batch's adds that wrote a row (they fail if the commit fails)."""
        self._snaps = Snapshots()
        self._timer: Timer[BufferRequest] = Timer(Tick())
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._publish()

    @classmethod
    def from_config(
        cls,
        cfg: BufferConfig,
        store: Store | None = None,
        monitor: BufferMonitor | None = None,
        deliver: Deliver | None = None,
    ) -> MessageBuffer:
        """Build from ``[buffer]``; ``store`` is ignored when ``cfg.durable`` is false."""
        return cls(
            cfg.max_size,
            cfg.policy,
            overflow_strategy=cfg.overflow_strategy,
            global_max_size=cfg.global_max_size,
            platform_max_size=cfg.platform_max_size,
            default_ttl=cfg.default_ttl,
            replay_rate=cfg.replay_rate,
            max_send_attempts=cfg.max_send_attempts,
            retry_interval=cfg.retry_interval,
            overflow_wait=cfg.overflow_wait,
            store=store if cfg.durable else None,
            monitor=monitor,
            deliver=deliver,
        )

    # ---- public API (any task) ----------------------------------------------

    async def add_message(
        self,
        platform_id: str,
        message_type: str,
        content: Any,
        priority: MessagePriority | int = MessagePriority.NORMAL,
        ttl: float | None = None,
        *,
        message_key: str | None = None,
    ) -> str:
        """Buffer one outbound message; returns once it is durable.

        Args:
            platform_id (str): The queue it is for (a platform, or ``"qq@10001"``).
            message_type (str): Platform-specific (OneBot v11: an action name).
            content: The payload; must be JSON-serialisable (it is stored as
                JSON and replayed as ``json.loads(json.dumps(content))``).
            priority (MessagePriority): Order under the ``PRIORITY`` policy and
                for ``DROP_LOW_PRIORITY``.
            ttl (float | None): Seconds it may wait; ``None`` takes
                ``default_ttl``; ``math.inf`` never expires.
            message_key (str | None): Our key for it (a fresh one if omitted).
                A key already buffered is not added twice.

        While the platform is online and its queue full, the call waits for
        room (backpressure), at most ``overflow_wait`` seconds (Trio clock);
        then the overflow strategy decides.

        Returns:
            str: The message key.

        Raises:
            InvalidRequest: (a ``ValueError``) naming the argument, if a name is
                empty, not a ``str`` or not valid Unicode (a lone surrogate),
                the priority is not a :class:`MessagePriority`, ``ttl`` is zero,
                negative, NaN or too large, or the content is not JSON-serialisable.
            sqlite3.Error: if the store failed to commit; the message is not buffered.
            CallTimeout: if the actor did not answer in ``call_timeout + overflow_wait``.
        """
        check_text("platform_id", platform_id)
        check_text("message_type", message_type)
        prio = check_priority(priority)
        ttl_s = check_ttl(ttl, self.default_ttl)
        content_json, copy = encode_content(content)
        msg = OutboundMessage(
            platform_id=platform_id,
            message_type=message_type,
            content=copy,
            priority=prio,
            message_key=message_key or new_message_key(),
            created_at=time.time(),
        )
        req = AddMessage(msg, content_json, ttl_s, wait=self.overflow_wait > 0)
        return await self.ref.call(req, timeout=self.call_timeout + self.overflow_wait)

    async def mark_platform_online(self, platform_id: str) -> None:
        """The platform's link is up: replay its queue (in the background).

        Raises:
            InvalidRequest: if ``platform_id`` is no valid queue name.
        """
        await self.ref.call(SetOnline(platform_id, True), timeout=self.call_timeout)

    async def mark_platform_offline(self, platform_id: str, *, accounts: bool = False) -> None:
        """The platform's link is down: keep buffering; a running replay stops
        before its next send.

        Args:
            platform_id (str): The queue (``"qq"``, or one account's ``"qq@10001"``).
            accounts (bool): Also every account queue ``"qq@…"`` (the link is
                gone); an account that comes up after this call stays up.

        Raises:
            InvalidRequest: if ``platform_id`` is no valid queue name.
        """
        await self.ref.call(SetOnline(platform_id, False, accounts), timeout=self.call_timeout)

    def is_online(self, platform_id: str) -> bool:
        """Whether the platform is marked online (sync; reads the snapshot).

        A send may bypass the buffer only when this is true *and*
        :meth:`pending_count` is 0 (otherwise it must queue behind).
        """
        qs = self._snaps.get(platform_id)
        return qs is not None and qs.stats.online

    def pending_count(self, platform_id: str) -> int:
        """Messages queued for the platform now, the one in flight included (sync)."""
        qs = self._snaps.get(platform_id)
        return 0 if qs is None else qs.stats.size

    async def replay_messages(
        self, platform_id: str, max_count: int | None = None
    ) -> list[OutboundMessage]:
        """Replay now, in the calling task, and return what was delivered.

        Sends in policy order through ``deliver``, the backlog at most
        ``replay_rate`` per second (Trio clock), messages added while online
        as fast as the platform answers; each message is removed after
        ``deliver`` returned. Stops at the first failed send (that message and
        the rest stay buffered, in order), when the queue is empty, after
        ``max_count``, or when the platform is marked offline.

        Raises:
            PlatformOffline: if the platform is not marked online.
            Conflict: if a replay to this platform is already running.
            RuntimeError: if the buffer was built without ``deliver``.
            InvalidRequest: if ``max_count`` is negative or not an int.
        """
        check_count("max_count", max_count)
        if self._deliver is None:
            raise RuntimeError("MessageBuffer has no sender (build it with deliver=...)")
        await self.ref.call(StartReplay(platform_id), timeout=self.call_timeout)
        return await replay(
            self.ref,
            platform_id,
            self._deliver,
            max_count=max_count,
            background=False,
            call_timeout=self.call_timeout,
        )

    async def get_messages(
        self, platform_id: str, limit: int | None = 100
    ) -> list[BufferedMessage]:
        """The platform's queued messages in replay order, at most ``limit``.

        Raises:
            InvalidRequest: if ``limit`` is negative or not an int.
        """
        check_count("limit", limit)
        return await self.ref.call(ListMessages(platform_id, limit), timeout=self.call_timeout)

    def get_buffer_stats(self) -> BufferStats:
        """Counters and sizes (sync; a consistent snapshot, ages computed now).

        Call from within Trio (ages use ``trio.current_time()``).
        """
        snap = self.snapshot
        assert snap is not None
        try:
            now = trio.current_time()
        except RuntimeError:
            now = math.nan
        return buffer_stats(
            snap,
            now,
            global_max_size=self.global_max_size,
            policy=self.policy,
            overflow_strategy=self.overflow_strategy,
            durable=self.store is not None,
        )

    @property
    def snapshot(self) -> BufferSnapshot | None:
        """The last published snapshot (its ``queues`` never change afterwards)."""
        self._snaps.share()  # the next publish copies the mapping before it writes
        return super().snapshot

    # ---- running -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the stored queues, then serve until cancelled (or the mailbox closes).

        Raises:
            sqlite3.Error: if the store cannot be read (a corrupt file is moved
                aside by the store at open instead).
        """
        if self.store is not None:
            await self._load()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer.run, self.ref)
                await nursery.start(super().run)
                task_status.started()
                await self._stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._waits.fail_all(ActorStopped(f"actor {self.name!r} stopped"))

    async def on_stop(self) -> None:
        self._stopped.set()

    # ---- the actor's loop ------------------------------------------------

    async def handle_batch(self, batch: list[Any]) -> None:
        """Apply a drained batch in memory, commit its writes once, then answer."""
        st = self._state
        now = trio.current_time()
        st.expire_due(now)  # what is due goes before anything looks at the queues
        self._decide(self._waits.expired(now))
        for entry in batch:
            if isinstance(entry, Call):
                if not entry.abandoned:
                    self._on_call(entry)
            elif isinstance(entry, EndReplay):
                q = st.queue(entry.queue)
                q.replaying = False
                q.inflight = None
                self._maybe_start_replay(q)
            else:
                log.warning("buffer: ignored an unknown cast %r", type(entry).__name__)
        self._decide(self._waits.admissible(st))  # the room this batch made, in arrival order
        await self._commit()
        self._publish()
        self._timer.at(self._next_deadline())
        answers, self._answers = self._answers, []
        for call, value, failed in answers:
            if failed:
                call.fail(value)
            else:
                call.reply(value)

    def _on_call(self, call: Call[Any]) -> None:
        msg = call.msg
        st = self._state
        try:
            result: Any = None
            if isinstance(msg, AddMessage):
                self._add(call, msg)
                return
            if isinstance(msg, NextToSend):
                result = self._next(st.queue(msg.queue))
            elif isinstance(msg, Acked):
                st.acked(st.queue(msg.queue), msg.seq)
            elif isinstance(msg, SendFailed):
                result = self._failed(msg)
            elif isinstance(msg, SetOnline):
                self._set_online(st.queue(msg.queue), msg.online)
                for q in st.accounts_of(msg.queue) if msg.accounts and not msg.online else ():
                    self._set_online(q, False)
            elif isinstance(msg, StartReplay):
                self._start_replay(st.queue(msg.queue))
            elif isinstance(msg, ListMessages):
                result = st.listing(msg.queue, msg.limit, trio.current_time())
            elif not isinstance(msg, Tick):  # a Tick's work is done at the batch's start
                raise InvalidRequest(f"MessageBuffer does not accept {type(msg).__name__}")
        except Exception as exc:
            if not isinstance(exc, NekoBotError):
                log.exception("buffer: %s failed", type(msg).__name__)
            self._answers.append((call, exc, True))
        else:
            self._answers.append((call, result, False))

    def _next_deadline(self) -> float:
        return min(self._state.next_expiry(), self._waits.next_deadline())

    # ---- adding, and holding adds for room (backpressure) --------------------

    def _add(self, call: Call[Any], req: AddMessage) -> None:
        q = self._state.queue(req.msg.platform_id)
        if req.wait and req.msg.message_key not in self._state.by_key and self._must_wait(q):
            self._waits.hold(call, q, trio.current_time())
            return
        self._answer_add(call, q, req)

    def _must_wait(self, q: PlatformQueue) -> bool:
        """Whether an add must wait for room instead of applying the overflow strategy.

        Only while the platform is online and replayed to (its queue drains at
        the platform's speed) and the queue holds something that will leave.
        A new add also waits while others wait (first come, first served).
        """
        if not q.online or not self._auto_replay or self.overflow_wait <= 0 or q.size == 0:
            return False
        return has_waiters(q) or self._state.full(q)

    def _answer_add(self, call: Call[Any], q: PlatformQueue, req: AddMessage) -> None:
        key, item = self._state.add(q, req, trio.current_time())
        self._answers.append((call, key, False))
        if item is not None:
            self._added.append((call, item))
            if q.rate_wake is not None and q.head(self.policy) is item:
                q.wake_rate_wait()  # live, and first in line: not behind the backlog's slot
            self._maybe_start_replay(q)

    def _decide(self, waiters: Iterator[Waiter]) -> None:
        """Answer held adds: each is added now, or the overflow strategy decides."""
        for w in waiters:
            self._answer_add(w.call, w.queue, w.call.msg)

    # ---- links and replay ------------------------------------------------

    def _set_online(self, q: PlatformQueue, online: bool) -> None:
        q.mark_link(online, self._state.next_seq)
        if online:
            self._maybe_start_replay(q)
            return
        self._decide(self._waits.offline(q))  # offline: the overflow strategy decides at once

    def _maybe_start_replay(self, q: PlatformQueue) -> None:
        if q.online and not q.replaying and q.size > 0 and self._auto_replay and self._nursery:
            q.replaying = True
            delay = self._backoff.delay(q.failures - 1) if q.failures else 0.0
            assert self._deliver is not None
            self._nursery.start_soon(
                background_replay,
                self.ref,
                q.name,
                self._deliver,
                self.call_timeout,
                delay,
                q.link_wake,
            )

    def _start_replay(self, q: PlatformQueue) -> None:
        if not q.online:
            raise PlatformOffline(f"platform {q.name!r} is not online")
        if q.replaying:
            raise Conflict(f"a replay to {q.name!r} is already running")
        q.replaying = True

    def _next(self, q: PlatformQueue) -> Send | WaitUntil | None:
        step = self._state.next_to_send(q, trio.current_time())
        if isinstance(step, float):
            q.rate_wake = trio.Event()
            return WaitUntil(step, q.rate_wake)
        return None if step is None else Send(step.seq, step.msg, q.link_wake)

    def _failed(self, req: SendFailed) -> float | None:
        """The retry delay (seconds), or ``None`` if the replay should stop."""
        q = self._state.queue(req.queue)
        dropped = self._state.failed(
            q,
            req.seq,
            link_error=req.link_error,
            error=req.error,
            now=trio.current_time(),
            max_send_attempts=self.max_send_attempts,
        )
        if dropped:
            return 0.0
        return self._backoff.delay(q.failures - 1) if q.online else None

    def _publish(self) -> None:
        """Renew the snapshot entries and metrics of the queues this batch changed."""
        st = self._state
        for q in st.dirty:
            self._reporter.report(q)
        self.publish(self._snaps.renew(st.dirty, st.size, st.global_cap_hits))
        st.dirty.clear()

    # ---- durability ----------------------------------------------------------

    async def _commit(self) -> None:
        """Write the batch's inserts and deletes in one transaction.

        If that fails, the batch's adds fail with the error and their messages
        are not buffered; its removals stay in the file (at-least-once).
        """
        added, self._added = self._added, []
        st = self._state
        if self._table is None or not st.pending:
            return
        try:
            await self._table.write(st.pending)
        except Exception as exc:  # sqlite3.Error, the store closed, ...: never the loop's end
            log.error("buffer: writing to %s failed: %r", self._table.store.path, exc)
            self._reporter.alert(
                "buffer:store_error", AlertLevel.ERROR, f"buffer could not write: {exc}"
            )
            st.rollback(item for _, item in added)
            failed = {id(call) for call, _ in added}
            self._answers = [
                (call, exc, True) if id(call) in failed else (call, value, err)
                for call, value, err in self._answers
            ]

    async def _load(self) -> None:
        assert self.store is not None and self._table is not None
        store = self.store
        if not store.is_open:
            await store.open()
        if store.recovered_from:
            aside = f"database was corrupt; moved aside to {store.recovered_from}"
            log.error("buffer: %s; the buffer starts empty", aside)
            self._reporter.alert("storage:corrupt", AlertLevel.ERROR, aside)
        rows = await self._table.load()
        now = trio.current_time()
        wall = time.time()
        for row in rows:
            self._state.restore(decode_row(row), now, wall)
        if rows:
            log.info("buffer: restored %d stored messages", self._state.size)
        await self._commit()
        self._publish()
        self._timer.at(self._next_deadline())
