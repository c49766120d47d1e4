"""What the runtime manager is given (typed by Protocols) and what it keeps per platform."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ..config.schema import PlatformConfig
from ..core.actor import Call
from ..core.supervisor import ChildStatus
from ..platforms.base import PlatformActor
from .lifecycle import PlatformState
from .requests import Put

if TYPE_CHECKING:
    from .runtime_manager import RuntimeManager

__all__ = ["ConfigOwner", "DirectChanges", "Entry", "PlatformMonitor"]


class PlatformMonitor(Protocol):
    """What the runtime manager tells the monitor (sync and cheap)."""

    def set_platform_state(
        self, platform_id: str, running: bool, *, expected: bool = False
    ) -> None:
        """Whether the platform runs; ``expected``: nobody should be alerted."""

    def forget_platform(self, platform_id: str) -> None:
        """The platform was removed."""


class ConfigOwner(Protocol):
    """The owner of ``[platforms]`` (the config service's ``PlatformChanges``)."""

    async def change_platform(
        self,
        platform_id: str,
        config: PlatformConfig | None,
        *,
        start: bool = True,
        restart: bool = True,
        author: str = "runtime",
        base_revision: int | None = None,
        description: str = "",
        exists: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Set or remove one section, apply it (``apply_platforms``), record it."""


class DirectChanges:
    """A config owner without history: applies one change straight to the runtime.

    The default when a :class:`RuntimeManager` is built without one (library
    use, tests). ``author``, ``base_revision`` and ``description`` are ignored.
    """

    def __init__(self, runtime: RuntimeManager) -> None:
        self._runtime = runtime

    async def change_platform(
        self,
        platform_id: str,
        config: PlatformConfig | None,
        *,
        start: bool = True,
        restart: bool = True,
        author: str = "runtime",
        base_revision: int | None = None,
        description: str = "",
        exists: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """See :class:`ConfigOwner`."""
        msg = Put(
            platform_id=platform_id, config=config, start=start, restart=restart, exists=exists
        )
        await self._runtime.ask(msg, f"changing platform {platform_id!r}", timeout)


@attrs.define(eq=False)
class Entry:
    """One platform as the runtime manager keeps it (owned by the actor; while
    an operation runs, by that operation's worker)."""

    pid: str
    config: PlatformConfig
    revision: int = 1
    want: bool = False
    """It should run (started, not stopped on purpose)."""
    disabled: bool = False
    """A person disabled it (mirrors fault isolation's manual state)."""
    isolated: bool = False
    """Its breaker is open: it waits for the half-open trial."""
    retry_at: float | None = None
    removing: bool = False
    fresh: bool = True
    """Added, its first ``Put`` not run yet."""
    busy: str | None = None
    """Name of the operation under way."""
    queue: deque[Call[Any]] = attrs.field(factory=deque)
    since: float = attrs.field(factory=time.time)
    since_clock: float = 0.0
    child: ChildStatus = ChildStatus.STOPPED
    """Its supervisor child's status (the supervisor's status hook keeps it)."""
    shown: PlatformState = PlatformState.STOPPED
    told: tuple[bool, bool, str] | None = None
    """(running, wanted, reason) last told to fault isolation."""
    last_error: str | None = None
    manual_restarts: int = 0
    actor: PlatformActor | None = None
    trial_gen: int = 0
    trial_scope: trio.CancelScope | None = None
    changed: trio.Event = attrs.field(factory=trio.Event)
