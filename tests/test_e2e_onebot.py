"""End to end: the shipped config answers a real OneBot v11 peer over loopback.

Policy: loopback only, port 0, a Trio-clock ``fail_after`` around every I/O
test so a bug fails fast instead of hanging. The peer is a plain
trio-websocket client acting as a OneBot v11 implementation
(botuniverse/onebot-11, communication/ws-reverse.md): it connects with
``X-Self-ID`` and ``X-Client-Role: Universal``, pushes the fixture events and
answers the bot's actions.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

import nekobot
from nekobot.platforms.onebot_v11 import open_client_websocket

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "onebot11"


def events() -> list[str]:
    return [line for line in (FIXTURES / "events.jsonl").read_text().splitlines() if line.strip()]


def shipped_config(tmp_path: Path, **qq: Any) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "nekobot.toml").read_text())
    data["bot"]["data_dir"] = str(tmp_path / "data")
    data["api"]["enable"] = False
    data["platforms"]["qq"].update(port=0, **qq)
    return data


def url(bot: nekobot.app.NekoBot) -> str:
    actor = bot.runtime_manager.get_platform_actor("qq")
    assert actor is not None
    return f"ws://127.0.0.1:{actor.bound_port}/onebot/v11/ws"


HEADERS = [("X-Self-ID", "10001"), ("X-Client-Role", "Universal")]


async def next_action(ws: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(await ws.get_message())
        if "action" in frame:
            return frame


def ok(echo: Any, message_id: int = 1001) -> str:
    return json.dumps(
        {"status": "ok", "retcode": 0, "data": {"message_id": message_id}, "echo": echo}
    )


async def wait_processed(bot: nekobot.app.NekoBot, n: int) -> None:
    while bot.message_router.get_stats().processed < n:  # noqa: ASYNC110 - stats have no event
        await trio.sleep(0.01)


async def test_ping_in_group_answered_with_pong_to_that_group(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with nekobot.open_nekobot(shipped_config(tmp_path)) as bot:
            async with open_websocket_url(url(bot), extra_headers=HEADERS) as ws:
                for line in events():
                    await ws.send_message(line)
                # The private message (user 20001) is echoed back first …
                first = await next_action(ws)
                assert first["action"] == "send_private_msg"
                assert first["params"] == {"user_id": 20001, "message": "[CQ:at,qq=all] Test text"}
                await ws.send_message(ok(first["echo"]))
                # … then /ping in group 30001 gets pong in that group.
                second = await next_action(ws)
                assert second["action"] == "send_group_msg"
                assert second["params"] == {"group_id": 30001, "message": "pong"}
                await ws.send_message(ok(second["echo"], -2001))
                # Answering the actions completes the handlers: every routed
                # event handled, none failed.
                routed = len(events())
                await wait_processed(bot, routed)
                stats = bot.message_router.get_stats()
                assert stats.failed == 0
                assert stats.dead_lettered == 0


async def test_malformed_frames_counted_and_dropped_link_stays(tmp_path: Path) -> None:
    ping = json.loads(events()[3])
    assert ping["raw_message"] == "/ping"
    with trio.fail_after(20):
        async with nekobot.open_nekobot(shipped_config(tmp_path)) as bot:
            actor = bot.runtime_manager.get_platform_actor("qq")
            async with open_websocket_url(url(bot), extra_headers=HEADERS) as ws:
                await ws.send_message("this is not json {")
                await ws.send_message("[1, 2, 3]")
                await ws.send_message(json.dumps({"time": 1, "self_id": 10001}))
                await ws.send_message(json.dumps(ping))
                action = await next_action(ws)
                assert action["params"] == {"group_id": 30001, "message": "pong"}
                await ws.send_message(ok(action["echo"]))
                counters = actor.get_connection_stats()["counters"]
                assert counters["dropped_not_json"] == 1
                assert counters["dropped_not_object"] == 1
                assert counters["dropped_no_post_type"] == 1
                assert not ws.closed


async def test_token_required_when_configured(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with nekobot.open_nekobot(shipped_config(tmp_path, access_token="s3cret")) as bot:
            # trio-websocket 0.12's open_websocket_url leaves the socket open
            # on a rejected handshake; open_client_websocket closes it.
            raw = [(k.encode(), v.encode()) for k, v in HEADERS]
            with pytest.raises(ConnectionRejected) as info:
                async with open_client_websocket(url(bot), extra_headers=raw):
                    pass
            assert info.value.status_code == 401
            with pytest.raises(ConnectionRejected) as info:
                bad = [*raw, (b"Authorization", b"Bearer wrong")]
                async with open_client_websocket(url(bot), extra_headers=bad):
                    pass
            assert info.value.status_code == 401
            good = [*HEADERS, ("Authorization", "Bearer s3cret")]
            async with open_websocket_url(url(bot), extra_headers=good) as ws:
                await ws.send_message(events()[3])
                action = await next_action(ws)
                assert action["params"]["message"] == "pong"
                await ws.send_message(ok(action["echo"]))


async def test_duplicate_event_after_reconnect_is_answered_once(tmp_path: Path) -> None:
    """The same message delivered again on a new link (a reconnect resend) is deduplicated."""
    ping = events()[3]
    with trio.fail_after(20):
        async with nekobot.open_nekobot(shipped_config(tmp_path)) as bot:
            async with open_websocket_url(url(bot), extra_headers=HEADERS) as ws:
                await ws.send_message(ping)
                action = await next_action(ws)
                await ws.send_message(ok(action["echo"]))
                await wait_processed(bot, 1)
            async with open_websocket_url(url(bot), extra_headers=HEADERS) as ws:
                await ws.send_message(ping)
                while bot.message_router.get_stats().deduplicated < 1:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                with trio.move_on_after(0.3):
                    extra = await next_action(ws)
                    raise AssertionError(f"answered twice: {extra}")


@pytest.mark.slow
async def test_nekobot_run_answers_ping_over_real_socket(tmp_path: Path) -> None:
    """`nekobot run` on the shipped config (port 0 read from its log) answers /ping."""
    import os
    import re
    import signal
    import subprocess
    import sys

    text = (ROOT / "nekobot.toml").read_text()
    text = text.replace("port = 6700", "port = 0").replace("port = 8080", "port = 0")
    text = text.replace('data_dir = "data"', f'data_dir = "{tmp_path / "data"}"')
    config = tmp_path / "nekobot.toml"
    config.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "nekobot", "run", "-c", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        with trio.fail_after(30):
            log = b""
            assert proc.stderr is not None
            while (m := re.search(rb"reverse WebSocket on (ws://\S+)", log)) is None:
                chunk = await proc.stderr.receive_some()
                assert chunk, f"nekobot run ended early: {log.decode()}"
                log += chunk
            ws_url = m.group(1).decode()
            async with open_websocket_url(ws_url, extra_headers=HEADERS) as ws:
                await ws.send_message(events()[0])  # lifecycle connect
                await ws.send_message(events()[3])  # /ping in group 30001
                action = await next_action(ws)
                assert action["action"] == "send_group_msg"
                assert action["params"] == {"group_id": 30001, "message": "pong"}
                await ws.send_message(ok(action["echo"]))
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stderr is not None:
            await proc.stderr.aclose()


async def test_auth_alert_resolves_once_the_link_is_up(tmp_path: Path) -> None:
    from tests.onebot_peer import ForwardPeerServer

    def auth_alerts(include_resolved: bool = False) -> list[Any]:
        return [
            a
            for a in bot.status_monitor.get_alerts(include_resolved=include_resolved)
            if a.message.startswith("auth failed")
        ]

    async def until(pred: Any) -> None:
        while not pred():  # noqa: ASYNC110 - polls state that has no event
            await trio.sleep(0.02)

    server = ForwardPeerServer(token="right")
    data = {
        "bot": {"data_dir": str(tmp_path / "data")},
        "platforms": {
            "fw": {
                "type": "onebot_v11",
                "mode": "forward",
                "url": "",
                "access_token": "wrong",
                "connection": {"reconnect_interval": 0.05, "max_reconnect_interval": 0.2},
            }
        },
    }
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            data["platforms"]["fw"]["url"] = server.url
            async with nekobot.open_nekobot(data) as bot:
                await until(lambda: len(auth_alerts()) == 1)
                assert auth_alerts()[0].platform_id == "fw"
                server.token = None  # the implementation now accepts us
                actor = bot.runtime_manager.get_platform_actor("fw")
                await until(lambda: actor is not None and actor.online)
                await until(lambda: auth_alerts() == [])
                (resolved,) = auth_alerts(include_resolved=True)
                assert resolved.resolved
            nursery.cancel_scope.cancel()


async def test_burst_larger_than_the_router_queue_is_answered_in_full(tmp_path: Path) -> None:
    """A full router must not stop the link's reader: the answers to the bot's
    own actions arrive behind the burst on the same connection."""
    data = shipped_config(tmp_path)
    data["router"].update(max_queue_size=5, max_concurrency=2)
    ping = json.loads(events()[3])
    with trio.fail_after(20):
        async with nekobot.open_nekobot(data) as bot:
            async with open_websocket_url(url(bot), extra_headers=HEADERS) as ws:
                for n in range(200):
                    await ws.send_message(json.dumps({**ping, "message_id": n}))
                answered = 0
                while answered < 200:
                    action = await next_action(ws)
                    assert action["params"]["message"] == "pong"
                    await ws.send_message(ok(action["echo"]))
                    answered += 1
                await wait_processed(bot, 200)
                stats = bot.message_router.get_stats()
                assert (stats.failed, stats.dropped) == (0, 0)
                assert not ws.closed


async def test_an_offline_account_never_holds_up_the_others(tmp_path: Path) -> None:
    """Account 1 leaves with a reply owed; account 2's replies still go out at
    once, and account 1's arrives, on its own connection, when it returns."""
    ping = json.loads(events()[3])

    def headers(self_id: int) -> list[tuple[str, str]]:
        return [("X-Self-ID", str(self_id)), ("X-Client-Role", "Universal")]

    def ping_from(self_id: int, group_id: int, message_id: int) -> str:
        return json.dumps(
            {**ping, "self_id": self_id, "group_id": group_id, "message_id": message_id}
        )

    with trio.fail_after(20):
        async with nekobot.open_nekobot(shipped_config(tmp_path)) as bot:
            async with open_websocket_url(url(bot), extra_headers=headers(1)) as one:
                await one.send_message(ping_from(1, 11, 1))
                owed = await next_action(one)  # never answered: account 1 leaves
                assert owed["params"]["group_id"] == 11
            async with open_websocket_url(url(bot), extra_headers=headers(2)) as two:
                for n in range(5):
                    await two.send_message(ping_from(2, 22, 100 + n))
                for _ in range(5):
                    action = await next_action(two)
                    assert action["params"] == {"group_id": 22, "message": "pong"}
                    await two.send_message(ok(action["echo"]))
                stats = bot.message_buffer.get_buffer_stats()
                assert stats.platforms["qq@1"].size == 1  # account 1's reply waits in its own queue
                async with open_websocket_url(url(bot), extra_headers=headers(1)) as back:
                    replayed = await next_action(back)
                    assert replayed["params"] == {"group_id": 11, "message": "pong"}
                    await back.send_message(ok(replayed["echo"]))


