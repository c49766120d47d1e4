"""What a supervisor runs and reports: child specs, restart types, strategies, statuses.

OTP terms (Erlang/OTP ``supervisor``): a child specification, ``permanent`` /
``transient`` / ``temporary`` restart types, ``one_for_one`` / ``one_for_all`` /
``rest_for_one`` strategies. Times are seconds on the Trio clock.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs

__all__ = [
    "ACTIVE",
    "BRUTAL_KILL",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildStatus",
    "RestartType",
    "Strategy",
    "SupervisorSettings",
]

BRUTAL_KILL: Literal["brutal_kill"] = "brutal_kill"
"""``ChildSpec.shutdown`` value: cancel the child at once (OTP ``brutal_kill``)."""


class RestartType(enum.Enum):
    """When a child that ended is started again (OTP meaning)."""

    PERMANENT = "permanent"
    """Always restarted."""
    TRANSIENT = "transient"
    """Restarted only if it failed (raised); returning is "finished"."""
    TEMPORARY = "temporary"
    """Never restarted; its spec is removed once it ends."""


class Strategy(enum.Enum):
    """Which children restart when one fails (OTP meaning)."""

    ONE_FOR_ONE = "one_for_one"
    """Only the failed child."""
    ONE_FOR_ALL = "one_for_all"
    """All running children: stopped in reverse order, started in order."""
    REST_FOR_ONE = "rest_for_one"
    """The failed child and the running children started after it."""


class ChildStatus(enum.Enum):
    """Where a child is."""

    STOPPED = "stopped"
    """Not running (never started, terminated, or finished)."""
    STARTING = "starting"
    """``start`` runs; ``task_status.started()`` not called yet."""
    RUNNING = "running"
    """``task_status.started()`` was called and the child has not ended."""
    STOPPING = "stopping"
    """Asked to stop; its task has not finished yet."""
    RESTARTING = "restarting"
    """Ended; a restart is scheduled after the backoff delay."""
    ISOLATED = "isolated"
    """Failed and not restarted: the fault handler vetoed the restart, or the
    restart intensity was exceeded (isolating supervisor). Restart it with
    :meth:`Supervisor.restart_child`."""
    FAILED = "failed"
    """Failed and not restarted by its restart type (or failed to start)."""


ACTIVE = (ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING)
"""Statuses of a child whose task exists."""


def _convert_restart(value: RestartType | str) -> RestartType:
    return value if isinstance(value, RestartType) else RestartType(value)


def _check_shutdown(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
    if value == BRUTAL_KILL:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"shutdown must be seconds >= 0 or 'brutal_kill', got {value!r}")


@attrs.frozen
class ChildSpec:
    """How to run one child (OTP child specification).

    Raises:
        ValueError: if ``restart`` is not a restart type or ``shutdown`` is
            neither seconds >= 0 nor ``"brutal_kill"``.
    """

    id: str
    """Unique among the supervisor's children."""
    start: Callable[..., Awaitable[Any]]
    """``async def start(*, task_status)``: calls ``task_status.started()`` once
    up, then runs until cancelled. Returning means finished, raising means failed."""
    restart: RestartType = attrs.field(default=RestartType.PERMANENT, converter=_convert_restart)
    """``permanent`` / ``transient`` / ``temporary`` (strings accepted)."""
    shutdown: float | Literal["brutal_kill"] = attrs.field(default=5.0, validator=_check_shutdown)
    """Seconds (Trio clock) the child gets to stop, or ``"brutal_kill"``
    (see :func:`~nekobot.core.child_state.stop_child`)."""
    significant: bool = False
    """With ``auto_shutdown`` (OTP): the supervisor ends when this child ends
    and is not restarted."""
    stop: Callable[[], Any] | None = attrs.field(default=None, kw_only=True)
    """Optional graceful stop request (sync or async), e.g. an actor's
    ``close_mailbox``; the child is cancelled if it has not returned
    ``shutdown`` seconds later."""


@attrs.frozen(kw_only=True)
class ChildInfo:
    """One row of :meth:`Supervisor.which_children`."""

    id: str
    """The child's id."""
    status: ChildStatus
    """Where it is now."""
    restart: RestartType
    """Its restart type."""
    significant: bool
    """Whether it is significant (``auto_shutdown``)."""
    restart_count: int
    """Automatic restarts so far."""
    started_at: float | None
    """Trio clock time the current/last run called ``started()``."""
    status_since: float
    """Trio clock time of the last status change."""
    last_error: BaseException | None
    """The exception of its last fault, if any."""
    next_restart_at: float | None
    """Trio clock time of the scheduled restart (status RESTARTING)."""


@attrs.frozen(kw_only=True)
class ChildCounts:
    """:meth:`Supervisor.count_children` (OTP ``count_children``)."""

    specs: int
    """Children known (specs kept)."""
    active: int
    """Children starting, running or stopping."""
    restarting: int
    """Children waiting for a scheduled restart."""
    isolated: int
    """Children isolated (not restarted until a person restarts them)."""


class SupervisorSettings(Protocol):
    """The shape :meth:`Supervisor.from_config` reads (the ``[supervisor]`` section).

    ``nekobot.config.schema.SupervisorConfig`` has it; core does not import it.
    """

    @property
    def strategy(self) -> str:
        """``one_for_one`` / ``one_for_all`` / ``rest_for_one``."""

    @property
    def max_restarts(self) -> int:
        """Restart intensity: restarts allowed within ``period``."""

    @property
    def period(self) -> float:
        """Seconds of the restart-intensity window."""

    @property
    def backoff_min(self) -> float:
        """Seconds before the first restart."""

    @property
    def backoff_max(self) -> float:
        """Cap of the restart delay, seconds."""

    @property
    def backoff_factor(self) -> float:
        """Growth of the delay per consecutive restart."""

    @property
    def jitter(self) -> float:
        """Relative jitter in [0, 1]."""

    @property
    def backoff_reset(self) -> float:
        """Seconds of healthy running after which the delay starts over."""

    @property
    def start_timeout(self) -> float:
        """Seconds a child gets to call ``task_status.started()``."""
