"""OneBot v11 over WebSocket: reverse (we listen) and forward (we dial).

Protocol rules followed here (botuniverse/onebot-11):

* ``communication/ws-reverse.md``: the implementation connects to us with
  ``X-Self-ID`` (the bot account) and ``X-Client-Role`` (``Universal``, or
  ``API`` / ``Event`` for the two separate connections). A ``Universal``
  connection carries events and API calls; ``Event`` only events; ``API`` only
  calls and their responses.
* ``communication/ws.md``: forward WebSocket, we dial the implementation (its
  ``/`` is the universal endpoint); events arrive as JSON text frames; actions
  are ``{"action", "params", "echo"}`` and the response carries the same
  ``echo`` back.
* ``communication/authorization.md``: the token arrives as
  ``Authorization: Bearer <token>`` (``Token <token>`` is accepted as well, as
  some implementations send it) or as the ``access_token`` query parameter.
  A handshake with a missing or wrong token is rejected with HTTP 401 (the
  v11 text answers a *wrong* token with 403; NekoBot answers 401 to both, as
  issue 2 asks, and treats 401 and 403 alike when it dials out).
* ``event/meta.md``: ``heartbeat`` events carry ``interval`` in milliseconds;
  they feed the link's liveness (arrival time on the Trio clock, never the
  frame's ``time``). ``lifecycle`` ``connect`` is recorded.

Inbound frames are validated one at a time: a frame that is oversized
(``max_frame_size`` bytes), not JSON, not an object, or neither an event (has a
string ``post_type``) nor an action response (has ``echo``, ``status`` or
``retcode``) is counted and dropped; the link stays open. Each event becomes
``make_message(post_type, event, dedup_key=(self_id, message_id))`` and is
emitted to the router. JSON numbers are kept as Python ints, so signed and
unsigned int32 ``message_id`` values stay exact.

A second connection with the same ``X-Self-ID`` (and a conflicting role)
replaces the first: the new one is live at once, the old one is closed, and
bookkeeping is keyed by a connection *generation*, so the old one's cleanup
never removes the new one.

Several bot accounts may connect to one reverse-mode platform, each with its
own ``X-Self-ID`` (``communication/ws-reverse.md``: one connection, or an
``API`` + ``Event`` pair, per account). An outbound message names its account
with a ``self_id`` key in its content (removed before the action is sent); a
message for an account with no live API connection raises
:class:`~nekobot.errors.PlatformOffline` (the bot buffers it) and is never sent
through another account. Without ``self_id`` the newest API connection is used.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import trio
import trio_websocket

from ...errors import (
    CallTimeout,
    ConnectionClosed,
    FieldValueError,
    FrameTooLarge,
    InvalidRequest,
    OneBotActionFailed,
    PlatformOffline,
    sole_exception,
)
from ...messages import Message, OutboundMessage, SendReceipt
from ..base import PlatformActor, PlatformContext
from ..connection_manager import AuthFailed, ConnectionManager, Link, record_metric

__all__ = ["AccountOffline", "OneBotV11Config", "OneBotV11Platform", "open_client_websocket"]

log = logging.getLogger(__name__)

_MODES = ("reverse", "forward")
_ROLES = {"universal": "Universal", "api": "API", "event": "Event"}
TRANSPORT_LIMIT_FACTOR = 4
"""The WebSocket layer refuses (close 1009) frames above ``TRANSPORT_LIMIT_FACTOR
x max_frame_size``; frames between the two limits are counted and dropped with
the link kept open. The hard limit bounds memory per frame."""
REPLACED_CLOSE_CODE = 4001
"""Close code sent to a connection replaced by a newer one with the same X-Self-ID."""


class AccountOffline(PlatformOffline):
    """The bot account a message names (``self_id``) has no live API connection,
    though the platform may be online through other accounts.

    A :class:`~nekobot.errors.PlatformOffline`: the bot buffers the message.

    Attributes:
        platform_id (str): The platform.
        self_id (str): The account, as its ``X-Self-ID`` text.
    """

    def __init__(self, platform_id: str, self_id: str) -> None:
        self.platform_id = platform_id
        self.self_id = self_id
        super().__init__(
            f"platform {platform_id!r}: account self_id={self_id} has no live OneBot API connection"
        )


def _check(pred: Callable[[Any], bool], text: str) -> Callable[[Any, Any, Any], None]:
    """An attrs validator raising :class:`FieldValueError` (the config loader
    then names the key: ``platforms.<id>.<field>: <text>, got <value>``)."""

    def validator(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            ok = pred(value)
        except TypeError:
            ok = False
        if not ok:
            raise FieldValueError(attribute.name, f"{text}, got {value!r}")

    return validator


def _positive_seconds(v: Any) -> bool:
    return math.isfinite(v) and v > 0


@attrs.frozen(kw_only=True)
class OneBotV11Config:
    """The OneBot v11 keys of ``[platforms.<id>]`` (``type = "onebot_v11"``)."""

    mode: str = attrs.field(
        default="reverse", validator=_check(lambda v: v in _MODES, "must be 'reverse' or 'forward'")
    )
    """``"reverse"``: we listen and the implementation connects to us;
    ``"forward"``: we dial the implementation at :attr:`url`."""
    host: str = "127.0.0.1"
    """Reverse mode: interface to listen on."""
    port: int = attrs.field(
        default=8080, validator=_check(lambda v: 0 <= v <= 65535, "must be 0..65535")
    )
    """Reverse mode: TCP port to listen on (0 = any free port; see ``bound_port``)."""
    path: str = attrs.field(
        default="/onebot/v11/ws",
        validator=_check(lambda v: v.startswith("/"), "must start with '/'"),
    )
    """Reverse mode: URL path the implementation connects to. ``<path>/api`` and
    ``<path>/event`` are accepted as well (role taken from ``X-Client-Role``,
    else from the suffix)."""
    url: str = "ws://127.0.0.1:6700/"
    """Forward mode: the implementation's WebSocket URL (``ws://`` or ``wss://``)."""
    access_token: str | None = None
    """Shared token; ``None`` or ``""`` = no authentication."""
    max_frame_size: int = attrs.field(
        default=8 * 1024 * 1024, validator=_check(lambda v: v > 0, "must be > 0")
    )
    """Largest frame (bytes, UTF-8) accepted or sent; bigger inbound frames are
    counted and dropped, a bigger outbound frame fails that call only."""
    api_timeout: float = attrs.field(
        default=30.0, validator=_check(_positive_seconds, "must be a finite number > 0")
    )
    """Seconds (Trio clock) ``call_api`` waits for the response by default."""
    max_pending_events: int = attrs.field(
        default=100_000, validator=_check(lambda v: v > 0, "must be > 0")
    )
    """Events read from the links but not yet accepted by the router, at most.

    The frame reader never waits for the router: action responses arrive on the
    same connection as events, and the handlers that fill the router wait for
    those responses, so a reader blocked on a full router would deadlock the
    link. Events queue here in arrival order instead; past this bound they are
    counted (``dropped_backlog``), dropped and alerted, bounding memory."""
    connect_timeout: float = attrs.field(
        default=10.0, validator=_check(_positive_seconds, "must be a finite number > 0")
    )
    """Seconds a WebSocket opening handshake may take (both modes)."""

    def __attrs_post_init__(self) -> None:
        if self.mode == "forward" and not self.url.startswith(("ws://", "wss://")):
            raise FieldValueError("url", f"must be a ws:// or wss:// URL, got {self.url!r}")


