"""A scripted OneBot v11 implementation for tests (loopback only).

``open_reverse_peer`` dials a platform in reverse mode (as go-cqhttp/NapCat do);
``ForwardPeerServer`` listens like an implementation's forward WebSocket server.
Both read the fixture frames in ``tests/fixtures/onebot11``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket
import wsproto
import wsproto.events

from nekobot.platforms.onebot_v11 import open_client_websocket

FIXTURES = Path(__file__).parent / "fixtures" / "onebot11"


def load_jsonl(name: str) -> list[str]:
    """The raw lines (frames) of one fixture file, unparsed."""
    return [line for line in (FIXTURES / name).read_text("utf-8").splitlines() if line.strip()]


EVENTS = load_jsonl("events.jsonl")
ACTIONS = load_jsonl("actions.jsonl")
RESPONSES = load_jsonl("responses.jsonl")


def event(pred: Callable[[dict[str, Any]], bool]) -> str:
    """The first fixture event frame (raw text) whose parsed object matches."""
    for line in EVENTS:
        if pred(json.loads(line)):
            return line
    raise LookupError("no such fixture event")


def ok_response(echo: Any, data: Any = None) -> str:
    return json.dumps({"status": "ok", "retcode": 0, "data": data, "echo": echo})


class Peer:
    """One WebSocket connection seen from the implementation's side."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, frame: str | dict[str, Any]) -> None:
        await self.ws.send_message(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv_action(self) -> dict[str, Any]:
        msg = await self.ws.get_message()
        obj = json.loads(msg)
        assert isinstance(obj, dict)
        return obj

    async def answer(self, data: Any = None) -> dict[str, Any]:
        """Receive one action and answer it ``ok`` with ``data``; return the action."""
        action = await self.recv_action()
        await self.send(ok_response(action["echo"], data))
        return action

    async def serve_actions(self, data: Any = None) -> None:
        """Answer every action ``ok`` until the connection closes."""
        try:
            while True:
                await self.answer(data)
        except trio_websocket.ConnectionClosed:
            return


def reverse_headers(
    self_id: int | str = 10001, role: str = "Universal", token: str | None = None
) -> list[tuple[bytes, bytes]]:
    headers = [(b"X-Self-ID", str(self_id).encode()), (b"X-Client-Role", role.encode())]
    if token is not None:
        headers.append((b"Authorization", f"Bearer {token}".encode()))
    return headers


@asynccontextmanager
async def open_reverse_peer(
    port: int | None,
    path: str = "/onebot/v11/ws",
    *,
    self_id: int | str = 10001,
    role: str = "Universal",
    token: str | None = None,
    query: str = "",
) -> AsyncIterator[Peer]:
    """Connect to a reverse-mode platform as an implementation would.

    ``port`` is the platform's ``bound_port`` (``None``: not bound, an error).
    """
    assert port is not None, "the platform is not listening"
    url = f"ws://127.0.0.1:{port}{path}{'?' + query if query else ''}"
    async with open_client_websocket(
        url, extra_headers=reverse_headers(self_id, role, token)
    ) as ws:
        yield Peer(ws)


class ForwardPeerServer:
    """An implementation's forward WebSocket server on 127.0.0.1, port 0.

    Args:
        token: Required ``Authorization: Bearer`` token (None = open).
        reject_status: When set, every handshake is rejected with this status.
        on_connect: ``async fn(peer)`` run for each accepted connection; the
            connection closes when it returns.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        reject_status: int | None = None,
        on_connect: Callable[[Peer], Any] | None = None,
    ) -> None:
        self.token = token
        self.reject_status = reject_status
        self.on_connect = on_connect
        self.attempts: list[float] = []
        """Trio-clock times of every handshake that reached the server."""
        self.connections: list[Peer] = []
        self.port: int = 0
        self._scope: trio.CancelScope | None = None

    async def _handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.attempts.append(trio.current_time())
        if self.reject_status is not None:
            await request.reject(self.reject_status)
            return
        if self.token is not None:
            auth = dict(request.headers).get(b"authorization", b"").decode()
            if auth != f"Bearer {self.token}":
                await request.reject(401)
                return
        ws = await request.accept()
        peer = Peer(ws)
        self.connections.append(peer)
        if self.on_connect is not None:
            await self.on_connect(peer)
        else:
            await peer.serve_actions()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    trio_websocket.serve_websocket, self._handler, "127.0.0.1", self.port, None
                )
                self.port = server.port
                task_status.started()

    def stop(self) -> None:
        """Go away: close the listener and every connection (abruptly)."""
        if self._scope is not None:
            self._scope.cancel()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


class SilentForwardServer:
    """Completes the WebSocket handshake, then never reads or writes again
    (no frames, no pongs): a hung implementation whose TCP link stays up."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.port = 0
        self.held: list[trio.SocketStream] = []

    async def _handler(self, stream: trio.SocketStream) -> None:
        ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, wsproto.events.Request):
                    self.attempts.append(trio.current_time())
                    await stream.send_all(ws.send(wsproto.events.AcceptConnection()))
                    self.held.append(stream)
                    await trio.sleep_forever()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handler, self.port, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


async def open_silent_reverse_peer(
    port: int | None, path: str = "/onebot/v11/ws", *, token: str | None = None
) -> trio.SocketStream:
    """Connect as an implementation, finish the handshake, then go silent.

    Returns the raw stream (the caller closes it)."""
    assert port is not None, "the platform is not listening"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    await stream.send_all(
        ws.send(
            wsproto.events.Request(
                host=f"127.0.0.1:{port}",
                target=path,
                extra_headers=reverse_headers(token=token),
            )
        )
    )
    while True:
        data = await stream.receive_some(65536)
        assert data, "server closed during the handshake"
        ws.receive_data(data)
        for ev in ws.events():
            if isinstance(ev, wsproto.events.AcceptConnection):
                return stream
            raise AssertionError(f"handshake refused: {ev!r}")
