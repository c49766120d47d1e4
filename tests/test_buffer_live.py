"""Live traffic through the buffer while the platform is online (nekobot.message_buffer).

The user-reported bug: one message buffered while offline made every later
reply queue behind it and go out at ``replay_rate``, and ``max_size`` with
``drop_oldest`` then silently threw most of them away. These tests pin down the
fix: only the backlog (what was queued when the platform came online) is
rate-limited; messages added while online follow it as fast as the platform
acknowledges; a full queue of an online platform makes ``add_message`` wait
(backpressure) instead of dropping; every drop and expiry is a Prometheus
series, and overflow drops open (and later clear) a WARNING alert.

All under the ``autojump_clock`` fixture with exact Trio-clock schedules.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from nekobot.buffer.message_buffer import MessageBuffer
from nekobot.config.schema import MonitorConfig
from nekobot.messages import MessagePriority, OutboundMessage, SendReceipt
from nekobot.monitor.status_monitor import AlertLevel, StatusMonitor


@asynccontextmanager
async def running(buf: MessageBuffer) -> AsyncIterator[MessageBuffer]:
    with trio.fail_after(10**7):  # a hang fails at once under the autojump clock
        async with trio.open_nursery() as nursery:
            await nursery.start(buf.run)
            yield buf
            nursery.cancel_scope.cancel()


class Peer:
    """Acknowledges every send at once (no checkpoint), unless ``gate`` is closed."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.times: list[float] = []
        self.gate: trio.Event | None = None
        self._changed = trio.Event()

    async def send(self, msg: OutboundMessage) -> SendReceipt:
        if self.gate is not None:
            await self.gate.wait()
        self.got.append(msg.content)
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()
        return SendReceipt(platform_id=msg.platform_id, message_key=msg.message_key)

    async def wait_for(self, n: int) -> None:
        while len(self.got) < n:
            await self._changed.wait()


async def drained(buf: MessageBuffer, pid: str) -> None:
    while buf.pending_count(pid) or buf.get_buffer_stats().platforms[pid].replaying:  # noqa: ASYNC110
        await trio.sleep(0.001)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus text exposition, or ``None``."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    m = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


# --------------------------------------------------------------------------
# only the backlog is rate-limited


async def test_backlog_at_replay_rate_then_live_adds_without_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=1.0, deliver=peer.send)
    async with running(buf):
        for name in ("b0", "b1", "b2"):
            await buf.add_message("qq", "m", name)  # offline: the backlog
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await trio.sleep(0.5)
        assert buf.pending_count("qq") == 2  # b1, b2 still waiting for their slots
        for i in range(100):  # live: added while online, queued behind the backlog
            await buf.add_message("qq", "m", i)
        await peer.wait_for(103)
        await drained(buf, "qq")
        assert peer.got == ["b0", "b1", "b2", *range(100)]
        # The backlog at 1/s; every live message right after b2, no added delay.
        assert [t - t0 for t in peer.times] == [0, 1, 2] + [2] * 100
        stats = buf.get_buffer_stats()
        assert (stats.replayed_total, stats.dropped, stats.size) == (103, {}, 0)
        # Drained: a later add (e.g. a direct send that failed) goes out at once.
        t_add = trio.current_time()
        await buf.add_message("qq", "m", "late")
        await peer.wait_for(104)
        assert peer.times[-1] == t_add


async def test_reconnect_makes_what_is_queued_backlog_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    buf = MessageBuffer(replay_rate=2.0, deliver=peer.send)
    async with running(buf):
        await buf.mark_platform_online("qq")
        await buf.mark_platform_offline("qq")
        for i in range(3):
            await buf.add_message("qq", "m", i)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await buf.mark_platform_online("qq")  # already online: changes nothing
        await peer.wait_for(3)
        assert [t - t0 for t in peer.times] == [0, 0.5, 1.0]


# --------------------------------------------------------------------------
# the reported scenario, at the buffer level


