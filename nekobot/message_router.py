"""Inbound routing: priority queue, dedup window, handler workers.

(Placeholder for issue 4: ``Message`` and ``MessagePriority`` are final; the
router itself is being built.)
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from typing import Any

import attrs

__all__ = ["Message", "MessagePriority"]


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
