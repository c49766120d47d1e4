"""The messages the buffer actor accepts, and the checks that guard them.

Every request is a frozen attrs class; one that is answered subclasses
``Request[Reply]``. The fields are checked when a request is built, so a value
the buffer could not keep (a queue name with a lone surrogate, which SQLite
cannot encode as UTF-8; a NaN or too large TTL; content that is not JSON) is
refused to the caller as :class:`~nekobot.errors.InvalidRequest` naming the
field, and never reaches the actor's loop.

=====================  ==========================  =============================
message                answer                      sent by
=====================  ==========================  =============================
:class:`AddMessage`    message key (``str``)       ``add_message``
:class:`SetOnline`     ``None``                    ``mark_platform_online/offline``
:class:`StartReplay`   ``None``                    ``replay_messages``
:class:`NextToSend`    :class:`Send`,              a replay task
                       :class:`WaitUntil`, ``None``
:class:`Acked`         ``None``                    a replay task
:class:`SendFailed`    retry delay or ``None``     a replay task
:class:`EndReplay`     (cast)                      a replay task
:class:`ListMessages`  ``list[BufferedMessage]``   ``get_messages``
:class:`Tick`          ``None``                    the buffer's timer
=====================  ==========================  =============================
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from ..core.actor import Request
from ..errors import InvalidRequest
from ..messages import MessagePriority, OutboundMessage
from .stats import BufferedMessage

__all__ = [
    "Acked",
    "AddMessage",
    "BufferRequest",
    "EndReplay",
    "ListMessages",
    "NextToSend",
    "Send",
    "SendFailed",
    "SetOnline",
    "StartReplay",
    "Tick",
    "WaitUntil",
    "check_count",
    "check_priority",
    "check_text",
    "check_ttl",
    "encode_content",
]

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlong = 40


# ---- checks ------------------------------------------------------------------


def check_text(label: str, value: object) -> str:
    """``value`` if it is a non-empty ``str`` that encodes as UTF-8.

    Raises:
        InvalidRequest: naming ``label`` otherwise (lone surrogates such as
            ``"\\ud800"`` cannot be stored in SQLite, nor exported as metrics).
    """
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{label} must be a non-empty str, got {_short.repr(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{label} must be valid Unicode text, got {_short.repr(value)}"
            f" ({exc.reason} at position {exc.start})"
        ) from None
    return value


def check_ttl(ttl: object, default: float) -> float:
    """Seconds a message may wait: ``None`` takes ``default``; ``math.inf`` never expires.

    Raises:
        InvalidRequest: if ``ttl`` is not a number, is zero, negative, NaN, or
            an integer too large for a float.
    """
    if ttl is None:
        return default
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidRequest(f"ttl must be a number of seconds or None, got {_short.repr(ttl)}")
    try:
        value = float(ttl)
    except OverflowError:
        raise InvalidRequest(
            f"ttl is too large (use math.inf for never), got {_short.repr(ttl)}"
        ) from None
    if math.isnan(value) or value <= 0:
        raise InvalidRequest(f"ttl must be > 0 seconds (or math.inf), got {_short.repr(ttl)}")
    return value


def check_priority(priority: object) -> MessagePriority:
    """The :class:`MessagePriority` ``priority`` names (itself or its number).

    Raises:
        InvalidRequest: otherwise (``True`` is not a priority).
    """
    if isinstance(priority, MessagePriority):
        return priority
    if not isinstance(priority, bool):
        value: Any = priority  # an int, or a number equal to one (2.0)
        try:
            return MessagePriority(value)
        except (ValueError, TypeError):
            pass
    raise InvalidRequest(f"priority must be a MessagePriority (1..4), got {_short.repr(priority)}")


def check_count(label: str, value: object) -> int | None:
    """``None`` or an ``int >= 0``.

    Raises:
        InvalidRequest: naming ``label`` otherwise.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{label} must be an int >= 0 or None, got {_short.repr(value)}")
    return value


def encode_content(content: Any) -> tuple[str, Any]:
    """Content as stored (compact JSON, ASCII) and the copy that is replayed.

    Raises:
        InvalidRequest: if the content is not JSON-serialisable (or nested too
            deeply to encode).
    """
    try:
        text = json.dumps(content, allow_nan=False, separators=(",", ":"))
        return text, json.loads(text)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(
            f"content of a buffered message must be JSON-serialisable: {_short.repr(str(exc))}"
        ) from None


