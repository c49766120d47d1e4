"""Tests of nekobot.buffer (issue 5).

Policy: no network. Anything about time (TTL, replay rate, retry backoff) runs
under the ``autojump_clock`` fixture with memory-only buffers and asserts the
exact Trio-clock schedule. Durable tests use a temporary directory and the real
clock (SQLite runs in worker threads, which the autojump clock does not wait
for), each bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from nekobot.buffer.message_buffer import BufferPolicy, MessageBuffer, OverflowStrategy
from nekobot.config.schema import BufferConfig
from nekobot.errors import Conflict, ConnectionClosed, InvalidRequest, PlatformOffline
from nekobot.messages import MessagePriority, OutboundMessage, SendReceipt
from nekobot.storage import Store

LOW, NORMAL, HIGH = MessagePriority.LOW, MessagePriority.NORMAL, MessagePriority.HIGH


@asynccontextmanager
async def running(buf: MessageBuffer) -> AsyncIterator[MessageBuffer]:
    # A hang fails (at once under the autojump clock) instead of blocking the run.
    with trio.fail_after(10**7):
        async with trio.open_nursery() as nursery:
            await nursery.start(buf.run)
            yield buf
            nursery.cancel_scope.cancel()


class Peer:
    """A platform's sending side: records what it got and when (Trio clock)."""

    def __init__(self, *, fail_on: set[int] | None = None, exc: type[Exception] = ConnectionClosed):
        self.got: list[OutboundMessage] = []
        self.times: list[float] = []
        self.calls = 0
        self.fail_on = fail_on or set()
        self.exc = exc
        self._changed = trio.Event()
        self.on_send: Any = None

    async def send(self, msg: OutboundMessage) -> SendReceipt:
        call = self.calls
        self.calls += 1
        if self.on_send is not None:
            await self.on_send(msg)
        if call in self.fail_on:
            raise self.exc(f"link lost while sending {msg.content!r}")
        self.got.append(msg)
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()
        return SendReceipt(platform_id=msg.platform_id, message_key=msg.message_key)

    async def wait_for(self, n: int) -> None:
        while len(self.got) < n:
            await self._changed.wait()

    @property
    def contents(self) -> list[Any]:
        return [m.content for m in self.got]


async def contents(buf: MessageBuffer, pid: str) -> list[Any]:
    return [b.message.content for b in await buf.get_messages(pid, None)]


async def idle(buf: MessageBuffer, pid: str) -> None:
    """Wait (Trio clock) until no replay to ``pid`` runs."""
    while buf.get_buffer_stats().platforms[pid].replaying:  # noqa: ASYNC110 - test-only poll
        await trio.sleep(0.001)


# --------------------------------------------------------------------------
# policy x overflow strategy: the survivors table of the package docstring (nekobot.buffer)

SEQUENCE = [("a", LOW), ("b", HIGH), ("c", NORMAL), ("d", LOW), ("e", HIGH)]

SURVIVORS = {
    ("fifo", "drop_oldest"): ["c", "d", "e"],
    ("fifo", "drop_newest"): ["a", "b", "c"],
    ("fifo", "drop_low_priority"): ["b", "c", "e"],
    ("lifo", "drop_oldest"): ["e", "d", "c"],
    ("lifo", "drop_newest"): ["c", "b", "a"],
    ("lifo", "drop_low_priority"): ["e", "c", "b"],
    ("priority", "drop_oldest"): ["e", "c", "d"],
    ("priority", "drop_newest"): ["b", "c", "a"],
    ("priority", "drop_low_priority"): ["b", "e", "c"],
}


@pytest.mark.parametrize(("policy", "strategy"), sorted(SURVIVORS))
async def test_policy_overflow_survivors(
    policy: str, strategy: str, autojump_clock: trio.testing.MockClock
) -> None:
    peer = Peer()
    buf = MessageBuffer(3, policy, overflow_strategy=strategy, replay_rate=10, deliver=peer.send)
    async with running(buf):
        for name, prio in SEQUENCE:
            await buf.add_message("qq", "send_msg", name, prio)
        expected = SURVIVORS[(policy, strategy)]
        assert await contents(buf, "qq") == expected
        stats = buf.get_buffer_stats()
        assert stats.dropped == {strategy: 2}
        assert stats.platforms["qq"].size == 3
        await buf.mark_platform_online("qq")
        await peer.wait_for(3)
        await idle(buf, "qq")
        assert peer.contents == expected
        stats = buf.get_buffer_stats()
        assert stats.replayed_total == 3 and stats.size == 0
        assert stats.buffered_total == stats.replayed_total + sum(stats.dropped.values())