class _Pending:
    __slots__ = ("conn_generation", "done", "error", "response")

    def __init__(self, conn_generation: int) -> None:
        self.conn_generation = conn_generation
        self.done = trio.Event()
        self.response: Mapping[str, Any] | None = None
        self.error: BaseException | None = None


@attrs.define(eq=False)
class _Conn:
    ws: trio_websocket.WebSocketConnection
    link: Link
    self_id: str
    role: str
    pending: set[str] = attrs.field(factory=set)
    closed: bool = False

    @property
    def generation(self) -> int:
        return self.link.generation

    @property
    def api_capable(self) -> bool:
        return self.role != "Event"


def _conflicts(new_role: str, old_role: str) -> bool:
    return new_role == "Universal" or old_role == "Universal" or new_role == old_role


def _echo_key(echo: Any) -> str | None:
    try:
        return json.dumps(echo, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        return None


def _id_key(value: Any) -> Any:
    """An id as the dedup key holds it: a decimal string becomes its int."""
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 24:
        return int(value)
    return value


def _utf8_len_at_most(text: str, limit: int) -> bool:
    if len(text) > limit:  # every character takes at least one byte
        return False
    if len(text) * 4 <= limit:  # and at most four
        return True
    return len(text.encode("utf-8", "surrogatepass")) <= limit


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


class OneBotV11Platform(PlatformActor):
    """A OneBot v11 implementation (go-cqhttp, NapCat, Lagrange…) over WebSocket.

    In reverse mode several accounts may connect, one connection per account
    (``X-Self-ID``, OneBot v11 ``communication/ws-reverse.md``); outbound
    messages pick theirs with ``content["self_id"]`` (see :meth:`send`).

    Args:
        platform_id (str): The ``<id>`` of ``[platforms.<id>]``.
        config (OneBotV11Config): The platform's section.
        connection (ConnectionConfig): Reconnect and heartbeat settings.
        context (PlatformContext): The bot's hooks (alerts, metrics, link up/down).

    Attributes:
        bound_port (int | None): Reverse mode: the port the listener is bound to
            (useful with ``port = 0``), set before ``task_status.started()``.
        connection_manager (ConnectionManager): This platform's link keeper.
    """

    platform_type = "onebot_v11"
    config_class = OneBotV11Config

    def __init__(
        self,
        platform_id: str,
        config: OneBotV11Config | None = None,
        *,
        connection: Any = None,
        context: PlatformContext | None = None,
    ) -> None:
        super().__init__(
            platform_id, config or OneBotV11Config(), connection=connection, context=context
        )
        self.config: OneBotV11Config
        self.connection_manager = ConnectionManager(
            platform_id, self.connection_config, context=self.context
        )
        self.connection_manager.set_callbacks(self.set_online, self.set_offline)
        self.bound_port: int | None = None
        self._conns: dict[int, _Conn] = {}
        self._pending: dict[str, _Pending] = {}
        self._echo_seq = itertools.count(1)
        self._echo_prefix = secrets.token_hex(3)  # unique across instances (hot reload)
        self._nursery: trio.Nursery | None = None
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[Message](
            self.config.max_pending_events
        )
        self.counters: dict[str, int] = {
            "frames_received": 0,
            "events": 0,
            "responses": 0,
            "dropped_not_json": 0,
            "dropped_not_object": 0,
            "dropped_no_post_type": 0,
            "dropped_oversized": 0,
            "dropped_backlog": 0,
            "responses_unmatched": 0,
            "handshakes_rejected_auth": 0,
            "handshakes_rejected_other": 0,
            "connections_replaced": 0,
            "calls_failed_oversized": 0,
        }
        """Frame and call counters (monotonic, since this instance started)."""
        self.lifecycle: dict[str, dict[str, Any]] = {}
        """Last ``lifecycle`` meta event per self_id: ``{"sub_type", "time"}``
        (``time`` is the frame's own field, for display only)."""
        token = self.config.access_token
        self._token: str | None = token if token else None

    # ---- lifecycle --------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (reverse) or dial (forward) until cancelled.

        Reverse mode calls ``task_status.started()`` once the listener is bound
        (``bound_port`` set). Forward mode calls it once the first connection
        attempt is scheduled, without waiting for its outcome: the bot starts
        even while the implementation is down, and sends are buffered until the
        link comes up.

        Raises:
            OSError: reverse mode, when the port cannot be bound.
            ReconnectExhausted: forward mode, after ``max_reconnect_attempts``
                consecutive failures (the supervisor reports the fault).
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._emitter)
                if self.config.mode == "reverse":
                    server = await nursery.start(
                        partial(
                            trio_websocket.serve_websocket,
                            self._handle_request,
                            self.config.host,
                            self.config.port,
                            None,
                            max_message_size=self.config.max_frame_size * TRANSPORT_LIMIT_FACTOR,
                            connect_timeout=self.config.connect_timeout,
                            disconnect_timeout=1.0,
                        )
                    )
                    # (``server.port`` refuses several listeners, e.g. "localhost"
                    # bound on IPv4 and IPv6; with port 0 each may differ: the first)
                    first = server.listeners[0]
                    self.bound_port = first.port if hasattr(first, "port") else server.port
                    log.info(
                        "%s: OneBot v11 reverse WebSocket on ws://%s:%d%s",
                        self.platform_id,
                        self.config.host,
                        self.bound_port,
                        self.config.path,
                    )
                else:
                    await nursery.start(self.connection_manager.run, self._dial)
                task_status.started()
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
        finally:
            self._nursery = None
            self._fail_all_pending("platform stopped")

    # ---- reverse WebSocket --------------------------------------------------

    async def _handle_request(self, request: trio_websocket.WebSocketRequest) -> None:
        # One connection's I/O trouble (peer gone mid-handshake, reset) must not
        # take the listener and its other connections down; other errors do
        # fail the platform (the supervisor decides).
        try:
            await self._handle_request_inner(request)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, OSError) as exc:
            log.info("%s: a reverse connection ended with %r", self.platform_id, exc)

    async def _handle_request_inner(self, request: trio_websocket.WebSocketRequest) -> None:
        split = urlsplit(request.path)
        path = split.path.rstrip("/") or "/"
        base = self.config.path.rstrip("/") or "/"
        suffix_role = None
        if path == base:
            pass
        elif path == base.rstrip("/") + "/api":
            suffix_role = "API"
        elif path == base.rstrip("/") + "/event":
            suffix_role = "Event"
        else:
            self.counters["handshakes_rejected_other"] += 1
            await request.reject(404, body=b"unknown path")
            return
        headers: dict[str, str] = {}
        for key, value in request.headers:
            headers[key.decode("latin-1").lower()] = value.decode("latin-1")
        if not self._authorized(headers, split.query):
            self.counters["handshakes_rejected_auth"] += 1
            log.warning("%s: rejected a handshake with a missing or wrong token", self.platform_id)
            await request.reject(401, body=b"missing or wrong access token")
            return
        if not self.connection_manager.accepting:
            self.counters["handshakes_rejected_other"] += 1
            await request.reject(503, body=b"platform disconnected")
            return
        raw_role = headers.get("x-client-role")
        role = _ROLES.get(raw_role.strip().lower()) if raw_role else (suffix_role or "Universal")
        self_id = headers.get("x-self-id", "").strip()
        if role is None or not self_id:
            self.counters["handshakes_rejected_other"] += 1
            await request.reject(400, body=b"need X-Self-ID and X-Client-Role Universal|API|Event")
            return
        ws = await request.accept()
        await self.connection_manager.serve_link(partial(self._serve_conn, ws, self_id, role))

    def _authorized(self, headers: Mapping[str, str], query: str) -> bool:
        if self._token is None:
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
        return hmac.compare_digest(given.encode(), self._token.encode())

    # ---- forward WebSocket --------------------------------------------------

    async def _dial(self, link: Link) -> None:
        headers = []
        if self._token is not None:
            headers.append((b"Authorization", f"Bearer {self._token}".encode()))
        try:
            async with open_client_websocket(
                self.config.url,
                extra_headers=headers,
                max_message_size=self.config.max_frame_size * TRANSPORT_LIMIT_FACTOR,
                connect_timeout=self.config.connect_timeout,
            ) as ws:
                await self._serve_conn(ws, "", "Universal", link)
        except trio_websocket.ConnectionRejected as exc:
            if exc.status_code in (401, 403):
                raise AuthFailed(f"handshake rejected with HTTP {exc.status_code}") from exc
            raise
        if link.close_code == 1008:
            raise AuthFailed(f"closed with 1008 ({link.close_reason})")

    # ---- one connection -------------------------------------------------------

    async def _serve_conn(
        self, ws: trio_websocket.WebSocketConnection, self_id: str, role: str, link: Link
    ) -> None:
        conn = _Conn(ws=ws, link=link, self_id=self_id, role=role)
        link.set_closer(ws.aclose)
        link.set_pinger(ws.ping)
        live_api = [c for c in self._api_conns() if c.self_id]
        # An account comes back while others keep the platform online: the
        # link-up callback does not fire, so tell the bot here that messages
        # buffered for this account can be replayed now.
        account_returns = (
            conn.api_capable
            and bool(self_id)
            and bool(live_api)
            and all(c.self_id != self_id for c in live_api)
        )
        self._conns[conn.generation] = conn
        try:
            await link.up(api_capable=conn.api_capable)
            if conn.api_capable and self_id:
                await self._account_changed(self_id)
            if account_returns and self.online:
                try:
                    await self.set_online()
                except Exception:  # the link is up regardless
                    log.exception("%s: link-up callback failed", self.platform_id)
            if self_id:
                for other in list(self._conns.values()):
                    if (
                        other is not conn
                        and other.self_id == self_id
                        and other.generation < conn.generation
                        and _conflicts(role, other.role)
                    ):
                        self.counters["connections_replaced"] += 1
                        log.info(
                            "%s: X-Self-ID %s reconnected; closing the older connection",
                            self.platform_id,
                            self_id,
                        )
                        self._forget(other, "replaced by a newer connection")
                        assert self._nursery is not None
                        self._nursery.start_soon(
                            self.connection_manager.close_link,
                            other.link,
                            REPLACED_CLOSE_CODE,
                            "replaced by a newer connection",
                        )
            while True:
                try:
                    data = await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    reason = exc.reason
                    if link.close_code is None and reason is not None:
                        link.closed(int(reason.code), reason.reason)
                    return
                link.activity()
                await self._on_frame(conn, data)
        finally:
            self._forget(conn, f"connection closed (code={link.close_code})")
            if conn.api_capable and conn.self_id:
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    await self._account_changed(conn.self_id)

    async def _account_changed(self, self_id: str) -> None:
        """Tell the bot whether account ``self_id`` has a live API connection now."""
        up = any(c.self_id == self_id for c in self._api_conns())
        try:
            await self.set_account_online(self_id, up)
        except Exception:  # the link is what it is regardless
            log.exception("%s: account %s callback failed", self.platform_id, self_id)

    @classmethod
    def account_of(cls, message_type: str, content: Any) -> str | None:
        """The ``self_id`` a message names (see :meth:`send`), as a string."""
        if isinstance(content, dict) and content.get("self_id") is not None:
            return str(content["self_id"])
        return None

    def _forget(self, conn: _Conn, why: str) -> None:
        """Drop a connection from the tables (by generation) and fail its calls now."""
        if self._conns.get(conn.generation) is conn:
            del self._conns[conn.generation]
        if conn.closed:
            return
        conn.closed = True
        for echo in list(conn.pending):
            slot = self._pending.get(echo)
            if slot is not None and slot.error is None and slot.response is None:
                slot.error = ConnectionClosed(f"platform {self.platform_id!r}: {why}")
                slot.done.set()
        conn.pending.clear()

    def _fail_all_pending(self, why: str) -> None:
        for conn in list(self._conns.values()):
            self._forget(conn, why)

    # ---- inbound frames -------------------------------------------------------

    def _drop(self, counter: str) -> None:
        self.counters[counter] += 1
        record_metric(
            self.context,
            "onebot_frames_dropped_total",
            1.0,
            "counter",
            {"platform_id": self.platform_id, "reason": counter.removeprefix("dropped_")},
        )

    async def _on_frame(self, conn: _Conn, data: str | bytes) -> None:
        self.counters["frames_received"] += 1
        limit = self.config.max_frame_size
        if isinstance(data, bytes):
            if len(data) > limit:
                self._drop("dropped_oversized")
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self._drop("dropped_not_json")
                return
        else:
            if not _utf8_len_at_most(data, limit):
                self._drop("dropped_oversized")
                return
            text = data
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            self._drop("dropped_not_json")
            return
        if not isinstance(frame, dict):
            self._drop("dropped_not_object")
            return
        post_type = frame.get("post_type")
        if isinstance(post_type, str) and post_type:
            await self._on_event(conn, post_type, frame)
        elif "post_type" not in frame and (
            "echo" in frame or "status" in frame or "retcode" in frame
        ):
            self._on_response(frame)
        else:
            self._drop("dropped_no_post_type")

    async def _on_event(self, conn: _Conn, post_type: str, event: dict[str, Any]) -> None:
        self.counters["events"] += 1
        self_id = event.get("self_id")
        if post_type == "meta_event":
            kind = event.get("meta_event_type")
            if kind == "heartbeat":
                interval = event.get("interval")
                seconds = None
                if isinstance(interval, int | float) and not isinstance(interval, bool):
                    if math.isfinite(interval) and interval > 0:
                        seconds = interval / 1000.0  # OneBot v11 event/meta.md: milliseconds
                conn.link.heartbeat(seconds)
            elif kind == "lifecycle":
                self.lifecycle[str(self_id)] = {
                    "sub_type": event.get("sub_type"),
                    "time": event.get("time"),
                }
                sub_type = event.get("sub_type")
                log.info(
                    "%s: lifecycle event %s from self_id %s",
                    self.platform_id,
                    sub_type if isinstance(sub_type, str) and sub_type else "(no sub_type)",
                    self_id,
                )
        if not conn.self_id and self_id is not None:
            conn.self_id = str(self_id)  # forward mode learns its account here
            if conn.api_capable:
                await self._account_changed(conn.self_id)
        message_id = event.get("message_id")
        # OneBot v11 ids are int32 (event/message.md); some implementations send
        # them as strings, so "123" and 123 are one message for the dedup window.
        dedup = (_id_key(self_id), _id_key(message_id)) if message_id is not None else None
        try:
            hash(dedup)
        except TypeError:
            dedup = None
        msg = self.make_message(post_type, event, dedup_key=dedup)
        try:
            self._inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            self._drop("dropped_backlog")
            if (
                self.counters["dropped_backlog"] == 1
                or self.counters["dropped_backlog"] % 1000 == 0
            ):
                await self._alert_backlog()

    async def _emitter(self) -> None:
        """Hands queued events to the router in arrival order; waits when it is full."""
        async for msg in self._inbox_recv:
            await self.emit(msg)

    async def _alert_backlog(self) -> None:
        hook = self.context.raise_alert
        text = (
            f"event backlog full: {self.platform_id} dropped "
            f"{self.counters['dropped_backlog']} events (more than "
            f"{self.config.max_pending_events} waiting for the router)"
        )
        log.warning("%s", text)
        if hook is not None:
            try:
                await hook(self.platform_id, "error", text)
            except Exception:
                log.exception("%s: raising an alert failed", self.platform_id)

    def _on_response(self, frame: dict[str, Any]) -> None:
        self.counters["responses"] += 1
        key = _echo_key(frame.get("echo"))
        slot = self._pending.get(key) if key is not None else None
        if slot is None or slot.done.is_set():
            self.counters["responses_unmatched"] += 1
            return
        slot.response = frame
        slot.done.set()

    # ---- outbound -------------------------------------------------------------

    def _api_conns(self) -> list[_Conn]:
        return [c for c in self._conns.values() if c.api_capable and c.link.is_up and not c.closed]

    def _api_conn(self, self_id: Any = None) -> _Conn:
        """The connection that carries a call for account ``self_id``.

        With ``self_id``: the newest API-capable connection of that account; a
        connection whose account is not known yet (forward mode before its
        first event) serves when no connection names the account. Never
        another account's connection. Without ``self_id``: the newest
        API-capable connection (the only one when one account is connected).

        Raises:
            AccountOffline: ``self_id`` names an account with no live API connection.
            PlatformOffline: no live API-capable connection at all.
        """
        candidates = self._api_conns()
        if self_id is not None:
            wanted = str(self_id)
            matching = [c for c in candidates if c.self_id == wanted]
            candidates = matching or [c for c in candidates if not c.self_id]
            if not candidates:
                raise AccountOffline(self.platform_id, wanted)
        if not candidates:
            raise PlatformOffline(
                f"platform {self.platform_id!r} has no live OneBot API connection"
            )
        return max(candidates, key=lambda c: c.generation)

    async def call_api(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the contract's signature)
        *,
        self_id: Any = None,
        echo: Any = None,
    ) -> Any:
        """Call one OneBot v11 action and return the response's ``data``.

        Args:
            action (str): The action name (``send_msg``, ``get_status``…).
            params (Mapping | None): The action's parameters.
            timeout (float | None): Seconds (Trio clock) to wait for the response;
                default ``api_timeout``.
            self_id: The bot account (``X-Self-ID``, int or str) whose connection
                carries the call. If that account has no live API-capable
                connection, :class:`PlatformOffline` is raised: a call never
                goes out through another account. ``None``: the newest
                API-capable connection (the only one when one account is
                connected).
            echo: The ``echo`` to send, any JSON value (default: a fresh unique
                string). The response is matched by its JSON value (object key
                order aside), so non-string echoes work.

        Returns:
            The response's ``data`` (``None`` for ``status: "async"``).

        Raises:
            PlatformOffline: no live connection can carry the call;
                :class:`AccountOffline` (a subclass) when the account
                ``self_id`` has none.
            InvalidRequest: ``echo`` is not JSON, or a pending call uses it.
            FrameTooLarge: the encoded frame exceeds ``max_frame_size`` (only this
                call fails).
            ConnectionClosed: the connection closed before the response arrived
                (every pending call fails at once).
            CallTimeout: no response within ``timeout``.
            OneBotActionFailed: the response had ``status: "failed"`` or a
                ``retcode`` other than 0 (ok) and 1 (async).
        """
        conn = self._api_conn(self_id)
        if echo is None:
            echo = f"nb-{self._echo_prefix}-{next(self._echo_seq)}"
        key = _echo_key(echo)
        if key is None:
            raise InvalidRequest(f"echo: not a JSON value: {echo!r}")
        if key in self._pending:
            raise InvalidRequest(f"echo: {echo!r} is already used by a pending call")
        frame = json.dumps(
            {"action": action, "params": dict(params or {}), "echo": echo},
            ensure_ascii=False,
        )
        if not _utf8_len_at_most(frame, self.config.max_frame_size):
            self.counters["calls_failed_oversized"] += 1
            raise FrameTooLarge(
                f"{action}: frame larger than max_frame_size={self.config.max_frame_size} bytes"
            )
        slot = _Pending(conn.generation)
        self._pending[key] = slot
        conn.pending.add(key)
        t0 = trio.current_time()
        limit = self.config.api_timeout if timeout is None else timeout
        try:
            with trio.move_on_after(limit):
                try:
                    await conn.ws.send_message(frame)
                except trio_websocket.ConnectionClosed as exc:
                    raise ConnectionClosed(
                        f"platform {self.platform_id!r}: connection closed while sending {action}"
                    ) from exc
                await slot.done.wait()
        finally:
            self._pending.pop(key, None)
            conn.pending.discard(key)
        if slot.error is not None:
            raise slot.error
        if slot.response is None:
            raise CallTimeout(f"{action}: no response within {limit:g} s (echo {echo})")
        self.connection_manager.record_latency((trio.current_time() - t0) * 1000.0)
        resp = slot.response
        retcode = resp.get("retcode", 0)
        status = resp.get("status", "ok")
        if status == "failed" or retcode not in (0, 1):
            msg = resp.get("wording") or resp.get("msg") or resp.get("message") or ""
            raise OneBotActionFailed(retcode if isinstance(retcode, int) else -1, str(msg))
        return resp.get("data")

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Send one outbound message as a OneBot action.

        ``message_type`` is the action name, or ``"private"`` / ``"group"`` as a
        shorthand for ``send_msg`` with that ``message_type``; ``content`` is
        the action's ``params``, except for the key ``self_id``.

        ``self_id`` selects the bot account and is removed from the params
        sent (it is routing, not an action parameter). OneBot v11
        (``communication/ws-reverse.md``) has one connection (or an ``API`` +
        ``Event`` pair) per bot account, named by its ``X-Self-ID`` header, so
        with several accounts on one platform a reply must name the account
        the event came from: pass ``"self_id": event["self_id"]`` (the echo
        plugin's :func:`~nekobot.plugins.echo.reply_target` does).

        * That account has no live API-capable connection:
          :class:`AccountOffline` (a :class:`~nekobot.errors.PlatformOffline`)
          is raised and the bot buffers the message; it never goes out through
          another account. When the account connects again the platform calls
          :meth:`set_online` (even if other accounts kept it online), so the
          buffer replays at once.
        * Forward mode: until the first event names the connection's account,
          that one connection serves any ``self_id``.
        * Without ``self_id``: the newest API-capable connection, which is only
          right when one account is connected.

        Raises:
            PlatformOffline, ConnectionClosed: not delivered (the bot buffers
                it); :class:`AccountOffline` when only ``self_id``'s account is.
            InvalidRequest: ``content`` is not an object.
            OneBotActionFailed, CallTimeout, FrameTooLarge: see :meth:`call_api`.
        """
        if message.content is not None and not isinstance(message.content, Mapping):
            raise InvalidRequest("content: must be an object (the OneBot action's params)")
        params = dict(message.content or {})
        self_id = params.pop("self_id", None)
        action = message.message_type
        if action in ("private", "group"):
            params.setdefault("message_type", action)
            action = "send_msg"
        data = await self.call_api(action, params, self_id=self_id)
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key, data=data)

    # ---- stats ----------------------------------------------------------------

    def get_connection_stats(self) -> dict[str, Any]:
        """Connection stats for ``GET /api/connection/stats`` (JSON-able dict).

        The :class:`~nekobot.connection_manager.ConnectionStats` fields plus
        ``mode``, ``bound_port`` / ``url``, ``connections`` (self_id, role,
        generation), ``pending_calls``, ``counters`` and ``lifecycle``.
        """
        stats = self.connection_manager.get_connection_stats().to_dict()
        stats.update(
            mode=self.config.mode,
            bound_port=self.bound_port,
            url=self.config.url if self.config.mode == "forward" else None,
            connections=[
                {"self_id": c.self_id, "role": c.role, "generation": c.generation}
                for c in sorted(self._conns.values(), key=lambda c: c.generation)
            ],
            pending_calls=len(self._pending),
            counters=dict(self.counters),
            lifecycle={k: dict(v) for k, v in self.lifecycle.items()},
        )
        return stats
