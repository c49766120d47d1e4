"""Outbound buffer: per-platform offline queues, TTL, rate-limited replay, SQLite durability.

``bot.send(...)`` to a platform whose link is down lands here
(:meth:`MessageBuffer.add_message`). When the link comes back the connection
layer calls :meth:`MessageBuffer.mark_platform_online` and the buffer replays
the platform's queue to it, in policy order, the backlog at most
``replay_rate`` messages per second, removing each message only after the
platform acknowledged it (DESIGN.md §3 "Outbound").

Queues and caps
---------------
One queue per platform, bounded by its own ``max_size`` (``[buffer].max_size``,
overridden per platform by ``[buffer].platform_max_size``). All queues together
hold at most ``global_max_size`` messages. An ``add_message`` that finds its
platform's queue full, *or* the global cap reached, drops exactly one message
**of that same platform** (or the incoming message itself) according to the
overflow strategy: one platform's flood never evicts another platform's
messages. When the global cap is reached and the platform holds nothing of its
own that could be evicted, the incoming message is dropped (reason
``"global_full"``). Keep ``sum(per-platform max_size) <= global_max_size`` if
no platform may ever be squeezed by another's flood.

Overflow strategies (the candidates are the queue's messages plus the incoming
one; the message being replayed right now is never a candidate):

- ``DROP_OLDEST``: the oldest message (first added) is dropped.
- ``DROP_NEWEST``: the incoming message is dropped (the queue keeps what it had;
  ``add_message`` still returns the key, the drop is counted).
- ``DROP_LOW_PRIORITY``: the oldest message of the lowest priority is dropped;
  the incoming one only if its priority is below every buffered message's.

Survivors, ``max_size = 3``, adding ``a`` LOW, ``b`` HIGH, ``c`` NORMAL,
``d`` LOW, ``e`` HIGH in that order (two overflows), listed in replay order:

==============  ==================  ==================  ====================
policy          DROP_OLDEST         DROP_NEWEST         DROP_LOW_PRIORITY
==============  ==================  ==================  ====================
FIFO            c, d, e             a, b, c             b, c, e
LIFO            e, d, c             c, b, a             e, c, b
PRIORITY        e, c, d             b, c, a             b, e, c
==============  ==================  ==================  ====================

(``DROP_OLDEST`` drops ``a`` then ``b``; ``DROP_NEWEST`` drops ``d`` then ``e``;
``DROP_LOW_PRIORITY`` drops ``a`` (oldest LOW) then ``d`` (the only LOW left).)
``PRIORITY`` replays the highest priority first, FIFO within one priority.

Replay and ordering
-------------------
One replay per platform at a time. It takes the policy's head, calls the
sender, and removes the message only after the sender returned (at-least-once:
the message keeps its ``message_key``, so a repeat after a crash between send
and removal can be recognised). One message is in flight at a time.

``replay_rate`` throttles only the **backlog**: the messages that were queued
when the platform came online (the transition to online in
:meth:`~MessageBuffer.mark_platform_online`; marking an online platform online
again changes nothing). Backlog send ``k`` (from 0) starts no earlier than
``t0 + k / replay_rate`` (Trio clock, ``t0`` = the first backlog send after
coming online); the spacing belongs to the platform, so it carries over from
an explicit :meth:`~MessageBuffer.replay_messages` to the background replay,
and there is no wait after the last backlog message. Messages **added while
the platform is marked online** (live traffic that ``bot.send`` queued behind
the backlog only to keep the order) are not rate-limited: each is sent as soon
as the one before it was acknowledged (so as fast as the platform answers;
still one at a time, in order, removed after its ack). Example: a backlog of 3
at ``replay_rate = 1`` goes out at ``t0``, ``t0 + 1``, ``t0 + 2``; 100 messages
added at ``t0 + 0.5`` all go out at ``t0 + 2`` right after the third (as fast
as the sender acks). A message queued while online stays live until the next
offline-to-online transition, where everything still queued becomes backlog.

Backpressure instead of overflow while online: an ``add_message`` that finds
the queue of an online platform full (or the global cap reached while that
queue holds something), with a sender set, *waits* for room instead of
dropping, first come first served (``overflow_wait`` seconds at most, Trio
clock; then the overflow strategy applies). A queue that drains at the
platform's speed therefore slows its producers down rather than losing their
messages; the waits are counted (``waited_total``). While the platform is
offline the overflow strategy applies at once, as before; marking it offline
sends the waiting calls to their overflow decision at once.

If the sender raises, the
message stays at the head and the replay stops; while the platform is still
marked online the background replay retries after ``retry_interval`` seconds
(doubling, capped at 60 s), and after ``max_send_attempts`` refusals of one
message drops it (reason ``"send_failed"``) so it cannot block the queue
forever. A refusal is any exception other than ``ConnectionClosed`` /
``PlatformOffline``: those mean the link failed, not the message, and are
retried (with the same backoff) without ever dropping the message.

A message added while the platform is online is queued (never sent
around the queue) and starts a replay if none runs: :meth:`pending_count` is
non-zero while anything is queued or in flight, and ``bot.send`` sends directly
only when the platform is online *and* ``pending_count`` is 0 — so a message
added during a replay goes behind the queue in policy order (behind everything
for FIFO; behind equal or higher priorities for PRIORITY; LIFO replays the
newest first by definition).

TTL and clocks
--------------
Every message has a TTL in seconds: ``None`` takes ``default_ttl``,
``math.inf`` never expires, zero/negative/NaN raise ``ValueError``
(:class:`~nekobot.errors.InvalidRequest`). In memory the deadline is on the
**Trio clock** (``trio.current_time() + ttl``); an expired message is removed
at its deadline, counted as expired and never sent. The database stores a
**wall-clock** deadline (``time.time() + ttl``) as well, so after a restart the
remaining TTL is ``expires_wall - time.time()`` (messages whose deadline passed
while the bot was down are expired at load and counted).

Monitoring
----------
With a monitor, every batch of the actor reports what changed to
``monitor.record_metric`` (counters as deltas of :class:`PlatformBufferStats`,
so the two always agree): ``nekobot_buffer_dropped_total{platform_id,reason}``
(every drop, any reason), ``nekobot_buffer_expired_total{platform_id}``,
``nekobot_buffer_replayed_total{platform_id}``,
``nekobot_buffer_added_total{platform_id}``,
``nekobot_buffer_restored_total{platform_id}``,
``nekobot_buffer_full_waits_total{platform_id}`` and the gauge
``nekobot_buffer_size{platform_id}``. The first overflow drop of a platform
(reasons ``drop_oldest``, ``drop_newest``, ``drop_low_priority``,
``global_full``) opens the WARNING alert ``buffer:overflow:<platform_id>``
(``metric_name="nekobot_buffer_dropped_total"``); further overflow drops update
it with the running count since it opened; it is cleared when that platform's
queue has drained to empty. ``send_failed`` and ``corrupt`` drops are logged at
WARNING/ERROR and counted, without that alert. The monitor never takes the
buffer down: a failing ``record_metric`` is logged once and ignored.

Durability
----------
With a :class:`~nekobot.storage.Store` the queues live in the table
``buffer_messages`` (SQLite, WAL). The actor drains its mailbox in batches and
writes each batch's inserts and deletes in one transaction (group commit);
``add_message`` returns only after the transaction holding its message
committed, so every message whose ``add_message`` returned survives ``kill -9``.
At start each platform's queue is loaded back in its original order. A corrupt
database file is moved aside by the store; the buffer logs it and raises the
alert ``storage:corrupt``, and starts empty. The fsync level is the store's
``PRAGMA synchronous`` (``NORMAL`` by default: a commit survives a process
crash, not a power loss). If a commit fails (disk full, I/O error), the
``add_message`` calls of that batch raise the ``sqlite3.Error`` and their
messages are not buffered; removals in that batch stay in the file, so those
messages may be replayed again after a restart (at-least-once), and the alert
``buffer:store_error`` is raised.
"""