async def test_drop_low_priority_takes_incoming_when_it_is_lowest() -> None:
    buf = MessageBuffer(2, overflow_strategy="drop_low_priority")
    async with running(buf):
        await buf.add_message("qq", "m", "x", NORMAL)
        await buf.add_message("qq", "m", "y", HIGH)
        await buf.add_message("qq", "m", "z", LOW)  # lowest of all: it is the one dropped
        await buf.add_message("qq", "m", "w", NORMAL)  # ties x's priority; x is older
        assert await contents(buf, "qq") == ["y", "w"]
        assert buf.get_buffer_stats().dropped == {"drop_low_priority": 2}


# --------------------------------------------------------------------------
# per-platform queues and the global cap


async def test_platform_flood_never_evicts_another_platform() -> None:
    buf = MessageBuffer(
        5, global_max_size=7, platform_max_size={"tg": 3}, overflow_strategy="drop_oldest"
    )
    async with running(buf):
        for i in range(4):
            await buf.add_message("qq", "m", f"q{i}")
        for i in range(5):  # tg's own bound is 3
            await buf.add_message("tg", "m", f"t{i}")
        assert await contents(buf, "tg") == ["t2", "t3", "t4"]
        assert buf.get_buffer_stats().platforms["tg"].max_size == 3
        assert buf.get_buffer_stats().global_cap_hits == 0
        # qq floods: the global cap (4 + 3 == 7) binds before qq's own bound (5),
        # and each overflow evicts one of qq's own messages, never tg's.
        for i in range(4, 20):
            await buf.add_message("qq", "m", f"q{i}")
        assert await contents(buf, "tg") == ["t2", "t3", "t4"]
        assert await contents(buf, "qq") == [f"q{i}" for i in range(16, 20)]
        # A platform with nothing buffered cannot evict anyone's: its incoming
        # message is the one dropped.
        await buf.add_message("dc", "m", "d0")
        assert await contents(buf, "dc") == []
        # tg at its own bound: its own overflow, also inside tg.
        await buf.add_message("tg", "m", "t5")
        assert await contents(buf, "tg") == ["t3", "t4", "t5"]
        stats = buf.get_buffer_stats()
        assert stats.size == 7
        assert stats.platforms["dc"].dropped == {"global_full": 1}
        assert stats.platforms["qq"].dropped == {"drop_oldest": 16}
        assert stats.platforms["tg"].dropped == {"drop_oldest": 3}
        assert stats.global_cap_hits == 17
        assert stats.buffered_total == stats.size + sum(stats.dropped.values())


async def test_global_cap_resolved_inside_the_platform_below_its_own_bound() -> None:
    buf = MessageBuffer(10, global_max_size=4, overflow_strategy="drop_newest")
    async with running(buf):
        for i in range(3):
            await buf.add_message("qq", "m", f"q{i}")
        await buf.add_message("tg", "m", "t0")
        await buf.add_message("tg", "m", "t1")  # global full; drop_newest drops it
        assert await contents(buf, "tg") == ["t0"]
        assert await contents(buf, "qq") == ["q0", "q1", "q2"]
        assert buf.get_buffer_stats().platforms["tg"].dropped == {"drop_newest": 1}


# --------------------------------------------------------------------------
# arguments


async def test_ttl_and_content_validation() -> None:
    buf = MessageBuffer()
    async with running(buf):
        for bad in (0, -1, 0.0, math.nan):
            with pytest.raises(ValueError, match="ttl"):
                await buf.add_message("qq", "m", "x", ttl=bad)
        with pytest.raises(InvalidRequest, match="JSON-serialisable"):
            await buf.add_message("qq", "m", {"when": object()})
        with pytest.raises(InvalidRequest, match="JSON-serialisable"):
            await buf.add_message("qq", "m", {"x": math.inf})
        with pytest.raises(InvalidRequest, match="priority"):
            await buf.add_message("qq", "m", "x", 9)
        with pytest.raises(InvalidRequest, match="platform_id"):
            await buf.add_message("", "m", "x")
        assert buf.get_buffer_stats().size == 0
    with pytest.raises(ValueError, match="max_size"):
        MessageBuffer(0)


