"""A handler plugin for tests/test_buffer_durability_e2e.py (not shipped).

At start, if ``NEKOBOT_E2E_BUFFER_COUNT`` is set, it sends that many messages
(``send_group_msg``, content ``{"group_id": 1, "message": "m<i>"}``, in order)
to the platform ``NEKOBOT_E2E_PLATFORM`` (default ``qq``) with ``bot.send`` while
no implementation is connected, so every one lands in the buffer. When the last
``bot.send`` returned it writes the number buffered to ``NEKOBOT_E2E_MARKER``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from nekobot.app import NekoBot

log = logging.getLogger("tests.buffer_e2e_plugin")


async def _buffer_all(bot: NekoBot, platform_id: str, count: int, marker: Path) -> None:
    while platform_id not in bot.runtime_manager.platform_configs:  # noqa: ASYNC110 - test plugin
        await trio.sleep(0.01)
    buffered = 0
    for i in range(count):
        receipt = await bot.send(platform_id, "send_group_msg", {"group_id": 1, "message": f"m{i}"})
        buffered += receipt.buffered
    tmp = marker.with_suffix(".tmp")
    await trio.Path(tmp).write_text(str(buffered))
    await trio.Path(tmp).rename(marker)
    log.info("buffered %d of %d messages", buffered, count)


def setup(bot: NekoBot) -> None:
    count = int(os.environ.get("NEKOBOT_E2E_BUFFER_COUNT", "0"))
    if not count:
        return
    marker = Path(os.environ["NEKOBOT_E2E_MARKER"])
    platform_id = os.environ.get("NEKOBOT_E2E_PLATFORM", "qq")
    assert bot.nursery is not None
    bot.nursery.start_soon(_buffer_all, bot, platform_id, count, marker)
