"""Messages fault isolation sends up to the runtime manager's mailbox.

Fault isolation is a lower layer than the runtime manager: it is given the
runtime's address (``events``) at construction and only sends it these.
``BreakerOpened`` is a cast (news); the two requests are sent by the public
:meth:`~nekobot.faults.fault_isolation.FaultIsolation.disable_platform` /
``enable_platform`` facade methods, in the caller's task, never by the actor loop.
"""

from __future__ import annotations

import attrs

from ..core.actor import Request

__all__ = ["BreakerOpened", "DisablePlatform", "EnablePlatform", "RuntimeEvent"]


@attrs.frozen
class BreakerOpened:
    """A platform's breaker opened: it must not run before ``retry_at``."""

    platform_id: str
    retry_at: float
    """Trio clock time of the half-open trial."""
    crashed: bool
    """The platform's task already ended (else it still runs and must be stopped)."""


@attrs.frozen
class DisablePlatform(Request[None]):
    """A person disables a platform: stop it, keep it stopped."""

    platform_id: str
    by: str
    reason: str


@attrs.frozen
class EnablePlatform(Request[None]):
    """A person enables a platform again: start it if its config is enabled."""

    platform_id: str
    by: str


RuntimeEvent = BreakerOpened | DisablePlatform | EnablePlatform