async def test_content_is_copied_as_json_and_keys_are_idempotent() -> None:
    buf = MessageBuffer()
    async with running(buf):
        content: dict[str, Any] = {"message": [{"type": "text"}], "ids": (1, 2)}
        key = await buf.add_message("qq", "send_msg", content, message_key="k1")
        content["message"].append({"type": "mutated later"})
        assert key == "k1"
        assert await buf.add_message("qq", "send_msg", "again", message_key="k1") == "k1"
        [only] = await buf.get_messages("qq", 10)
        assert only.message.content == {"message": [{"type": "text"}], "ids": [1, 2]}
        assert only.message.message_key == "k1"
        assert buf.get_buffer_stats().buffered_total == 1


# --------------------------------------------------------------------------
# TTL (Trio clock)


async def test_ttl_expiry_schedule(autojump_clock: trio.testing.MockClock) -> None:
    buf = MessageBuffer(default_ttl=100.0)
    async with running(buf):
        t0 = trio.current_time()
        await buf.add_message("qq", "m", "ten", ttl=10)
        await buf.add_message("qq", "m", "default")
        await buf.add_message("qq", "m", "forever", ttl=math.inf)
        [ten, default, forever] = await buf.get_messages("qq", None)
        assert (ten.expires_in, default.expires_in, forever.expires_in) == (10, 100, math.inf)
        await trio.sleep_until(t0 + 9.999)
        assert await contents(buf, "qq") == ["ten", "default", "forever"]
        await trio.sleep_until(t0 + 10)
        await trio.testing.wait_all_tasks_blocked()
        assert await contents(buf, "qq") == ["default", "forever"]
        assert buf.get_buffer_stats().expired_total == 1
        assert buf.get_buffer_stats().oldest_age == pytest.approx(10)
        await trio.sleep_until(t0 + 100)
        await trio.testing.wait_all_tasks_blocked()
        assert await contents(buf, "qq") == ["forever"]
        await trio.sleep(50_000)
        assert await contents(buf, "qq") == ["forever"]
        stats = buf.get_buffer_stats()
        assert stats.expired_total == 2
        assert stats.oldest_age == pytest.approx(50_100)


async def test_expired_messages_are_never_sent(autojump_clock: trio.testing.MockClock) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=1.0, deliver=peer.send)  # one send per second
    async with running(buf):
        await buf.add_message("qq", "m", "stale", ttl=5)
        await trio.sleep(5)  # "stale" expires offline
        for i in range(5):
            await buf.add_message("qq", "m", i, ttl=2.5)
        await buf.add_message("qq", "m", "keep", ttl=math.inf)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await peer.wait_for(4)
        await idle(buf, "qq")
        # Sends at +0, +1, +2; at +2.5 the rest of the 2.5 s messages expire.
        assert peer.contents == [0, 1, 2, "keep"]
        assert [t - t0 for t in peer.times] == [0, 1, 2, 3]
        assert buf.get_buffer_stats().expired_total == 3


# --------------------------------------------------------------------------
# replay: order, rate, acknowledgement


async def test_replay_rate_exact_schedule(autojump_clock: trio.testing.MockClock) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=4.0, deliver=peer.send)
    async with running(buf):
        for i in range(6):
            await buf.add_message("qq", "m", i)
        assert not buf.is_online("qq")
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        assert buf.is_online("qq")
        await peer.wait_for(6)
        assert peer.contents == list(range(6))
        assert [t - t0 for t in peer.times] == [0, 0.25, 0.5, 0.75, 1.0, 1.25]
        await idle(buf, "qq")
        assert buf.pending_count("qq") == 0
        assert buf.get_buffer_stats().replayed_total == 6


async def test_a_link_going_down_takes_its_accounts_but_not_a_later_one() -> None:
    buf = MessageBuffer(deliver=Peer().send)
    async with running(buf):
        for queue in ("qq", "qq@1", "qq@2", "qqx@1"):
            await buf.mark_platform_online(queue)
        async with trio.open_nursery() as nursery:
            # sent in this order from two tasks: the new link's account comes
            # up after the old link went down, and stays up
            nursery.start_soon(lambda: buf.mark_platform_offline("qq", accounts=True))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(buf.mark_platform_online, "qq@3")
        online = {q: buf.is_online(q) for q in ("qq", "qq@1", "qq@2", "qq@3", "qqx@1")}
    assert online == {"qq": False, "qq@1": False, "qq@2": False, "qq@3": True, "qqx@1": True}


