"""``open_nekobot(config)`` and the :class:`NekoBot` handle: the supervision tree.

::

    async with nekobot.open_nekobot("nekobot.toml") as bot:
        bot.message_router.register_handler("message", on_message)
        await trio.sleep_forever()

The root nursery starts, in order: the SQLite store, ``monitor``, ``buffer``,
``router``, fault isolation, ``platforms`` (the runtime manager's supervisor),
the handler plugins, ``api`` and ``console`` when enabled (DESIGN.md §1).
Leaving the block stops them in reverse order; each child gets
``bot.shutdown_timeout`` seconds (Trio clock) to stop, then it is cancelled.
A crash of a root actor (router, buffer, monitor) ends the block with
:class:`RootActorCrashed` naming the actor; a failing platform never does.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from .config.schema import NekoBotConfig, load_config, parse_config
from .errors import (
    ConfigError,
    ConnectionClosed,
    NekoBotError,
    PlatformNotFound,
    PlatformOffline,
    RevisionConflict,
    sole_exception,
)
from .messages import MessagePriority, OutboundMessage, SendReceipt
from .monitor.status_monitor import AlertLevel
from .platforms.base import PlatformActor, PlatformContext, load_platform_class
from .storage import Store

__all__ = ["NekoBot", "RootActorCrashed", "open_nekobot"]

log = logging.getLogger("nekobot")


class RootActorCrashed(NekoBotError):
    """One of the bot's own actors (router, buffer, monitor …) failed: a bug.

    Attributes:
        actor (str): Which child of the root crashed.
    """

    def __init__(self, actor: str, cause: BaseException) -> None:
        self.actor = actor
        super().__init__(f"root actor {actor!r} crashed: {type(cause).__name__}: {cause}")


@attrs.define
class _Child:
    name: str
    scope: trio.CancelScope
    done: trio.Event
    stop: Callable[[], Awaitable[None]] | None = None


class NekoBot:
    """The handle of a running bot; ``open_nekobot`` yields it.

    Attributes use the seed document's global names (DESIGN.md §5):
    ``runtime_manager``, ``message_router``, ``message_buffer``,
    ``status_monitor``, ``fault_isolation_manager``, ``config_version_manager``.
    """

    def __init__(self, config: NekoBotConfig, *, config_path: str | None = None) -> None:
        from .buffer.message_buffer import MessageBuffer
        from .config.versions import ConfigVersionManager
        from .faults.fault_isolation import FaultIsolation
        from .monitor.status_monitor import StatusMonitor
        from .routing.message_router import MessageRouter
        from .runtime.runtime_manager import RuntimeManager

        self.config = config
        """The config in force (``NekoBotConfig``); replaced on every applied change."""
        self.config_path = config_path
        """The file ``reload()`` re-reads, if the bot was started from one."""
        data_dir = config.data_path()
        durable = config.buffer.durable
        self.store = Store(data_dir / "nekobot.db" if durable else ":memory:")
        self.status_monitor = StatusMonitor.from_config(config.monitor)
        self.message_buffer = MessageBuffer.from_config(
            config.buffer, store=self.store, monitor=self.status_monitor, deliver=self._deliver
        )
        self.message_router = MessageRouter.from_config(config.router, monitor=self.status_monitor)
        self.fault_isolation_manager = FaultIsolation.from_config(
            config.fault_isolation, monitor=self.status_monitor, store=self.store
        )
        self.runtime_manager = RuntimeManager.from_config(
            config.supervisor,
            fault_isolation=self.fault_isolation_manager,
            platform_factory=self._build_platform,
            monitor=self.status_monitor,
        )
        self.config_version_manager = ConfigVersionManager(store=self.store)
        self.runtime_manager.set_change_hook(self._on_platforms_changed)
        self.config_version_manager.set_apply_callback(self._apply_config_dict)
        self.nursery: trio.Nursery | None = None
        self.started_at: float | None = None
        """Wall-clock ``time.time()`` when the bot finished starting."""
        self.ready = False
        """True once every child started; ``/readyz`` reports it."""
        self.api_port: int | None = None
        """Port the HTTP API is bound to (when enabled)."""
        self.console_address: Any = None
        """Where the debug console listens (when enabled)."""
        self._children: list[_Child] = []
        self._accounts: dict[str, set[str]] = {}
        self._platform_classes: dict[str, type[PlatformActor]] = {}
        self._config_lock = trio.Lock()
        self._applying = False

    # ---- platforms -------------------------------------------------------

    def _context_for(self, platform_id: str) -> PlatformContext:
        monitor = self.status_monitor

        async def raise_alert(pid: str, level: str, message: str) -> None:
            monitor.fire_alert(
                f"platform:{pid}:{message.split(':', 1)[0]}",
                AlertLevel.coerce(level),
                message,
                platform_id=pid,
            )

        return PlatformContext(
            emit=self.message_router.route,
            link_up=self.message_buffer.mark_platform_online,
            link_down=self._link_down,
            account_up=self._account_up,
            account_down=self._account_down,
            report_fault=self._report_fault,
            record_metric=monitor.record_metric,
            raise_alert=raise_alert,
            clear_alert=lambda pid, kind: monitor.clear_alert(f"platform:{pid}:{kind}"),
        )

    async def _report_fault(
        self, platform_id: str, exc: BaseException, context: dict[str, Any]
    ) -> None:
        await self.fault_isolation_manager.handle_fault(platform_id, exc, context)

    def _build_platform(self, platform_id: str, pc: Any) -> PlatformActor:
        cls = load_platform_class(pc.type)
        return cls(
            platform_id,
            pc.settings,
            connection=pc.connection,
            context=self._context_for(platform_id),
        )

    # Buffer queues: one per platform ("qq"), and one per account of a
    # multi-account platform ("qq@10001"), so that one offline account never
    # holds up the platform's others. Platform ids cannot contain "@".

    async def _account_up(self, platform_id: str, account: str) -> None:
        self._accounts.setdefault(platform_id, set()).add(account)
        await self.message_buffer.mark_platform_online(f"{platform_id}@{account}")

    async def _account_down(self, platform_id: str, account: str) -> None:
        self._accounts.get(platform_id, set()).discard(account)
        await self.message_buffer.mark_platform_offline(f"{platform_id}@{account}")

    async def _link_down(self, platform_id: str) -> None:
        # Take the accounts before the first await: an account that comes up
        # while this runs (a new link) must not be marked offline with them.
        accounts = self._accounts.pop(platform_id, set())
        await self.message_buffer.mark_platform_offline(platform_id)
        for account in accounts:
            await self.message_buffer.mark_platform_offline(f"{platform_id}@{account}")

    def _buffer_key(self, platform_id: str, message_type: str, content: Any) -> str:
        pc = self.runtime_manager.platform_configs[platform_id]
        cls = self._platform_classes.get(pc.type)
        if cls is None:
            cls = self._platform_classes[pc.type] = load_platform_class(pc.type)
        account = cls.account_of(message_type, content)
        return platform_id if account is None else f"{platform_id}@{account}"

    async def _deliver(self, message: OutboundMessage) -> SendReceipt:
        platform_id = message.platform_id.partition("@")[0]
        actor = self.runtime_manager.get_platform_actor(platform_id)
        if actor is None or not actor.online:
            raise PlatformOffline(f"platform {platform_id!r} has no live link")
        if platform_id != message.platform_id:
            message = attrs.evolve(message, platform_id=platform_id)
        return await actor.send(message)

    # ---- sending ----------------------------------------------------------

    async def send(
        self,
        platform_id: str,
        message_type: str,
        content: Any,
        priority: MessagePriority = MessagePriority.NORMAL,
        ttl: float | None = None,
    ) -> SendReceipt:
        """Send one message to a platform, or buffer it while the platform is offline.

        Args:
            platform_id (str): The ``[platforms.<id>]`` to send to.
            message_type (str): Platform-specific; OneBot v11: an action name
                (``send_group_msg`` …) or ``"private"`` / ``"group"``.
            content: The payload (OneBot v11: the action's ``params``); must be
                JSON-serialisable, since it may be buffered durably.
            priority (MessagePriority): Order in the buffer under ``priority`` policy.
            ttl (float | None): Seconds the message may wait in the buffer;
                ``None`` takes ``buffer.default_ttl``; ``math.inf`` never expires.

        While the buffer still holds messages for this platform (it is
        replaying after an outage), a new message queues behind them to keep
        the order and goes out as soon as the platform acknowledged the ones
        before it; if that queue is full, this waits up to
        ``buffer.overflow_wait`` seconds for room.

        Returns:
            SendReceipt: ``buffered=False`` with the platform's answer in
            ``data`` when it was delivered now; ``buffered=True`` when it waits
            in the buffer (it is replayed, in order, when the link returns).

        Raises:
            PlatformNotFound: if no platform has this id.
            ValueError: if ``ttl`` is zero or negative.
            nekobot.errors.NekoBotError: what the platform raised when it
                answered that the message failed (e.g. ``OneBotActionFailed``).
        """
        if platform_id not in self.runtime_manager.platform_configs:
            raise PlatformNotFound(platform_id)
        if ttl is not None and not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds (or math.inf), got {ttl!r}")
        msg = OutboundMessage(
            platform_id=platform_id,
            message_type=message_type,
            content=content,
            priority=MessagePriority(priority),
            created_at=time.time(),
        )
        actor = self.runtime_manager.get_platform_actor(platform_id)
        queue = self._buffer_key(platform_id, message_type, content)
        # Order: while the buffer still holds messages for this platform (or
        # this account of it), new ones queue behind them.
        if (
            actor is not None
            and actor.online
            and self.message_buffer.is_online(queue)
            and self.message_buffer.pending_count(queue) == 0
        ):
            try:
                return await actor.send(msg)
            except (ConnectionClosed, PlatformOffline):
                log.info("%s went offline during a send; buffering", queue)
        key = await self.message_buffer.add_message(
            queue, message_type, content, priority, ttl, message_key=msg.message_key
        )
        return SendReceipt(platform_id=platform_id, message_key=key, buffered=True)

    # ---- config -----------------------------------------------------------

    async def _on_platforms_changed(self, description: str) -> None:
        """The runtime manager applied a platform change: record a config version."""
        self.config = attrs.evolve(
            self.config, platforms=dict(self.runtime_manager.platform_configs)
        )
        if not self._applying:
            await self._record_version(description or "platform change", author="runtime")

    async def _record_version(
        self,
        description: str,
        *,
        author: str,
        change_type: Any = None,
        base_revision: int | None = None,
    ) -> Any:
        from .config.schema import config_to_dict
        from .config.versions import ConfigChangeType

        return await self.config_version_manager.create_version(
            config_to_dict(self.config),
            change_type or ConfigChangeType.UPDATE,
            description,
            author,
            **({"base_revision": base_revision} if base_revision is not None else {}),
        )

    async def apply_config(
        self,
        new: NekoBotConfig | Mapping[str, Any],
        *,
        description: str = "",
        author: str = "api",
        base_revision: int | None = None,
        record: bool = True,
    ) -> Any:
        """Apply a new config to the running bot and record it as a version.

        Only platforms whose ``[platforms.<id>]`` section changed are rebuilt;
        added ones start, removed ones stop; ``api.token`` applies at once.
        Other sections take effect at the next start: they are recorded now,
        a warning is logged, and the version's description says
        ``(restart needed for: router, …)``.

        Args:
            new: A ``NekoBotConfig`` or the dict of a TOML document.
            base_revision (int | None): Check-and-set: the revision the change
                was based on; a stale one raises ``RevisionConflict``.
            record (bool): Record a version (a rollback records its own).

        Returns:
            The recorded ``ConfigVersion`` (or ``None`` when ``record`` is false).

        Raises:
            ConfigError: if the config is invalid; the running config stays.
            RevisionConflict: if ``base_revision`` is not the current revision.
            Exception: what a platform raised when its new config failed to
                start; the previous config was restored.
        """
        if not isinstance(new, NekoBotConfig):
            new = parse_config(new, source_dir=self.config.source_dir)
        async with self._config_lock:
            current_rev = self.config_version_manager.current_revision
            if base_revision is not None and base_revision != current_rev:
                raise RevisionConflict(base_revision, current_rev)
            old = self.config
            self._applying = True
            try:
                await self.runtime_manager.apply_config(dict(new.platforms))
            finally:
                self._applying = False
            self.config = attrs.evolve(new, source_dir=old.source_dir)
            description = description or "config update"
            later = _needs_restart(old, new)
            if later:
                log.warning(
                    "config applied; changes to [%s] take effect at the next start",
                    ", ".join(later),
                )
                description += f" (restart needed for: {', '.join(later)})"
            if record:
                return await self._record_version(description, author=author)
            return None

    async def _apply_config_dict(self, data: Mapping[str, Any]) -> None:
        await self.apply_config(data, record=False)

    async def reload(self, *, author: str = "reload") -> Any:
        """Re-read the config file and apply it (``SIGHUP``, ``nekobot reload``).

        Raises:
            ConfigError: if the file is invalid (the running config stays), or
                the bot was not started from a file.
        """
        if self.config_path is None:
            raise ConfigError(["(reload): this bot was not started from a config file"])
        new = await trio.to_thread.run_sync(load_config, self.config_path)
        return await self.apply_config(
            new, description=f"reload of {self.config_path}", author=author
        )

    # ---- start / stop ----------------------------------------------------

    async def _start_child(
        self,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        *,
        stop: Callable[[], Awaitable[None]] | None = None,
        critical: bool = True,
    ) -> Any:
        assert self.nursery is not None
        scope = trio.CancelScope()
        done = trio.Event()

        async def runner(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await fn(task_status=task_status)
            except Exception as exc:
                if critical:
                    if isinstance(exc, OSError | ConfigError):
                        # e.g. the API's port is taken: the message says it all
                        log.critical("%s could not run: %s", name, exc)
                    else:
                        log.critical("root actor %s crashed", name, exc_info=True)
                    raise RootActorCrashed(name, exc) from exc
                log.exception("%s failed", name)
            finally:
                done.set()

        value = await self.nursery.start(runner, name=f"nekobot.{name}")
        self._children.append(_Child(name, scope, done, stop))
        return value

    async def _start(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        await self.store.open()
        if self.store.recovered_from:
            log.error(
                "the database was corrupt: moved aside to %s; starting with an empty store",
                self.store.recovered_from,
            )
        await self._start_child("monitor", self.status_monitor.run)
        if self.store.recovered_from:
            self.status_monitor.fire_alert(
                "storage:corrupt",
                AlertLevel.ERROR,
                f"database was corrupt; moved aside to {self.store.recovered_from}",
            )
        await self._start_child("buffer", self.message_buffer.run)
        await self._start_child("router", self.message_router.run, stop=self._drain_router)
        fi_run = getattr(self.fault_isolation_manager, "run", None)
        if fi_run is not None:
            await self._start_child("fault_isolation", fi_run)
        await self.config_version_manager.open()
        await self._start_child(
            "platforms", self.runtime_manager.run, stop=self.runtime_manager.begin_shutdown
        )
        await self._load_plugins()
        await self.runtime_manager.load(dict(self.config.platforms))
        if (
            self.config_version_manager.current_revision is None
            or not await self._same_as_current()
        ):
            from .config.versions import ConfigChangeType

            await self._record_version(
                "start" if self.config_path is None else f"start from {self.config_path}",
                author="startup",
                change_type=ConfigChangeType.CREATE
                if self.config_version_manager.current_revision is None
                else ConfigChangeType.UPDATE,
            )
        if self.config.api.enable:
            from .api.app import serve_api  # serve_api logs where it listens

            self.api_port = await self._start_child(
                "api", functools.partial(serve_api, self, self.config.api)
            )
        if self.config.console.enable:
            from .console.server import serve_console

            self.console_address = await self._start_child(
                "console", functools.partial(serve_console, self, self.config.console)
            )
        self.started_at = time.time()
        self.ready = True

    async def _drain_router(self) -> None:
        try:
            await self.message_router.drain()
        finally:
            stats = self.message_router.get_stats()
            left = stats.queued + stats.in_flight
            if left:
                log.warning(
                    "shutdown: %d inbound messages were not handled within %s s",
                    left,
                    self.config.bot.shutdown_timeout,
                )

    async def _same_as_current(self) -> bool:
        from .config.schema import config_to_dict

        cur = self.config_version_manager.get_version(
            f"v{self.config_version_manager.current_revision}"
        )
        return bool(cur is not None and cur.config == config_to_dict(self.config))

    async def _load_plugins(self) -> None:
        for i, spec in enumerate(self.config.bot.plugins):
            setup = find_plugin(i, spec)
            result = setup(self)
            if inspect.isawaitable(result):
                await result
            log.info("plugin %s loaded", spec)

    async def _stop(self) -> None:
        self.ready = False
        deadline = self.config.bot.shutdown_timeout
        for child in reversed(self._children):
            if child.stop is not None:
                with trio.move_on_after(deadline):
                    await child.stop()
            child.scope.cancel()
            with trio.move_on_after(deadline + 1.0) as waited:
                await child.done.wait()
            if waited.cancelled_caught:
                log.error("%s did not stop within its deadline", child.name)
        self._children.clear()
        await self.store.close()


_SECTIONS_NEEDING_RESTART = (
    "bot",
    "supervisor",
    "fault_isolation",
    "router",
    "buffer",
    "monitor",
    "api",
    "console",
)


def _needs_restart(old: NekoBotConfig, new: NekoBotConfig) -> list[str]:
    """Sections other than ``platforms`` whose change only a restart applies.

    ``api.token`` is read on every request, so rotating it needs no restart.
    """
    out = []
    for name in _SECTIONS_NEEDING_RESTART:
        a, b = getattr(old, name), getattr(new, name)
        if name == "api":
            a, b = attrs.evolve(a, token=None), attrs.evolve(b, token=None)
        if a != b:
            out.append(name)
    return out


def find_plugin(index: int, spec: str) -> Callable[[NekoBot], Any]:
    """Import ``[bot] plugins[index]`` (``"package.module:setup"``; ``setup`` by
    default) and return its setup function, without calling it.

    Raises:
        ConfigError: ``bot.plugins[index]: cannot load …`` naming the cause.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        setup: Callable[[NekoBot], Any] = getattr(module, attr or "setup")
    except Exception as exc:
        raise ConfigError(
            [f"bot.plugins[{index}]: cannot load {spec!r}: {type(exc).__name__}: {exc}"]
        ) from None
    return setup


def _coerce_config(
    config: NekoBotConfig | Mapping[str, Any] | str | os.PathLike[str] | None,
) -> tuple[NekoBotConfig, str | None]:
    if config is None:
        config = os.environ.get("NEKOBOT_CONFIG", "nekobot.toml")
    if isinstance(config, NekoBotConfig):
        return config, None
    if isinstance(config, str | os.PathLike):
        return load_config(config), str(Path(config))
    return parse_config(config), None


@asynccontextmanager
async def open_nekobot(
    config: NekoBotConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
) -> AsyncIterator[NekoBot]:
    """Start a bot in the current Trio run and yield its :class:`NekoBot` handle.

    Args:
        config: A ``NekoBotConfig``, a dict shaped like ``nekobot.toml``, or a
            path to a TOML file (``None``: ``$NEKOBOT_CONFIG`` or ``nekobot.toml``).

    Raises:
        ConfigError: if the config is invalid (before anything starts).
        RootActorCrashed: if one of the bot's own actors fails.
    """
    cfg, path = _coerce_config(config)
    bot = NekoBot(cfg, config_path=path)
    try:
        async with trio.open_nursery() as nursery:
            try:
                await bot._start(nursery)
                yield bot
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(
                        (cfg.bot.shutdown_timeout + 1.0) * (len(bot._children) + 1) + 1.0
                    ):
                        await bot._stop()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # One failure (a crashed root actor, or the body's own exception): raise
        # it as itself rather than wrapped in a group.
        only = sole_exception(group)
        if only is group:
            raise
        raise only from only.__cause__