from __future__ import annotations

import collections
import enum
import heapq
import json
import logging
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, cast

import attrs
import trio

from ..config.schema import BufferConfig
from ..core.actor import Actor, Call
from ..errors import ActorStopped, Conflict, ConnectionClosed, InvalidRequest, PlatformOffline
from ..messages import MessagePriority, OutboundMessage, SendReceipt, new_message_key
from ..monitor.status_monitor import AlertLevel
from ..storage import Store, transaction

__all__ = [
    "DROP_REASONS",
    "BufferPolicy",
    "BufferStats",
    "BufferedMessage",
    "MessageBuffer",
    "OverflowStrategy",
    "PlatformBufferStats",
]

log = logging.getLogger("nekobot.buffer")

Sender = Callable[[OutboundMessage], Awaitable[SendReceipt]]

_MAX_RETRY_INTERVAL = 60.0
_TABLE = "buffer_messages"


class BufferPolicy(enum.Enum):
    """Replay order of a platform's queue."""

    FIFO = "fifo"
    """Oldest first."""
    LIFO = "lifo"
    """Newest first."""
    PRIORITY = "priority"
    """Highest :class:`MessagePriority` first, FIFO within one priority."""


class OverflowStrategy(enum.Enum):
    """Which one message an overflow drops (see the module docstring for survivors)."""

    DROP_OLDEST = "drop_oldest"
    """The oldest buffered message."""
    DROP_NEWEST = "drop_newest"
    """The incoming message."""
    DROP_LOW_PRIORITY = "drop_low_priority"
    """The oldest message of the lowest priority (the incoming one included)."""


DROP_REASONS = (
    "drop_oldest",
    "drop_newest",
    "drop_low_priority",
    "global_full",
    "send_failed",
    "corrupt",
)
"""Reasons a message is dropped, as counted in :class:`BufferStats.dropped`:
the three overflow strategies (a per-platform or global overflow resolved in the
platform's own queue), ``global_full`` (global cap reached and the platform had
nothing to evict: the incoming message was dropped), ``send_failed``
(``max_send_attempts`` failed replay sends), ``corrupt`` (a stored row that could
not be decoded at load)."""


# --------------------------------------------------------------------------
# public data


@attrs.frozen(kw_only=True)
class BufferedMessage:
    """One buffered message as :meth:`MessageBuffer.get_messages` lists it."""

    message: OutboundMessage
    """The message as it will be replayed."""
    age: float
    """Seconds (Trio clock) since it was buffered (restored ones count from
    their wall-clock ``created_at``)."""
    expires_in: float
    """Seconds (Trio clock) until it expires; ``math.inf`` never."""
    attempts: int
    """Failed replay sends so far."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``inf`` becomes ``None``)."""
        m = self.message
        return {
            "platform_id": m.platform_id,
            "message_type": m.message_type,
            "content": m.content,
            "priority": m.priority.name,
            "message_key": m.message_key,
            "created_at": m.created_at,
            "age": self.age,
            "expires_in": None if math.isinf(self.expires_in) else self.expires_in,
            "attempts": self.attempts,
        }


@attrs.frozen(kw_only=True)
class PlatformBufferStats:
    """Counters and size of one platform's queue."""

    platform_id: str
    size: int
    """Messages queued now (the one in flight included)."""
    max_size: int
    """This queue's bound."""
    online: bool
    """The platform is marked online (its link is up)."""
    replaying: bool
    """A replay to it is running (or waiting to retry)."""
    buffered_total: int
    """Messages accepted by ``add_message`` since start (drops included)."""
    restored_total: int
    """Messages loaded from the database at start."""
    replayed_total: int
    """Messages the platform acknowledged during replay."""
    expired_total: int
    """Messages removed because their TTL ran out (never sent)."""
    dropped: Mapping[str, int]
    """Dropped messages by reason (:data:`DROP_REASONS`)."""
    waited_total: int = 0
    """``add_message`` calls that found the queue of the online platform full
    and waited for room (backpressure) instead of dropping."""
    oldest_age: float | None
    """Seconds (Trio clock) the oldest queued message has waited; ``None`` if empty."""