async def test_removed_only_after_the_sender_returned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=100, deliver=peer.send)
    seen: list[tuple[Any, list[Any], int]] = []
    release = trio.Event()

    async def on_send(msg: OutboundMessage) -> None:
        seen.append((msg.content, await contents(buf, "qq"), buf.pending_count("qq")))
        if msg.content == "b":
            await release.wait()

    peer.on_send = on_send
    async with running(buf):
        for name in "abc":
            await buf.add_message("qq", "m", name)
        await buf.mark_platform_online("qq")
        await trio.sleep(10)  # "b" is stuck in the sender: it stays buffered
        assert await contents(buf, "qq") == ["b", "c"]
        assert peer.contents == ["a"]
        release.set()
        await peer.wait_for(3)
        await idle(buf, "qq")
    assert seen == [("a", ["a", "b", "c"], 3), ("b", ["b", "c"], 2), ("c", ["c"], 1)]


async def test_message_added_during_replay_goes_behind(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=1.0, deliver=peer.send)
    async with running(buf):
        for name in "abc":
            await buf.add_message("qq", "m", name)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await trio.sleep(0.5)
        assert buf.is_online("qq") and buf.pending_count("qq") == 2
        await buf.add_message("qq", "m", "late")
        await peer.wait_for(4)
        assert peer.contents == ["a", "b", "c", "late"]
        # The backlog (a, b, c) at 1/s; "late", added while online, right after
        # "c" was acknowledged (behind the backlog, not throttled).
        assert [t - t0 for t in peer.times] == [0, 1, 2, 2]
        await idle(buf, "qq")
        # Online and drained: a send may bypass the buffer again; a message
        # buffered anyway (e.g. a failed direct send) is replayed at once.
        assert buf.pending_count("qq") == 0
        t_add = trio.current_time()
        await buf.add_message("qq", "m", "after")
        await peer.wait_for(5)
        assert peer.times[-1] == t_add


async def test_link_drop_mid_replay_keeps_the_rest_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer(fail_on={3})
    buf = MessageBuffer(replay_rate=10, deliver=peer.send)
    async with running(buf):

        async def drop_link(msg: OutboundMessage) -> None:
            if peer.calls == 4:  # the 4th send: the link goes down under it
                await buf.mark_platform_offline("qq")

        peer.on_send = drop_link
        for i in range(10):
            await buf.add_message("qq", "m", i)
        await buf.mark_platform_online("qq")
        await peer.wait_for(3)
        await trio.sleep(100)  # offline: no retries
        await idle(buf, "qq")
        assert peer.contents == [0, 1, 2]
        assert await contents(buf, "qq") == list(range(3, 10))
        assert peer.calls == 4
        stats = buf.get_buffer_stats().platforms["qq"]
        assert (stats.size, stats.replayed_total, stats.dropped) == (7, 3, {})
        [head, *_] = await buf.get_messages("qq", 1)
        assert head.attempts == 1
        await buf.mark_platform_online("qq")
        await peer.wait_for(10)
        assert peer.contents == list(range(10))
        # at-least-once: the same key when a message is sent again
        assert len({m.message_key for m in peer.got}) == 10


async def test_failed_send_while_online_retries_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer(fail_on={1, 2, 3}, exc=RuntimeError)
    buf = MessageBuffer(replay_rate=10, retry_interval=1.0, max_send_attempts=0, deliver=peer.send)
    async with running(buf):
        for i in range(3):
            await buf.add_message("qq", "m", i)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await peer.wait_for(3)
        # send 0 at 0; send 1 fails at 0.1, retries after 1, 2, 4 s of backoff
        assert [round(t - t0, 6) for t in peer.times] == [0, 7.1, 7.2]
        assert peer.contents == [0, 1, 2]


async def test_poison_message_dropped_after_max_attempts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer(fail_on={0, 1, 2}, exc=RuntimeError)
    buf = MessageBuffer(replay_rate=10, retry_interval=1.0, max_send_attempts=3, deliver=peer.send)
    async with running(buf):
        for i in range(3):
            await buf.add_message("qq", "m", i)
        await buf.mark_platform_online("qq")
        await peer.wait_for(2)
        await idle(buf, "qq")
        assert peer.contents == [1, 2]
        stats = buf.get_buffer_stats()
        assert stats.dropped == {"send_failed": 1}
        assert stats.size == 0


