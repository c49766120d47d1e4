"""Snapshots fault isolation publishes: breakers, manual state, degradation.

Times: ``since`` / ``*_at`` fields are wall clock (``time.time()``);
``retry_at`` is Trio clock (``trio.current_time()``).
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from .breaker import BreakerState

__all__ = ["BreakerStatus", "DegradationLevel", "IsolationStatus", "PlatformIsolation"]


class DegradationLevel(enum.IntEnum):
    """How much of the bot is out: share of platforms that should run but do not."""

    NONE = 0
    """All run."""
    LOW = 1
    """Up to a quarter out."""
    MEDIUM = 2
    """Up to half out."""
    HIGH = 3
    """More than half out, at least one runs."""
    CRITICAL = 4
    """None runs."""

    @classmethod
    def from_share(cls, out: int, total: int) -> DegradationLevel:
        """The level for ``out`` of ``total`` platforms not running."""
        if total <= 0 or out <= 0:
            return cls.NONE
        if out >= total:
            return cls.CRITICAL
        share = out / total
        if share <= 0.25:
            return cls.LOW
        if share <= 0.5:
            return cls.MEDIUM
        return cls.HIGH


@attrs.frozen(kw_only=True)
class BreakerStatus:
    """A breaker as :meth:`FaultIsolation.get_isolation_status` shows it."""

    state: BreakerState
    since: float
    """Wall clock time of the last transition."""
    recent_failures: int
    """Faults inside the error window (Trio clock)."""
    cooldown: float
    """Seconds the current/next open period lasts."""
    retry_at: float | None
    """Trio clock time of the half-open trial (state OPEN)."""
    reason: str
    """Why it is in this state."""


@attrs.frozen(kw_only=True)
class PlatformIsolation:
    """Isolation state of one platform."""

    platform_id: str
    running: bool
    breaker: BreakerStatus
    manually_disabled: bool
    disabled_by: str | None
    disabled_at: float | None
    """Wall clock."""
    disabled_reason: str
    enabled_by: str | None
    enabled_at: float | None
    """Wall clock."""
    out: bool
    """It should run but does not."""
    out_reason: str
    fault_count: int
    """Fault records kept."""


@attrs.frozen(kw_only=True)
class IsolationStatus:
    """What :meth:`FaultIsolation.get_isolation_status` returns."""

    degradation_level: DegradationLevel
    total: int
    """Platforms that should run."""
    running: int
    out: dict[str, str]
    """Platforms that should run but do not: ``{platform_id: why}``."""
    platforms: dict[str, PlatformIsolation]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""

        def conv(v: Any) -> Any:
            if isinstance(v, enum.IntEnum):
                return v.name
            if isinstance(v, enum.Enum):
                return v.value
            return v

        return attrs.asdict(self, value_serializer=lambda _i, _a, v: conv(v))
