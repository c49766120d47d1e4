"""Connection management: reconnect with backoff, heartbeat, health.

``ConnectionConfig`` is the per-platform ``[platforms.<id>.connection]`` table.
"""

from __future__ import annotations

import attrs

__all__ = ["ConnectionConfig"]


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        raise ValueError(f"must be >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ConnectionConfig:
    """How one platform's link is kept alive. Times are seconds on the Trio clock."""

    auto_reconnect: bool = True
    """Reconnect after a close we did not start (code 1000 included)."""
    max_reconnect_attempts: int = attrs.field(default=0, validator=_non_negative)
    """Consecutive failed attempts before a fault is reported; 0 = retry forever."""
    reconnect_interval: float = attrs.field(default=1.0, validator=_non_negative)
    """Delay before the first reconnect attempt."""
    max_reconnect_interval: float = attrs.field(default=60.0, validator=_non_negative)
    """Cap of the reconnect delay; auth failures wait this long at once."""
    backoff_factor: float = attrs.field(default=2.0, validator=_positive)
    """Each failed attempt multiplies the delay by this."""
    jitter: float = attrs.field(default=0.1, validator=_non_negative)
    """Relative jitter: a delay d becomes uniform in [d*(1-jitter), d*(1+jitter)], then capped."""
    stable_after: float = attrs.field(default=30.0, validator=_non_negative)
    """The attempt counter resets only after the link stayed up this long."""
    health_check_interval: float = attrs.field(default=5.0, validator=_positive)
    """How often the link's liveness is checked."""
    heartbeat_interval: float = attrs.field(default=30.0, validator=_positive)
    """Expected heartbeat period when the peer announces none."""
    heartbeat_timeout: float | None = None
    """Silence after which the link is declared dead; ``None`` = 3 x the heartbeat
    interval the peer announced, else 3 x ``heartbeat_interval``."""