@attrs.frozen(kw_only=True)
class BufferStats:
    """What :meth:`MessageBuffer.get_buffer_stats` returns (a consistent snapshot).

    Invariant per platform and in total: ``buffered_total + restored_total ==
    size + replayed_total + expired_total + sum(dropped.values())``.
    """

    size: int
    """Messages queued over all platforms."""
    global_max_size: int
    policy: BufferPolicy
    overflow_strategy: OverflowStrategy
    durable: bool
    """The queues are kept in SQLite."""
    buffered_total: int
    restored_total: int
    replayed_total: int
    expired_total: int
    dropped: Mapping[str, int]
    """Dropped messages by reason, all platforms."""
    global_cap_hits: int
    """``add_message`` calls that found the global cap reached while their
    platform was below its own bound (the global cap forced the drop)."""
    oldest_age: float | None
    """Seconds (Trio clock) the oldest queued message of any platform has waited."""
    platforms: Mapping[str, PlatformBufferStats]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the HTTP API."""
        d = attrs.asdict(self, recurse=True)
        d["policy"] = self.policy.value
        d["overflow_strategy"] = self.overflow_strategy.value
        return d


# --------------------------------------------------------------------------
# internal state


class _Item:
    __slots__ = (
        "added_at",
        "alive",
        "attempts",
        "content_json",
        "expires_at",
        "expires_wall",
        "msg",
        "refusals",
        "seq",
    )

    def __init__(
        self,
        seq: int,
        msg: OutboundMessage,
        content_json: str,
        added_at: float,
        expires_at: float,
        expires_wall: float | None,
    ) -> None:
        self.seq = seq
        self.msg = msg
        self.content_json = content_json
        self.added_at = added_at
        """Trio clock."""
        self.expires_at = expires_at
        """Trio clock; inf = never."""
        self.expires_wall = expires_wall
        """Wall clock (time.time()); None = never."""
        self.alive = True
        self.attempts = 0
        self.refusals = 0

    @property
    def priority(self) -> int:
        return int(self.msg.priority)


_OVERFLOW_REASONS = ("drop_oldest", "drop_newest", "drop_low_priority", "global_full")


_COUNTERS = (
    (
        "nekobot_buffer_added_total",
        "buffered_total",
        "Messages accepted by the outbound buffer (add_message), drops included.",
    ),
    (
        "nekobot_buffer_restored_total",
        "restored_total",
        "Buffered messages loaded back from the database at start.",
    ),
    (
        "nekobot_buffer_replayed_total",
        "replayed_total",
        "Buffered messages the platform acknowledged (delivered from the buffer).",
    ),
    (
        "nekobot_buffer_expired_total",
        "expired_total",
        "Buffered messages whose TTL ran out (never sent).",
    ),
    (
        "nekobot_buffer_full_waits_total",
        "waited_total",
        "add_message calls that waited for room in the full queue of an online platform.",
    ),
)
"""Prometheus counters fed from each queue's own counters: (name, attribute, help)."""

_REPORTED_ATTR = {
    "buffered_total": "buffered",
    "restored_total": "restored",
    "replayed_total": "replayed",
    "expired_total": "expired",
    "waited_total": "waited",
}


class _Reported:
    """What the monitor was last told about one queue (counters are sent as deltas)."""

    __slots__ = (
        "buffered",
        "dropped",
        "expired",
        "overflow",
        "replayed",
        "restored",
        "size",
        "waited",
    )

    def __init__(self) -> None:
        self.buffered = 0
        self.restored = 0
        self.replayed = 0
        self.expired = 0
        self.waited = 0
        self.overflow = 0
        self.dropped: dict[str, int] = {}
        self.size: int | None = None


class _Queue:
    """One platform's queue: one deque per priority (each in seq order), lazy deletion."""

    def __init__(self, platform_id: str, max_size: int) -> None:
        self.platform_id = platform_id
        self.max_size = max_size
        self.lanes: dict[int, collections.deque[_Item]] = {}
        self.size = 0
        self.dead = 0
        self.online = False
        self.replaying = False
        self.inflight: _Item | None = None
        self.failures = 0
        self.wake: trio.CancelScope | None = None
        self.rate_wait: trio.CancelScope | None = None
        """Set while the replay waits for the next backlog slot."""
        self.room = trio.lowlevel.ParkingLot()
        """``add_message`` calls waiting for room (online, queue full), FIFO."""
        self.removed = 0
        """Messages that left the queue so far (any reason)."""
        self.waited_total = 0
        self.link_epoch = 0
        """Bumped by every mark online/offline; a replay backing off skips its
        wait when it changed (the link came back or went away meanwhile)."""
        self.backlog_seq = 0
        """Messages with ``seq <= backlog_seq`` are the backlog: they were queued
        when the platform last came online, and only they are rate-limited."""
        self.next_backlog_at = -math.inf
        """Trio clock: the next backlog message may be sent from then on."""
        self.buffered_total = 0
        self.restored_total = 0
        self.replayed_total = 0
        self.expired_total = 0
        self.dropped: dict[str, int] = {}
        self.reported = _Reported()
        self.overflow_alert_base: int | None = None
        """Overflow drops counted when the open overflow alert opened; ``None``: no alert."""

    def overflow_dropped(self) -> int:
        """Messages dropped because the queue (or the global cap) was full."""
        return sum(self.dropped.get(r, 0) for r in _OVERFLOW_REASONS)

    def push(self, item: _Item) -> None:
        lane = self.lanes.get(item.priority)
        if lane is None:
            lane = self.lanes[item.priority] = collections.deque()
            self.lanes = dict(sorted(self.lanes.items()))
        lane.append(item)
        self.size += 1

    def remove(self, item: _Item) -> None:
        item.alive = False
        self.size -= 1
        self.dead += 1
        lane = self.lanes[item.priority]
        while lane and not lane[0].alive:
            lane.popleft()
            self.dead -= 1
        while lane and not lane[-1].alive:
            lane.pop()
            self.dead -= 1
        if self.dead > 64 and self.dead > self.size:
            for p, ln in self.lanes.items():
                self.lanes[p] = collections.deque(i for i in ln if i.alive)
            self.dead = 0

    def _first(self, lane: collections.deque[_Item], exclude: _Item | None) -> _Item | None:
        for it in lane:
            if it.alive and it is not exclude:
                return it
        return None

    def _last(self, lane: collections.deque[_Item], exclude: _Item | None) -> _Item | None:
        for it in reversed(lane):
            if it.alive and it is not exclude:
                return it
        return None

    def oldest(self, exclude: _Item | None = None) -> _Item | None:
        best: _Item | None = None
        for lane in self.lanes.values():
            it = self._first(lane, exclude)
            if it is not None and (best is None or it.seq < best.seq):
                best = it
        return best

    def newest(self, exclude: _Item | None = None) -> _Item | None:
        best: _Item | None = None
        for lane in self.lanes.values():
            it = self._last(lane, exclude)
            if it is not None and (best is None or it.seq > best.seq):
                best = it
        return best

    def lowest_oldest(self, exclude: _Item | None = None) -> _Item | None:
        for lane in self.lanes.values():  # ascending priority
            it = self._first(lane, exclude)
            if it is not None:
                return it
        return None

    def highest_oldest(self) -> _Item | None:
        for lane in reversed(self.lanes.values()):
            it = self._first(lane, None)
            if it is not None:
                return it
        return None

    def head(self, policy: BufferPolicy) -> _Item | None:
        if policy is BufferPolicy.FIFO:
            return self.oldest()
        if policy is BufferPolicy.LIFO:
            return self.newest()
        return self.highest_oldest()

    def in_order(self, policy: BufferPolicy) -> Iterator[_Item]:
        items = [i for lane in self.lanes.values() for i in lane if i.alive]
        if policy is BufferPolicy.FIFO:
            items.sort(key=lambda i: i.seq)
        elif policy is BufferPolicy.LIFO:
            items.sort(key=lambda i: -i.seq)
        else:
            items.sort(key=lambda i: (-i.priority, i.seq))
        return iter(items)

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


# mailbox messages (all answered by ``call``)