async def test_replay_messages_explicit(autojump_clock: trio.testing.MockClock) -> None:
    bare = MessageBuffer(replay_rate=2.0)  # no sender: nothing is ever replayed
    async with running(bare):
        await bare.add_message("qq", "m", 0)
        await bare.mark_platform_online("qq")
        with pytest.raises(RuntimeError, match="sender"):
            await bare.replay_messages("qq")
        await trio.sleep(10)
        assert bare.pending_count("qq") == 1
    peer = Peer()
    buf = MessageBuffer(replay_rate=2.0, deliver=peer.send, auto_replay=False)
    async with running(buf):
        for i in range(5):
            await buf.add_message("qq", "m", i)
        with pytest.raises(PlatformOffline):
            await buf.replay_messages("qq")
        await buf.mark_platform_online("qq")  # auto_replay off: nothing replays by itself
        await trio.sleep(10)
        assert buf.pending_count("qq") == 5
        t0 = trio.current_time()
        done = await buf.replay_messages("qq", 2)
        assert [m.content for m in done] == [0, 1]
        assert trio.current_time() - t0 == 0.5  # two sends at 2/s; no wait after the last
        async with trio.open_nursery() as nursery:
            nursery.start_soon(buf.replay_messages, "qq")
            await trio.sleep(0.25)  # the first one waits for its slot
            with pytest.raises(Conflict):
                await buf.replay_messages("qq")
        assert peer.contents == [0, 1, 2, 3, 4]
        # The rate is the platform's, not one replay's: the next replay keeps
        # the spacing the first one started.
        assert [t - t0 for t in peer.times] == [0, 0.5, 1.0, 1.5, 2.0]
    # While the background replay runs, an explicit one conflicts.
    peer2 = Peer()
    auto = MessageBuffer(replay_rate=2.0, deliver=peer2.send)
    async with running(auto):
        for i in range(3):
            await auto.add_message("qq", "m", i)
        t0 = trio.current_time()
        await auto.mark_platform_online("qq")
        with pytest.raises(Conflict):
            await auto.replay_messages("qq")
        await peer2.wait_for(3)
        assert [t - t0 for t in peer2.times] == [0, 0.5, 1.0]


async def test_replay_messages_stops_at_first_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer(fail_on={2})
    buf = MessageBuffer(replay_rate=100, deliver=peer.send, auto_replay=False)
    async with running(buf):
        for i in range(5):
            await buf.add_message("qq", "m", i)
        await buf.mark_platform_online("qq")
        done = await buf.replay_messages("qq")
        assert [m.content for m in done] == [0, 1]
        assert (await contents(buf, "qq"))[0] == 2


# --------------------------------------------------------------------------
# durability


def _store(tmp: Path) -> Store:
    return Store(tmp / "nekobot.db")