def _queue_name(_inst: object, _attr: object, value: str) -> None:
    check_text("platform_id", value)


def _outbound(_inst: object, _attr: object, msg: OutboundMessage) -> None:
    check_text("platform_id", msg.platform_id)
    check_text("message_type", msg.message_type)
    check_text("message_key", msg.message_key)
    check_priority(msg.priority)


def _ttl(_inst: object, _attr: object, value: float) -> None:
    check_ttl(value, math.nan)


# ---- requests ----------------------------------------------------------------


def check_settings(positive: Mapping[str, float], *, overflow_wait: float) -> None:
    """The buffer's numeric settings: each of ``positive`` must be > 0 and
    ``overflow_wait`` >= 0.

    Raises:
        ValueError: naming the first bad setting and its value.
    """
    for label, value in positive.items():
        if not value > 0:
            raise ValueError(f"{label} must be > 0, got {value!r}")
    if not overflow_wait >= 0:
        raise ValueError(f"overflow_wait must be >= 0, got {overflow_wait!r}")


@attrs.frozen
class AddMessage(Request[str]):
    """Buffer ``msg``; answered with its key once its row committed."""

    msg: OutboundMessage = attrs.field(validator=_outbound)
    content_json: str = attrs.field(validator=attrs.validators.instance_of(str))
    """``msg.content`` as JSON (see :func:`encode_content`)."""
    ttl: float = attrs.field(validator=_ttl)
    """Seconds it may wait; ``math.inf`` never expires."""
    wait: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """While the platform is online and its queue full, hold the call until
    there is room (at most ``overflow_wait`` seconds), instead of dropping."""


@attrs.frozen
class SetOnline(Request[None]):
    """The platform's (or account's) link is up (``online``) or down."""

    queue: str = attrs.field(validator=_queue_name)
    online: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    accounts: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Going offline: also every account queue of the platform (``<queue>@…``)."""


@attrs.frozen
class StartReplay(Request[None]):
    """An explicit replay wants the queue's head.

    Raises (to the caller): ``PlatformOffline``, ``Conflict`` (one already runs).
    """

    queue: str = attrs.field(validator=_queue_name)


@attrs.frozen
class Send:
    """Answer to :class:`NextToSend`: deliver ``msg`` now (it is pinned in flight)."""

    seq: int
    msg: OutboundMessage
    link_wake: trio.Event
    """Set when the link is marked up or down: a retry backoff after this send
    ends early."""


@attrs.frozen
class WaitUntil:
    """Answer to :class:`NextToSend`: the head is backlog; its rate slot starts at ``at``."""

    at: float
    """Trio clock."""
    wake: trio.Event
    """Set when waiting no longer makes sense (the link changed, or a live
    message became the head): ask again at once."""


@attrs.frozen
class NextToSend(Request[Send | WaitUntil | None]):
    """A replay asks what to do next; ``None`` ends the replay (queue empty or offline)."""

    queue: str


@attrs.frozen
class Acked(Request[None]):
    """The platform acknowledged item ``seq``: remove it."""

    queue: str
    seq: int


@attrs.frozen
class SendFailed(Request[float | None]):
    """Sending item ``seq`` failed; answered with the retry delay, ``None``: stop."""

    queue: str
    seq: int
    error: str
    link_error: bool
    """``ConnectionClosed`` / ``PlatformOffline``: the link failed, not the message."""


@attrs.frozen
class EndReplay:
    """A replay task ended (cast): the queue's head is free again."""

    queue: str


@attrs.frozen
class ListMessages(Request[list[BufferedMessage]]):
    """The queue's messages in replay order, at most ``limit``."""

    queue: str = attrs.field(validator=_queue_name)
    limit: int | None = attrs.field(validator=lambda _i, _a, v: check_count("limit", v))


@attrs.frozen
class Tick(Request[None]):
    """The timer's deadline passed: expire what is due, decide waits that ran out."""


BufferRequest = (
    AddMessage
    | SetOnline
    | StartReplay
    | NextToSend
    | Acked
    | SendFailed
    | EndReplay
    | ListMessages
    | Tick
)
"""Everything the buffer actor accepts."""
