"""Handlers: the registry by message type, and containment of their failures.

A handler is ``async def h(message) -> None``; a plain function runs in
``trio.to_thread.run_sync`` unless registered with ``cheap=True`` (then inline
in the worker; it must not block). Handlers of one message run one after the
other in registration order, specific type first, then ``"*"``.

Containment: anything a handler raises except ``trio.Cancelled`` is a failure
of that handler — ``Exception`` and also ``SystemExit``, ``KeyboardInterrupt``,
``GeneratorExit``, custom ``BaseException`` subclasses and exception groups of
them. :func:`~nekobot.core.child_fault.split_fault` (the one rule, shared with the
supervisor) separates the cancellation inside a group (which must keep
propagating) from the failure (which the router counts, retries and
dead-letters); the worker and the process live on.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from ..errors import InvalidRequest
from ..messages import Message

__all__ = ["Handler", "HandlerEntry", "HandlerRegistry"]

Handler = Callable[[Message], Awaitable[None] | None]
"""``async def h(message: Message) -> None`` (or a plain function, see ``cheap``)."""


class HandlerEntry:
    """One registration: the function, its label, and how it is called."""

    __slots__ = ("active", "cheap", "fn", "is_async", "name")

    def __init__(self, fn: Handler, name: str, is_async: bool, cheap: bool) -> None:
        self.fn = fn
        self.name = name
        """Shown in stats, dead letters, logs and metrics."""
        self.is_async = is_async
        self.cheap = cheap
        self.active = True
        """False once unregistered: a pending retry skips it."""


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


class HandlerRegistry:
    """Handlers by message type (``"*"``: every type), with a per-type lookup cache."""

    __slots__ = ("_by_type", "_handlers")

    def __init__(self) -> None:
        self._handlers: dict[str, list[HandlerEntry]] = {}
        self._by_type: dict[str, tuple[HandlerEntry, ...]] = {}

    def add(self, message_type: str, handler: Handler, *, cheap: bool, name: str | None) -> None:
        """Register ``handler`` for ``message_type``.

        Raises:
            InvalidRequest: if ``handler`` is not callable or is already
                registered for this type.
        """
        if not callable(handler):
            raise InvalidRequest(f"handler: not callable: {handler!r}")
        hs = self._handlers.setdefault(message_type, [])
        if any(h.fn is handler for h in hs):
            raise InvalidRequest(f"handler: already registered for {message_type!r}")
        label = name or getattr(handler, "__qualname__", None) or repr(handler)
        hs.append(HandlerEntry(handler, label, _is_async(handler), cheap))
        self._by_type.clear()

    def remove(self, message_type: str, handler: Handler | str) -> bool:
        """Unregister ``handler`` (the function or its name); False if it was not registered."""
        hs = self._handlers.get(message_type, [])
        for i, h in enumerate(hs):
            if h.fn is handler or h.name == handler:
                h.active = False
                del hs[i]
                if not hs:
                    del self._handlers[message_type]
                self._by_type.clear()
                return True
        return False

    def for_type(self, message_type: str) -> tuple[HandlerEntry, ...]:
        """The handlers a message of ``message_type`` runs, in order."""
        hs = self._by_type.get(message_type)
        if hs is None:
            hs = tuple(self._handlers.get(message_type, ()))
            if message_type != "*":
                hs += tuple(self._handlers.get("*", ()))
            self._by_type[message_type] = hs
        return hs

    def counts(self) -> tuple[tuple[str, int], ...]:
        """``(message_type, handlers)`` pairs sorted by type."""
        return tuple((t, len(hs)) for t, hs in sorted(self._handlers.items()))