def test_no_reply_to_an_event_whose_target_is_not_an_id() -> None:
    from nekobot.plugins.echo import reply_target

    group = {"message_type": "group", "self_id": 1}
    assert reply_target({**group, "group_id": 30001}) == (
        "send_group_msg",
        {"group_id": 30001, "self_id": 1},
    )
    for bad in (float("inf"), None, True, {"x": 1}, "abc", 1.5, "²", "\u0661\u0662", "-5"):
        assert reply_target({**group, "group_id": bad}) is None
    assert reply_target({"message_type": "private", "user_id": None}) is None


async def test_a_link_that_keeps_failing_to_connect_is_an_alert_until_it_connects(
    tmp_path: Path,
) -> None:
    import socket

    from tests.onebot_peer import ForwardPeerServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here now: connections are refused
    data = {
        "bot": {"data_dir": str(tmp_path / "data")},
        "platforms": {
            "fw": {
                "type": "onebot_v11",
                "mode": "forward",
                "url": f"ws://127.0.0.1:{port}/",
                "connection": {"reconnect_interval": 0.02, "max_reconnect_interval": 0.05},
            }
        },
    }

    def failing(include_resolved: bool = False) -> list[Any]:
        return [
            a
            for a in bot.status_monitor.get_alerts(include_resolved=include_resolved)
            if a.message.startswith("connect failing")
        ]

    async def until(pred: Any) -> None:
        while not pred():  # noqa: ASYNC110 - polls state that has no event
            await trio.sleep(0.02)

    with trio.fail_after(20):
        async with nekobot.open_nekobot(data) as bot:
            await until(lambda: len(failing()) == 1)
            (alert,) = failing()
            assert alert.message.startswith("connect failing: fw failed ")
            assert alert.platform_id == "fw" and alert.level.name == "WARNING"
            server = ForwardPeerServer()
            server.port = port
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await until(lambda: failing() == [])
                (resolved,) = failing(include_resolved=True)
                assert resolved.resolved
                nursery.cancel_scope.cancel()


