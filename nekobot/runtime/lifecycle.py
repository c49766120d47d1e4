"""A platform's lifecycle: its states, the status snapshot, and the lifecycle errors.

Times: ``since`` is wall clock (``time.time()``); ``since_clock`` and
``next_restart_at`` are Trio clock (``trio.current_time()``).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from ..core.supervisor import ChildStatus
from ..errors import Conflict, NekoBotError

__all__ = [
    "CHILD_TO_STATE",
    "PlatformBusy",
    "PlatformDisabled",
    "PlatformLifecycleStatus",
    "PlatformStartError",
    "PlatformState",
]


class PlatformStartError(NekoBotError):
    """A platform failed before it called ``task_status.started()``.

    Attributes:
        platform_id (str): The platform.
        error (BaseException): What it raised (also ``__cause__``).
    """

    def __init__(self, platform_id: str, error: BaseException) -> None:
        self.platform_id = platform_id
        self.error = error
        super().__init__(
            f"platform {platform_id!r} failed to start: {type(error).__name__}: {error}"
        )


class PlatformDisabled(Conflict):
    """The platform was disabled by a person; only ``enable_platform`` starts it."""

    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        super().__init__(f"platform {platform_id!r} is disabled; enable it first (fault isolation)")


class PlatformBusy(Conflict):
    """The platform cannot take this request now (e.g. it is being removed)."""

    def __init__(self, platform_id: str, what: str) -> None:
        self.platform_id = platform_id
        super().__init__(f"platform {platform_id!r} is {what}")


class PlatformState(enum.Enum):
    """A platform's lifecycle state."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    """Failed; a restart is scheduled after its backoff delay."""
    ERROR = "error"
    """Failed and not restarted (e.g. it failed to start on request)."""
    ISOLATED = "isolated"
    """Circuit breaker open (or restart intensity exceeded): waits for the cooldown."""
    DISABLED = "disabled"
    """Disabled by a person (fault isolation's manual state)."""


CHILD_TO_STATE = {
    ChildStatus.STOPPED: PlatformState.STOPPED,
    ChildStatus.STARTING: PlatformState.STARTING,
    ChildStatus.RUNNING: PlatformState.RUNNING,
    ChildStatus.STOPPING: PlatformState.STOPPING,
    ChildStatus.RESTARTING: PlatformState.RESTARTING,
    ChildStatus.ISOLATED: PlatformState.ISOLATED,
    ChildStatus.FAILED: PlatformState.ERROR,
}
"""The lifecycle state a supervisor child status shows as."""


@attrs.frozen(kw_only=True)
class PlatformLifecycleStatus:
    """One platform's lifecycle, as ``get_platform_lifecycle_status`` returns it."""

    platform_id: str
    type: str
    """The platform's ``type``."""
    enabled: bool
    """It may run: its config section says ``enabled`` and no person disabled
    it (never ``True`` together with state DISABLED)."""
    state: PlatformState
    since: float
    """Wall clock ``time.time()`` the state was entered."""
    since_clock: float
    """Trio clock time the state was entered."""
    restart_count: int
    """Restarts so far: automatic ones and ``restart_platform`` calls."""
    last_error: str | None
    """``"Type: message"`` of the last failure, if any."""
    config_revision: int
    """Starts at 1; +1 for every applied change of this platform's section."""
    next_restart_at: float | None = None
    """Trio clock time of the scheduled restart or half-open trial, if any."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""
        d = attrs.asdict(self)
        d["state"] = self.state.value
        return d
