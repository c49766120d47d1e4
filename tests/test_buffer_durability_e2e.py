"""End to end: buffered messages survive ``kill -9`` of ``nekobot run`` (issue 5).

Policy: loopback only; the WebSocket port is picked free up front (the bot runs
in a subprocess, so it cannot report a port-0 binding back) as tests/test_cli.py
does; every wait is bounded by a Trio-clock ``fail_after``.

1. ``nekobot run`` with a temp config whose plugin (tests/buffer_e2e_plugin.py)
   sends 1000 messages to the OneBot v11 platform ``qq`` while no
   implementation is connected: all land in the durable buffer. The plugin
   writes a marker once the last ``bot.send`` returned.
2. SIGKILL the process (no shutdown code runs).
3. Start it again (the plugin sends nothing now), connect a OneBot v11
   reverse-WebSocket peer, answer every action ``ok``: the peer receives all
   1000 messages, in order, once each.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import trio
import trio_websocket

from tests.onebot_peer import ok_response, open_reverse_peer

ROOT = Path(__file__).resolve().parent.parent
COUNT = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp_path: Path, ws_port: int) -> Path:
    data: dict[str, Any] = tomllib.loads((ROOT / "nekobot.toml").read_text())
    data["bot"]["data_dir"] = str(tmp_path / "data")
    data["bot"]["plugins"] = ["tests.buffer_e2e_plugin:setup"]
    data["api"]["enable"] = False
    data["console"]["enable"] = False
    data["buffer"].update(replay_rate=2000.0, max_size=COUNT, durable=True)
    data["platforms"]["qq"]["port"] = ws_port
    path = tmp_path / "nekobot.toml"
    path.write_text(tomli_w.dumps(data))
    return path


async def start_bot(config: Path, log: Path, **env: str) -> trio.Process:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with open(log, "ab") as out:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "nekobot", "run", "-c", str(config)],
            stdout=out,
            stderr=out,
            env=full_env,
        )


async def wait_for_port(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
        else:
            await stream.aclose()
            return


async def stop(proc: trio.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    with trio.move_on_after(10):
        await proc.wait()


@pytest.mark.slow
async def test_buffered_messages_survive_sigkill_and_replay_once_in_order(tmp_path: Path) -> None:
    ws_port = free_port()
    config = write_config(tmp_path, ws_port)
    marker = tmp_path / "buffered"
    log = tmp_path / "bot.log"
    try:
        with trio.fail_after(90):
            first = await start_bot(
                config, log, NEKOBOT_E2E_BUFFER_COUNT=str(COUNT), NEKOBOT_E2E_MARKER=str(marker)
            )
            try:
                while not await trio.Path(marker).exists():
                    assert first.poll() is None, "the first bot exited early"
                    await trio.sleep(0.05)
                assert (await trio.Path(marker).read_text()) == str(COUNT)
                first.send_signal(signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL
            finally:
                await stop(first)

            second = await start_bot(config, log)
            try:
                await wait_for_port(ws_port)
                got: list[str] = []
                async with open_reverse_peer(ws_port) as peer:
                    with trio.CancelScope() as quiet:
                        # Receive until all arrived, then 3 s more: no repeats.
                        while True:
                            action = await peer.recv_action()
                            await peer.send(ok_response(action.get("echo"), {"message_id": 1}))
                            if action.get("action") == "send_group_msg":
                                got.append(action["params"]["message"])
                                if len(got) == COUNT:
                                    quiet.deadline = trio.current_time() + 3
                    assert quiet.cancelled_caught
            finally:
                await stop(second)
    except (trio.TooSlowError, AssertionError, trio_websocket.HandshakeError):
        print(log.read_text(errors="replace")[-5000:])
        raise
    assert got == [f"m{i}" for i in range(COUNT)]
