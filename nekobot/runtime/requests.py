"""Typed messages of the runtime manager's actor (see :mod:`.runtime_manager`).

Operator requests name one platform; the actor queues them per platform and
runs one at a time for each (different platforms go on in parallel). Besides
these the mailbox takes fault isolation's news (:mod:`nekobot.faults.events`).
"""

from __future__ import annotations

import attrs

from ..config.schema import PlatformConfig
from ..core.actor import Request
from ..faults.events import RuntimeEvent
from .lifecycle import PlatformLifecycleStatus

__all__ = [
    "Msg",
    "Put",
    "Register",
    "Restart",
    "Start",
    "Stop",
    "Trial",
    "TrialCheck",
    "TrialDue",
]


@attrs.frozen
class Start(Request[PlatformLifecycleStatus]):
    """Start a platform; answered once it called ``task_status.started()``."""

    platform_id: str
    recover: bool = False
    """If it fails to start, hand that to the fault path too (restarted by policy)."""


@attrs.frozen
class Register(Request[None]):
    """Add platforms without starting them, in this order (``load``)."""

    platforms: tuple[tuple[str, PlatformConfig], ...]


@attrs.frozen
class Stop(Request[PlatformLifecycleStatus]):
    """Stop a platform; answered once its task finished."""

    platform_id: str


@attrs.frozen
class Restart(Request[PlatformLifecycleStatus]):
    """Stop (if running) and start a new instance."""

    platform_id: str


@attrs.frozen(kw_only=True)
class Put(Request[None]):
    """Set (``config``) or remove (``None``) one platform's section and apply it."""

    platform_id: str
    config: PlatformConfig | None
    start: bool = True
    """Start it if it is new (and enabled)."""
    restart: bool = True
    """Rebuild it now if its section changed."""
    exists: bool | None = None
    """``False``: it must be new; ``True``: it must exist; ``None``: either."""
    recover: bool = False
    """A new platform that fails to start is kept and restarted by policy
    (``load``), instead of being removed again and the error raised."""


@attrs.frozen
class TrialDue:
    """A breaker's cooldown passed (sent by the trial timer child)."""

    platform_id: str
    gen: int


@attrs.frozen
class Trial:
    """The half-open trial start, queued on the platform like an operator request."""

    platform_id: str
    gen: int


@attrs.frozen
class TrialCheck:
    """The trial ran ``backoff_reset`` seconds: close the breaker if it still runs."""

    platform_id: str
    gen: int
    started_at: float | None


Msg = Register | Start | Stop | Restart | Put | TrialDue | Trial | TrialCheck | RuntimeEvent