@attrs.frozen
class _Add:
    msg: OutboundMessage
    content_json: str
    ttl: float
    wait: bool = False
    """May answer :class:`_Full` (the platform is online and its queue full)."""
    attempt: int = 0
    """0 for the first try; > 0 after a wait (not counted again as a wait)."""
    woken: bool = False
    """The caller was woken from the room lot: it does not queue behind the lot."""


@attrs.frozen
class _Full:
    """Answer to a waiting ``_Add``: no room now; wait in the queue's room lot."""

    removed: int
    """The queue's removal count when it answered (a change means: room was made)."""


@attrs.frozen
class _SetOnline:
    platform_id: str
    online: bool


@attrs.frozen
class _StartReplay:
    platform_id: str


@attrs.frozen
class _Next:
    platform_id: str


@attrs.frozen
class _Ack:
    platform_id: str
    seq: int


@attrs.frozen
class _Failed:
    platform_id: str
    seq: int
    error: str
    link_error: bool
    """ConnectionClosed / PlatformOffline: the link, not the message, failed."""


@attrs.frozen
class _EndReplay:
    platform_id: str


@attrs.frozen
class _List:
    platform_id: str
    limit: int | None


@attrs.frozen
class _Sweep:
    pass


@attrs.frozen
class _Snapshot:
    """Published after every batch; read by the sync getters."""

    platforms: Mapping[str, PlatformBufferStats]
    oldest_added_at: Mapping[str, float]
    size: int
    global_cap_hits: int


def _check_ttl(ttl: Any, default: float) -> float:
    if ttl is None:
        return default
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest(f"ttl must be a number of seconds or None, got {ttl!r}")
    value = float(ttl)
    if math.isnan(value) or value <= 0:
        raise InvalidRequest(f"ttl must be > 0 seconds (or math.inf), got {ttl!r}")
    return value


# --------------------------------------------------------------------------
# the actor