async def test_group_commit_add_returns_after_commit(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.open()
    commits = 0
    run = store.run

    async def counting_run(fn: Any) -> Any:
        nonlocal commits
        commits += 1
        return await run(fn)

    store.run = counting_run  # type: ignore[method-assign]
    buf = MessageBuffer(1000, store=store)
    with trio.fail_after(20):
        async with running(buf):
            before = commits
            key = await buf.add_message("qq", "send_msg", {"n": 1})
            # Visible to another connection as soon as add_message returned.
            other = sqlite3.connect(tmp_path / "nekobot.db")
            rows = other.execute("SELECT message_key FROM buffer_messages").fetchall()
            other.close()
            assert rows == [(key,)]
            assert commits == before + 1
            before = commits
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(buf.add_message, "qq", "m", i)
            assert commits - before < 200  # batches, not one commit per message
            assert buf.get_buffer_stats().size == 201
    await store.close()


async def test_durable_reopen_keeps_order_and_ttl(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.open()
    buf = MessageBuffer(100, "priority", store=store)
    prios = [LOW, HIGH, NORMAL, HIGH, LOW, NORMAL]
    with trio.fail_after(20):
        async with running(buf):
            for i, p in enumerate(prios):
                await buf.add_message("qq", "send_group_msg", {"i": i}, p, ttl=1000)
                await buf.add_message("tg", "m", i, ttl=math.inf)
            await buf.add_message("tg", "m", "will expire", ttl=1000)
            before_qq = await buf.get_messages("qq", None)
            before_tg = await buf.get_messages("tg", None)
            await buf.mark_platform_online("tg")  # no sender: stays
        await store.close()
        # The bot was down past one message's wall-clock deadline.
        conn = sqlite3.connect(tmp_path / "nekobot.db")
        conn.execute(
            "UPDATE buffer_messages SET expires_wall = 1 WHERE content = ?", ['"will expire"']
        )
        conn.commit()
        conn.close()

        store2 = _store(tmp_path)
        await store2.open()
        peer = Peer()
        buf2 = MessageBuffer(100, "priority", store=store2, deliver=peer.send)
        async with running(buf2):
            after_qq = await buf2.get_messages("qq", None)
            assert [m.message for m in after_qq] == [m.message for m in before_qq]
            assert [m.message.content["i"] for m in after_qq] == [1, 3, 2, 5, 0, 4]
            assert 990 < after_qq[0].expires_in <= 1000
            after_tg = await buf2.get_messages("tg", None)
            assert [m.message for m in after_tg] == [m.message for m in before_tg[:-1]]
            assert after_tg[0].expires_in == math.inf
            stats = buf2.get_buffer_stats()
            assert (stats.restored_total, stats.expired_total, stats.size) == (13, 1, 12)
            assert not buf2.is_online("tg")  # online state is not durable
            # New messages go behind the restored ones.
            await buf2.add_message("tg", "m", "new")
            await buf2.mark_platform_online("tg")
            await peer.wait_for(7)
            assert peer.contents == [0, 1, 2, 3, 4, 5, "new"]
            await idle(buf2, "tg")
        await store2.close()
        # What was replayed is gone from the file too.
        conn = sqlite3.connect(tmp_path / "nekobot.db")
        (n,) = conn.execute("SELECT count(*) FROM buffer_messages").fetchone()
        conn.close()
        assert n == 6


class FakeMonitor:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, Any, str]] = []

    def fire_alert(self, key: str, level: Any, message: str, **kw: Any) -> None:
        self.alerts.append((key, level, message))

    def clear_alert(self, key: str) -> None:
        pass

    def record_metric(self, *args: Any, **kw: Any) -> None:
        pass


async def test_corrupt_database_is_moved_aside_and_alerted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "nekobot.db"
    path.write_bytes(b"this is not an SQLite database\n" * 200)
    store = Store(path)
    await store.open()
    monitor = FakeMonitor()
    buf = MessageBuffer(store=store, monitor=monitor)
    with trio.fail_after(20), caplog.at_level(logging.ERROR, "nekobot.buffer"):
        async with running(buf):
            assert buf.get_buffer_stats().size == 0
            await buf.add_message("qq", "m", "works")
            assert await contents(buf, "qq") == ["works"]
    await store.close()
    assert store.recovered_from is not None
    aside = await trio.Path(store.recovered_from).read_bytes()
    assert aside.startswith(b"this is not an SQLite")
    from nekobot.monitor.status_monitor import AlertLevel

    [(key, level, message)] = monitor.alerts
    assert key == "storage:corrupt" and level is AlertLevel.ERROR
    assert store.recovered_from in message
    assert any("corrupt" in r.getMessage() for r in caplog.records)


class BrokenStore(Store):
    async def run(self, fn: Any) -> Any:
        if getattr(self, "broken", False):
            raise sqlite3.OperationalError("disk I/O error")
        return await super().run(fn)


async def test_failed_commit_fails_add_message(tmp_path: Path) -> None:
    store = BrokenStore(tmp_path / "nekobot.db")
    await store.open()
    monitor = FakeMonitor()
    buf = MessageBuffer(store=store, monitor=monitor)
    with trio.fail_after(20):
        async with running(buf):
            await buf.add_message("qq", "m", "kept")
            store.broken = True  # type: ignore[attr-defined]
            with pytest.raises(sqlite3.OperationalError):
                await buf.add_message("qq", "m", "lost")
            assert await contents(buf, "qq") == ["kept"]
            assert buf.get_buffer_stats().buffered_total == 1
            assert [a[0] for a in monitor.alerts] == ["buffer:store_error"]
    await store.close()


