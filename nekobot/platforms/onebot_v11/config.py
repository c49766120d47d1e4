"""The OneBot v11 keys of ``[platforms.<id>]`` (``type = "onebot_v11"``)."""

from __future__ import annotations

import attrs

from ...config.validators import one_of, port_number, positive, positive_finite, starts_with
from ...errors import FieldValueError

__all__ = ["OneBotV11Config"]


@attrs.frozen(kw_only=True)
class OneBotV11Config:
    """The OneBot v11 keys of ``[platforms.<id>]`` (``type = "onebot_v11"``)."""

    mode: str = attrs.field(default="reverse", validator=one_of("reverse", "forward"))
    """``"reverse"``: we listen and the implementation connects to us;
    ``"forward"``: we dial the implementation at :attr:`url`."""
    host: str = "127.0.0.1"
    """Reverse mode: interface to listen on."""
    port: int = attrs.field(default=8080, validator=port_number)
    """Reverse mode: TCP port to listen on (0 = any free port; see ``bound_port``)."""
    path: str = attrs.field(default="/onebot/v11/ws", validator=starts_with("/"))
    """Reverse mode: URL path the implementation connects to. ``<path>/api`` and
    ``<path>/event`` are accepted as well (role taken from ``X-Client-Role``,
    else from the suffix)."""
    url: str = "ws://127.0.0.1:6700/"
    """Forward mode: the implementation's WebSocket URL (``ws://`` or ``wss://``)."""
    access_token: str | None = None
    """Shared token; ``None`` or ``""`` = no authentication."""
    max_frame_size: int = attrs.field(default=8 * 1024 * 1024, validator=positive)
    """Largest frame (bytes, UTF-8) accepted or sent; bigger inbound frames are
    counted and dropped, a bigger outbound frame fails that call only."""
    api_timeout: float = attrs.field(default=30.0, validator=positive_finite)
    """Seconds (Trio clock) ``call_api`` waits for the response by default."""
    max_pending_events: int = attrs.field(default=100_000, validator=positive)
    """Events read from the links but not yet accepted by the router, at most.

    The frame reader never waits for the router: action responses arrive on the
    same connection as events, and the handlers that fill the router wait for
    those responses, so a reader blocked on a full router would deadlock the
    link. Events queue here in arrival order instead; past this bound they are
    counted (``dropped_backlog``), dropped and alerted, bounding memory."""
    connect_timeout: float = attrs.field(default=10.0, validator=positive_finite)
    """Seconds a WebSocket opening handshake may take (both modes)."""

    def __attrs_post_init__(self) -> None:
        if self.mode == "forward" and not self.url.startswith(("ws://", "wss://")):
            raise FieldValueError("url", f"must be a ws:// or wss:// URL, got {self.url!r}")
