"""Odd input from peers and plugins never takes the buffer down (issue 10).

Each bad value is refused to its caller with ``InvalidRequest`` naming the
field, and the buffer keeps serving: the next good call works and nothing was
counted. Before, a queue name with a lone surrogate (``"qq@\\ud800"``, e.g. an
account id echoed from a peer's JSON) reached SQLite, whose UTF-8 encoding
raised inside the actor's loop and ended the buffer (and the bot with it).

Policy: no network; durable buffers use a temporary directory and the real
clock bounded by ``trio.fail_after``; time-based tests use ``autojump_clock``.
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
import trio.testing

from nekobot.buffer.message_buffer import MessageBuffer
from nekobot.errors import InvalidRequest
from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.storage import Store


@asynccontextmanager
async def running(buf: MessageBuffer) -> AsyncIterator[MessageBuffer]:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(buf.run)
            yield buf
            nursery.cancel_scope.cancel()


def nested(depth: int) -> list[Any]:
    root: list[Any] = []
    node = root
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


BAD_ADDS: list[tuple[dict[str, Any], str]] = [
    ({"platform_id": "qq@\ud800"}, "platform_id"),
    ({"platform_id": "\udcff"}, "platform_id"),
    ({"platform_id": ""}, "platform_id"),
    ({"platform_id": 12}, "platform_id"),
    ({"message_type": "send\udc80msg"}, "message_type"),
    ({"message_type": None}, "message_type"),
    ({"message_key": "k\ud83d"}, "message_key"),
    ({"message_key": 7}, "message_key"),
    ({"priority": True}, "priority"),
    ({"priority": 9}, "priority"),
    ({"priority": math.nan}, "priority"),
    ({"priority": "HIGH"}, "priority"),
    ({"ttl": math.nan}, "ttl"),
    ({"ttl": -math.inf}, "ttl"),
    ({"ttl": 0}, "ttl"),
    ({"ttl": 10**400}, "ttl"),
    ({"ttl": "60"}, "ttl"),
    ({"content": {"x": math.inf}}, "JSON"),
    ({"content": {"x": object()}}, "JSON"),
    ({"content": {(1, 2): "tuple key"}}, "JSON"),
    ({"content": nested(100_000)}, "JSON"),
    ({"content": 10**5000}, "JSON"),
]


@pytest.mark.parametrize(("override", "field"), BAD_ADDS)
async def test_bad_add_is_refused_and_the_durable_buffer_keeps_serving(
    tmp_path: Path, override: dict[str, Any], field: str
) -> None:
    store = Store(tmp_path / "nekobot.db")
    buf = MessageBuffer(store=store)
    args: dict[str, Any] = {"platform_id": "qq", "message_type": "m", "content": "x"}
    args.update(override)
    async with running(buf):
        with pytest.raises(InvalidRequest, match=field):
            await buf.add_message(**args)
        assert await buf.add_message("qq", "m", "still works") != ""
        stats = buf.get_buffer_stats()
        assert (stats.size, stats.buffered_total) == (1, 1)
    await store.close()


@pytest.mark.parametrize("name", ["qq@\ud800", "", None, 5])
async def test_bad_queue_names_are_refused_everywhere(name: Any) -> None:
    buf = MessageBuffer()
    async with running(buf):
        for call in (
            buf.mark_platform_online(name),
            buf.mark_platform_offline(name),
            buf.get_messages(name),
        ):
            with pytest.raises(InvalidRequest, match="platform_id"):
                await call
        await buf.mark_platform_online("qq")
        assert buf.is_online("qq")
        assert list(buf.get_buffer_stats().platforms) == ["qq"]


@pytest.mark.parametrize("value", [-1, 1.5, "3", True])
async def test_bad_counts_are_refused(value: Any) -> None:
    async def deliver(msg: OutboundMessage) -> SendReceipt:
        return SendReceipt(platform_id=msg.platform_id, message_key=msg.message_key)

    buf = MessageBuffer(deliver=deliver)
    async with running(buf):
        with pytest.raises(InvalidRequest, match="limit"):
            await buf.get_messages("qq", value)
        with pytest.raises(InvalidRequest, match="max_count"):
            await buf.replay_messages("qq", value)


async def test_unknown_requests_are_refused_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    buf = MessageBuffer()
    async with running(buf):
        with pytest.raises(InvalidRequest, match="does not accept str"):
            await buf.ref.call("drop table")
        with caplog.at_level(logging.WARNING, "nekobot.buffer"):
            await buf.ref.cast(("junk",))
            await buf.add_message("qq", "m", "after")
        assert "unknown cast" in caplog.text
        assert buf.pending_count("qq") == 1


async def test_content_with_lone_surrogates_survives_a_restart(tmp_path: Path) -> None:
    content = {"text": "half a pair \ud83d", "\udc00key": ["\x00nul"]}
    store = Store(tmp_path / "nekobot.db")
    async with running(MessageBuffer(store=store)) as buf:
        await buf.add_message("qq", "send_msg", content, message_key="k1")
    await store.close()
    store = Store(tmp_path / "nekobot.db")
    async with running(MessageBuffer(store=store)) as buf:
        [restored] = await buf.get_messages("qq")
        assert restored.message.content == content
        assert restored.message.message_key == "k1"
    await store.close()


async def test_undecodable_rows_are_dropped_at_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "nekobot.db")
    async with running(MessageBuffer(store=store)) as buf:
        await buf.add_message("qq", "m", "good", ttl=math.inf)
    await store.close()
    conn = sqlite3.connect(tmp_path / "nekobot.db")
    rows = [
        # not UTF-8; a created_at that is no number; an unknown priority; bad JSON
        "(100, CAST(x'71ff71' AS TEXT), 'k100', 'm', '1', 2, 1.0, NULL)",
        "(101, 'qq', 'k101', 'm', '1', 2, 'yesterday', NULL)",
        "(102, 'qq', 'k102', 'm', '1', 7, 1.0, NULL)",
        "(103, 'qq', 'k103', 'm', '{not json', 2, 1.0, NULL)",
    ]
    conn.execute(f"INSERT INTO buffer_messages VALUES {', '.join(rows)}")
    conn.commit()
    conn.close()
    store = Store(tmp_path / "nekobot.db")
    with caplog.at_level(logging.ERROR, "nekobot.buffer"):
        async with running(MessageBuffer(store=store)) as buf:
            assert [m.message.content for m in await buf.get_messages("qq")] == ["good"]
            stats = buf.get_buffer_stats()
            assert stats.platforms["qq"].dropped == {"corrupt": 3}
            key = await buf.add_message("qq", "m", "new")  # seq goes past the bad rows
            assert key
    await store.close()
    assert caplog.text.count("undecodable") == 4
    conn = sqlite3.connect(tmp_path / "nekobot.db")
    seqs = [s for (s,) in conn.execute("SELECT seq FROM buffer_messages ORDER BY seq")]
    conn.close()
    assert len(seqs) == 2 and seqs[-1] > 103  # the bad rows were deleted


class Interrupt(BaseException):
    """A custom BaseException, as a platform's send might raise."""


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, GeneratorExit, Interrupt])
async def test_any_base_exception_from_deliver_is_a_refused_send(
    exc: type[BaseException], autojump_clock: trio.testing.MockClock
) -> None:
    calls: list[tuple[Any, float]] = []
    done = trio.Event()

    async def deliver(msg: OutboundMessage) -> SendReceipt:
        calls.append((msg.content, trio.current_time()))
        if len(calls) == 1:
            raise exc("platform bug")
        done.set()
        return SendReceipt(platform_id=msg.platform_id, message_key=msg.message_key)

    buf = MessageBuffer(deliver=deliver, retry_interval=2.0, replay_rate=100)
    async with running(buf):
        await buf.add_message("qq", "m", "a")
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await done.wait()
        # refused once, retried after the backoff's first delay, then acknowledged
        assert calls == [("a", t0), ("a", t0 + 2.0)]
        await trio.testing.wait_all_tasks_blocked()
        stats = buf.get_buffer_stats()
        assert (stats.replayed_total, stats.size, stats.dropped) == (1, 0, {})
