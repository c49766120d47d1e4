"""The buffer's state: every queue, the global cap, the TTL index, the pending writes.

A plain object owned by the buffer actor and changed only by its loop; it has
no tasks and does no I/O (times are passed in, Trio clock unless ``wall``).
It records which queues each batch changed (``dirty``: their snapshot and
metrics are renewed) and which lost a message (``room``: a held
``add_message`` may fit now).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .persistence import PendingWrites, StoredRow
from .queue import BufferPolicy, Item, OverflowStrategy, PlatformQueue
from .stats import BufferedMessage

if TYPE_CHECKING:
    from .requests import AddMessage

__all__ = ["BufferState"]

log = logging.getLogger("nekobot.buffer")


class BufferState:
    """All queues of one buffer.

    Args:
        max_size (int): Default bound of one queue.
        platform_max_size (Mapping[str, int]): Per-queue bounds.
        global_max_size (int): Messages over all queues at most.
        policy (BufferPolicy): Replay order.
        strategy (OverflowStrategy): Which message one overflow drops.
        replay_rate (float): Backlog sends per second per queue.
        durable (bool): Record the rows to write (``pending``).
    """

    def __init__(
        self,
        *,
        max_size: int,
        platform_max_size: Mapping[str, int],
        global_max_size: int,
        policy: BufferPolicy,
        strategy: OverflowStrategy,
        replay_rate: float,
        durable: bool,
    ) -> None:
        self.max_size = max_size
        self.platform_max_size = platform_max_size
        self.global_max_size = global_max_size
        self.policy = policy
        self.strategy = strategy
        self.replay_rate = replay_rate
        self.durable = durable
        self.queues: dict[str, PlatformQueue] = {}
        self.items: dict[int, Item] = {}
        self.by_key: dict[str, Item] = {}
        self.ttl_heap: list[tuple[float, int]] = []
        self.size = 0
        self.next_seq = 1
        self.global_cap_hits = 0
        self.pending = PendingWrites()
        self.dirty: dict[PlatformQueue, None] = {}
        self.room: dict[PlatformQueue, None] = {}

    def accounts_of(self, platform: str) -> list[PlatformQueue]:
        """The account queues of ``platform`` (``<platform>@…``), marked changed."""
        prefix = f"{platform}@"
        return [self.queue(name) for name in list(self.queues) if name.startswith(prefix)]

    def queue(self, name: str) -> PlatformQueue:
        """The queue ``name`` (made on first use), marked changed."""
        q = self.queues.get(name)
        if q is None:
            size = self.platform_max_size.get(name, self.max_size)
            q = self.queues[name] = PlatformQueue(name, size, self.replay_rate)
        self.dirty[q] = None
        return q

    def full(self, q: PlatformQueue) -> bool:
        """Whether one more message for ``q`` overflows (its bound or the global cap)."""
        return q.size >= q.max_size or self.size >= self.global_max_size

    # ---- membership ------------------------------------------------------

    def add(self, q: PlatformQueue, req: AddMessage, now: float) -> tuple[str, Item | None]:
        """Add ``req``'s message to ``q``, or drop one by the overflow strategy.

        Returns the key and the new item (``None`` if the incoming message was
        dropped, or its key is buffered already: at most one copy per key).
        """
        msg = req.msg
        if msg.message_key in self.by_key:
            return msg.message_key, None
        seq = self.next_seq
        self.next_seq += 1
        ttl = req.ttl
        expires_wall = None if math.isinf(ttl) else msg.created_at + ttl
        item = Item(seq, msg, req.content_json, now, now + ttl, expires_wall)
        q.buffered_total += 1
        global_full = self.size >= self.global_max_size
        if global_full and q.size < q.max_size:
            self.global_cap_hits += 1
        if q.size >= q.max_size or global_full:
            victim = q.victim(self.strategy, item)
            reason = self.strategy.value
            if victim is item and global_full and q.size < q.max_size:
                reason = "global_full" if q.oldest(q.inflight) is None else reason
            q.count_drop(reason)
            if victim is item:
                log.debug("buffer %s full: dropped the incoming %s", q.name, msg.message_key)
                return msg.message_key, None
            log.debug("buffer %s full: dropped %s", q.name, victim.msg.message_key)
            self.forget(q, victim)
        self.insert(q, item)
        if self.durable:
            self.pending.insert(item)
        return msg.message_key, item

    def insert(self, q: PlatformQueue, item: Item) -> None:
        q.push(item)
        self.dirty[q] = None
        self.size += 1
        self.items[item.seq] = item
        self.by_key[item.msg.message_key] = item
        if not math.isinf(item.expires_at):
            heapq.heappush(self.ttl_heap, (item.expires_at, item.seq))
            if len(self.ttl_heap) > 2 * len(self.items) + 64:
                self.ttl_heap = [(e, s) for e, s in self.ttl_heap if s in self.items]
                heapq.heapify(self.ttl_heap)

    def forget(self, q: PlatformQueue, item: Item) -> None:
        """Remove ``item`` and schedule its row's deletion."""
        q.remove(item)
        self.dirty[q] = None
        self.room[q] = None
        self.size -= 1
        del self.items[item.seq]
        if self.by_key.get(item.msg.message_key) is item:
            del self.by_key[item.msg.message_key]
        if self.durable:
            self.pending.delete(item.seq)

    def rollback(self, items: Iterable[Item]) -> None:
        """Undo adds whose rows were not written (the commit failed)."""
        for item in items:
            if item.alive:
                q = self.queues[item.msg.platform_id]
                q.buffered_total -= 1
                self.forget(q, item)
                self.pending.forget(item.seq)  # its row was never written

    def expire(self, q: PlatformQueue, item: Item) -> None:
        q.expired_total += 1
        self.forget(q, item)

    def expire_due(self, now: float) -> None:
        """Remove every message whose deadline is ``<= now``, except one in flight
        (decided when its send ends)."""
        heap = self.ttl_heap
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            item = self.items.get(seq)
            if item is None:
                continue
            q = self.queues[item.msg.platform_id]
            if item is not q.inflight:
                self.expire(q, item)

    def next_expiry(self) -> float:
        """Trio clock of the next TTL deadline; ``math.inf`` if none."""
        return self.ttl_heap[0][0] if self.ttl_heap else math.inf

    # ---- replay ----------------------------------------------------------

    def next_to_send(self, q: PlatformQueue, now: float) -> Item | float | None:
        """The head to send now (pinned in flight), the Trio-clock time its
        backlog slot opens, or ``None``: nothing to send (the replay ends)."""
        q.inflight = None
        while q.online:
            item = q.head(self.policy)
            if item is None:
                break
            if item.expires_at <= now:
                self.expire(q, item)
                continue
            if item.seq <= q.backlog_seq:
                opens = q.pacer.take(now)
                if opens is not None:
                    return opens
            q.inflight = item
            return item
        q.replaying = False
        return None

    def acked(self, q: PlatformQueue, seq: int) -> None:
        q.inflight = None
        q.failures = 0
        item = self.items.get(seq)
        if item is not None:  # else cannot happen: in-flight messages are pinned
            q.replayed_total += 1
            self.forget(q, item)

    def failed(
        self,
        q: PlatformQueue,
        seq: int,
        *,
        link_error: bool,
        error: str,
        now: float,
        max_send_attempts: int,
    ) -> bool:
        """Count a failed send; returns whether the message was dropped for it."""
        q.inflight = None
        q.failures += 1
        item = self.items.get(seq)
        if item is None:
            return False
        item.attempts += 1
        if not link_error:
            item.refusals += 1
        if item.expires_at <= now:
            self.expire(q, item)
        elif max_send_attempts and item.refusals >= max_send_attempts:
            log.warning(
                "buffer %s: dropping %s after %d refused sends (last: %s)",
                q.name,
                item.msg.message_key,
                item.refusals,
                error,
            )
            q.count_drop("send_failed")
            self.forget(q, item)
            return True
        return False

    def listing(self, name: str, limit: int | None, now: float) -> list[BufferedMessage]:
        """Queue ``name``'s messages in replay order, at most ``limit``."""
        q = self.queues.get(name)
        if q is None:
            return []
        out: list[BufferedMessage] = []
        for item in q.in_order(self.policy):
            if limit is not None and len(out) >= limit:
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

    # ---- loading ---------------------------------------------------------

    def restore(
        self, row: StoredRow | tuple[int | None, str | None, str], now: float, wall: float
    ) -> None:
        """Put one stored row back in its queue, or count why not.

        ``now`` is the Trio clock, ``wall`` the wall clock (``time.time()``).
        """
        if not isinstance(row, StoredRow):
            seq, name, why = row
            log.error("buffer: dropping undecodable stored message (seq %s): %s", seq, why)
            if seq is not None:
                self.next_seq = max(self.next_seq, seq + 1)
                self.pending.deletes.add(seq)
            if name is not None:
                q = self.queue(name)
                q.restored_total += 1
                q.count_drop("corrupt")
            return
        self.next_seq = max(self.next_seq, row.seq + 1)
        msg = row.msg
        q = self.queue(msg.platform_id)
        q.restored_total += 1
        remaining = math.inf if row.expires_wall is None else row.expires_wall - wall
        if remaining <= 0:
            q.expired_total += 1
            self.pending.deletes.add(row.seq)
            return
        if msg.message_key in self.by_key:
            q.count_drop("corrupt")
            self.pending.deletes.add(row.seq)
            return
        age = max(0.0, wall - msg.created_at)
        item = Item(row.seq, msg, row.content_json, now - age, now + remaining, row.expires_wall)
        if self.full(q):
            # A smaller max_size than when it was stored: apply the overflow
            # strategy as if it were added now.
            victim = q.victim(self.strategy, item)
            q.count_drop(self.strategy.value if q.oldest() is not None else "global_full")
            if victim is item:
                self.pending.deletes.add(row.seq)
                return
            self.forget(q, victim)
        self.insert(q, item)