async def test_from_config() -> None:
    cfg = BufferConfig(
        max_size=7,
        platform_max_size={"qq": 3},
        global_max_size=50,
        policy="lifo",
        overflow_strategy="drop_low_priority",
        default_ttl=12.0,
        replay_rate=3.0,
        durable=False,
    )
    buf = MessageBuffer.from_config(cfg, store=Store(":memory:"))
    assert buf.store is None  # durable = false: memory only
    assert (buf.policy, buf.overflow_strategy) == (
        BufferPolicy.LIFO,
        OverflowStrategy.DROP_LOW_PRIORITY,
    )
    assert (buf.max_size, buf.platform_max_size, buf.global_max_size) == (7, {"qq": 3}, 50)
    assert (buf.default_ttl, buf.replay_rate) == (12.0, 3.0)


# --------------------------------------------------------------------------
# model test: random operations against a plain-list model (Hypothesis)


class _Model:
    """The specification, written as plainly as possible."""

    def __init__(self, policy: str, strategy: str) -> None:
        self.policy, self.strategy = policy, strategy
        self.queues: dict[str, list[tuple[int, int, float, str]]] = {"a": [], "b": []}
        self.max = {"a": 3, "b": 2}
        self.global_max = 4
        self.seq = 0
        self.dropped: dict[str, int] = {}
        self.expired = 0
        self.replayed = 0
        # backlog = what was queued when the platform last came online (seq <=
        # backlog); only the backlog is rate-limited, one slot per interval.
        self.backlog = {"a": 0, "b": 0}
        self.next_slot = {"a": -math.inf, "b": -math.inf}

    def reconnect(self, pid: str) -> None:
        self.backlog[pid] = self.seq
        self.next_slot[pid] = -math.inf

    def expire(self, now: float) -> None:
        for pid, q in self.queues.items():
            keep = [it for it in q if it[2] > now]
            self.expired += len(q) - len(keep)
            self.queues[pid] = keep

    def add(self, pid: str, prio: int, ttl: float | None, now: float) -> str:
        self.expire(now)
        self.seq += 1
        name = f"{pid}{self.seq}"
        item = (self.seq, prio, now + (5.0 if ttl is None else ttl), name)
        q = self.queues[pid]
        global_full = sum(map(len, self.queues.values())) >= self.global_max
        if len(q) >= self.max[pid] or global_full:
            if self.strategy == "drop_newest" or not q:
                victim = item
            elif self.strategy == "drop_oldest":
                victim = min(q)
            else:
                low = min(q, key=lambda it: (it[1], it[0]))
                victim = item if prio < low[1] else low
            reason = "global_full" if not q else self.strategy
            self.dropped[reason] = self.dropped.get(reason, 0) + 1
            if victim is item:
                return name
            q.remove(victim)
        q.append(item)
        return name

    def order(self, pid: str) -> list[str]:
        q = self.queues[pid]
        if self.policy == "fifo":
            items = sorted(q)
        elif self.policy == "lifo":
            items = sorted(q, reverse=True)
        else:
            items = sorted(q, key=lambda it: (-it[1], it[0]))
        return [it[3] for it in items]

    def replay(self, pid: str, k: int, t: float, interval: float) -> tuple[list[str], float]:
        out: list[str] = []
        while len(out) < k:
            self.expire(t)
            order = self.order(pid)
            if not order:
                break
            [head] = [it for it in self.queues[pid] if it[3] == order[0]]
            if head[0] <= self.backlog[pid]:
                if t < self.next_slot[pid]:
                    t = self.next_slot[pid]  # wait for the slot, then look again
                    continue
                self.next_slot[pid] = t + interval
            out.append(order[0])
            self.queues[pid] = [it for it in self.queues[pid] if it[3] != order[0]]
            self.replayed += 1
        return out, t


