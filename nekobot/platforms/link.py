"""One link of a platform and what the connection manager reports about it.

:class:`Link` is handed to a connector (one live or starting connection);
:class:`ConnectionStatus` and :class:`ConnectionStats` are what
``get_connection_stats()`` shows; :class:`AuthFailed`,
:class:`ReconnectExhausted` and :class:`LinkClosed` are the link's errors.
Times are seconds on the Trio clock unless a name says wall clock.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ..config.schema import ConnectionConfig
from ..errors import NekoBotError

__all__ = [
    "HEARTBEAT_CLOSE_CODE",
    "AuthFailed",
    "Closer",
    "ConnectionStats",
    "ConnectionStatus",
    "Link",
    "LinkClosed",
    "Pinger",
    "ReconnectExhausted",
    "effective_timeout",
]


class ConnectionStatus(enum.Enum):
    """State of a platform's link, as :meth:`ConnectionManager.get_connection_stats` shows it."""

    CONNECTING = "connecting"
    """The first attempt (or an attempt after :meth:`ConnectionManager.connect`) is running."""
    CONNECTED = "connected"
    """At least one link is up."""
    DISCONNECTED = "disconnected"
    """No link, and none is being dialled (closed on purpose, or waiting for a peer)."""
    RECONNECTING = "reconnecting"
    """The link was lost; the reconnect loop waits out its backoff or is dialling."""
    ERROR = "error"
    """``max_reconnect_attempts`` consecutive attempts failed; the loop gave up."""


class AuthFailed(NekoBotError):
    """The peer refused our credentials (handshake 401/403, or close code 1008).

    A connector raises it so that the reconnect loop waits the maximum delay at
    once and raises an alert instead of retrying quickly.
    """


class LinkClosed(NekoBotError):
    """A link ended; carries the WebSocket close code and reason when known."""

    def __init__(self, code: int | None, reason: str | None = None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"link closed (code={code}, reason={reason!r})")


class ReconnectExhausted(NekoBotError):
    """``max_reconnect_attempts`` consecutive connection attempts failed.

    Raised out of :meth:`ConnectionManager.run`, so the platform's ``run()``
    fails and the supervisor reports the fault to fault isolation.
    """


HEARTBEAT_CLOSE_CODE = 4000
"""Close code we send when a link is declared dead for silence (private range)."""


@attrs.frozen(kw_only=True)
class ConnectionStats:
    """A snapshot of one platform's link (``GET /api/connection/stats``)."""

    platform_id: str
    status: ConnectionStatus
    links: int
    """Links up now (reverse WebSocket may hold several, e.g. API + Event)."""
    reconnect_count: int
    """Reconnect attempts made since the manager started (the first connect not counted)."""
    consecutive_failures: int
    """Failed attempts (or short-lived links) since the link was last stable."""
    last_connected: float | None
    """Wall-clock ``time.time()`` of the last link coming up."""
    last_heartbeat: float | None
    """Wall-clock ``time.time()`` of the last heartbeat (or other frame) that arrived."""
    uptime: float
    """Seconds (Trio clock) the current link has been up; 0 when none is up."""
    avg_latency_ms: float | None
    """Mean round trip of recent requests (API calls, pings), milliseconds."""
    heartbeat_timeout: float
    """Silence (seconds) after which the link is declared dead, as now in force."""
    next_attempt_in: float | None
    """Seconds until the next reconnect attempt, when one is scheduled."""
    last_close_code: int | None
    last_close_reason: str | None
    last_error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the status as its value)."""
        d = attrs.asdict(self)
        d["status"] = self.status.value
        return d


def effective_timeout(cfg: ConnectionConfig, announced: float | None) -> float:
    """Silence (seconds) after which a link is dead: ``heartbeat_timeout`` if set,
    else 3 x the heartbeat interval the peer announced, else 3 x ``heartbeat_interval``."""
    if cfg.heartbeat_timeout is not None:
        return cfg.heartbeat_timeout
    return 3 * (announced or cfg.heartbeat_interval)


Closer = Callable[[int, str], Awaitable[None]]
"""``async closer(code, reason)``: closes a link's socket with that close code."""
Pinger = Callable[[], Awaitable[None]]
"""``async pinger()``: sends a ping and returns when the pong arrives."""


class Link:
    """One live (or starting) connection, handed to a connector by the manager.

    The connector calls :meth:`up` once the handshake succeeded, :meth:`activity`
    on every frame that arrives, and registers how to close and ping its socket.

    Args:
        generation (int): Increases by one per link of one manager.
        config (ConnectionConfig): The platform's heartbeat settings.
        on_up: ``await on_up(link)`` once, when :meth:`up` is first called
            (the manager's bookkeeping: status, callbacks, alerts).
    """

    def __init__(
        self,
        generation: int,
        config: ConnectionConfig,
        on_up: Callable[[Link], Awaitable[None]],
    ) -> None:
        self.generation = generation
        """Increases by one per link of this manager; compare it, not ids."""
        self._config = config
        self._on_up = on_up
        self.is_up = False
        self.api_capable = True
        self.up_at: float | None = None
        self.last_arrival: float = trio.current_time()
        """Trio-clock time the last frame (or pong) arrived."""
        self.last_arrival_wall: float | None = None
        """Wall-clock ``time.time()`` of the last arrival since the link came up."""
        self.announced_interval: float | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closer: Closer | None = None
        self.pinger: Pinger | None = None
        self.cancel_scope = trio.CancelScope()
        self.dead = False

    async def up(self, *, api_capable: bool = True) -> None:
        """The link is usable: status CONNECTED, ``connect_callback`` on the first one.

        Args:
            api_capable (bool): False for a receive-only link (OneBot ``Event`` role);
                such a link does not make the platform "online" for sends.
        """
        if self.is_up:
            return
        self.is_up = True
        self.api_capable = api_capable
        self.up_at = trio.current_time()
        self.last_arrival = self.up_at
        self.last_arrival_wall = time.time()
        await self._on_up(self)

    def activity(self) -> None:
        """A frame (or pong) arrived now (Trio clock): the link is alive."""
        self.last_arrival = trio.current_time()
        self.last_arrival_wall = time.time()

    def heartbeat(self, interval: float | None) -> None:
        """A heartbeat arrived, announcing the peer's period (seconds) if it did."""
        self.activity()
        if interval is not None and interval > 0:
            self.announced_interval = interval

    def closed(self, code: int | None, reason: str | None) -> None:
        """Record the close code and reason the link ended with."""
        self.close_code = code
        self.close_reason = reason

    def set_closer(self, closer: Closer) -> None:
        """``async closer(code, reason)`` closes the socket with that close code."""
        self.closer = closer

    def set_pinger(self, pinger: Pinger) -> None:
        """``async pinger()`` sends a ping and returns when the pong arrives."""
        self.pinger = pinger

    def heartbeat_timeout(self) -> float:
        """Silence (seconds) after which this link is dead (issue 6 rule)."""
        return effective_timeout(self._config, self.announced_interval)
