"""The main job with two platforms at once, as a user runs it (``nekobot run``).

One forward and one reverse OneBot v11 platform, each with a scripted peer over
loopback. The forward peer goes away for 5 s while the bot keeps answering on
the reverse one; what the bot sends to the absent platform meanwhile is
buffered and arrives after it returns, in order, once each.

Policy: loopback only; the reverse port is picked free (the bot is a
subprocess, so it cannot report a port 0 back); the peers listen on port 0;
everything runs under a Trio ``fail_after``; the subprocess is stopped with
SIGTERM and must exit 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from tests.onebot_peer import EVENTS, ForwardPeerServer, Peer, event, open_reverse_peer

pytestmark = pytest.mark.slow

RELAY_PLUGIN = '''
"""Test plugin: a group message "/tell <text>" on any platform is sent to "fwd"."""
from nekobot.plugins.echo import plain_text


def setup(bot):
    async def on_message(message):
        text = plain_text(message.content.get("message")).strip()
        if text.startswith("/tell "):
            await bot.send(
                "fwd", "send_private_msg", {"user_id": 20001, "message": text[len("/tell "):]}
            )

    bot.message_router.register_handler("message", on_message)
'''

GROUP_MSG = json.loads(event(lambda e: e.get("message_type") == "group"))


def group_message(text: str, message_id: int) -> str:
    e = dict(GROUP_MSG)
    e["message"] = [{"type": "text", "data": {"text": text}}]
    e["raw_message"] = text
    e["message_id"] = message_id
    return json.dumps(e, ensure_ascii=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, fwd_url: str, rev_port: int) -> Path:
    path = tmp_path / "nekobot.toml"
    path.write_text(
        f"""
[bot]
name = "two-platforms"
plugins = ["nekobot.plugins.echo:setup", "relay_plugin:setup"]
data_dir = "{tmp_path / "data"}"
log_level = "INFO"

[api]
enable = false

[platforms.fwd]
type = "onebot_v11"
mode = "forward"
url = "{fwd_url}"
access_token = "fwd-token"

[platforms.fwd.connection]
reconnect_interval = 0.2
max_reconnect_interval = 1.0
jitter = 0.0

[platforms.rev]
type = "onebot_v11"
mode = "reverse"
host = "127.0.0.1"
port = {rev_port}
path = "/onebot/v11/ws"
access_token = "rev-token"
""",
        "utf-8",
    )
    (tmp_path / "relay_plugin.py").write_text(RELAY_PLUGIN, "utf-8")
    return path


class Collector:
    """Answers every action on a peer connection ``ok`` and records it."""

    def __init__(self) -> None:
        self.actions: list[dict[str, Any]] = []
        self.changed = trio.Event()

    async def serve(self, peer: Peer) -> None:
        try:
            while True:
                action = await peer.recv_action()
                await peer.send(
                    {
                        "status": "ok",
                        "retcode": 0,
                        "data": {"message_id": len(self.actions) + 1},
                        "echo": action["echo"],
                    }
                )
                # recorded once answered: the bot has its acknowledgement
                self.actions.append(action)
                self.changed.set()
                self.changed = trio.Event()
        except trio_websocket.ConnectionClosed:
            return

    async def wait_count(self, n: int) -> None:
        while len(self.actions) < n:
            await self.changed.wait()


async def test_two_platforms_forward_peer_away_for_5_seconds(tmp_path: Path) -> None:
    fwd_first = Collector()
    fwd_second = Collector()
    rev = Collector()
    server1 = ForwardPeerServer(token="fwd-token", on_connect=fwd_first.serve)
    rev_port = free_port()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(server1.run)
            fwd_port = server1.port
            config = write_config(tmp_path, server1.url, rev_port)
            env = dict(
                os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
            )
            log_path = tmp_path / "nekobot.log"
            with log_path.open("wb") as log_file:
                proc = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "nekobot", "run", "-c", str(config)],
                    stdout=log_file,
                    stderr=log_file,
                    env=env,
                )
                try:
                    await _scenario(
                        nursery, server1, fwd_port, rev_port, fwd_first, fwd_second, rev, log_path
                    )
                finally:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                    with trio.move_on_after(10):
                        await proc.wait()
                    if proc.returncode is None:  # pragma: no cover - a hang is a failure
                        proc.kill()
                        await proc.wait()
            output = await trio.Path(log_path).read_text("utf-8")
            assert proc.returncode == 0, output[-4000:]
            nursery.cancel_scope.cancel()


async def _scenario(
    nursery: trio.Nursery,
    server1: ForwardPeerServer,
    fwd_port: int,
    rev_port: int,
    fwd_first: Collector,
    fwd_second: Collector,
    rev: Collector,
    log_path: Path,
) -> None:
    # the bot dials the forward peer (with its token) and listens for the reverse one
    while not server1.connections:  # noqa: ASYNC110 (the bot is another process)
        await trio.sleep(0.05)
    fwd_peer = server1.connections[0]
    while True:
        try:
            rev_cm = open_reverse_peer(rev_port, token="rev-token")
            rev_peer = await rev_cm.__aenter__()
            break
        except OSError:
            await trio.sleep(0.1)
    try:
        nursery.start_soon(rev.serve, rev_peer)
        await rev_peer.send(EVENTS[0])  # lifecycle connect

        # both answer /ping where it was asked
        await rev_peer.send(group_message("/ping", 1))
        await rev.wait_count(1)
        assert rev.actions[0]["action"] == "send_group_msg"
        assert rev.actions[0]["params"] == {"group_id": 30001, "message": "pong"}
        await fwd_peer.send(group_message("/ping", 2))
        await fwd_first.wait_count(1)
        assert fwd_first.actions[0]["params"] == {"group_id": 30001, "message": "pong"}
        # the bot saw that answer arrive (else it rightly re-sends it later)
        log = trio.Path(log_path)
        while "answered /ping on fwd (sent)" not in await log.read_text("utf-8"):  # noqa: ASYNC110
            await trio.sleep(0.05)

        # the forward peer goes away (listener and link closed abruptly)
        server1.stop()
        t_away = trio.current_time()
        await trio.sleep(0.5)

        # meanwhile the bot keeps answering on the reverse platform, and what it
        # sends to the absent one is buffered
        for i, text in enumerate(["first", "second", "third"]):
            await rev_peer.send(group_message(f"/tell {text}", 100 + i))
            await rev_peer.send(group_message("/ping", 200 + i))
        await rev.wait_count(4)
        assert [a["params"]["message"] for a in rev.actions] == ["pong"] * 4
        assert len(fwd_first.actions) == 1  # nothing reached the absent peer

        # it returns on the same port after 5 s
        await trio.sleep_until(t_away + 5.0)
        server2 = ForwardPeerServer(token="fwd-token", on_connect=fwd_second.serve)
        server2.port = fwd_port
        await nursery.start(server2.run)
        with trio.fail_after(10):
            await fwd_second.wait_count(3)
        # let any duplicate show itself
        await trio.sleep(1.5)
        relayed = [(a["action"], a["params"]) for a in fwd_second.actions]
        assert relayed == [
            ("send_private_msg", {"user_id": 20001, "message": "first"}),
            ("send_private_msg", {"user_id": 20001, "message": "second"}),
            ("send_private_msg", {"user_id": 20001, "message": "third"}),
        ]
        # the reverse side answered exactly once per /ping, nothing more
        assert len(rev.actions) == 4
        server2.stop()
    finally:
        await rev_cm.__aexit__(None, None, None)
