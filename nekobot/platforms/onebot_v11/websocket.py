"""OneBot v11's WebSocket ends: the reverse handshake we accept, the forward one we dial.

* ``communication/ws-reverse.md``: the implementation connects to us with
  ``X-Self-ID`` (the bot account) and ``X-Client-Role`` (``Universal``, or
  ``API`` / ``Event`` for the two separate connections). :func:`check_handshake`
  decides whether one opening handshake is accepted, and as what.
* ``communication/authorization.md``: the token arrives as
  ``Authorization: Bearer <token>`` (``Token <token>`` is accepted as well, as
  some implementations send it) or as the ``access_token`` query parameter.
  A missing or wrong token is answered with HTTP 401 (the v11 text answers a
  *wrong* token with 403; NekoBot answers 401 to both, as issue 2 asks).
* ``communication/ws.md``: forward WebSocket, we dial the implementation
  (:func:`open_client_websocket`).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio_websocket

from ...errors import sole_exception

__all__ = [
    "TRANSPORT_LIMIT_FACTOR",
    "Accepted",
    "Rejected",
    "check_handshake",
    "open_client_websocket",
]

TRANSPORT_LIMIT_FACTOR = 4
"""The WebSocket layer refuses (close 1009) frames above ``TRANSPORT_LIMIT_FACTOR
x max_frame_size``; frames between the two limits are counted and dropped with
the link kept open. The hard limit bounds memory per frame."""

_ROLES = {"universal": "Universal", "api": "API", "event": "Event"}


@attrs.frozen
class Accepted:
    """A handshake to accept: the connection's account and role."""

    self_id: str
    role: str
    """``Universal``, ``API`` or ``Event``."""


@attrs.frozen
class Rejected:
    """A handshake to refuse with an HTTP status."""

    status: int
    body: bytes
    auth: bool = False
    """True when the token was missing or wrong (counted apart)."""


def _authorized(token: str | None, headers: Mapping[str, str], query: str) -> bool:
    if token is None:
        return True
    given: str | None = None
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "token"):
            given = value
    if given is None:
        values = parse_qs(query).get("access_token")
        if values:
            given = values[0]
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def check_handshake(
    target: str,
    raw_headers: Iterable[tuple[bytes, bytes]],
    *,
    path: str,
    token: str | None,
    accepting: bool = True,
) -> Accepted | Rejected:
    """Decide one reverse-WebSocket opening handshake (no I/O; never raises).

    Args:
        target (str): The request target, path and query (``/onebot/v11/ws?access_token=…``).
        raw_headers: The request headers as bytes pairs.
        path (str): The platform's ``path``; ``<path>/api`` and ``<path>/event``
            imply the role when ``X-Client-Role`` is absent.
        token (str | None): The access token required, if any.
        accepting (bool): False while the platform is disconnected on purpose.

    Returns:
        :class:`Accepted`, or :class:`Rejected` with 404 (unknown path), 401
        (missing or wrong token), 503 (not accepting) or 400 (no ``X-Self-ID``,
        or an unknown ``X-Client-Role``), checked in that order.
    """
    try:
        split = urlsplit(target)
    except ValueError:  # e.g. "//[x" (an unclosed IPv6 host): not a path we serve
        return Rejected(404, b"unknown path")
    request_path, query = split.path.rstrip("/") or "/", split.query
    base = path.rstrip("/") or "/"
    suffix_role = None
    if request_path == base:
        pass
    elif request_path == base.rstrip("/") + "/api":
        suffix_role = "API"
    elif request_path == base.rstrip("/") + "/event":
        suffix_role = "Event"
    else:
        return Rejected(404, b"unknown path")
    headers: dict[str, str] = {}
    for key, value in raw_headers:
        headers[key.decode("latin-1").lower()] = value.decode("latin-1")
    if not _authorized(token, headers, query):
        return Rejected(401, b"missing or wrong access token", auth=True)
    if not accepting:
        return Rejected(503, b"platform disconnected")
    raw_role = headers.get("x-client-role")
    role = _ROLES.get(raw_role.strip().lower()) if raw_role else (suffix_role or "Universal")
    self_id = headers.get("x-self-id", "").strip()
    if role is None or not self_id:
        return Rejected(400, b"need X-Self-ID and X-Client-Role Universal|API|Event")
    return Accepted(self_id=self_id, role=role)


@asynccontextmanager
async def open_client_websocket(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 2**20,
    connect_timeout: float = 10.0,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Dial a ``ws://`` / ``wss://`` URL; like ``trio_websocket.open_websocket_url``
    but the socket is closed on every path (trio-websocket 0.12 leaves it open
    when the handshake is rejected) and errors come out unwrapped.

    Raises:
        trio_websocket.ConnectionRejected: the server answered the handshake
            with an HTTP status (``status_code``).
        OSError: the TCP connection failed.
        trio.TooSlowError: the handshake took longer than ``connect_timeout``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                if secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        parts.hostname, port, https_compatible=True
                    )
                else:
                    stream = await trio.open_tcp_stream(parts.hostname, port)
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    stream,
                    host_header,
                    resource,
                    extra_headers=extra_headers,
                    max_message_size=max_message_size,
                )
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise sole_exception(group) from None
    finally:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