async def test_one_backlog_message_then_a_burst_larger_than_max_size(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # max_size 50 with drop_oldest and the default 50/s: the old buffer sent the
    # burst at 50/s and dropped all but ~50 of it.
    peer = Peer()
    buf = MessageBuffer(50, overflow_strategy="drop_oldest", replay_rate=50.0, deliver=peer.send)
    async with running(buf):
        await buf.add_message("qq", "send_group_msg", "offline")
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        # One producer sending in order, like a handler answering each /ping.
        for i in range(3000):
            await buf.add_message("qq", "send_group_msg", i)
        await peer.wait_for(3001)
        await drained(buf, "qq")
        assert peer.got == ["offline", *range(3000)]  # nothing dropped, order kept
        assert set(peer.times) == {t0}  # not throttled: all at once (acks are instant)
        stats = buf.get_buffer_stats()
        assert stats.dropped == {}
        assert stats.replayed_total == 3001


async def test_concurrent_burst_waits_for_room_instead_of_dropping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    peer.gate = trio.Event()  # the platform is slow until the gate opens
    buf = MessageBuffer(20, overflow_strategy="drop_oldest", deliver=peer.send)
    async with running(buf):
        await buf.add_message("qq", "m", "offline")
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        done: list[float] = []

        async def one(i: int) -> None:
            await buf.add_message("qq", "m", i)
            done.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(one, i)
            await trio.sleep(1.0)
            st = buf.get_buffer_stats().platforms["qq"]
            assert (st.size, st.dropped) == (20, {})  # full; the rest wait
            assert len(done) == 19
            peer.gate.set()
        await peer.wait_for(501)
        await drained(buf, "qq")
        assert peer.got[0] == "offline"
        assert sorted(peer.got[1:]) == list(range(500))  # each exactly once
        assert max(done) == t0 + 1.0
        st = buf.get_buffer_stats().platforms["qq"]
        assert st.dropped == {} and st.waited_total == 500 - 19


async def test_full_online_queue_drops_after_overflow_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    peer.gate = trio.Event()  # the platform never answers
    buf = MessageBuffer(2, overflow_strategy="drop_oldest", overflow_wait=5.0, deliver=peer.send)
    async with running(buf):
        await buf.mark_platform_online("qq")
        await buf.add_message("qq", "m", "a")  # in flight, stuck
        await buf.add_message("qq", "m", "b")
        t0 = trio.current_time()
        await buf.add_message("qq", "m", "c")  # waits 5 s, then drop_oldest: b
        assert trio.current_time() == t0 + 5.0
        st = buf.get_buffer_stats().platforms["qq"]
        assert (st.dropped, st.waited_total) == ({"drop_oldest": 1}, 1)
        assert [m.message.content for m in await buf.get_messages("qq", None)] == ["a", "c"]
        # Going offline decides a waiting add at once.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(buf.add_message, "qq", "m", "d")
            await trio.sleep(1.0)
            assert buf.get_buffer_stats().platforms["qq"].dropped == {"drop_oldest": 1}
            t1 = trio.current_time()
            await buf.mark_platform_offline("qq")
        assert trio.current_time() == t1
        assert buf.get_buffer_stats().platforms["qq"].dropped == {"drop_oldest": 2}
        peer.gate.set()


async def test_offline_overflow_still_drops_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buf = MessageBuffer(2, overflow_strategy="drop_oldest", deliver=Peer().send)
    async with running(buf):
        t0 = trio.current_time()
        for name in "abc":
            await buf.add_message("qq", "m", name)
        assert trio.current_time() == t0
        assert buf.get_buffer_stats().dropped == {"drop_oldest": 1}


# --------------------------------------------------------------------------
# what the operator sees: metrics and the overflow alert


async def test_drops_expiries_and_replays_are_prometheus_series(
    autojump_clock: trio.testing.MockClock,
) -> None:
    monitor = StatusMonitor.from_config(MonitorConfig())
    peer = Peer()
    buf = MessageBuffer(
        2, overflow_strategy="drop_oldest", monitor=monitor, replay_rate=10, deliver=peer.send
    )
    async with trio.open_nursery() as nursery, running(buf):
        await nursery.start(monitor.run)
        await buf.add_message("qq", "m", "short", ttl=1.0)
        await buf.add_message("qq", "m", "a")
        await buf.add_message("qq", "m", "b")  # full, offline: drops "short"
        await buf.add_message("tg", "m", "x", ttl=1.0)
        await trio.sleep(1.0)  # "x" expires
        await trio.testing.wait_all_tasks_blocked()
        await monitor.flush()
        text = monitor.exposition()[0].decode()
        assert (
            sample(text, "nekobot_buffer_dropped_total", platform_id="qq", reason="drop_oldest")
            == 1
        )
        assert sample(text, "nekobot_buffer_expired_total", platform_id="tg") == 1
        assert sample(text, "nekobot_buffer_size", platform_id="qq") == 2
        assert sample(text, "nekobot_buffer_size", platform_id="tg") == 0
        assert sample(text, "nekobot_buffer_added_total", platform_id="qq") == 3
        await buf.mark_platform_online("qq")
        await peer.wait_for(2)
        await drained(buf, "qq")
        await monitor.flush()
        text = monitor.exposition()[0].decode()
        assert sample(text, "nekobot_buffer_replayed_total", platform_id="qq") == 2
        assert sample(text, "nekobot_buffer_size", platform_id="qq") == 0
        # The series agree with get_buffer_stats.
        stats = buf.get_buffer_stats()
        assert (stats.replayed_total, stats.expired_total, stats.dropped) == (
            2,
            1,
            {"drop_oldest": 1},
        )
        nursery.cancel_scope.cancel()


async def test_overflow_alert_opens_updates_and_clears_when_drained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    monitor = StatusMonitor.from_config(MonitorConfig())
    peer = Peer()
    buf = MessageBuffer(
        3, overflow_strategy="drop_newest", monitor=monitor, replay_rate=10, deliver=peer.send
    )
    async with trio.open_nursery() as nursery, running(buf):
        await nursery.start(monitor.run)
        for i in range(4):
            await buf.add_message("qq", "m", i)  # offline: the 4th is dropped
        await monitor.flush()
        [alert] = monitor.get_alerts()
        assert alert.key == "buffer:overflow:qq"
        assert alert.level is AlertLevel.WARNING
        assert alert.platform_id == "qq"
        assert alert.metric_name == "nekobot_buffer_dropped_total"
        assert "1 message(s) dropped" in alert.message
        await buf.add_message("qq", "m", 4)
        await buf.add_message("qq", "m", 5)
        await monitor.flush()
        [alert2] = monitor.get_alerts()
        assert alert2.alert_id == alert.alert_id  # one open alert, updated
        assert "3 message(s) dropped" in alert2.message
        assert buf.get_buffer_stats().dropped == {"drop_newest": 3}
        # Another platform's overflow is its own alert.
        for i in range(4):
            await buf.add_message("tg", "m", i)
        await monitor.flush()
        assert sorted(a.key for a in monitor.get_alerts()) == [
            "buffer:overflow:qq",
            "buffer:overflow:tg",
        ]
        await buf.mark_platform_online("qq")
        await peer.wait_for(3)
        await drained(buf, "qq")
        await monitor.flush()
        [still_open] = monitor.get_alerts()
        assert still_open.key == "buffer:overflow:tg"
        [resolved] = [a for a in monitor.get_alerts(include_resolved=True) if a.resolved]
        assert resolved.alert_id == alert.alert_id and resolved.resolved_by == "clear"
        # A new overflow after draining opens a new alert counting from zero.
        await buf.mark_platform_offline("qq")
        for i in range(4):
            await buf.add_message("qq", "m", f"again{i}")
        await monitor.flush()
        new = [a for a in monitor.get_alerts() if a.key == "buffer:overflow:qq"]
        assert len(new) == 1 and new[0].alert_id != alert.alert_id
        assert "1 message(s) dropped" in new[0].message
        nursery.cancel_scope.cancel()


async def test_monitor_failures_never_break_the_buffer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken:
        def record_metric(self, *a: Any, **kw: Any) -> None:
            raise RuntimeError("monitor bug")

        def fire_alert(self, *a: Any, **kw: Any) -> None:
            raise RuntimeError("monitor bug")

        def clear_alert(self, *a: Any, **kw: Any) -> None:
            raise RuntimeError("monitor bug")

    buf = MessageBuffer(1, monitor=Broken(), default_ttl=math.inf)
    async with running(buf):
        for i in range(3):
            await buf.add_message("qq", "m", i)
        assert buf.get_buffer_stats().dropped == {"drop_oldest": 2}


async def test_priority_live_message_does_not_wait_for_the_backlog_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Peer()
    buf = MessageBuffer(1000, "priority", replay_rate=1.0, deliver=peer.send)
    async with running(buf):
        for name in ("b0", "b1", "b2"):
            await buf.add_message("qq", "m", name, MessagePriority.NORMAL)
        t0 = trio.current_time()
        await buf.mark_platform_online("qq")
        await trio.sleep(0.5)
        await buf.add_message("qq", "m", "urgent", MessagePriority.HIGH)
        await buf.add_message("qq", "m", "low", MessagePriority.LOW)
        await peer.wait_for(5)
        assert peer.got == ["b0", "urgent", "b1", "b2", "low"]
        # "urgent" (live, first in line) at once; the backlog keeps its slots.
        assert [t - t0 for t in peer.times] == [0, 0.5, 1, 2, 2]


# --------------------------------------------------------------------------
# the reported scenario end to end: a real bot, a reverse OneBot v11 peer


@pytest.mark.slow
async def test_bot_answers_every_ping_after_one_buffered_message(tmp_path: Path) -> None:
    import json

    import trio_websocket

    from nekobot.app import open_nekobot
    from tests.onebot_peer import event, ok_response, open_reverse_peer

    group = json.loads(event(lambda e: e.get("message_type") == "group"))
    n = 3000
    config = {
        "bot": {"data_dir": str(tmp_path / "data"), "plugins": ["nekobot.plugins.echo:setup"]},
        "platforms": {
            "qq": {"type": "onebot_v11", "mode": "reverse", "host": "127.0.0.1", "port": 0}
        },
    }
    with trio.fail_after(120):
        async with open_nekobot(config) as bot:
            receipt = await bot.send("qq", "send_group_msg", {"group_id": 1, "message": "hi"})
            assert receipt.buffered  # no peer yet
            platform: Any = bot.runtime_manager.get_platform_actor("qq")
            actions: list[dict[str, Any]] = []
            all_in = trio.Event()
            async with open_reverse_peer(platform.bound_port) as peer:

                async def serve() -> None:
                    try:
                        while True:
                            action = await peer.recv_action()
                            actions.append(action)
                            if len(actions) == n + 1:
                                all_in.set()
                            await peer.send(ok_response(action["echo"]))
                    except trio_websocket.ConnectionClosed:
                        return

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(serve)
                    for i in range(n):
                        e = dict(group, message_id=100_000 + i, raw_message="/ping")
                        e["message"] = [{"type": "text", "data": {"text": "/ping"}}]
                        await peer.send(json.dumps(e))
                    with trio.fail_after(60):
                        await all_in.wait()
                    nursery.cancel_scope.cancel()
            stats = bot.message_buffer.get_buffer_stats()
            assert stats.dropped == {}
            assert stats.expired_total == 0
            assert actions[0]["params"]["message"] == "hi"  # the buffered one first
            assert [a["params"]["message"] for a in actions[1:]] == ["pong"] * n
            text = bot.status_monitor.exposition()[0].decode()
            assert "nekobot_buffer_size" in text
