"""The platform plugin API: :class:`PlatformActor` and how a ``type`` is found.

A platform is one configured connection (``[platforms.<id>]``) run as a
supervised Trio task (DESIGN.md §5b)::

    class MyPlatform(nekobot.PlatformActor):
        platform_type = "my_platform"
        config_class = MyPlatformConfig

        async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
            ...  # connect
            task_status.started()
            ...  # for each inbound message: await self.emit(message)

        async def send(self, message: OutboundMessage) -> SendReceipt:
            ...  # deliver one outbound message; raise if not delivered

``run()`` returning means finished; raising means failed (the supervisor
decides). Never catch ``trio.Cancelled``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

import attrs
import trio

from ..config.schema import ConnectionConfig
from ..errors import PlatformOffline
from ..messages import Message, MessagePriority, OutboundMessage, SendReceipt

__all__ = [
    "BUILTIN_PLATFORMS",
    "OutboundMessage",
    "PlatformActor",
    "PlatformContext",
    "SendReceipt",
    "load_platform_class",
    "record_metric",
]

log = logging.getLogger(__name__)


@attrs.define(kw_only=True)
class PlatformContext:
    """What a platform actor may reach of the bot; the bot fills it in.

    The defaults make a platform usable on its own (in tests): emitted messages
    go to ``emitted`` and link changes are only recorded.
    """

    emit: Callable[[Message], Awaitable[object]] | None = None
    """Routes one inbound message (normally ``router.route``)."""
    link_up: Callable[[str], Awaitable[None]] | None = None
    """Called with the platform id when its link becomes usable (buffer replays)."""
    link_down: Callable[[str], Awaitable[None]] | None = None
    """Called with the platform id when its link is lost (sends are buffered)."""
    report_fault: Callable[[str, BaseException, dict[str, Any]], Awaitable[object]] | None = None
    """Reports a fault the adapter caught itself (``fault_isolation.handle_fault``)."""
    record_metric: Callable[[str, float, str], None] | None = None
    """``monitor.record_metric(name, value, metric_type)`` (sync, cheap)."""
    raise_alert: Callable[[str, str, str], Awaitable[None]] | None = None
    """``(platform_id, level, message)``: raises an alert at the monitor. Alerts
    are keyed by the message's text before its first ``:`` (e.g. ``"auth failed"``),
    so a condition that fires again updates its one open alert."""
    account_up: Callable[[str, str], Awaitable[None]] | None = None
    """``(platform_id, account)``: one account of a multi-account platform can
    send again (the buffer replays what waits for that account)."""
    account_down: Callable[[str, str], Awaitable[None]] | None = None
    """``(platform_id, account)``: that account lost its link (its sends are
    buffered, without holding up the platform's other accounts)."""
    clear_alert: Callable[[str, str], None] | None = None
    """``(platform_id, kind)``: resolves the open alert of that kind (the text
    before the ``:`` of its message), if any."""
    emitted: list[Message] = attrs.field(factory=list)
    """Messages emitted when no ``emit`` was given (tests)."""


def record_metric(
    context: PlatformContext | None,
    name: str,
    value: float,
    kind: str,
    labels: Mapping[str, str],
) -> None:
    """Record a metric through ``context.record_metric`` if there is one.

    Labels are passed when the hook takes them (the bot's ``StatusMonitor``
    does). A metric must never break a link: any error is logged and dropped.
    """
    rec: Callable[..., None] | None = None if context is None else context.record_metric
    if rec is None:
        return
    try:
        try:
            rec(name, value, kind, labels=dict(labels))
        except TypeError:
            rec(name, value, kind)
    except Exception as exc:
        log.debug("metric %s not recorded: %s", name, exc)


class PlatformActor:
    """Base class of platform plugins.

    Args:
        platform_id (str): The ``<id>`` of ``[platforms.<id>]``.
        config: An instance of :attr:`config_class` (the section, validated).
        connection (ConnectionConfig | None): The section's ``[...connection]``
            table; the defaults if omitted.
        context (PlatformContext): The bot's hooks; a fresh standalone one if omitted.
    """

    platform_type: ClassVar[str] = ""
    """The ``type`` name in ``[platforms.<id>]``."""
    config_class: ClassVar[type[Any]]
    """attrs class of the platform's own config keys."""

    def __init__(
        self,
        platform_id: str,
        config: Any,
        *,
        connection: ConnectionConfig | None = None,
        context: PlatformContext | None = None,
    ) -> None:
        self.platform_id = platform_id
        self.config = config
        self.connection_config: ConnectionConfig = connection or ConnectionConfig()
        self.context = context or PlatformContext()
        self.online = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, call ``task_status.started()``, then serve until cancelled."""
        raise NotImplementedError

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Deliver one message; raise (e.g. ``ConnectionClosed``) if it was not delivered."""
        raise NotImplementedError

    @classmethod
    def account_of(cls, message_type: str, content: Any) -> str | None:
        """Which account of the platform sends this message, or ``None``.

        A platform that carries several accounts (OneBot v11: one connection
        per ``X-Self-ID``) names the account a message goes out through, so
        that the buffer keeps one order per account and one offline account
        never holds up the others. The default: one account per platform.
        """
        return None

    async def set_account_online(self, account: str, online: bool) -> None:
        """Tell the bot one account's link came up (``True``) or went down."""
        hook = self.context.account_up if online else self.context.account_down
        if hook is not None:
            await hook(self.platform_id, account)

    # ---- helpers for subclasses -------------------------------------------

    async def emit(self, message: Message) -> None:
        """Hand one inbound message to the router (dedup, priority, handlers)."""
        if self.context.emit is None:
            self.context.emitted.append(message)
        else:
            await self.context.emit(message)

    def make_message(
        self,
        message_type: str,
        content: Any,
        *,
        priority: MessagePriority = MessagePriority.NORMAL,
        dedup_key: Hashable | None = None,
    ) -> Message:
        """A :class:`Message` from this platform."""
        return Message(
            platform_id=self.platform_id,
            message_type=message_type,
            content=content,
            priority=priority,
            dedup_key=dedup_key,
        )

    async def set_online(self) -> None:
        """Tell the bot the link is usable: the buffer replays what it holds."""
        self.online = True
        if self.context.link_up is not None:
            await self.context.link_up(self.platform_id)

    async def set_offline(self) -> None:
        """Tell the bot the link is lost: sends go to the buffer until it returns."""
        was = self.online
        self.online = False
        if was and self.context.link_down is not None:
            await self.context.link_down(self.platform_id)

    def require_online(self) -> None:
        """Raise :class:`PlatformOffline` unless the link is up."""
        if not self.online:
            raise PlatformOffline(f"platform {self.platform_id!r} has no live link")


BUILTIN_PLATFORMS: dict[str, str] = {
    "onebot_v11": "nekobot.platforms.onebot_v11:OneBotV11Platform",
}
"""Built-in platform types, by name."""


def _import_path(path: str) -> Any:
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def _entry_points() -> Mapping[str, EntryPoint]:
    """The group ``nekobot.platforms`` by name, read once per process (the first
    distribution that registers a name wins)."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group="nekobot.platforms"):
        found.setdefault(ep.name, ep)
    return found


@functools.cache
def load_platform_class(type_name: str) -> type[PlatformActor]:
    """Find the platform class for a ``type``.

    Looked up in order: a built-in name (:data:`BUILTIN_PLATFORMS`), an entry
    point of the group ``nekobot.platforms``, an import path
    ``package.module:ClassName``.

    The answer is cached per ``type_name`` for the life of the process, and the
    installed packages' entry points are read once, on the first lookup that
    needs them: starting many platforms never rescans package metadata. A
    failed lookup is not cached. Nothing is invalidated: a platform plugin
    installed (or changed) while the bot runs is seen after a restart.

    Raises:
        LookupError: naming the type and why it was not found.
    """
    target: Any = None
    try:
        if type_name in BUILTIN_PLATFORMS:
            target = _import_path(BUILTIN_PLATFORMS[type_name])
        elif type_name in _entry_points():
            target = _entry_points()[type_name].load()
    except Exception as exc:  # the plugin's module failed to import: say so
        raise LookupError(f"cannot load platform type {type_name!r}: {exc}") from None
    if target is None:
        if ":" not in type_name:
            raise LookupError(
                f"unknown platform type {type_name!r} (built-in: "
                f"{', '.join(sorted(BUILTIN_PLATFORMS))}; or an entry point in "
                "'nekobot.platforms', or 'package.module:ClassName')"
            )
        try:
            target = _import_path(type_name)
        except Exception as exc:  # no such module or name, or its import raised
            raise LookupError(f"cannot import platform type {type_name!r}: {exc}") from None
    if not (isinstance(target, type) and issubclass(target, PlatformActor)):
        raise LookupError(f"platform type {type_name!r} is not a PlatformActor subclass")
    if not hasattr(target, "config_class"):
        raise LookupError(f"platform type {type_name!r} has no config_class")
    return target
