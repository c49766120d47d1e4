"""Errors raised by NekoBot's public API (the actor core's are re-exported).

Every error NekoBot raises on purpose derives from :class:`NekoBotError`, so an
embedding program can catch them in one place. The HTTP API maps them to status
codes (DESIGN.md §6): ``LookupError`` subclasses to 404, :class:`Conflict`
subclasses to 409, :class:`ConfigError` and :class:`InvalidRequest` to 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from .core.errors import ActorError as ActorError
from .core.errors import ActorStopped as ActorStopped
from .core.errors import CallTimeout as CallTimeout
from .core.errors import Conflict as Conflict
from .core.errors import InvalidRequest as InvalidRequest
from .core.errors import MailboxFull as MailboxFull
from .core.errors import NekoBotError as NekoBotError
from .core.errors import sole_exception as sole_exception


class ConfigError(NekoBotError):
    """A configuration was refused.

    Attributes:
        problems (list[str]): One line per problem, each starting with the key
            path, e.g. ``"platforms.qq.port: expected int, got 'abc'"``.
    """

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"invalid config{f' in {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in self.problems))


class FieldValueError(ValueError):
    """A config value of the right type but out of range; names its field.

    Raised by attrs validators of config classes; the config loader reports it
    as ``"<key.path>.<field>: <message>"``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class PlatformNotFound(NekoBotError, LookupError):
    """No platform has this ``platform_id``."""

    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        super().__init__(f"unknown platform {platform_id!r}")


class PlatformExists(Conflict):
    """A platform with this ``platform_id`` already exists."""

    def __init__(self, platform_id: str) -> None:
        self.platform_id = platform_id
        super().__init__(f"platform {platform_id!r} already exists")


class ConnectionClosed(NekoBotError):
    """The platform's link closed; calls pending on it fail at once with this."""


class PlatformOffline(NekoBotError):
    """The platform has no live link to send on."""


class RevisionConflict(Conflict):
    """Check-and-set failed: the config changed since the revision a change was based on.

    Attributes:
        expected (int): The ``base_revision`` the caller named.
        current (int | None): The current revision (``None``: no version yet).
    """

    def __init__(self, expected: int, current: int | None) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"config changed since revision {expected} "
            f"(current revision is {'none' if current is None else current})"
        )


class VersionNotFound(NekoBotError, LookupError):
    """No config version has this id (it never existed, or was pruned)."""

    def __init__(self, version_id: str) -> None:
        self.version_id = version_id
        super().__init__(f"unknown config version {version_id!r}")


class VersionCorrupted(NekoBotError):
    """A stored config version no longer matches its sha256 checksum."""

    def __init__(self, version_id: str) -> None:
        self.version_id = version_id
        super().__init__(f"config version {version_id!r} is corrupted (checksum mismatch)")


class AlertNotFound(NekoBotError, LookupError):
    """No alert has this ``alert_id`` (it never existed or was pruned from the history)."""

    def __init__(self, alert_id: str) -> None:
        self.alert_id = alert_id
        super().__init__(f"unknown alert {alert_id!r}")


class OneBotActionFailed(NekoBotError):
    """A OneBot v11 action was answered with ``status: "failed"`` (or a non-zero,
    non-async ``retcode``).

    Attributes:
        retcode (int): The response's ``retcode`` (OneBot v11, api/README.md).
        message (str): The response's ``msg`` / ``wording``, if any.
    """

    def __init__(self, retcode: int, message: str = "") -> None:
        self.retcode = retcode
        self.message = message
        detail = f" ({message})" if message else ""
        super().__init__(f"OneBot action failed: retcode={retcode}{detail}")


class FrameTooLarge(NekoBotError, ValueError):
    """An outbound frame is larger than the platform's ``max_frame_size`` (bytes);
    only that call fails, the link stays up."""