class MessageBuffer(Actor[Any, _Snapshot]):
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
        monitor: A ``StatusMonitor`` for alerts, or ``None``.
        call_timeout (float): Seconds (Trio clock) a call into the actor may
            take (``add_message`` includes its group commit) before
            :class:`~nekobot.errors.CallTimeout`.

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
        monitor: Any = None,
        call_timeout: float = 60.0,
        name: str = "buffer",
    ) -> None:
        super().__init__(name, mailbox_size=10_000)
        for label, value in (
            ("max_size", max_size),
            ("global_max_size", global_max_size),
            ("replay_rate", replay_rate),
            ("retry_interval", retry_interval),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be > 0, got {value!r}")
        for pid, size in (platform_max_size or {}).items():
            if not size > 0:
                raise ValueError(f"platform_max_size[{pid!r}] must be > 0, got {size!r}")
        self.max_size = int(max_size)
        self.policy = BufferPolicy(buffer_policy)
        self.overflow_strategy = OverflowStrategy(overflow_strategy)
        self.global_max_size = int(global_max_size)
        self.platform_max_size = dict(platform_max_size or {})
        self.default_ttl = _check_ttl(default_ttl, 3600.0)
        self.replay_rate = float(replay_rate)
        self.max_send_attempts = int(max_send_attempts)
        self.retry_interval = float(retry_interval)
        if not overflow_wait >= 0:
            raise ValueError(f"overflow_wait must be >= 0, got {overflow_wait!r}")
        self.overflow_wait = float(overflow_wait)
        self.store = store
        self.monitor = monitor
        self.call_timeout = call_timeout
        self._sender: Sender | None = None
        self._queues: dict[str, _Queue] = {}
        self._items: dict[int, _Item] = {}
        self._by_key: dict[str, _Item] = {}
        self._ttl_heap: list[tuple[float, int]] = []
        self._size = 0
        self._next_seq = 1
        self._global_cap_hits = 0
        self._pending_ins: dict[int, _Item] = {}
        self._pending_del: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self._sweep_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._metric_failed = False
        self._publish()

    @classmethod
    def from_config(
        cls, cfg: BufferConfig, store: Store | None = None, monitor: Any = None
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
        )

    # ---- public API (any task) ----------------------------------------------

    def set_sender(self, sender: Sender | None) -> None:
        """Set how replay delivers: ``async sender(message) -> SendReceipt``.

        The sender raising means "not delivered": the message stays buffered.
        """
        self._sender = sender

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
            platform_id (str): The platform it is for.
            message_type (str): Platform-specific (OneBot v11: an action name).
            content: The payload; must be JSON-serialisable (it is stored as
                JSON and replayed as ``json.loads(json.dumps(content))``).
            priority (MessagePriority): Order under the ``PRIORITY`` policy and
                for ``DROP_LOW_PRIORITY``.
            ttl (float | None): Seconds it may wait; ``None`` takes
                ``default_ttl``; ``math.inf`` never expires.
            message_key (str | None): Our key for it (a fresh one if omitted).
                A key already buffered is not added twice.

        While the platform is online with a sender and its queue is full, the
        call waits for room (backpressure), at most ``overflow_wait`` seconds
        (Trio clock); then the overflow strategy decides.

        Returns:
            str: The message key.

        Raises:
            ValueError: (:class:`InvalidRequest`) if ``ttl`` is zero, negative
                or NaN, the content is not JSON-serialisable, or an argument has
                the wrong type.
            sqlite3.Error: if the store failed to commit; the message is not buffered.
            CallTimeout: if the actor did not answer within ``call_timeout`` seconds.
        """
        if not isinstance(platform_id, str) or not platform_id:
            raise InvalidRequest(f"platform_id must be a non-empty str, got {platform_id!r}")
        if not isinstance(message_type, str) or not message_type:
            raise InvalidRequest(f"message_type must be a non-empty str, got {message_type!r}")
        try:
            prio = MessagePriority(priority)
        except ValueError:
            raise InvalidRequest(f"priority must be a MessagePriority, got {priority!r}") from None
        ttl_s = _check_ttl(ttl, self.default_ttl)
        try:
            content_json = json.dumps(content, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(
                f"content of a buffered message must be JSON-serialisable: {exc}"
            ) from None
        msg = OutboundMessage(
            platform_id=platform_id,
            message_type=message_type,
            content=json.loads(content_json),
            priority=prio,
            message_key=message_key or new_message_key(),
            created_at=time.time(),
        )
        req = _Add(msg, content_json, ttl_s, wait=self.overflow_wait > 0)
        deadline = trio.current_time() + self.overflow_wait
        while True:
            try:
                result = await self.ref.call(req, timeout=self.call_timeout)
            except BaseException:
                if req.woken:  # pass the wake-up on to the next in line
                    self._queues[platform_id].room.unpark()
                raise
            if not isinstance(result, _Full):
                return cast(str, result)
            # Online and full: wait for room (backpressure) until the deadline;
            # after it the overflow strategy decides (wait=False).
            q = self._queues[platform_id]
            woken = False
            if q.removed == result.removed:  # no room made since the answer: park
                # (no checkpoint between the check and park(): no lost wake-up)
                with trio.move_on_at(deadline):
                    await q.room.park()
                    woken = True
            req = attrs.evolve(
                req,
                wait=woken or trio.current_time() < deadline,
                attempt=req.attempt + 1,
                woken=woken,
            )

    async def mark_platform_online(self, platform_id: str) -> None:
        """The platform's link is up: replay its queue (in the background)."""
        await self.ref.call(_SetOnline(platform_id, True), timeout=self.call_timeout)

    async def mark_platform_offline(self, platform_id: str) -> None:
        """The platform's link is down: keep buffering; a running replay stops
        before its next send."""
        await self.ref.call(_SetOnline(platform_id, False), timeout=self.call_timeout)

    def is_online(self, platform_id: str) -> bool:
        """Whether the platform is marked online (sync; reads the snapshot).

        A send may bypass the buffer only when this is true *and*
        :meth:`pending_count` is 0 (otherwise it must queue behind).
        """
        snap = self.snapshot
        st = snap.platforms.get(platform_id) if snap is not None else None
        return st is not None and st.online

    def pending_count(self, platform_id: str) -> int:
        """Messages queued for the platform now, the one in flight included (sync)."""
        snap = self.snapshot
        st = snap.platforms.get(platform_id) if snap is not None else None
        return 0 if st is None else st.size

    async def replay_messages(
        self, platform_id: str, max_count: int | None = None
    ) -> list[OutboundMessage]:
        """Replay now, in the calling task, and return what was delivered.

        Sends in policy order through the sender, the backlog at most
        ``replay_rate`` per second (Trio clock), messages added while online
        as fast as the sender returns (see "Replay and ordering" in the module
        docstring); each message is removed after the sender returned.
        Stops at the first failed send (that message and the rest stay
        buffered, in order), when the queue is empty, after ``max_count``, or
        when the platform is marked offline.

        Raises:
            PlatformOffline: if the platform is not marked online.
            Conflict: if a replay to this platform is already running.
            RuntimeError: if no sender was set.
            InvalidRequest: if ``max_count`` is negative.
        """
        if max_count is not None and max_count < 0:
            raise InvalidRequest(f"max_count must be >= 0, got {max_count!r}")
        if self._sender is None:
            raise RuntimeError("MessageBuffer has no sender (call set_sender first)")
        await self.ref.call(_StartReplay(platform_id), timeout=self.call_timeout)
        return await self._replay(platform_id, max_count, background=False)

    async def get_messages(
        self, platform_id: str, limit: int | None = 100
    ) -> list[BufferedMessage]:
        """The platform's queued messages in replay order, at most ``limit``.

        Raises:
            InvalidRequest: if ``limit`` is negative.
        """
        if limit is not None and limit < 0:
            raise InvalidRequest(f"limit must be >= 0, got {limit!r}")
        result: list[BufferedMessage] = await self.ref.call(
            _List(platform_id, limit), timeout=self.call_timeout
        )
        return result

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
        platforms = {
            pid: attrs.evolve(
                st,
                oldest_age=(
                    now - snap.oldest_added_at[pid] if pid in snap.oldest_added_at else None
                ),
            )
            for pid, st in snap.platforms.items()
        }
        dropped: dict[str, int] = {}
        for st in platforms.values():
            for reason, n in st.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
        ages = [st.oldest_age for st in platforms.values() if st.oldest_age is not None]
        return BufferStats(
            size=snap.size,
            global_max_size=self.global_max_size,
            policy=self.policy,
            overflow_strategy=self.overflow_strategy,
            durable=self.store is not None,
            buffered_total=sum(s.buffered_total for s in platforms.values()),
            restored_total=sum(s.restored_total for s in platforms.values()),
            replayed_total=sum(s.replayed_total for s in platforms.values()),
            expired_total=sum(s.expired_total for s in platforms.values()),
            dropped=dropped,
            global_cap_hits=snap.global_cap_hits,
            oldest_age=max(ages) if ages else None,
            platforms=platforms,
        )

    # ---- running -----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the stored queues, then serve until cancelled (or the mailbox closes).

        Raises:
            sqlite3.Error: if the store cannot be read (a corrupt file is moved
                aside by the store at open instead).
        """
        if self.store is not None:
            await self._load()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweeper)
            await nursery.start(super().run)
            # Platforms marked online before the actor ran still need their replay.
            for q in self._queues.values():
                self._maybe_start_replay(q)
            task_status.started()
            await self._stopped.wait()
            nursery.cancel_scope.cancel()

    async def on_stop(self) -> None:
        self._stopped.set()
        for q in self._queues.values():
            q.room.unpark_all()

    async def _sweeper(self) -> None:
        """Wakes at the earliest TTL deadline (Trio clock) and has the actor expire."""
        while True:
            with trio.CancelScope() as scope:
                self._sweep_scope = scope
                scope.deadline = self._ttl_heap[0][0] if self._ttl_heap else math.inf
                await trio.sleep_forever()
            self._sweep_scope = None
            try:
                await self.ref.call(_Sweep(), timeout=math.inf)
            except ActorStopped:
                return

    # ---- the actor's side ------------------------------------------------

    async def handle_batch(self, batch: list[Any]) -> None:
        """Apply a drained batch in memory, commit its writes once, then reply."""
        replies: list[tuple[Any, Any, bool]] = []
        added: list[tuple[Any, int]] = []
        if self._ttl_heap and self._ttl_heap[0][0] <= trio.current_time():
            # Whatever is due expires before anything else looks at the queues,
            # so every request at time t sees exactly the messages with deadline > t.
            self._sweep()
        for entry in batch:
            if not isinstance(entry, Call):
                continue
            if entry.abandoned:
                continue
            try:
                result = self._handle(entry.msg)
            except Exception as exc:
                replies.append((entry, exc, True))
            else:
                if isinstance(entry.msg, _Add) and isinstance(result, tuple):
                    seq, result = result
                    added.append((entry, seq))
                replies.append((entry, result, False))
        if self.store is not None and (self._pending_ins or self._pending_del):
            failed = await self._flush()
            if failed is not None:
                bad = {id(slot) for slot, _ in added}
                for _, seq in added:
                    item = self._items.get(seq)
                    if item is not None and item.alive:
                        q = self._queues[item.msg.platform_id]
                        q.buffered_total -= 1
                        self._forget(q, item)
                        self._pending_del.discard(seq)  # its row was never written
                replies = [
                    (slot, failed, True) if id(slot) in bad else (slot, val, err)
                    for slot, val, err in replies
                ]
        self._publish()
        for slot, val, is_err in replies:
            if is_err:
                slot.fail(val)
            else:
                slot.reply(val)

    def _handle(self, msg: Any) -> Any:
        if isinstance(msg, _Add):
            return self._add(msg)
        if isinstance(msg, _Next):
            return self._next(msg.platform_id)
        if isinstance(msg, _Ack):
            return self._ack(msg)
        if isinstance(msg, _Failed):
            return self._failed(msg)
        if isinstance(msg, _Sweep):
            self._sweep()
            return None
        if isinstance(msg, _SetOnline):
            return self._set_online(msg)
        if isinstance(msg, _StartReplay):
            q = self._queue(msg.platform_id)
            if not q.online:
                raise PlatformOffline(f"platform {msg.platform_id!r} is not online")
            if q.replaying:
                raise Conflict(f"a replay to {msg.platform_id!r} is already running")
            q.replaying = True
            return None
        if isinstance(msg, _EndReplay):
            q = self._queue(msg.platform_id)
            q.replaying = False
            q.inflight = None
            self._maybe_start_replay(q)
            return None
        if isinstance(msg, _List):
            return self._list(msg)
        raise TypeError(f"MessageBuffer got an unknown request {msg!r}")

    def _queue(self, platform_id: str) -> _Queue:
        q = self._queues.get(platform_id)
        if q is None:
            size = self.platform_max_size.get(platform_id, self.max_size)
            q = self._queues[platform_id] = _Queue(platform_id, size)
        return q

    def _forget(self, q: _Queue, item: _Item, *, room: bool = True) -> None:
        """Remove ``item`` from memory and schedule its row's deletion.

        ``room``: the freed place goes to the first ``add_message`` waiting for
        room (false when the caller takes the place itself: an overflow victim).
        """
        q.remove(item)
        q.removed += 1
        if q.size == 0:
            q.room.unpark_all()
        elif room:
            q.room.unpark()
        self._size -= 1
        self._items.pop(item.seq, None)
        if self._by_key.get(item.msg.message_key) is item:
            del self._by_key[item.msg.message_key]
        if self.store is not None:
            if self._pending_ins.pop(item.seq, None) is None:
                self._pending_del.add(item.seq)

    def _insert(self, q: _Queue, item: _Item) -> None:
        q.push(item)
        self._size += 1
        self._items[item.seq] = item
        self._by_key[item.msg.message_key] = item
        if not math.isinf(item.expires_at):
            heapq.heappush(self._ttl_heap, (item.expires_at, item.seq))
            if self._sweep_scope is not None and item.expires_at < self._sweep_scope.deadline:
                self._sweep_scope.deadline = item.expires_at
            if len(self._ttl_heap) > 2 * len(self._items) + 64:
                self._ttl_heap = [(e, s) for e, s in self._ttl_heap if s in self._items]
                heapq.heapify(self._ttl_heap)

    def _victim(self, q: _Queue, incoming: _Item) -> _Item:
        """The one message an overflow drops: from ``q`` or the incoming one."""
        pinned = q.inflight
        strategy = self.overflow_strategy
        if strategy is OverflowStrategy.DROP_NEWEST:
            return incoming
        if strategy is OverflowStrategy.DROP_OLDEST:
            return q.oldest(pinned) or incoming
        low = q.lowest_oldest(pinned)
        if low is None or incoming.priority < low.priority:
            return incoming
        return low

    def _add(self, req: _Add) -> tuple[int, str] | str | _Full:
        msg = req.msg
        existing = self._by_key.get(msg.message_key)
        if existing is not None:
            return msg.message_key  # already buffered: at most one copy per key
        q = self._queue(msg.platform_id)
        if req.wait and self._must_wait(q, req.woken):
            if req.attempt == 0:
                q.waited_total += 1
            return _Full(q.removed)
        now = trio.current_time()
        seq = self._next_seq
        self._next_seq += 1
        ttl = req.ttl
        item = _Item(
            seq,
            msg,
            req.content_json,
            now,
            now + ttl,
            None if math.isinf(ttl) else msg.created_at + ttl,
        )
        q.buffered_total += 1
        global_full = self._size >= self.global_max_size
        if global_full and q.size < q.max_size:
            self._global_cap_hits += 1
        if q.size >= q.max_size or global_full:
            victim = self._victim(q, item)
            if victim is item and global_full and q.size < q.max_size:
                reason = "global_full" if q.oldest(q.inflight) is None else self._reason()
            else:
                reason = self._reason()
            q.count_drop(reason)
            if victim is item:
                log.debug("buffer %s full: dropped the incoming %s", q.platform_id, msg.message_key)
                return msg.message_key
            log.debug("buffer %s full: dropped %s", q.platform_id, victim.msg.message_key)
            self._forget(q, victim, room=False)
        self._insert(q, item)
        if self.store is not None:
            self._pending_ins[seq] = item
        if q.rate_wait is not None and q.head(self.policy) is item:
            q.rate_wait.cancel()  # live, and first in line: not behind the backlog's slot
        self._maybe_start_replay(q)
        return seq, msg.message_key

    def _must_wait(self, q: _Queue, woken: bool) -> bool:
        """Whether an add must wait for room instead of applying the overflow strategy.

        Only while the platform is online with a sender (its queue drains at
        the platform's speed) and the queue holds something that will leave.
        A new add also waits while others wait (first come, first served).
        """
        if not q.online or self._sender is None or self.overflow_wait <= 0 or q.size == 0:
            return False
        if not woken and len(q.room) > 0:
            return True
        return q.size >= q.max_size or self._size >= self.global_max_size

    def _reason(self) -> str:
        return self.overflow_strategy.value

    def _expire(self, q: _Queue, item: _Item) -> None:
        q.expired_total += 1
        self._forget(q, item)

    def _sweep(self) -> None:
        now = trio.current_time()
        heap = self._ttl_heap
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            item = self._items.get(seq)
            if item is None or not item.alive:
                continue
            q = self._queues[item.msg.platform_id]
            if item is q.inflight:
                continue  # decided when its send ends (_ack / _failed)
            self._expire(q, item)

    def _set_online(self, req: _SetOnline) -> None:
        q = self._queue(req.platform_id)
        if req.online and not q.online:
            # Coming online: what is queued now is the backlog (rate-limited);
            # whatever is added from now on is live traffic (not throttled).
            q.backlog_seq = self._next_seq - 1
            q.next_backlog_at = -math.inf
        q.online = req.online
        if not req.online:
            q.room.unpark_all()  # offline: the overflow strategy decides at once
        q.failures = 0
        q.link_epoch += 1
        if q.wake is not None:
            q.wake.cancel()
        if req.online:
            self._maybe_start_replay(q)

    def _maybe_start_replay(self, q: _Queue) -> None:
        if (
            q.online
            and not q.replaying
            and q.size > 0
            and self._sender is not None
            and self._nursery is not None
        ):
            q.replaying = True
            self._nursery.start_soon(self._background_replay, q.platform_id)

    def _next(self, platform_id: str) -> tuple[int, OutboundMessage] | float | None:
        """The head to send next, marked in flight; ``None`` ends the replay.

        A float is a Trio-clock time: the head is backlog and its rate slot
        starts then; the replay waits until then and asks again.
        """
        q = self._queue(platform_id)
        q.inflight = None
        now = trio.current_time()
        while q.online:
            item = q.head(self.policy)
            if item is None:
                break
            if item.expires_at <= now:
                self._expire(q, item)
                continue
            if item.seq <= q.backlog_seq:
                if now < q.next_backlog_at:
                    return q.next_backlog_at
                q.next_backlog_at = now + 1.0 / self.replay_rate
            q.inflight = item
            return item.seq, item.msg
        q.replaying = False
        return None

    def _ack(self, req: _Ack) -> None:
        q = self._queue(req.platform_id)
        q.inflight = None
        q.failures = 0
        q.replayed_total += 1
        item = self._items.get(req.seq)
        if item is not None and item.alive:
            self._forget(q, item)
        else:  # cannot happen (in-flight messages are pinned); keep the books balanced
            q.replayed_total -= 1

    def _failed(self, req: _Failed) -> float | None:
        """Returns the retry delay, or ``None`` if the replay should stop."""
        q = self._queue(req.platform_id)
        q.inflight = None
        q.failures += 1
        item = self._items.get(req.seq)
        if item is not None and item.alive:
            item.attempts += 1
            if not req.link_error:
                item.refusals += 1
            if item.expires_at <= trio.current_time():
                self._expire(q, item)
            elif self.max_send_attempts and item.refusals >= self.max_send_attempts:
                log.warning(
                    "buffer %s: dropping %s after %d refused sends (last: %s)",
                    q.platform_id,
                    item.msg.message_key,
                    item.refusals,
                    req.error,
                )
                q.count_drop("send_failed")
                self._forget(q, item)
                return 0.0
        if not q.online:
            return None
        return min(self.retry_interval * 2.0 ** (q.failures - 1), _MAX_RETRY_INTERVAL)

    def _list(self, req: _List) -> list[BufferedMessage]:
        q = self._queues.get(req.platform_id)
        if q is None:
            return []
        now = trio.current_time()
        out: list[BufferedMessage] = []
        for item in q.in_order(self.policy):
            if req.limit is not None and len(out) >= req.limit:
                break
            out.append(
                BufferedMessage(
                    message=item.msg,
                    age=now - item.added_at,
                    expires_in=item.expires_at - now,
                    attempts=item.attempts,
                )
            )
        return out

    def _publish(self) -> None:
        platforms = {}
        oldest: dict[str, float] = {}
        for pid, q in self._queues.items():
            o = q.oldest()
            if o is not None:
                oldest[pid] = o.added_at
            platforms[pid] = PlatformBufferStats(
                platform_id=pid,
                size=q.size,
                max_size=q.max_size,
                online=q.online,
                replaying=q.replaying,
                buffered_total=q.buffered_total,
                restored_total=q.restored_total,
                replayed_total=q.replayed_total,
                expired_total=q.expired_total,
                dropped=dict(q.dropped),
                waited_total=q.waited_total,
                oldest_age=None,
            )
        self.publish(
            _Snapshot(
                platforms=platforms,
                oldest_added_at=oldest,
                size=self._size,
                global_cap_hits=self._global_cap_hits,
            )
        )
        self._report()

    def _report(self) -> None:
        """Tell the monitor what changed since the last batch; open/clear overflow alerts.

        Counters go out as deltas of the queue's own counters (so the metrics
        and :meth:`get_buffer_stats` agree), the size gauge when it changed.
        """
        for pid, q in self._queues.items():
            rep = q.reported
            labels = {"platform_id": pid}
            for name, attr, doc in _COUNTERS:
                value = getattr(q, attr)
                delta = value - getattr(rep, _REPORTED_ATTR[attr])
                if delta > 0:
                    self._metric(name, delta, "counter", labels, doc)
                    setattr(rep, _REPORTED_ATTR[attr], value)
            if q.dropped != rep.dropped:
                for reason, n in q.dropped.items():
                    delta = n - rep.dropped.get(reason, 0)
                    if delta > 0:
                        self._metric(
                            "nekobot_buffer_dropped_total",
                            delta,
                            "counter",
                            {"platform_id": pid, "reason": reason},
                            "Buffered messages dropped (never sent), by platform and reason.",
                        )
                rep.dropped = dict(q.dropped)
            if rep.size != q.size:
                rep.size = q.size
                self._metric(
                    "nekobot_buffer_size",
                    q.size,
                    "gauge",
                    labels,
                    "Messages queued in the outbound buffer now (the one in flight included).",
                )
            overflow = q.overflow_dropped()
            if overflow > rep.overflow:
                if q.overflow_alert_base is None:
                    q.overflow_alert_base = rep.overflow
                    log.warning(
                        "buffer %s overflowed (max_size %d, %s): dropping messages",
                        pid,
                        q.max_size,
                        self.overflow_strategy.value,
                    )
                rep.overflow = overflow
                n = overflow - q.overflow_alert_base
                reasons = ", ".join(
                    f"{r} {q.dropped[r]}" for r in _OVERFLOW_REASONS if q.dropped.get(r)
                )
                self._alert(
                    f"buffer:overflow:{pid}",
                    "WARNING",
                    f"outbound buffer of platform {pid!r} overflowed: {n} message(s) dropped"
                    f" since this alert opened (queue {q.size}/{q.max_size}, global cap"
                    f" {self.global_max_size}; dropped so far by reason: {reasons})",
                    platform_id=pid,
                    metric_name="nekobot_buffer_dropped_total",
                )
            if q.overflow_alert_base is not None and q.size == 0:
                log.info(
                    "buffer %s drained after dropping %d message(s)",
                    pid,
                    overflow - q.overflow_alert_base,
                )
                q.overflow_alert_base = None
                self._clear_alert(f"buffer:overflow:{pid}")

    def _metric(
        self, name: str, value: float, mtype: str, labels: dict[str, str], doc: str
    ) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.record_metric(name, value, mtype, labels=labels, documentation=doc)
        except Exception:  # the monitor must never take the buffer down
            if not self._metric_failed:
                self._metric_failed = True
                log.exception("buffer: record_metric(%r) failed (logged once)", name)

    # ---- replay (runs in its own task, talks to the actor by calls) ------------

    async def _call(self, msg: Any) -> Any:
        return await self.ref.call(msg, timeout=self.call_timeout)

    async def _background_replay(self, platform_id: str) -> None:
        q = self._queues[platform_id]
        if q.failures:  # the last send failed: back off before trying again
            with trio.CancelScope() as scope:
                q.wake = scope
                await trio.sleep(
                    min(self.retry_interval * 2.0 ** (q.failures - 1), _MAX_RETRY_INTERVAL)
                )
            q.wake = None
        try:
            await self._replay(platform_id, None, background=True)
        except ActorStopped:
            pass
        except Exception:  # a bug in the sender's plumbing must not kill the buffer
            log.exception("buffer: replay to %s failed", platform_id)

    async def _replay(
        self, platform_id: str, max_count: int | None, *, background: bool
    ) -> list[OutboundMessage]:
        replayed: list[OutboundMessage] = []
        ended = False
        try:
            while max_count is None or len(replayed) < max_count:
                sender = self._sender
                nxt = await self._call(_Next(platform_id))
                if nxt is None:
                    ended = True  # _Next ended the replay atomically
                    break
                q = self._queues[platform_id]
                if isinstance(nxt, float):  # backlog head: wait for its rate slot
                    with trio.CancelScope() as scope:
                        # Marking online/offline, or a live message that becomes
                        # the head (PRIORITY, LIFO), ends the wait at once.
                        q.wake = q.rate_wait = scope
                        await trio.sleep_until(nxt)
                    q.wake = q.rate_wait = None
                    continue
                seq, msg = nxt
                epoch = q.link_epoch
                try:
                    if sender is None:
                        raise RuntimeError("no sender")
                    await sender(msg)
                except Exception as exc:
                    log.info(
                        "buffer: replay of %s to %s failed: %r", msg.message_key, platform_id, exc
                    )
                    link_error = isinstance(exc, ConnectionClosed | PlatformOffline)
                    delay = await self._call(_Failed(platform_id, seq, repr(exc), link_error))
                    if delay is None or not background:
                        break
                    if q.link_epoch == epoch:  # else: marked online/offline meanwhile
                        with trio.CancelScope() as scope:
                            q.wake = scope
                            await trio.sleep(delay)
                        q.wake = None
                    continue
                await self._call(_Ack(platform_id, seq))
                replayed.append(msg)
        finally:
            if not ended:
                try:
                    self.ref.cast_nowait(Call(_EndReplay(platform_id)))
                except Exception:  # stopping or full: the replay ends with the actor
                    log.debug("buffer: could not end replay of %s", platform_id)
        return replayed

    # ---- durability ----------------------------------------------------------

    async def _flush(self) -> BaseException | None:
        """Write pending inserts/deletes in one transaction; returns the error, if any."""
        assert self.store is not None
        rows = [
            (
                it.seq,
                it.msg.platform_id,
                it.msg.message_key,
                it.msg.message_type,
                it.content_json,
                int(it.msg.priority),
                it.msg.created_at,
                it.expires_wall,
            )
            for it in self._pending_ins.values()
        ]
        dels = [(s,) for s in self._pending_del]
        self._pending_ins = {}
        self._pending_del = set()

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if rows:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO {_TABLE} (seq, platform_id, message_key,"
                        " message_type, content, priority, created_at, expires_wall)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                if dels:
                    conn.executemany(f"DELETE FROM {_TABLE} WHERE seq = ?", dels)

        try:
            await self.store.run(write)
        except sqlite3.Error as exc:
            log.error("buffer: writing to %s failed: %s", self.store.path, exc)
            self._alert("buffer:store_error", "ERROR", f"buffer could not write: {exc}")
            return exc
        return None

    async def _load(self) -> None:
        assert self.store is not None
        if not self.store.is_open:
            await self.store.open()
        if self.store.recovered_from:
            log.error(
                "buffer: the database was corrupt; moved aside to %s; the buffer starts empty",
                self.store.recovered_from,
            )
            self._alert(
                "storage:corrupt",
                "ERROR",
                f"database was corrupt; moved aside to {self.store.recovered_from}",
            )

        def load(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
                " seq INTEGER PRIMARY KEY,"
                " platform_id TEXT NOT NULL,"
                " message_key TEXT NOT NULL,"
                " message_type TEXT NOT NULL,"
                " content TEXT NOT NULL,"
                " priority INTEGER NOT NULL,"
                " created_at REAL NOT NULL,"
                " expires_wall REAL)"
            )
            return conn.execute(
                f"SELECT seq, platform_id, message_key, message_type, content, priority,"
                f" created_at, expires_wall FROM {_TABLE} ORDER BY seq"
            ).fetchall()

        rows = await self.store.run(load)
        now = trio.current_time()
        wall = time.time()
        for seq, pid, key, mtype, content_json, prio, created_at, expires_wall in rows:
            self._next_seq = max(self._next_seq, seq + 1)
            q = self._queue(pid)
            q.restored_total += 1
            try:
                msg = OutboundMessage(
                    platform_id=pid,
                    message_type=mtype,
                    content=json.loads(content_json),
                    priority=MessagePriority(prio),
                    message_key=key,
                    created_at=created_at,
                )
            except (ValueError, TypeError) as exc:
                log.error("buffer: dropping undecodable stored message %s: %s", key, exc)
                q.count_drop("corrupt")
                self._pending_del.add(seq)
                continue
            remaining = math.inf if expires_wall is None else expires_wall - wall
            age = max(0.0, wall - created_at)
            item = _Item(seq, msg, content_json, now - age, now + remaining, expires_wall)
            if remaining <= 0:
                q.expired_total += 1
                self._pending_del.add(seq)
                continue
            if key in self._by_key or q.size >= q.max_size or self._size >= self.global_max_size:
                # A smaller max_size than when it was stored (or a duplicate
                # key): apply the overflow strategy as if it were added now.
                if key in self._by_key:
                    q.count_drop("corrupt")
                    self._pending_del.add(seq)
                    continue
                victim = self._victim(q, item)
                q.count_drop(self._reason() if q.oldest() is not None else "global_full")
                if victim is item:
                    self._pending_del.add(seq)
                    continue
                self._forget(q, victim)
            self._insert(q, item)
        if rows:
            log.info("buffer: restored %d stored messages", self._size)
        if self._pending_del:
            await self._flush()
        self._publish()

    def _alert(
        self,
        key: str,
        level: str,
        message: str,
        *,
        platform_id: str | None = None,
        metric_name: str | None = None,
    ) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.fire_alert(
                key,
                AlertLevel.coerce(level),
                message,
                platform_id=platform_id,
                metric_name=metric_name,
            )
        except Exception:  # the monitor must never take the buffer down
            log.exception("buffer: fire_alert failed")

    def _clear_alert(self, key: str) -> None:
        if self.monitor is None:
            return
        try:
            self.monitor.clear_alert(key)
        except Exception:  # the monitor must never take the buffer down
            log.exception("buffer: clear_alert failed")
