"""The example plugin: ``/ping`` answers ``pong`` where it was asked; other
private messages are echoed back.

Enable it with ``[bot] plugins = ["nekobot.plugins.echo:setup"]``. It handles
OneBot v11 ``message`` events (botuniverse/onebot-11, ``event/message.md``):
a group message is answered with ``send_group_msg`` to its ``group_id``, a
private one with ``send_private_msg`` to its ``user_id``, through the account
(``self_id``) that received it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from ..messages import Message

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["plain_text", "reply_target", "setup"]

log = logging.getLogger("nekobot.plugins.echo")

_CQ_CODE = re.compile(r"\[CQ:[^\]]*\]")


def plain_text(message: Any) -> str:
    """The text of a OneBot v11 message, without CQ codes or non-text segments.

    Args:
        message: A CQ-code string, or a list of segments ``{"type", "data"}``
            (OneBot v11, ``message/string.md`` and ``message/array.md``).
    """
    if isinstance(message, str):
        text = _CQ_CODE.sub("", message)
        return text.replace("&#91;", "[").replace("&#93;", "]").replace("&amp;", "&")
    if isinstance(message, list):
        parts = []
        for seg in message:
            if isinstance(seg, dict) and seg.get("type") == "text":
                data = seg.get("data") or {}
                parts.append(str(data.get("text", "")))
        return "".join(parts)
    return ""


def _is_id(value: Any) -> bool:
    """A OneBot v11 user or group id: an integer (event/message.md), or its decimal
    string of ASCII digits (``str.isdigit`` also takes ``"²"`` and other scripts' digits)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 24


def reply_target(event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The action and params that answer where ``event`` was said, or ``None``.

    The params carry ``self_id`` (the bot account that received the event)
    when the event has one: with several accounts connected to one platform
    (one connection per ``X-Self-ID``, OneBot v11
    ``communication/ws-reverse.md``), the reply goes out through that account.
    The platform removes ``self_id`` before sending the action.
    """
    if event.get("message_type") == "group" and _is_id(event.get("group_id")):
        action, params = "send_group_msg", {"group_id": event["group_id"]}
    elif event.get("message_type") == "private" and _is_id(event.get("user_id")):
        action, params = "send_private_msg", {"user_id": event["user_id"]}
    else:
        return None  # nowhere valid to answer: never send junk to the implementation
    if event.get("self_id") is not None:
        params["self_id"] = event["self_id"]
    return action, params


def setup(bot: NekoBot) -> None:
    """Register the handler on ``bot.message_router`` for ``message`` events."""

    async def on_message(message: Message) -> None:
        event = message.content
        if not isinstance(event, dict):
            return
        target = reply_target(event)
        if target is None:
            return
        action, params = target
        text = plain_text(event.get("message")).strip()
        if text == "/ping":
            reply: Any = "pong"
        elif event.get("message_type") == "private":
            reply = event.get("message")
            if not reply:
                return
        else:
            return
        receipt = await bot.send(message.platform_id, action, {**params, "message": reply})
        log.info(
            "answered %s on %s (%s)",
            text[:40] or "(non-text)",
            message.platform_id,
            "buffered" if receipt.buffered else "sent",
        )

    bot.message_router.register_handler("message", on_message)
