"""The OneBot v11 platform actor: listens (reverse) or dials (forward), reads
frames, emits events to the router, and carries action calls.

The protocol rules it follows are summed up in :mod:`nekobot.platforms.onebot_v11`;
the handshake is :mod:`.websocket`, frame reading :mod:`.frames`, the
connection and account tables :mod:`.connections`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio
import trio_websocket

from ...config.schema import ConnectionConfig
from ...errors import (
    CallTimeout,
    ConnectionClosed,
    FrameTooLarge,
    InvalidRequest,
    sole_exception,
)
from ...messages import Message, OutboundMessage, SendReceipt
from ..base import PlatformActor, PlatformContext, record_metric
from ..connection_manager import ConnectionManager
from ..link import AuthFailed, Link
from .config import OneBotV11Config
from .connections import Conn, ConnectionTable
from .frames import (
    Drop,
    Event,
    Response,
    account_id,
    dedup_key,
    echo_key,
    encode_action,
    heartbeat_seconds,
    parse_frame,
    result_of,
)
from .websocket import TRANSPORT_LIMIT_FACTOR, Accepted, check_handshake, open_client_websocket

__all__ = ["REPLACED_CLOSE_CODE", "OneBotV11Platform"]

log = logging.getLogger(__name__)

REPLACED_CLOSE_CODE = 4001
"""Close code sent to a connection replaced by a newer one with the same X-Self-ID."""

MAX_LIFECYCLE_ACCOUNTS = 1024
"""``lifecycle`` entries kept at most (the oldest account's goes first), so a
peer naming ever new ``self_id`` values cannot grow it without bound."""


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
        connection: ConnectionConfig | None = None,
        context: PlatformContext | None = None,
    ) -> None:
        super().__init__(
            platform_id, config or OneBotV11Config(), connection=connection, context=context
        )
        self.config: OneBotV11Config
        self.connection_manager = ConnectionManager(
            platform_id,
            self.connection_config,
            context=self.context,
            connect_callback=self.set_online,
            disconnect_callback=self.set_offline,
        )
        self.bound_port: int | None = None
        self._table = ConnectionTable(platform_id)
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
            **{f"dropped_{reason.value}": 0 for reason in Drop},
            "dropped_backlog": 0,
            "frames_failed": 0,
            "responses_unmatched": 0,
            "handshakes_rejected_auth": 0,
            "handshakes_rejected_other": 0,
            "connections_replaced": 0,
            "calls_failed_oversized": 0,
        }
        """Frame and call counters (monotonic, since this instance started).
        ``dropped_<reason>`` per :class:`~.frames.Drop` reason and
        ``dropped_backlog`` count dropped frames; ``frames_failed`` counts frames
        whose handling raised unexpectedly (logged with the traceback; the link
        stays up)."""
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
            self._table.forget_all("platform stopped")

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
        verdict = check_handshake(
            request.path,
            request.headers,
            path=self.config.path,
            token=self._token,
            accepting=self.connection_manager.accepting,
        )
        if not isinstance(verdict, Accepted):
            if verdict.auth:
                self.counters["handshakes_rejected_auth"] += 1
                log.warning(
                    "%s: rejected a handshake with a missing or wrong token", self.platform_id
                )
            else:
                self.counters["handshakes_rejected_other"] += 1
            await request.reject(verdict.status, body=verdict.body)
            return
        ws = await request.accept()
        await self.connection_manager.serve_link(
            partial(self._serve_conn, ws, verdict.self_id, verdict.role)
        )

    # ---- forward WebSocket --------------------------------------------------

    async def _dial(self, link: Link) -> None:
        headers: list[tuple[bytes, bytes]] = []
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
        conn = Conn(ws=ws, link=link, self_id=self_id, role=role)
        link.set_closer(ws.aclose)
        link.set_pinger(ws.ping)
        # An account comes back while others keep the platform online: the
        # link-up callback does not fire, so tell the bot here that messages
        # buffered for this account can be replayed now.
        account_returns = self._table.is_returning_account(conn)
        self._table.add(conn)
        try:
            await link.up(api_capable=conn.api_capable)
            if conn.api_capable and self_id:
                await self._account_changed(self_id)
            if account_returns and self.online:
                try:
                    await self.set_online()
                except Exception:  # the link is up regardless
                    log.exception("%s: link-up callback failed", self.platform_id)
            for other in self._table.replaced_by(conn):
                self.counters["connections_replaced"] += 1
                log.info(
                    "%s: X-Self-ID %s reconnected; closing the older connection",
                    self.platform_id,
                    self_id,
                )
                self._table.forget(other, "replaced by a newer connection")
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
                try:
                    await self._on_frame(conn, data)
                except Exception:  # no frame may take the link down: count, log, go on
                    self.counters["frames_failed"] += 1
                    log.exception("%s: handling a frame failed; dropped it", self.platform_id)
        finally:
            self._table.forget(conn, f"connection closed (code={link.close_code})")
            if conn.api_capable and conn.self_id:
                with trio.move_on_after(1.0) as scope:
                    scope.shield = True
                    await self._account_changed(conn.self_id)

    async def _account_changed(self, self_id: str) -> None:
        """Tell the bot whether account ``self_id`` has a live API connection now."""
        try:
            await self.set_account_online(self_id, self._table.has_api(self_id))
        except Exception:  # the link is what it is regardless
            log.exception("%s: account %s callback failed", self.platform_id, self_id)

    @classmethod
    def account_of(cls, message_type: str, content: Any) -> str | None:
        """The ``self_id`` a message names (see :meth:`send`), as a string."""
        if isinstance(content, dict) and content.get("self_id") is not None:
            return str(content["self_id"])
        return None

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

    async def _on_frame(self, conn: Conn, data: str | bytes) -> None:
        self.counters["frames_received"] += 1
        frame = parse_frame(data, self.config.max_frame_size)
        if isinstance(frame, Event):
            await self._on_event(conn, frame.post_type, frame.body)
        elif isinstance(frame, Response):
            self._on_response(frame.body)
        else:
            self._drop(f"dropped_{frame.value}")

    async def _on_event(self, conn: Conn, post_type: str, event: dict[str, Any]) -> None:
        self.counters["events"] += 1
        self_id = event.get("self_id")
        if post_type == "meta_event":
            kind = event.get("meta_event_type")
            if kind == "heartbeat":
                conn.link.heartbeat(heartbeat_seconds(event.get("interval")))
            elif kind == "lifecycle":
                self._record_lifecycle(self_id, event)
        if not conn.self_id:
            learned = account_id(self_id)
            if learned is not None:
                conn.self_id = learned  # forward mode learns its account here
                if conn.api_capable:
                    await self._account_changed(conn.self_id)
        msg = self.make_message(
            post_type, event, dedup_key=dedup_key(self_id, event.get("message_id"))
        )
        try:
            self._inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            self._drop("dropped_backlog")
            if (
                self.counters["dropped_backlog"] == 1
                or self.counters["dropped_backlog"] % 1000 == 0
            ):
                await self._alert_backlog()

    def _record_lifecycle(self, self_id: object, event: dict[str, Any]) -> None:
        key = str(self_id)
        if key not in self.lifecycle and len(self.lifecycle) >= MAX_LIFECYCLE_ACCOUNTS:
            del self.lifecycle[next(iter(self.lifecycle))]
        sub_type = event.get("sub_type")
        self.lifecycle[key] = {"sub_type": sub_type, "time": event.get("time")}
        log.info(
            "%s: lifecycle event %s from self_id %.64s",
            self.platform_id,
            f"{sub_type:.64}" if isinstance(sub_type, str) and sub_type else "(no sub_type)",
            key,
        )

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
        if not self._table.resolve(echo_key(frame.get("echo")), frame):
            self.counters["responses_unmatched"] += 1

    # ---- outbound -------------------------------------------------------------

    async def call_api(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
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
        conn = self._table.choose(self_id)
        if echo is None:
            echo = f"nb-{self._echo_prefix}-{next(self._echo_seq)}"
        key = echo_key(echo)
        if key is None:
            raise InvalidRequest(f"echo: not a JSON value: {echo!r}")
        if key in self._table.pending:
            raise InvalidRequest(f"echo: {echo!r} is already used by a pending call")
        frame, size = encode_action(action, params or {}, echo)
        if size > self.config.max_frame_size:
            self.counters["calls_failed_oversized"] += 1
            raise FrameTooLarge(
                f"{action}: frame larger than max_frame_size={self.config.max_frame_size} bytes"
            )
        slot = self._table.begin_call(conn, key, echo)
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
            self._table.end_call(conn, key)
        if slot.error is not None:
            raise slot.error
        if slot.response is None:
            raise CallTimeout(f"{action}: no response within {limit:g} s (echo {echo})")
        self.connection_manager.record_latency((trio.current_time() - t0) * 1000.0)
        return result_of(slot.response)

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

        The :class:`~nekobot.platforms.connection_manager.ConnectionStats` fields plus
        ``mode``, ``bound_port`` / ``url``, ``connections`` (self_id, role,
        generation), ``pending_calls``, ``counters`` and ``lifecycle``.
        """
        stats = self.connection_manager.get_connection_stats().to_dict()
        stats.update(
            mode=self.config.mode,
            bound_port=self.bound_port,
            url=self.config.url if self.config.mode == "forward" else None,
            connections=self._table.rows(),
            pending_calls=len(self._table.pending),
            counters=dict(self.counters),
            lifecycle={k: dict(v) for k, v in self.lifecycle.items()},
        )
        return stats
