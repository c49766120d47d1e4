"""The control requests the router actor accepts in its mailbox.

==================  ==================  ============================================
message             answer              sent by
==================  ==================  ============================================
:class:`Drain`      ``None``            ``drain()`` (the bot, at shutdown)
:class:`Refresh`    ``RouterStats``     ``stats()`` (fresh figures, percentiles too)
==================  ==================  ============================================

Inbound messages do not pass the mailbox: ``route`` is the fast path (see
:mod:`nekobot.routing.message_router`).
"""

from __future__ import annotations

import attrs

from ..core.actor import Request
from .stats import RouterStats

__all__ = ["Drain", "Refresh", "RouterRequest"]


@attrs.frozen
class Drain(Request[None]):
    """Answered once no message is queued and no handler runs."""


@attrs.frozen
class Refresh(Request[RouterStats]):
    """Publish a fresh snapshot (queue-wait percentiles included) and answer it."""


RouterRequest = Drain | Refresh
"""Every message the router's mailbox accepts."""
