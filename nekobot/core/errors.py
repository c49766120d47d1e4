"""Errors of the actor core, and the base every NekoBot error derives from.

Every error NekoBot raises on purpose derives from :class:`NekoBotError`, so an
embedding program can catch them in one place. The HTTP API maps them to status
codes (DESIGN.md §6): ``LookupError`` subclasses to 404, :class:`Conflict`
subclasses to 409, :class:`InvalidRequest` (and ``ConfigError``) to 400.
"""

from __future__ import annotations

import trio

__all__ = [
    "ActorError",
    "ActorStopped",
    "CallTimeout",
    "Conflict",
    "InvalidRequest",
    "MailboxFull",
    "NekoBotError",
    "sole_exception",
]


class NekoBotError(Exception):
    """Base class of every error NekoBot raises on purpose."""


class InvalidRequest(NekoBotError, ValueError):
    """A call's arguments were refused; the message names the argument."""


class Conflict(NekoBotError):
    """The request conflicts with the current state (HTTP 409)."""


class ActorError(NekoBotError):
    """Base class for errors of the actor core (``nekobot.actor``)."""


class CallTimeout(ActorError, TimeoutError):
    """``ActorRef.call`` got no reply within its timeout (Trio clock seconds).

    The late reply, if one ever comes, is dropped: it is never delivered to
    another caller.
    """


class ActorStopped(ActorError):
    """The actor behind an ``ActorRef`` is not running (its mailbox is closed)."""


class MailboxFull(ActorError):
    """``ActorRef.cast_nowait`` found the actor's bounded mailbox full."""


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure inside a (nested) exception group, else the group itself.

    Trio's nurseries wrap every error in a group; when exactly one leaf that is
    not ``trio.Cancelled`` is inside, callers raise that leaf as itself.
    """

    def leaves(exc: BaseException) -> list[BaseException]:
        if isinstance(exc, BaseExceptionGroup):
            return [leaf for e in exc.exceptions for leaf in leaves(e)]
        return [exc]

    found = [e for e in leaves(group) if not isinstance(e, trio.Cancelled)]
    return found[0] if len(found) == 1 else group
