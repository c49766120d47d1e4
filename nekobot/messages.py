"""The data every layer passes: inbound :class:`Message`, outbound
:class:`OutboundMessage`, :class:`MessagePriority` and :class:`SendReceipt`."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Hashable
from typing import Any

import attrs

__all__ = ["Message", "MessagePriority", "OutboundMessage", "SendReceipt", "new_message_key"]


class MessagePriority(enum.IntEnum):
    """Priority of an inbound or outbound message; higher is served first."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4


@attrs.frozen(kw_only=True)
class Message:
    """One inbound message, as a platform emits it and handlers receive it."""

    platform_id: str
    """The platform it came from."""
    message_type: str
    """Handlers registered for this type receive it (``"*"`` receives all).
    OneBot v11 uses the event's ``post_type``: ``message``, ``notice``,
    ``request``, ``meta_event``, ``message_sent``."""
    content: Any
    """The payload; for OneBot v11 the event object as received (a dict)."""
    priority: MessagePriority = MessagePriority.NORMAL
    dedup_key: Hashable | None = None
    """Key for the dedup window (the router prefixes ``platform_id``); ``None``
    means never deduplicated. OneBot v11 uses ``(self_id, message_id)``."""
    message_id: str = ""
    """Router-assigned id, unique within this bot process (``""`` until routed)."""
    received_at: float = 0.0
    """Trio clock time the router accepted it."""


def new_message_key() -> str:
    """A fresh outbound message key (uuid4 hex): at-least-once delivery carries it
    so that a repeat can be recognised."""
    return uuid.uuid4().hex


@attrs.frozen(kw_only=True)
class OutboundMessage:
    """One message a handler sends to a platform (``bot.send(...)``)."""

    platform_id: str
    message_type: str
    """What to send. OneBot v11: an action name (``send_msg``, ``send_group_msg``…),
    or ``"private"`` / ``"group"`` as a shorthand for ``send_msg`` of that type."""
    content: Any
    """The payload. OneBot v11: the action's ``params`` object."""
    priority: MessagePriority = MessagePriority.NORMAL
    message_key: str = attrs.field(factory=new_message_key)
    """Unique key of this message; kept across buffering and replay."""
    created_at: float = 0.0
    """Wall-clock ``time.time()`` when it was first sent or buffered."""


@attrs.frozen(kw_only=True)
class SendReceipt:
    """What ``PlatformActor.send`` / ``bot.send`` returns."""

    platform_id: str
    message_key: str
    buffered: bool = False
    """True when the platform was offline and the message waits in the buffer."""
    data: Any = None
    """The platform's answer (OneBot v11: the response's ``data``)."""
