"""OneBot v11 frames: reading one inbound WebSocket message, writing one action.

Everything here is a pure function of the frame, so the rules can be tested
without a socket. An inbound frame is an **event** (a non-empty string
``post_type``, OneBot v11 ``event/*.md``) or an action **response** (no
``post_type``, and ``echo``, ``status`` or ``retcode``,
``communication/ws.md``); anything else is dropped for a :class:`Drop` reason.
No value a peer sends raises out of these functions.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

from ...config.validators import nesting_exceeds
from ...errors import OneBotActionFailed

__all__ = [
    "MAX_NESTING",
    "Drop",
    "Event",
    "Response",
    "account_id",
    "dedup_key",
    "echo_key",
    "encode_action",
    "heartbeat_seconds",
    "parse_frame",
    "result_of",
]

MAX_NESTING = 100
"""Arrays and objects nested deeper than this in one frame are not accepted as
JSON (``dropped_not_json``, as nesting too deep for the parser itself is): real
OneBot frames nest a few levels, and bounded depth keeps every later step
(serializing, logging, the API) clear of Python's recursion limit."""

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``..``\\uDFFF`` escape: the only way a frame off the wire (a text
frame is valid UTF-8) can still carry a lone surrogate."""

_DECIMAL = re.compile(r"-?[0-9]{1,23}")
"""A decimal id as some implementations send ids: ASCII digits only."""


class Drop(enum.Enum):
    """Why an inbound frame was dropped; its counter is ``dropped_<value>``."""

    NOT_JSON = "not_json"
    """Not UTF-8, or not JSON: a syntax error, an integer literal of more than
    4300 digits, or nesting deeper than :data:`MAX_NESTING`."""
    NOT_OBJECT = "not_object"
    """JSON, but not an object."""
    NO_POST_TYPE = "no_post_type"
    """An object that is neither an event nor a response."""
    OVERSIZED = "oversized"
    """More than ``max_frame_size`` bytes (UTF-8)."""
    INVALID_UNICODE = "invalid_unicode"
    """JSON whose strings hold a lone surrogate (``"\\ud800"``): not Unicode text."""


class Event(NamedTuple):
    """An event frame (``post_type`` is a non-empty string)."""

    post_type: str
    body: dict[str, Any]


class Response(NamedTuple):
    """An action response frame."""

    body: dict[str, Any]


def utf8_len_at_most(text: str, limit: int) -> bool:
    """Whether ``text`` encodes to at most ``limit`` UTF-8 bytes (encoding only
    when the length alone cannot tell)."""
    if len(text) > limit:  # every character takes at least one byte
        return False
    if len(text) * 4 <= limit:  # and at most four
        return True
    return len(text.encode("utf-8", "surrogatepass")) <= limit


def _is_unicode(frame: dict[str, Any]) -> bool:
    try:
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_frame(data: str | bytes, max_size: int) -> Event | Response | Drop:
    """Read one inbound WebSocket message.

    Args:
        data: A text frame (``str``) or a binary one (``bytes``, UTF-8 JSON).
        max_size (int): ``max_frame_size`` in bytes.

    Returns:
        The :class:`Event` or :class:`Response`, or why the frame is dropped.
        JSON numbers stay Python ints, so int32 and int64 ids stay exact.
    """
    if isinstance(data, bytes):
        if len(data) > max_size:
            return Drop.OVERSIZED
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Drop.NOT_JSON
    else:
        if not utf8_len_at_most(data, max_size):
            return Drop.OVERSIZED
        text = data
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return Drop.NOT_JSON
    if not isinstance(frame, dict):
        return Drop.NOT_OBJECT
    # (bracket counts bound the depth from above: most frames skip the walk)
    if text.count("{") + text.count("[") > MAX_NESTING and nesting_exceeds(frame, MAX_NESTING):
        return Drop.NOT_JSON
    if _SURROGATE_ESCAPE.search(text) and not _is_unicode(frame):
        return Drop.INVALID_UNICODE
    post_type = frame.get("post_type")
    if isinstance(post_type, str) and post_type:
        return Event(post_type, frame)
    if "post_type" not in frame and ("echo" in frame or "status" in frame or "retcode" in frame):
        return Response(frame)
    return Drop.NO_POST_TYPE


def heartbeat_seconds(interval: object) -> float | None:
    """A heartbeat's ``interval`` (milliseconds, OneBot v11 ``event/meta.md``) in
    seconds, or ``None`` unless it is a finite number > 0."""
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        return None
    try:
        seconds = interval / 1000.0
    except OverflowError:  # an int too large for a float
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def account_id(self_id: object) -> str | None:
    """The bot account an event's ``self_id`` names, as ``X-Self-ID`` text: an
    int (OneBot v11 ``event/*.md``: int64) or a non-empty string; else ``None``."""
    if isinstance(self_id, bool):
        return None
    if isinstance(self_id, int):
        return str(self_id)
    if isinstance(self_id, str) and self_id.strip():
        return self_id.strip()
    return None


def _id_key(value: Any) -> Any:
    """An id as the dedup key holds it: a decimal string becomes its int."""
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    return value


def dedup_key(self_id: object, message_id: object) -> Hashable | None:
    """The router's dedup key of an event: ``(self_id, message_id)``, or ``None``
    when there is no ``message_id`` (or it cannot be a key).

    OneBot v11 ids are int32 (``event/message.md``); some implementations send
    them as strings, so ``"123"`` and ``123`` are one message.
    """
    if message_id is None:
        return None
    key = (_id_key(self_id), _id_key(message_id))
    try:
        hash(key)
    except TypeError:  # a list or an object
        return None
    return key


def echo_key(echo: object) -> str | None:
    """An ``echo`` as the pending-call table holds it: its JSON text with sorted
    keys, so a response matches by value; ``None`` if it is not JSON."""
    try:
        return json.dumps(echo, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def encode_action(action: str, params: Mapping[str, Any], echo: object) -> tuple[str, int]:
    """The text frame of one action call (``communication/ws.md``) and its UTF-8 size.

    Non-ASCII text goes out as itself; a lone surrogate (which cannot be sent
    as UTF-8) makes the whole frame use ``\\u`` escapes instead.

    Raises:
        TypeError, ValueError: ``params`` or ``echo`` is not JSON.
    """
    obj = {"action": action, "params": dict(params), "echo": echo}
    frame = json.dumps(obj, ensure_ascii=False)
    try:
        return frame, len(frame.encode("utf-8"))
    except UnicodeEncodeError:
        frame = json.dumps(obj)
        return frame, len(frame)


def result_of(response: Mapping[str, Any]) -> Any:
    """The ``data`` of an action response (``None`` for ``status: "async"``).

    Raises:
        OneBotActionFailed: ``status`` is ``"failed"``, or ``retcode`` is not 0
            (ok) or 1 (async) (OneBot v11 ``api/README.md``).
    """
    retcode = response.get("retcode", 0)
    status = response.get("status", "ok")
    if status == "failed" or retcode not in (0, 1):
        msg = response.get("wording") or response.get("msg") or response.get("message") or ""
        raise OneBotActionFailed(retcode if isinstance(retcode, int) else -1, str(msg))
    return response.get("data")
