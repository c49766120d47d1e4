"""OneBot v11 over loopback WebSocket: inbound events/s and call_api round trips/s.

Run: ``/work/venv/bin/python bench/bench_onebot.py [--events N] [--calls N]``

What is compared, in the same run, on the same machine:

- **inbound**: a peer pushes N fixture group-message events over one reverse
  WebSocket. *Platform*: ``OneBotV11Platform`` validates each frame (size,
  JSON, object, ``post_type``), feeds liveness and emits a ``Message`` to a
  counting ``emit``. *Baseline*: a bare trio-websocket server that only
  ``json.loads`` each frame. The ratio is the cost of NekoBot's per-frame work
  on top of the transport.
- **calls**: N sequential ``call_api`` round trips (unique echo, matching,
  response check) against a peer answering at once. *Baseline*: the same
  request/response exchange written straight on trio-websocket.

Figures are printed with the ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import trio
import trio_websocket

from nekobot.messages import Message
from nekobot.platforms.base import PlatformContext
from nekobot.platforms.onebot_v11 import OneBotV11Config, OneBotV11Platform, open_client_websocket

with open(
    __file__.rsplit("/", 2)[0] + "/tests/fixtures/onebot11/events.jsonl", encoding="utf-8"
) as f:
    GROUP_EVENT = next(line for line in f if '"message_type":"group"' in line).strip()
HEADERS = [(b"X-Self-ID", b"10001"), (b"X-Client-Role", b"Universal")]


def frames(n: int) -> list[str]:
    base = json.loads(GROUP_EVENT)
    out = []
    for i in range(n):
        base["message_id"] = i
        out.append(json.dumps(base, ensure_ascii=False))
    return out


async def inbound_platform(n: int) -> float:
    done = trio.Event()
    count = 0

    async def emit(message: Message) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    platform = OneBotV11Platform(
        "bench", OneBotV11Config(port=0), context=PlatformContext(emit=emit)
    )
    data = frames(n)
    async with trio.open_nursery() as nursery:
        await nursery.start(platform.run)
        url = f"ws://127.0.0.1:{platform.bound_port}/onebot/v11/ws"
        async with open_client_websocket(url, extra_headers=HEADERS) as ws:
            t0 = time.perf_counter()
            for frame in data:
                await ws.send_message(frame)
            await done.wait()
            elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return n / elapsed


async def inbound_baseline(n: int) -> float:
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        for _ in range(n):
            json.loads(await ws.get_message())
        done.set()

    data = frames(n)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_client_websocket(
            f"ws://127.0.0.1:{server.port}/", extra_headers=HEADERS
        ) as ws:
            t0 = time.perf_counter()
            for frame in data:
                await ws.send_message(frame)
            await done.wait()
            elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return n / elapsed


async def answer_all(ws: trio_websocket.WebSocketConnection) -> None:
    try:
        while True:
            action = json.loads(await ws.get_message())
            await ws.send_message(
                json.dumps({"status": "ok", "retcode": 0, "data": None, "echo": action["echo"]})
            )
    except trio_websocket.ConnectionClosed:
        return


async def calls_platform(n: int) -> float:
    platform = OneBotV11Platform("bench", OneBotV11Config(port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(platform.run)
        url = f"ws://127.0.0.1:{platform.bound_port}/onebot/v11/ws"
        async with open_client_websocket(url, extra_headers=HEADERS) as ws:
            nursery.start_soon(answer_all, ws)
            while not platform.online:  # noqa: ASYNC110
                await trio.sleep(0.001)
            params: dict[str, Any] = {"group_id": 30001, "message": "pong"}
            t0 = time.perf_counter()
            for _ in range(n):
                await platform.call_api("send_group_msg", params)
            elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return n / elapsed


async def calls_baseline(n: int) -> float:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await answer_all(await request.accept())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
        async with open_client_websocket(f"ws://127.0.0.1:{server.port}/") as ws:
            params = {"group_id": 30001, "message": "pong"}
            t0 = time.perf_counter()
            for i in range(n):
                await ws.send_message(
                    json.dumps({"action": "send_group_msg", "params": params, "echo": i})
                )
                json.loads(await ws.get_message())
            elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    return n / elapsed


async def main(events: int, calls: int) -> None:
    base_in = await inbound_baseline(events)
    plat_in = await inbound_platform(events)
    base_calls = await calls_baseline(calls)
    plat_calls = await calls_platform(calls)
    print(f"inbound events  baseline (ws + json.loads): {base_in:10.0f} /s")
    print(
        f"inbound events  OneBotV11Platform -> emit:  {plat_in:10.0f} /s  "
        f"ratio {plat_in / base_in:.2f}"
    )
    print(f"call round trip baseline (raw ws echo):     {base_calls:10.0f} /s")
    print(
        f"call round trip OneBotV11Platform.call_api: {plat_calls:10.0f} /s  "
        f"ratio {plat_calls / base_calls:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    trio.run(main, args.events, args.calls)
