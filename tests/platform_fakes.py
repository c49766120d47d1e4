"""Tiny fake platforms for the supervisor / fault-isolation / runtime-manager tests.

A :class:`World` records what every instance did (Trio clock) and lets a test
make a running instance crash, hang or exit. "Ports" are simulated: an instance
that binds a port another live instance holds fails with ``OSError`` (address
in use), so a test sees whether an old instance was really gone first.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from nekobot.config.schema import PlatformConfig
from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.platforms.base import PlatformActor

TYPE = f"{__name__}:FakePlatform"


@attrs.frozen(kw_only=True)
class FakeSettings:
    label: str = "v1"
    """Free text, so a test can change the section."""
    port: int = 0
    """Simulated port to bind (0 = none)."""
    fail_start: bool = False
    """Raise before ``task_status.started()``."""
    start_delay: float = 0.0
    """Seconds before ``started()``."""


class Crash(Exception):
    pass


class World:
    """Shared state of all fake instances in one test."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str, str]] = []
        """(time, event, platform_id, label); events start, up, exit, crash."""
        self.bound: dict[int, str] = {}
        self.live: dict[str, FakePlatform] = {}
        self.alive: dict[str, int] = {}
        self.max_alive: dict[str, int] = {}
        self.crash_at_start: dict[str, BaseException | None] = {}
        """platform_id -> what the next runs raise right after started()."""

    def factory(self, platform_id: str, pc: PlatformConfig) -> FakePlatform:
        return FakePlatform(platform_id, pc.settings, connection=pc.connection, world=self)

    def crash(self, platform_id: str, exc: BaseException | None = None) -> None:
        self.live[platform_id].fail_with(exc or Crash(f"{platform_id} crashed"))

    def events(self, platform_id: str, event: str) -> list[float]:
        return [t for t, ev, pid, _ in self.log if pid == platform_id and ev == event]


def config(**settings: Any) -> PlatformConfig:
    enabled = settings.pop("enabled", True)
    return PlatformConfig(type=TYPE, enabled=enabled, settings=FakeSettings(**settings))


class FakePlatform(PlatformActor):
    platform_type = "fake_test"
    config_class = FakeSettings

    def __init__(self, platform_id: str, config: Any, *, world: World | None = None, **kw: Any):
        super().__init__(platform_id, config, **kw)
        self.world = world or World()
        self._fail: BaseException | None = None
        self._wake = trio.Event()
        self._hang_for = 0.0

    def fail_with(self, exc: BaseException) -> None:
        self._fail = exc
        self._wake.set()

    def finish(self) -> None:
        """Return from ``run`` (a clean exit)."""
        self._wake.set()

    def hang(self, seconds: float) -> None:
        """From now on, ignore cancellation for ``seconds`` (a shielded cleanup)."""
        self._hang_for = seconds

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        w, pid, cfg = self.world, self.platform_id, self.config
        w.log.append((trio.current_time(), "start", pid, cfg.label))
        if cfg.start_delay:
            await trio.sleep(cfg.start_delay)
        if cfg.fail_start:
            raise RuntimeError(f"{pid}: bad config {cfg.label}")
        if cfg.port:
            if cfg.port in w.bound:
                raise OSError(98, f"address in use: port {cfg.port} held by {w.bound[cfg.port]}")
            w.bound[cfg.port] = pid
        w.alive[pid] = w.alive.get(pid, 0) + 1
        w.max_alive[pid] = max(w.max_alive.get(pid, 0), w.alive[pid])
        w.live[pid] = self
        try:
            await self.set_online()
            task_status.started()
            w.log.append((trio.current_time(), "up", pid, cfg.label))
            early = w.crash_at_start.get(pid)
            if early is not None:
                w.log.append((trio.current_time(), "crash", pid, cfg.label))
                raise early
            await self._wake.wait()
            if self._fail is None:
                return
            w.log.append((trio.current_time(), "crash", pid, cfg.label))
            raise self._fail
        finally:
            if self._hang_for:
                with trio.CancelScope(shield=True) as cs:
                    cs.deadline = trio.current_time() + self._hang_for
                    await trio.sleep_forever()
            self.online = False
            w.alive[pid] -= 1
            if cfg.port and w.bound.get(cfg.port) == pid:
                del w.bound[cfg.port]
            w.log.append((trio.current_time(), "exit", pid, cfg.label))

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.require_online()
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key)


class FakeMonitor:
    """Records what fault isolation and the runtime manager tell the monitor."""

    def __init__(self) -> None:
        self.alerts: dict[str, tuple[Any, str]] = {}
        self.fired: list[tuple[str, Any, str]] = []
        self.cleared: list[str] = []
        self.states: list[tuple[str, bool]] = []
        self.expected: list[bool] = []
        self.forgotten: list[str] = []

    def fire_alert(
        self,
        key: str,
        level: Any,
        message: str,
        *,
        platform_id: Any = None,
        metric_name: Any = None,
    ) -> None:
        self.alerts[key] = (level, message)
        self.fired.append((key, level, message))

    def clear_alert(self, key: str) -> None:
        self.alerts.pop(key, None)
        self.cleared.append(key)

    def set_platform_state(
        self, platform_id: str, running: bool, *, expected: bool = False
    ) -> None:
        self.states.append((platform_id, running))
        self.expected.append(expected)

    def forget_platform(self, platform_id: str) -> None:
        self.forgotten.append(platform_id)
