"""Errors raised by :class:`~nekobot.core.supervisor.Supervisor` (OTP's error atoms)."""

from __future__ import annotations

from .child_spec import ChildStatus
from .errors import Conflict, NekoBotError

__all__ = [
    "ChildAlreadyPresent",
    "ChildAlreadyStarted",
    "ChildNotFound",
    "ChildRunning",
    "ChildStartError",
    "RestartIntensityExceeded",
    "SupervisorError",
    "SupervisorNotRunning",
]


class SupervisorError(NekoBotError):
    """Base class of the supervisor's errors."""


class ChildNotFound(SupervisorError, LookupError):
    """No child has this id (OTP ``{error, not_found}``)."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"no child {child_id!r}")


class ChildAlreadyStarted(SupervisorError, Conflict):
    """``start_child`` with the id of a running child (OTP ``already_started``)."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"child {child_id!r} is already started")


class ChildAlreadyPresent(SupervisorError, Conflict):
    """``start_child`` with the id of a stopped child whose spec is kept
    (OTP ``already_present``): use ``restart_child`` or ``delete_child``."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        super().__init__(f"child {child_id!r} is already present (not running)")


class ChildRunning(SupervisorError, Conflict):
    """``restart_child`` / ``delete_child`` of a child that runs or is about to
    (OTP ``running`` / ``restarting``)."""

    def __init__(self, child_id: str, status: ChildStatus) -> None:
        self.child_id = child_id
        self.status = status
        super().__init__(f"child {child_id!r} is {status.value}")


class ChildStartError(SupervisorError):
    """A child failed before it called ``task_status.started()``.

    The child's own exception (any ``BaseException`` but ``trio.Cancelled``,
    e.g. a ``KeyboardInterrupt`` raised inside it) is ``__cause__`` and
    :attr:`error`.
    """

    def __init__(self, child_id: str, error: BaseException) -> None:
        self.child_id = child_id
        self.error = error
        super().__init__(f"child {child_id!r} failed to start: {type(error).__name__}: {error}")


class RestartIntensityExceeded(SupervisorError):
    """More than ``max_restarts`` restarts within ``period`` seconds: the
    supervisor gave up (escalation; the supervisor's ``run`` raises this).

    Args:
        message (str): Names the supervisor, the child and the window.
        child_id (str): The child whose exit exceeded the intensity.
        error (BaseException | None): That exit's exception (also
            ``__cause__``); ``None`` when a permanent child returned.
    """

    def __init__(self, message: str, *, child_id: str, error: BaseException | None) -> None:
        self.child_id = child_id
        self.error = error
        super().__init__(message)
        if error is not None:
            self.__cause__ = error  # as ``raise ... from error`` (also suppresses the context)


class SupervisorNotRunning(SupervisorError):
    """The call needs the supervisor's ``run`` to be active."""
