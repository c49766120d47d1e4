"""OneBot v11 platform over real loopback WebSockets.

Policy (as trio-websocket's own suite): loopback only, port 0, a Trio-clock
``fail_after`` around every I/O test so a bug fails fast instead of hanging,
the ``autojump_clock`` fixture where time matters. Input frames come from
``tests/fixtures/onebot11/*.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from nekobot.errors import (
    CallTimeout,
    ConnectionClosed,
    FrameTooLarge,
    OneBotActionFailed,
    PlatformOffline,
)
from nekobot.messages import OutboundMessage
from nekobot.platforms.base import PlatformContext, load_platform_class
from nekobot.platforms.connection_manager import ConnectionConfig, ReconnectExhausted
from nekobot.platforms.onebot_v11 import (
    AccountOffline,
    OneBotV11Config,
    OneBotV11Platform,
    open_client_websocket,
)
from tests.onebot_peer import (
    EVENTS,
    RESPONSES,
    ForwardPeerServer,
    Peer,
    SilentForwardServer,
    event,
    open_reverse_peer,
    open_silent_reverse_peer,
    reverse_headers,
)

TOKEN = "s3cret"


class Recorder:
    """A PlatformContext that records link changes and alerts."""

    def __init__(self) -> None:
        self.links: list[str] = []
        self.alerts: list[tuple[str, str, str]] = []
        self.context = PlatformContext(
            link_up=self._up, link_down=self._down, raise_alert=self._alert
        )

    async def _up(self, pid: str) -> None:
        self.links.append("up")

    async def _down(self, pid: str) -> None:
        self.links.append("down")

    async def _alert(self, pid: str, level: str, message: str) -> None:
        self.alerts.append((pid, level, message))


@asynccontextmanager
async def running(
    config: OneBotV11Config | None = None,
    connection: ConnectionConfig | None = None,
    recorder: Recorder | None = None,
) -> AsyncIterator[OneBotV11Platform]:
    rec = recorder or Recorder()
    platform = OneBotV11Platform(
        "qq",
        config or OneBotV11Config(port=0, access_token=TOKEN),
        connection=connection,
        context=rec.context,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(platform.run)
        yield platform
        nursery.cancel_scope.cancel()


async def wait_for(pred: Any, step: float = 0.001) -> None:
    """Poll a condition on published state (tests only; the clock is real or autojump)."""
    while not pred():  # noqa: ASYNC110
        await trio.sleep(step)


def emitted(platform: OneBotV11Platform) -> list[Any]:
    return platform.context.emitted


# ---- plugin lookup -----------------------------------------------------------


def test_builtin_type_resolves() -> None:
    assert load_platform_class("onebot_v11") is OneBotV11Platform
    assert OneBotV11Platform.platform_type == "onebot_v11"
    assert OneBotV11Platform.config_class is OneBotV11Config


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="reverse"):
        OneBotV11Config(mode="sideways")
    with pytest.raises(ValueError):
        OneBotV11Config(port=70000)
    with pytest.raises(ValueError):
        OneBotV11Config(max_frame_size=0)


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("port", 70000, "must be 0..65535, got 70000"),
        ("port", -1, "must be 0..65535, got -1"),
        ("mode", "revers", "must be 'reverse' or 'forward', got 'revers'"),
        ("path", "ws", "must start with '/', got 'ws'"),
        ("max_frame_size", 0, "must be > 0, got 0"),
        ("api_timeout", 0, "must be a finite number > 0, got 0.0"),
        ("api_timeout", float("nan"), None),
        ("api_timeout", float("inf"), "must be a finite number > 0, got inf"),
        ("connect_timeout", float("nan"), None),
        ("connect_timeout", float("inf"), "must be a finite number > 0, got inf"),
        ("connect_timeout", -1.5, "must be a finite number > 0, got -1.5"),
    ],
)
def test_config_errors_name_the_key(key: str, value: Any, text: str | None) -> None:
    from nekobot.config.loader import parse_config
    from nekobot.errors import ConfigError, FieldValueError

    with pytest.raises(ConfigError) as info:
        parse_config({"platforms": {"qq": {"type": "onebot_v11", key: value}}})
    (problem,) = info.value.problems
    if text is None:  # NaN: the loader's float check may answer first
        assert problem.startswith(f"platforms.qq.{key}: ") and "nan" in problem
    else:
        assert problem == f"platforms.qq.{key}: {text}"
    with pytest.raises(FieldValueError) as direct:  # built in code: the same check
        OneBotV11Config(**{key: value})
    assert direct.value.field == key


# ---- reverse WebSocket: events -------------------------------------------------


async def test_reverse_fixture_events_are_emitted_in_order_with_exact_ids() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            for frame in EVENTS:
                await peer.send(frame)
            await wait_for(lambda: len(emitted(platform)) == len(EVENTS))
            msgs = emitted(platform)
            expected = [json.loads(line) for line in EVENTS]
            assert [m.message_type for m in msgs] == [e["post_type"] for e in expected]
            assert [m.content for m in msgs] == expected
            assert all(m.platform_id == "qq" for m in msgs)
            keys = [m.dedup_key for m in msgs]
            # signed int32 (negative) and int32 max kept exactly
            assert (10001, -964635551) in keys
            assert (10001, 2147483647) in keys
            assert (10001, 1) in keys and (10001, 77) in keys
            # events without message_id are never deduplicated
            assert [m.dedup_key for m in msgs if "message_id" not in m.content] == [None] * 5
            # lifecycle recorded; heartbeat interval 5000 ms -> timeout 3 x 5 s
            assert platform.lifecycle["10001"]["sub_type"] == "connect"
            stats = platform.get_connection_stats()
            assert stats["heartbeat_timeout"] == 15.0
            assert stats["status"] == "connected"
            assert stats["connections"][0]["self_id"] == "10001"
            assert platform.online


@pytest.mark.parametrize("message_id", [-(2**31), 2**31 - 1, 2**32 - 1, 0, -1, 2**31])
async def test_int32_extremes_exact(message_id: int) -> None:
    base = json.loads(event(lambda e: e.get("message_type") == "private"))
    base["message_id"] = message_id
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            await peer.send(json.dumps(base))
            await wait_for(lambda: emitted(platform))
            (msg,) = emitted(platform)
            assert msg.content["message_id"] == message_id
            assert type(msg.content["message_id"]) is int
            assert msg.dedup_key == (10001, message_id)


async def test_malformed_frames_are_counted_and_dropped_link_stays_open() -> None:
    cfg = OneBotV11Config(port=0, access_token=TOKEN, max_frame_size=4096)
    good = event(lambda e: e.get("message_type") == "group")
    with trio.fail_after(10):
        async with (
            running(cfg) as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            await peer.send("this is not json {")
            await peer.send(good)
            await peer.send("[1, 2, 3]")
            await peer.send('"just a string"')
            await peer.send(good.replace('"post_type":"message",', ""))
            await peer.send(json.dumps({"post_type": 5, "self_id": 1}))
            await peer.ws.send_message(b"\xff\xfe not utf-8")
            oversized = json.loads(good)
            oversized["raw_message"] = "x" * 5000
            await peer.send(json.dumps(oversized))
            await peer.send("猫" * 1400)  # 1400 chars but 4200 UTF-8 bytes: oversized
            await peer.send("[" * 4000)  # nesting deeper than the JSON parser's recursion
            await peer.send(good)
            await wait_for(lambda: len(emitted(platform)) == 2)
            c = platform.counters
            assert c["dropped_not_json"] == 3
            assert c["dropped_not_object"] == 2
            assert c["dropped_no_post_type"] == 2
            assert c["dropped_oversized"] == 2
            assert c["frames_received"] == 11
            assert [m.content for m in emitted(platform)] == [json.loads(good)] * 2
            # the link stayed open: a call still works on it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.answer, {"ok": 1})
                assert await platform.call_api("get_status") == {"ok": 1}
            assert platform.get_connection_stats()["links"] == 1


# ---- reverse WebSocket: handshake -----------------------------------------------


@pytest.mark.parametrize(
    "headers,query",
    [
        (reverse_headers(), ""),
        (reverse_headers(token="wrong"), ""),
        (reverse_headers(), "access_token=wrong"),
        ([*reverse_headers()[:2], (b"Authorization", b"Basic czNjcmV0")], ""),
    ],
)
async def test_reverse_missing_or_wrong_token_is_rejected_401(
    headers: list[tuple[bytes, bytes]], query: str
) -> None:
    with trio.fail_after(10):
        async with running() as platform:
            url = f"ws://127.0.0.1:{platform.bound_port}/onebot/v11/ws"
            if query:
                url += "?" + query
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_client_websocket(url, extra_headers=headers):
                    pass  # pragma: no cover
            assert info.value.status_code == 401
            assert platform.counters["handshakes_rejected_auth"] == 1
            assert not platform.online


async def test_reverse_token_in_query_parameter_is_accepted() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, query=f"access_token={TOKEN}") as peer,
        ):
            await peer.send(EVENTS[0])
            await wait_for(lambda: emitted(platform))
            assert platform.online


async def test_reverse_unknown_path_and_missing_self_id_rejected() -> None:
    with trio.fail_after(10):
        async with running() as platform:
            base = f"ws://127.0.0.1:{platform.bound_port}"
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_client_websocket(
                    base + "/elsewhere", extra_headers=reverse_headers(token=TOKEN)
                ):
                    pass  # pragma: no cover
            assert info.value.status_code == 404
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_client_websocket(
                    base + "/onebot/v11/ws",
                    extra_headers=[(b"Authorization", f"Bearer {TOKEN}".encode())],
                ):
                    pass  # pragma: no cover
            assert info.value.status_code == 400


# ---- calls ------------------------------------------------------------------------


async def test_call_api_matches_responses_by_echo_out_of_order() -> None:
    results: dict[str, Any] = {}
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):

            async def call(action: str) -> None:
                results[action] = await platform.call_api(action, {"n": action})

            async with trio.open_nursery() as nursery:
                for action in ("a", "b", "c"):
                    nursery.start_soon(call, action)
                actions = [await peer.recv_action() for _ in range(3)]
                assert len({json.dumps(a["echo"]) for a in actions}) == 3  # unique echo
                # unmatched responses with non-string echo values: counted, ignored
                for echo in ({"seq": 2}, 3, [1, "x"], None, "nb-999"):
                    await peer.send({"status": "ok", "retcode": 0, "data": "bogus", "echo": echo})
                # answer in reverse order, each with its own echo
                for a in reversed(actions):
                    await peer.send(
                        {"status": "ok", "retcode": 0, "data": a["action"] * 2, "echo": a["echo"]}
                    )
            assert results == {"a": "aa", "b": "bb", "c": "cc"}
            assert platform.counters["responses_unmatched"] == 5
            assert platform.get_connection_stats()["pending_calls"] == 0


async def test_fixture_responses_failed_and_async() -> None:
    failed = json.loads(RESPONSES[2])
    async_ = json.loads(RESPONSES[3])
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):

            async def respond(template: dict[str, Any]) -> None:
                action = await peer.recv_action()
                await peer.send({**template, "echo": action["echo"]})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(respond, failed)
                with pytest.raises(OneBotActionFailed) as info:
                    await platform.call_api("send_msg", {"message": "x"})
            assert info.value.retcode == 100
            assert "message send failed" in str(info.value)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(respond, async_)
                assert await platform.call_api("send_msg_async", {}) is None


async def test_send_shorthands_and_action_names() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            seen: list[dict[str, Any]] = []

            async def serve() -> None:
                for i in range(3):
                    seen.append(await peer.answer({"message_id": -(2**31) + i}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve)
                r1 = await platform.send(
                    OutboundMessage(
                        platform_id="qq",
                        message_type="group",
                        content={"group_id": 30001, "message": "pong"},
                    )
                )
                r2 = await platform.send(
                    OutboundMessage(
                        platform_id="qq",
                        message_type="private",
                        content={"user_id": 20001, "message": "hi"},
                    )
                )
                r3 = await platform.send(
                    OutboundMessage(
                        platform_id="qq",
                        message_type="send_group_msg",
                        content={"group_id": 1, "message": "m"},
                    )
                )
            assert [s["action"] for s in seen] == ["send_msg", "send_msg", "send_group_msg"]
            assert seen[0]["params"] == {
                "group_id": 30001,
                "message": "pong",
                "message_type": "group",
            }
            assert seen[1]["params"]["message_type"] == "private"
            assert "message_type" not in seen[2]["params"]
            assert r1.data == {"message_id": -(2**31)} and r1.platform_id == "qq"
            assert r2.data == {"message_id": -(2**31) + 1}
            assert r3.data == {"message_id": -(2**31) + 2} and not r3.buffered


async def test_oversized_outbound_fails_that_call_only() -> None:
    cfg = OneBotV11Config(port=0, access_token=TOKEN, max_frame_size=2048)
    with trio.fail_after(10):
        async with (
            running(cfg) as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            with pytest.raises(FrameTooLarge):
                await platform.call_api("send_msg", {"message": "猫" * 1000})  # 3000 bytes
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.answer, 7)
                assert await platform.call_api("send_msg", {"message": "猫" * 100}) == 7
            assert platform.counters["calls_failed_oversized"] == 1


async def test_call_timeout_and_offline() -> None:
    with trio.fail_after(10):
        async with running() as platform:
            with pytest.raises(PlatformOffline):
                await platform.call_api("get_status")
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:
                with pytest.raises(CallTimeout):
                    await platform.call_api("get_status", timeout=0.05)
                await peer.recv_action()
                assert platform.get_connection_stats()["pending_calls"] == 0


async def test_pending_calls_fail_at_once_when_peer_closes() -> None:
    rec = Recorder()
    with trio.fail_after(10):
        async with running(recorder=rec) as platform:
            errors: list[BaseException] = []
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:

                async def call(i: int) -> None:
                    try:
                        await platform.call_api("get_status", timeout=1000)
                    except ConnectionClosed as exc:
                        errors.append(exc)

                async with trio.open_nursery() as nursery:
                    for i in range(3):
                        nursery.start_soon(call, i)
                    for _ in range(3):
                        await peer.recv_action()
                    t0 = trio.current_time()
                    await peer.ws.aclose(1000, "bye")
            # all three failed, well before their 1000 s timeout
            assert len(errors) == 3
            assert trio.current_time() - t0 < 5
            assert rec.links == ["up", "down"]
            assert not platform.online
            stats = platform.get_connection_stats()
            assert stats["last_close_code"] == 1000
            assert stats["status"] == "disconnected"


async def test_same_self_id_replacement_keeps_sends_working() -> None:
    rec = Recorder()
    with trio.fail_after(10):
        async with running(recorder=rec) as platform:
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as old:
                await wait_for(lambda: platform.online)
                async with open_reverse_peer(platform.bound_port, token=TOKEN) as new:
                    # the old one is closed by us, with our "replaced" code
                    with pytest.raises(trio_websocket.ConnectionClosed) as info:
                        await old.ws.get_message()
                    assert info.value.reason is not None
                    assert info.value.reason.code == 4001
                    await wait_for(lambda: len(platform.get_connection_stats()["connections"]) == 1)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(new.answer, "via-new")
                        receipt = await platform.send(
                            OutboundMessage(platform_id="qq", message_type="get_status", content={})
                        )
                    assert receipt.data == "via-new"
                    assert platform.online
                    assert platform.counters["connections_replaced"] == 1
                    # the old connection's cleanup did not remove the new one
                    (conn,) = platform.get_connection_stats()["connections"]
                    assert conn["generation"] == 2
            assert rec.links == ["up", "down"]  # no flap while replacing


async def test_separate_api_and_event_connections() -> None:
    with trio.fail_after(10):
        async with running() as platform:
            async with open_reverse_peer(platform.bound_port, token=TOKEN, role="Event") as ev_peer:
                await ev_peer.send(EVENTS[2])
                await wait_for(lambda: emitted(platform))
                # an Event connection alone cannot carry calls
                assert not platform.online
                with pytest.raises(PlatformOffline):
                    await platform.call_api("get_status")
                async with open_reverse_peer(
                    platform.bound_port, "/onebot/v11/ws/api", token=TOKEN, role="API"
                ) as api_peer:
                    await wait_for(lambda: platform.online)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(api_peer.answer, "api")
                        assert await platform.call_api("get_status") == "api"
                    # both live: the API connection did not replace the Event one
                    roles = sorted(
                        c["role"] for c in platform.get_connection_stats()["connections"]
                    )
                    assert roles == ["API", "Event"]
                    await ev_peer.send(EVENTS[3])
                    await wait_for(lambda: len(emitted(platform)) == 2)


# ---- forward WebSocket ------------------------------------------------------------


async def test_forward_dials_with_token_emits_and_calls() -> None:
    got: list[Peer] = []

    async def on_connect(peer: Peer) -> None:
        got.append(peer)
        for frame in EVENTS[:3]:
            await peer.send(frame)
        await peer.serve_actions({"fwd": True})

    server = ForwardPeerServer(token=TOKEN, on_connect=on_connect)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            cfg = OneBotV11Config(mode="forward", url=server.url, access_token=TOKEN)
            async with running(cfg) as platform:
                await wait_for(lambda: len(emitted(platform)) == 3)
                assert platform.online
                assert await platform.call_api("get_status") == {"fwd": True}
                assert platform.get_connection_stats()["mode"] == "forward"
            nursery.cancel_scope.cancel()


def fwd(url: str, **kw: Any) -> OneBotV11Config:
    return OneBotV11Config(mode="forward", url=url, **kw)


def conn_cfg(**kw: Any) -> ConnectionConfig:
    base: dict[str, Any] = dict(
        reconnect_interval=1.0,
        max_reconnect_interval=16.0,
        backoff_factor=2.0,
        jitter=0.0,
        stable_after=30.0,
        health_check_interval=5.0,
        heartbeat_interval=30.0,
    )
    base.update(kw)
    return ConnectionConfig(**base)


def rel(times: list[float], t0: float) -> list[float]:
    return [round(t - t0, 6) for t in times]


async def test_forward_exact_backoff_when_every_handshake_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ForwardPeerServer(reject_status=503)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            t0 = trio.current_time()
            async with running(fwd(server.url), conn_cfg()) as platform:
                await trio.sleep(40)
                # exactly the scheduled attempts, no storm
                assert rel(server.attempts, t0) == [0, 1, 3, 7, 15, 31]
                stats = platform.get_connection_stats()
                assert stats["status"] == "reconnecting"
                assert "503" in stats["last_error"]
                assert not platform.online
            nursery.cancel_scope.cancel()


async def test_forward_401_backs_off_to_the_maximum_and_alerts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    server = ForwardPeerServer(token=TOKEN)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            t0 = trio.current_time()
            cfg = fwd(server.url, access_token="wrong")
            async with running(cfg, conn_cfg(max_reconnect_interval=60.0), rec):
                await trio.sleep(130)
            assert rel(server.attempts, t0) == [0, 60, 120]
            assert [a[1] for a in rec.alerts] == ["error"] * 3
            assert all(a[2].startswith("auth failed") and "401" in a[2] for a in rec.alerts)
            nursery.cancel_scope.cancel()


async def test_forward_reconnects_after_the_peer_restarts() -> None:
    rec = Recorder()
    server = ForwardPeerServer()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            port = server.port
            ccfg = conn_cfg(reconnect_interval=0.02, max_reconnect_interval=0.05)
            async with running(fwd(server.url), ccfg, rec) as platform:
                await wait_for(lambda: platform.online)
                assert await platform.call_api("get_status") is None
                server.stop()  # the implementation goes away (abruptly)
                await wait_for(lambda: not platform.online)
                with pytest.raises(PlatformOffline):
                    await platform.call_api("get_status")
                await trio.sleep(0.2)  # several refused attempts meanwhile
                assert platform.get_connection_stats()["status"] == "reconnecting"
                server2 = ForwardPeerServer()
                server2.port = port
                await nursery.start(server2.run)
                await wait_for(lambda: platform.online)
                assert await platform.call_api("get_status") is None
                assert rec.links == ["up", "down", "up"]
                assert platform.get_connection_stats()["reconnect_count"] >= 2
            nursery.cancel_scope.cancel()


async def test_forward_1000_close_from_the_peer_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def close_at_once(peer: Peer) -> None:
        await peer.send(EVENTS[0])
        await peer.ws.aclose(1000, "bye")

    server = ForwardPeerServer(on_connect=close_at_once)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            t0 = trio.current_time()
            async with running(fwd(server.url), conn_cfg()) as platform:
                await trio.sleep(5)
                # each short-lived link counts as a failure: 1, 2 s apart
                assert rel(server.attempts, t0) == [0, 1, 3]
                assert platform.get_connection_stats()["last_close_code"] == 1000
                assert len(emitted(platform)) == 3
            nursery.cancel_scope.cancel()


async def test_forward_silent_peer_is_detected_and_reconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    server = SilentForwardServer()
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            t0 = trio.current_time()
            ccfg = conn_cfg(heartbeat_timeout=10.0, health_check_interval=3.0)
            async with running(fwd(server.url), ccfg, rec) as platform:
                await trio.sleep(5)
                assert platform.online  # it looks up...
                await trio.sleep(10)
                # ...but nothing arrived for 10 s: closed with 4000 at t=10 (we
                # do not wait for a dead peer's closing handshake) and
                # redialled after reconnect_interval
                assert rel(server.attempts, t0) == [0, 11]
                stats = platform.get_connection_stats()
                assert stats["last_close_code"] == 4000
                assert any(a[2].startswith("heartbeat timeout") for a in rec.alerts)
            nursery.cancel_scope.cancel()


async def test_forward_pending_call_fails_at_once_when_the_peer_closes() -> None:
    async def close_on_action(peer: Peer) -> None:
        await peer.recv_action()
        await peer.ws.aclose(1001, "going away")

    server = ForwardPeerServer(on_connect=close_on_action)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            ccfg = conn_cfg(reconnect_interval=100, max_reconnect_interval=100)
            async with running(fwd(server.url), ccfg) as platform:
                await wait_for(lambda: platform.online)
                with pytest.raises(ConnectionClosed):
                    await platform.call_api("get_status", timeout=1000)
                await wait_for(lambda: platform.get_connection_stats()["last_close_code"] == 1001)
            nursery.cancel_scope.cancel()


async def test_forward_max_attempts_fails_the_platform(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = ForwardPeerServer(reject_status=500)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            platform = OneBotV11Platform(
                "qq", fwd(server.url), connection=conn_cfg(max_reconnect_attempts=3)
            )
            with pytest.raises(ReconnectExhausted):
                await platform.run()
            assert len(server.attempts) == 3
            assert platform.get_connection_stats()["status"] == "error"
            nursery.cancel_scope.cancel()


async def test_forward_starts_while_the_implementation_is_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # nothing listens on this port: run() still reaches started() at once
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with trio.fail_after(10):
        t0 = trio.current_time()
        async with running(fwd(f"ws://127.0.0.1:{port}/"), conn_cfg()) as platform:
            assert trio.current_time() == t0
            assert not platform.online
            await trio.sleep(2)
            assert platform.get_connection_stats()["consecutive_failures"] >= 1


# ---- reverse: liveness, port reuse ------------------------------------------------


async def test_reverse_silent_peer_is_closed_at_the_heartbeat_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rec = Recorder()
    ccfg = conn_cfg(heartbeat_timeout=10.0, health_check_interval=3.0)
    with trio.fail_after(100):
        async with running(connection=ccfg, recorder=rec) as platform:
            stream = await open_silent_reverse_peer(platform.bound_port, token=TOKEN)
            try:
                await wait_for(lambda: platform.online)
                await trio.sleep(9.5)
                assert platform.online
                await trio.sleep(2)
                assert not platform.online
                stats = platform.get_connection_stats()
                assert stats["links"] == 0 and stats["last_close_code"] == 4000
                assert rec.links == ["up", "down"]
                # the implementation reconnects (its job in reverse mode) and is served
                async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:
                    await peer.send(EVENTS[1])
                    await wait_for(lambda: emitted(platform))
                    assert platform.online
            finally:
                await stream.aclose()


async def test_reverse_port_is_released_on_stop() -> None:
    with trio.fail_after(10):
        async with running() as first:
            port = first.bound_port
            assert port is not None
            async with open_reverse_peer(port, token=TOKEN) as peer:
                await peer.send(EVENTS[0])
                await wait_for(lambda: emitted(first))
        # a new instance (hot reconfiguration) binds the same port at once
        cfg = OneBotV11Config(port=port, access_token="new-token")
        async with running(cfg) as second:
            assert second.bound_port == port
            async with open_reverse_peer(port, token="new-token") as peer:
                await peer.send(EVENTS[0])
                await wait_for(lambda: emitted(second))


async def test_metrics_reach_the_real_monitor_and_never_break_the_link() -> None:
    from nekobot.config.schema import MonitorConfig
    from nekobot.monitor.status_monitor import StatusMonitor

    monitor = StatusMonitor.from_config(MonitorConfig())
    rec = Recorder()
    rec.context.record_metric = monitor.record_metric
    cfg = OneBotV11Config(port=0, access_token=TOKEN)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(monitor.run)
            async with (
                running(cfg, recorder=rec) as platform,
                open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
            ):
                await peer.send("not json")
                await peer.send(EVENTS[0])
                await wait_for(lambda: emitted(platform))
                assert platform.online
            await monitor.flush()
            nursery.cancel_scope.cancel()
    text = monitor.exposition()[0].decode()
    assert 'nekobot_onebot_frames_dropped_total{platform_id="qq",reason="not_json"} 1.0' in text
    assert "nekobot_platform_connection_up" in text

    def broken(*args: Any, **kw: Any) -> None:
        raise RuntimeError("monitor is broken")

    rec2 = Recorder()
    rec2.context.record_metric = broken
    with trio.fail_after(10):
        async with (
            running(cfg, recorder=rec2) as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            await peer.send("not json")
            await peer.send(EVENTS[0])
            await wait_for(lambda: emitted(platform))
            assert platform.online and platform.counters["dropped_not_json"] == 1


async def test_reverse_port_in_use_fails_run_with_oserror() -> None:
    with trio.fail_after(10):
        async with running() as first:
            assert first.bound_port is not None
            clash = OneBotV11Platform("qq2", OneBotV11Config(port=first.bound_port))
            with pytest.raises(OSError):
                await clash.run()


async def test_reverse_disconnect_refuses_peers_until_connect() -> None:
    rec = Recorder()
    with trio.fail_after(10):
        async with running(recorder=rec) as platform:
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:
                await wait_for(lambda: platform.online)
                await platform.connection_manager.disconnect()
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await peer.ws.get_message()
            assert not platform.online
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_reverse_peer(platform.bound_port, token=TOKEN):
                    pass  # pragma: no cover
            assert info.value.status_code == 503
            assert await platform.connection_manager.connect() is False  # nothing to dial
            async with open_reverse_peer(platform.bound_port, token=TOKEN):
                await wait_for(lambda: platform.online)
            assert rec.links == ["up", "down", "up", "down"]


async def test_send_refuses_non_object_content() -> None:
    from nekobot.errors import InvalidRequest

    with trio.fail_after(10):
        async with running() as platform, open_reverse_peer(platform.bound_port, token=TOKEN):
            await wait_for(lambda: platform.online)
            with pytest.raises(InvalidRequest, match="content"):
                await platform.send(
                    OutboundMessage(platform_id="qq", message_type="group", content=["x"])
                )


# ---- Hypothesis: any frame is classified, none breaks the reader ---------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ODD = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),  # beyond a float's range
    st.text(alphabet="-0123456789²\u0661 ", max_size=6),  # digit-like text int() refuses
    st.just(float("inf")),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | ODD,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
FRAMES = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    JSON.map(json.dumps),
    st.fixed_dictionaries(
        {"post_type": st.one_of(st.sampled_from(["message", "notice", "meta_event"]), JSON)},
        optional={
            "message_id": JSON,
            "self_id": JSON,
            "meta_event_type": st.sampled_from(["heartbeat", "lifecycle"]),
            "interval": JSON,
            "echo": JSON,
        },
    ).map(json.dumps),
    st.sampled_from(EVENTS + RESPONSES),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(FRAMES, max_size=12))
def test_every_frame_is_classified_and_none_raises(frames: list[str | bytes]) -> None:
    from nekobot.platforms.onebot_v11.connections import Conn

    async def main() -> OneBotV11Platform:
        platform = OneBotV11Platform("qq", OneBotV11Config(port=0, max_frame_size=64 * 1024))
        link = platform.connection_manager._new_link()
        conn = Conn(ws=None, link=link, self_id="10001", role="Universal")  # type: ignore[arg-type]
        for frame in frames:
            await platform._on_frame(conn, frame)
        # events wait in the platform's inbox until its emitter hands them on
        while True:
            try:
                msg = platform._inbox_recv.receive_nowait()
            except trio.WouldBlock:
                break
            await platform.emit(msg)
        return platform

    platform = trio.run(main)
    c = platform.counters
    dropped = sum(v for k, v in c.items() if k.startswith("dropped_"))
    assert c["frames_received"] == len(frames)
    assert c["events"] + c["responses"] + dropped == len(frames)
    assert c["frames_failed"] == 0
    assert len(emitted(platform)) == c["events"]
    for m in emitted(platform):
        assert isinstance(m.content, dict) and m.message_type == m.content["post_type"]


async def test_reverse_peer_vanishing_mid_handshake_leaves_the_listener_serving() -> None:
    import socket
    import struct

    import wsproto
    import wsproto.events

    with trio.fail_after(10):
        async with running() as platform:
            assert platform.bound_port is not None
            for _ in range(5):
                stream = await trio.open_tcp_stream("127.0.0.1", platform.bound_port)
                ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                request = wsproto.events.Request(
                    host="127.0.0.1",
                    target="/onebot/v11/ws",
                    extra_headers=reverse_headers(token=TOKEN),
                )
                await stream.send_all(ws.send(request))
                # reset at once (SO_LINGER 0): the server's accept/send hits a dead socket
                stream.socket.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                await stream.aclose()
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:
                await peer.send(EVENTS[2])
                await wait_for(lambda: emitted(platform))
                assert platform.online


async def test_reverse_on_localhost_name() -> None:
    with trio.fail_after(10):
        cfg = OneBotV11Config(host="localhost", port=0, access_token=TOKEN)
        async with running(cfg) as platform:
            assert isinstance(platform.bound_port, int) and platform.bound_port > 0


async def test_fixture_actions_with_any_json_echo_round_trip() -> None:
    from nekobot.errors import InvalidRequest
    from tests.onebot_peer import ACTIONS

    actions = [json.loads(line) for line in ACTIONS]
    responses = [json.loads(line) for line in RESPONSES]
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):

            async def implementation() -> None:
                for _ in range(len(actions) + 1):
                    got = await peer.recv_action()
                    match = [r for r in responses if r["echo"] == got["echo"]]
                    if match:
                        await peer.send(match[0])
                    else:  # the same object echoed back with its keys reordered
                        assert got["echo"] == {"a": 1, "b": [2]}
                        await peer.send(
                            '{"status":"ok","retcode":0,"data":"ab","echo":{"b":[2],"a":1}}'
                        )

            results: list[Any] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(implementation)
                for a in actions:
                    try:
                        results.append(
                            await platform.call_api(a["action"], a["params"], echo=a["echo"])
                        )
                    except OneBotActionFailed as exc:
                        results.append(exc.retcode)
                results.append(await platform.call_api("x", {}, echo={"a": 1, "b": [2]}))
            # echo "nb-1", {"seq": 2} and 3 each matched its own response
            assert results == [{"message_id": 1001}, {"message_id": -2001}, 100, "ab"]
            assert platform.counters["responses_unmatched"] == 0

            async with trio.open_nursery() as nursery:
                nursery.start_soon(platform.call_api, "slow", {}, None)
                await wait_for(lambda: platform.get_connection_stats()["pending_calls"] == 1)
                pending_echo = (await peer.recv_action())["echo"]
                with pytest.raises(InvalidRequest, match="pending"):
                    await platform.call_api("dup", {}, echo=pending_echo)
                with pytest.raises(InvalidRequest, match="JSON"):
                    await platform.call_api("bad", {}, echo=object())
                await peer.send({"status": "ok", "retcode": 0, "data": 1, "echo": pending_echo})


# ---- several accounts on one reverse platform (one connection per X-Self-ID) ----


def _send(content: dict[str, Any], action: str = "send_group_msg") -> OutboundMessage:
    return OutboundMessage(platform_id="qq", message_type=action, content=content)


async def test_self_id_in_content_picks_that_account_and_is_not_sent() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, self_id=111, token=TOKEN) as a,
            open_reverse_peer(platform.bound_port, self_id="222", token=TOKEN) as b,
        ):
            await wait_for(lambda: len(platform.get_connection_stats()["connections"]) == 2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.answer, "from-a")
                # the older account (a), named by an int self_id
                receipt = await platform.send(_send({"self_id": 111, "group_id": 1}))
            assert receipt.data == "from-a"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.answer, "from-b")
                receipt = await platform.send(_send({"self_id": "222", "group_id": 2}))
            assert receipt.data == "from-b"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.answer, "a-again")
                assert await platform.call_api("get_status", {}, self_id="111") == "a-again"
            # each peer sees its own action only, without self_id
            got: dict[str, dict[str, Any]] = {}

            async def grab(name: str, peer: Peer) -> None:
                got[name] = await peer.answer()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(grab, "a", a)
                nursery.start_soon(grab, "b", b)
                await platform.send(_send({"self_id": 222, "group_id": 6, "message": "to-b"}))
                await platform.send(_send({"self_id": 111, "group_id": 5, "message": "to-a"}))
            assert got["a"]["params"] == {"group_id": 5, "message": "to-a"}
            assert got["b"]["params"] == {"group_id": 6, "message": "to-b"}


async def test_send_for_an_offline_account_raises_and_never_uses_another() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, self_id=222, token=TOKEN) as b,
        ):
            async with open_reverse_peer(platform.bound_port, self_id=111, token=TOKEN):
                await wait_for(lambda: len(platform.get_connection_stats()["connections"]) == 2)
            await wait_for(lambda: len(platform.get_connection_stats()["connections"]) == 1)
            assert platform.online  # account 222 is still connected
            with pytest.raises(AccountOffline, match="self_id=111") as info:
                await platform.send(_send({"self_id": 111, "group_id": 1, "message": "lost"}))
            assert isinstance(info.value, PlatformOffline) and info.value.self_id == "111"
            with pytest.raises(PlatformOffline, match="self_id=333"):
                await platform.call_api("get_status", {}, self_id=333)
            # b received neither: its next action is this one
            async with trio.open_nursery() as nursery:
                nursery.start_soon(platform.send, _send({"self_id": 222, "message": "mine"}))
                action = await b.answer()
            assert action["params"] == {"message": "mine"}
            # without self_id the only account connected carries it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.answer, "only")
                assert (await platform.send(_send({"message": "x"}))).data == "only"


def test_echo_reply_target_names_the_receiving_account() -> None:
    from nekobot.plugins.echo import reply_target

    group = {"self_id": 111, "message_type": "group", "group_id": 5, "user_id": 9}
    private = {"self_id": "222", "message_type": "private", "user_id": 9}
    assert reply_target(group) == ("send_group_msg", {"group_id": 5, "self_id": 111})
    assert reply_target(private) == ("send_private_msg", {"user_id": 9, "self_id": "222"})
    assert reply_target({"message_type": "private", "user_id": 9}) == (
        "send_private_msg",
        {"user_id": 9},
    )
    assert reply_target({"message_type": "group"}) is None


async def test_echo_plugin_answers_each_account_on_its_own_connection(tmp_path: Any) -> None:
    """Real bot + shipped echo plugin: three accounts on one reverse platform,
    each gets a pong for each of its own pings, and nothing else."""
    import nekobot

    ping = json.loads(event(lambda e: e.get("raw_message") == "/ping"))
    accounts = [10001, 10002, 10003]
    pings = 4
    config = {
        "bot": {"data_dir": str(tmp_path / "data"), "plugins": ["nekobot.plugins.echo:setup"]},
        "api": {"enable": False},
        "platforms": {"qq": {"type": "onebot_v11", "port": 0}},
    }
    got: dict[int, list[dict[str, Any]]] = {a: [] for a in accounts}
    with trio.fail_after(20):
        async with nekobot.open_nekobot(config) as bot:
            actor = bot.runtime_manager.get_platform_actor("qq")
            assert isinstance(actor, OneBotV11Platform) and actor.bound_port

            async def account(self_id: int, *, task_status: Any) -> None:
                async with open_reverse_peer(actor.bound_port, self_id=self_id) as peer:
                    task_status.started()
                    await ready.wait()
                    for i in range(pings):
                        frame = {
                            **ping,
                            "self_id": self_id,
                            "group_id": self_id * 100 + i,
                            "message_id": self_id * 100 + i,
                        }
                        await peer.send(frame)
                    while True:
                        got[self_id].append(await peer.answer({"message_id": 1}))

            ready = trio.Event()
            async with trio.open_nursery() as nursery:
                for a in accounts:
                    await nursery.start(partial_account(account, a))
                await wait_for(lambda: len(actor.get_connection_stats()["connections"]) == 3)
                ready.set()
                # every handler has returned: every reply was sent somewhere
                await wait_for(
                    lambda: bot.message_router.get_stats().processed >= len(accounts) * pings
                )
                nursery.cancel_scope.cancel()
    for a in accounts:
        assert sorted((x["params"] for x in got[a]), key=lambda p: p["group_id"]) == [
            {"group_id": a * 100 + i, "message": "pong"} for i in range(pings)
        ], a


def partial_account(fn: Any, self_id: int) -> Any:
    async def start(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await fn(self_id, task_status=task_status)

    return start


async def test_forward_connection_of_unknown_account_serves_any_self_id_until_known() -> None:
    """Forward mode: before the first event names the account, a message with
    ``self_id`` (e.g. replayed from the buffer at link-up) uses the one
    connection; once the account is known, another self_id is refused."""
    seen: list[dict[str, Any]] = []

    async def implementation(peer: Peer) -> None:
        seen.append(await peer.answer("early"))
        await peer.send(EVENTS[0])  # lifecycle connect, self_id 10001
        await peer.serve_actions("late")

    server = ForwardPeerServer(on_connect=implementation)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async with running(fwd(server.url), conn_cfg()) as platform:
                await wait_for(lambda: platform.online)
                receipt = await platform.send(_send({"self_id": 10001, "message": "m"}))
                assert receipt.data == "early"
                assert seen[0]["params"] == {"message": "m"}
                await wait_for(lambda: emitted(platform))
                assert (await platform.send(_send({"self_id": 10001}))).data == "late"
                with pytest.raises(PlatformOffline, match="self_id=10002"):
                    await platform.send(_send({"self_id": 10002}))
            nursery.cancel_scope.cancel()


async def test_lifecycle_without_sub_type_logs_sensibly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="nekobot.platforms.onebot_v11")
    bare = {"time": 1, "self_id": 10001, "post_type": "meta_event", "meta_event_type": "lifecycle"}
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            await peer.send(bare)
            await peer.send(EVENTS[0])  # sub_type "connect"
            await wait_for(lambda: len(emitted(platform)) == 2)
    lines = [r.getMessage() for r in caplog.records if "lifecycle" in r.getMessage()]
    assert lines == [
        "qq: lifecycle event (no sub_type) from self_id 10001",
        "qq: lifecycle event connect from self_id 10001",
    ]
    assert not any("None" in line for line in lines)


async def test_message_for_an_offline_account_is_buffered_and_sent_when_it_returns(
    tmp_path: Any,
) -> None:
    """Real bot: account 10001 leaves while 10002 keeps the platform online; a
    reply for 10001 is buffered (not sent through 10002) and goes out through
    10001 as soon as it reconnects, not at the buffer's next retry (60 s)."""
    import nekobot

    config = {
        "bot": {"data_dir": str(tmp_path / "data")},
        "api": {"enable": False},
        "buffer": {"retry_interval": 60.0},
        "platforms": {"qq": {"type": "onebot_v11", "port": 0}},
    }
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config) as bot:
            actor = bot.runtime_manager.get_platform_actor("qq")
            assert isinstance(actor, OneBotV11Platform) and actor.bound_port
            port = actor.bound_port

            def connections() -> int:
                return len(actor.get_connection_stats()["connections"])

            async with open_reverse_peer(port, self_id=10002) as b:
                async with open_reverse_peer(port, self_id=10001):
                    await wait_for(lambda: connections() == 2)
                await wait_for(lambda: connections() == 1)
                assert actor.online
                receipt = await bot.send(
                    "qq", "send_group_msg", {"self_id": 10001, "group_id": 1, "message": "for-a"}
                )
                assert receipt.buffered
                async with open_reverse_peer(port, self_id=10001) as a:
                    action = await a.answer({"message_id": 5})
                    assert action["params"] == {"group_id": 1, "message": "for-a"}
                    await wait_for(lambda: bot.message_buffer.pending_count("qq") == 0)
                    # b got nothing of it: its first action is its own
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            bot.send, "qq", "send_group_msg", {"self_id": 10002, "group_id": 2}
                        )
                        assert (await b.answer())["params"] == {"group_id": 2}


async def test_string_and_int_ids_are_one_message_for_dedup() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            base = {"time": 1, "post_type": "message", "message_type": "private"}
            await peer.send(json.dumps({**base, "self_id": 10001, "message_id": 123}))
            await peer.send(json.dumps({**base, "self_id": "10001", "message_id": "123"}))
            await peer.send(json.dumps({**base, "self_id": 10001, "message_id": "-5"}))
            await wait_for(lambda: len(emitted(platform)) == 3)
            keys = [m.dedup_key for m in emitted(platform)]
            assert keys == [(10001, 123), (10001, 123), (10001, -5)]
            # the content itself is kept exactly as received
            assert emitted(platform)[1].content["message_id"] == "123"
