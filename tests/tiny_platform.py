"""A trivial in-process platform for end-to-end tests: online at once, runs until cancelled.

Usable from a ``nekobot run`` subprocess as ``type = "tests.tiny_platform:TinyPlatform"``
(with the repository root on ``PYTHONPATH``).
"""

from __future__ import annotations

import attrs
import trio

from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.platforms.base import PlatformActor

TINY = f"{__name__}:TinyPlatform"


@attrs.frozen(kw_only=True)
class TinyConfig:
    greeting: str = "hi"
    """Free text, so a test can change the section."""


class TinyPlatform(PlatformActor):
    platform_type = "tiny"
    config_class = TinyConfig

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.set_online()
        task_status.started()
        await trio.sleep_forever()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key)
