"""A fake platform for tests that need a platform but not a network.

Use it in a config as ``type = "tests.fakes:FakePlatform"``.
"""

from __future__ import annotations

import attrs
import trio

from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.platforms.base import PlatformActor


@attrs.frozen(kw_only=True)
class FakeConfig:
    label: str = "fake"
    """Free text, so a test can change the section."""
    fail_start: bool = False
    """Raise before ``task_status.started()``."""


class FakePlatform(PlatformActor):
    """Comes online at once, records what it is sent, runs until cancelled."""

    platform_type = "fake"
    config_class = FakeConfig

    sent_log: dict[str, list[OutboundMessage]] = {}  # noqa: RUF012 - shared across instances on purpose

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.config.fail_start:
            raise RuntimeError(f"{self.platform_id}: configured to fail at start")
        await self.set_online()
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.online = False

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.require_online()
        self.sent_log.setdefault(self.platform_id, []).append(message)
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key, data={})
