"""The live connections of one OneBot v11 platform, their accounts and pending calls.

OneBot v11 (``communication/ws-reverse.md``) has one connection per bot
account, named by its ``X-Self-ID``, or an ``API`` + ``Event`` pair of them.
:class:`ConnectionTable` keeps them by connection *generation* (a newer
connection of an account replaces an older one whose role conflicts, and the
old one's cleanup never removes the new one), picks the connection a call goes
out on, and matches action responses to the calls waiting for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio
import trio_websocket

from ...errors import ConnectionClosed, InvalidRequest, PlatformOffline
from ..link import Link

__all__ = ["AccountOffline", "Conn", "ConnectionTable", "Pending"]


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


class Pending:
    """One call waiting for its response (set once: ``response`` or ``error``)."""

    __slots__ = ("conn_generation", "done", "error", "response")

    def __init__(self, conn_generation: int) -> None:
        self.conn_generation = conn_generation
        self.done = trio.Event()
        self.response: Mapping[str, Any] | None = None
        self.error: BaseException | None = None


@attrs.define(eq=False)
class Conn:
    """One WebSocket connection of the platform."""

    ws: trio_websocket.WebSocketConnection
    link: Link
    self_id: str
    """The account (``X-Self-ID``); ``""`` until a forward connection's first event names it."""
    role: str
    """``Universal``, ``API`` or ``Event``."""
    pending: set[str] = attrs.field(factory=set)
    """Echo keys of the calls waiting on this connection."""
    closed: bool = False

    @property
    def generation(self) -> int:
        return self.link.generation

    @property
    def api_capable(self) -> bool:
        return self.role != "Event"


def _conflicts(new_role: str, old_role: str) -> bool:
    return new_role == "Universal" or old_role == "Universal" or new_role == old_role


class ConnectionTable:
    """The connections of one platform by generation, and the calls pending on them.

    Args:
        platform_id (str): Named in the errors raised.
    """

    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        self.conns: dict[int, Conn] = {}
        """Live connections by generation."""
        self.pending: dict[str, Pending] = {}
        """Calls waiting for a response, by echo key."""

    # ---- connections ---------------------------------------------------------

    def add(self, conn: Conn) -> None:
        """Register a connection that is coming up."""
        self.conns[conn.generation] = conn

    def api_conns(self) -> list[Conn]:
        """The connections that can carry a call now."""
        return [c for c in self.conns.values() if c.api_capable and c.link.is_up and not c.closed]

    def has_api(self, self_id: str) -> bool:
        """Whether account ``self_id`` has a live API-capable connection."""
        return any(c.self_id == self_id for c in self.api_conns())

    def is_returning_account(self, conn: Conn) -> bool:
        """``conn`` brings back an account while other accounts keep the platform
        online (so the platform's link-up callback will not fire for it)."""
        live = [c for c in self.api_conns() if c.self_id]
        return (
            conn.api_capable
            and bool(conn.self_id)
            and bool(live)
            and all(c.self_id != conn.self_id for c in live)
        )

    def replaced_by(self, conn: Conn) -> list[Conn]:
        """Older connections of ``conn``'s account whose role conflicts with its own
        (``Universal`` conflicts with every role, ``API`` and ``Event`` with themselves)."""
        if not conn.self_id:
            return []
        return [
            other
            for other in self.conns.values()
            if other is not conn
            and other.self_id == conn.self_id
            and other.generation < conn.generation
            and _conflicts(conn.role, other.role)
        ]

    def choose(self, self_id: object = None) -> Conn:
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
        candidates = self.api_conns()
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

    def forget(self, conn: Conn, why: str) -> None:
        """Drop a connection (by generation) and fail its pending calls now with
        :class:`~nekobot.errors.ConnectionClosed`."""
        if self.conns.get(conn.generation) is conn:
            del self.conns[conn.generation]
        if conn.closed:
            return
        conn.closed = True
        for key in list(conn.pending):
            slot = self.pending.get(key)
            if slot is not None and slot.error is None and slot.response is None:
                slot.error = ConnectionClosed(f"platform {self.platform_id!r}: {why}")
                slot.done.set()
        conn.pending.clear()

    def forget_all(self, why: str) -> None:
        """Drop every connection, failing every pending call."""
        for conn in list(self.conns.values()):
            self.forget(conn, why)

    def rows(self) -> list[dict[str, Any]]:
        """``{"self_id", "role", "generation"}`` per connection, oldest first."""
        return [
            {"self_id": c.self_id, "role": c.role, "generation": c.generation}
            for c in sorted(self.conns.values(), key=lambda c: c.generation)
        ]

    # ---- calls ---------------------------------------------------------------

    def begin_call(self, conn: Conn, key: str, echo: object) -> Pending:
        """Register a call on ``conn`` under echo key ``key``.

        Raises:
            InvalidRequest: a pending call already uses this ``echo``.
        """
        if key in self.pending:
            raise InvalidRequest(f"echo: {echo!r} is already used by a pending call")
        slot = Pending(conn.generation)
        self.pending[key] = slot
        conn.pending.add(key)
        return slot

    def end_call(self, conn: Conn, key: str) -> None:
        """The call under ``key`` is over (answered, failed or timed out)."""
        self.pending.pop(key, None)
        conn.pending.discard(key)

    def resolve(self, key: str | None, response: Mapping[str, Any]) -> bool:
        """Hand ``response`` to the call waiting under echo key ``key``; False if none is."""
        slot = self.pending.get(key) if key is not None else None
        if slot is None or slot.done.is_set():
            return False
        slot.response = response
        slot.done.set()
        return True