buffer_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.sampled_from(["a", "b"]),
            st.integers(min_value=1, max_value=4),
            st.sampled_from([None, 1.0, 2.5, math.inf]),
        ),
        st.tuples(st.just("wait"), st.sampled_from([0.25, 0.5, 1.0, 3.0])),
        st.tuples(st.just("replay"), st.sampled_from(["a", "b"]), st.integers(0, 4)),
        st.tuples(st.just("reconnect"), st.sampled_from(["a", "b"])),
    ),
    max_size=40,
)
"""``("add", pid, priority, ttl)``, ``("wait", seconds)``, ``("replay", pid, max_count)``,
``("reconnect", pid)`` (offline then online: what is queued becomes backlog)."""


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["fifo", "lifo", "priority"]),
    strategy=st.sampled_from(["drop_oldest", "drop_newest", "drop_low_priority"]),
    ops=buffer_ops,
)
def test_model(policy: str, strategy: str, ops: list[tuple[Any, ...]]) -> None:
    model = _Model(policy, strategy)

    async def main() -> None:
        peer = Peer()
        buf = MessageBuffer(
            3,
            policy,
            overflow_strategy=strategy,
            platform_max_size={"b": 2},
            global_max_size=4,
            default_ttl=5.0,
            replay_rate=4.0,
            deliver=peer.send,
            auto_replay=False,
        )
        async with running(buf):
            for pid in ("a", "b"):
                await buf.mark_platform_online(pid)  # auto_replay off: nothing replays by itself
            for op in ops:
                now = trio.current_time()
                if op[0] == "add":
                    _, pid, prio, ttl = op
                    name = model.add(pid, prio, ttl, now)
                    await buf.add_message(pid, "m", name, prio, ttl)
                elif op[0] == "wait":
                    await trio.sleep(op[1])
                elif op[0] == "reconnect":
                    model.reconnect(op[1])
                    await buf.mark_platform_offline(op[1])
                    await buf.mark_platform_online(op[1])
                else:
                    _, pid, k = op
                    before = len(peer.got)
                    done = await buf.replay_messages(pid, k)
                    expected, t_end = model.replay(pid, k, now, 0.25)
                    assert [m.content for m in done] == expected == peer.contents[before:]
                    assert trio.current_time() == t_end
                model.expire(trio.current_time())
                for pid in ("a", "b"):
                    assert await contents(buf, pid) == model.order(pid), op
                stats = buf.get_buffer_stats()
                assert stats.dropped == model.dropped
                assert (stats.expired_total, stats.replayed_total) == (
                    model.expired,
                    model.replayed,
                )
                assert stats.size == sum(map(len, model.queues.values()))
                assert stats.buffered_total == stats.size + stats.replayed_total + (
                    stats.expired_total + sum(stats.dropped.values())
                )

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_link_errors_never_drop_a_message(autojump_clock: trio.testing.MockClock) -> None:
    # The platform's link died without mark_platform_offline (e.g. its actor
    # crashed): sends raise PlatformOffline. Retried with capped backoff, never
    # counted as refusals, so nothing is dropped however long it lasts.
    peer = Peer(fail_on=set(range(10)), exc=PlatformOffline)
    buf = MessageBuffer(replay_rate=10, retry_interval=1.0, max_send_attempts=2, deliver=peer.send)
    async with running(buf):
        for i in range(3):
            await buf.add_message("qq", "m", i, ttl=math.inf)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await peer.wait_for(3)
        assert peer.contents == [0, 1, 2]
        # backoff 1, 2, 4, ..., 60 (capped) between the 10 failures
        assert peer.times[0] - t0 == sum(min(2.0**i, 60.0) for i in range(10))
        assert buf.get_buffer_stats().dropped == {}


async def test_link_back_during_a_failed_send_retries_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer(fail_on={0})
    buf = MessageBuffer(replay_rate=10, retry_interval=5.0, deliver=peer.send)

    async def flap(msg: OutboundMessage) -> None:
        if peer.calls == 1:  # the link drops and returns while the send is failing
            await buf.mark_platform_offline("qq")
            await buf.mark_platform_online("qq")

    peer.on_send = flap
    async with running(buf):
        await buf.add_message("qq", "m", "x")
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await peer.wait_for(1)
        assert peer.times == [t0]  # no 5 s backoff: the link is new
        assert peer.calls == 2


async def test_a_snapshot_never_changes_after_it_was_read() -> None:
    buf = MessageBuffer()
    async with running(buf):
        await buf.add_message("qq", "m", "a")
        before = buf.snapshot
        assert before is not None
        await buf.add_message("qq", "m", "b")
        await buf.mark_platform_online("tg")
        assert before.queues["qq"].stats.size == 1 and "tg" not in before.queues
        assert before.size == 1
        after = buf.snapshot
        assert after is not None and after.queues["qq"].stats.size == 2
        assert buf.is_online("tg") and buf.pending_count("qq") == 2