async def test_hot_token_update_on_the_same_port_and_a_failing_update_rolls_back(
    tmp_path: Path,
) -> None:
    import socket

    from nekobot.runtime.runtime_manager import PlatformStartError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = shipped_config(tmp_path, access_token="old")
    data["platforms"]["qq"]["port"] = port
    raw = [(k.encode(), v.encode()) for k, v in HEADERS]

    def auth(token: str) -> list[tuple[bytes, bytes]]:
        return [*raw, (b"Authorization", f"Bearer {token}".encode())]

    ids = iter(range(1000, 2000))

    async def pong_with(token: str) -> None:
        async with open_client_websocket(ws_url, extra_headers=auth(token)) as ws:
            # a new message id each time, or the dedup window would (rightly) drop it
            await ws.send_message(json.dumps({**json.loads(events()[3]), "message_id": next(ids)}))
            action = await next_action(ws)
            assert action["params"]["message"] == "pong"
            await ws.send_message(ok(action["echo"]))

    ws_url = f"ws://127.0.0.1:{port}/onebot/v11/ws"
    with trio.fail_after(20):
        async with nekobot.open_nekobot(data) as bot:
            rm = bot.runtime_manager
            async with open_client_websocket(ws_url, extra_headers=auth("old")) as peer:
                t0 = trio.current_time()
                await rm.update_platform_config("qq", {"access_token": "new"})
                # the old instance is gone: its link was closed, its port released
                with pytest.raises(Exception):  # noqa: B017 - any close/read error
                    await peer.get_message()
            await pong_with("new")  # same port, new token, no "address in use"
            assert trio.current_time() - t0 < 1.0
            with pytest.raises(ConnectionRejected) as info:
                await pong_with("old")
            assert info.value.status_code == 401
            # A new config that cannot start (its port is taken): the previous
            # config is restored and serves again.
            with socket.socket() as taken:
                taken.bind(("127.0.0.1", 0))
                taken.listen()
                busy = taken.getsockname()[1]
                with pytest.raises(PlatformStartError, match="in use"):
                    await rm.update_platform_config("qq", {"port": busy, "access_token": "x"})
            assert bot.config.platforms["qq"].settings.port == port
            assert rm.get_platform_lifecycle_status("qq").state.value == "running"
            await pong_with("new")
