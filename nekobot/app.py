"""``open_nekobot(config)`` and the :class:`NekoBot` handle: the supervision tree.

::

    async with nekobot.open_nekobot("nekobot.toml") as bot:
        bot.message_router.register_handler("message", on_message)
        await trio.sleep_forever()

The root is a :class:`~nekobot.core.supervisor.Supervisor` (the same class
that supervises the platforms) over the children of DESIGN.md §1, listed once
in :meth:`NekoBot._tree`. It starts them in order and stops them in reverse,
each within ``bot.shutdown_timeout`` seconds (Trio clock), then cancelled. A
crash of one of the bot's own actors (router, buffer, monitor, …) ends the
block with :class:`RootActorCrashed` naming it; a failing platform never does:
it is a child of the ``platforms`` supervisor, which isolates it.
"""

from __future__ import annotations

import importlib
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

from .api.app import serve_api
from .buffer.message_buffer import MessageBuffer
from .config.loader import load_config, parse_config
from .config.schema import NekoBotConfig, PlatformConfig
from .config.service import ConfigService, PlatformChanges
from .config.versions import ConfigVersion, ConfigVersionManager
from .console.server import serve_console
from .core.actor import Mailbox
from .core.supervisor import ChildSpec, ChildStartError, RestartIntensityExceeded, Supervisor
from .errors import (
    ConfigError,
    ConnectionClosed,
    NekoBotError,
    PlatformNotFound,
    PlatformOffline,
    sole_exception,
)
from .faults.fault_isolation import FaultIsolation
from .messages import MessagePriority, OutboundMessage, SendReceipt
from .monitor.status_monitor import AlertLevel, StatusMonitor
from .platforms.base import PlatformActor, PlatformContext, load_platform_class
from .routing.message_router import MessageRouter
from .runtime.runtime_manager import RuntimeManager
from .storage import Store

__all__ = ["NekoBot", "RootActorCrashed", "find_plugin", "open_nekobot"]

log = logging.getLogger("nekobot")


class RootActorCrashed(NekoBotError):
    """One of the bot's own actors (router, buffer, monitor …) failed: a bug.

    Attributes:
        actor (str): Which child of the root crashed (its id in the tree).
        cause (BaseException): What it raised (unwrapped from Trio's groups).
    """

    def __init__(self, actor: str, cause: BaseException) -> None:
        self.actor = actor
        self.cause = cause
        super().__init__(f"root actor {actor!r} crashed: {type(cause).__name__}: {cause}")


class _Started:
    """A ``task_status`` that also keeps the value a child started with."""

    def __init__(self, real: trio.TaskStatus[Any], keep: Callable[[Any], None]) -> None:
        self._real = real
        self._keep = keep

    def started(self, value: Any = None) -> None:
        self._keep(value)
        self._real.started(value)


class _EndsAfterStop:
    """A root child with a graceful stop: ``stop()`` runs ``before_stop`` (bounded
    by the child's ``shutdown`` deadline), then the child ends at once.

    The supervisor calls a child's ``stop`` hook and then waits up to its
    ``shutdown`` for the child to return by itself; the router and the
    platforms run until cancelled, so their hooks (drain what was accepted;
    mark the stop as expected) end them here.
    """

    def __init__(
        self,
        run: Callable[..., Awaitable[object]],
        before_stop: Callable[[], Awaitable[object]],
    ) -> None:
        self._run = run
        self._before_stop = before_stop
        self._stopped = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None]) -> None:
        self._stopped = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run)
            task_status.started()
            await self._stopped.wait()
            nursery.cancel_scope.cancel()

    async def stop(self) -> None:
        try:
            await self._before_stop()
        finally:
            self._stopped.set()


class NekoBot:
    """The handle of a running bot; ``open_nekobot`` yields it.

    Attributes use the seed document's global names (DESIGN.md §5):
    ``runtime_manager``, ``message_router``, ``message_buffer``,
    ``status_monitor``, ``fault_isolation_manager``, ``config_version_manager``
    (the config service, which owns the config and its history).

    Every component is built here, once, with what it depends on (lower
    layers first); news goes up as messages to addresses handed down at
    construction. Nothing is wired afterwards.
    """

    def __init__(self, config: NekoBotConfig, *, config_path: str | None = None) -> None:
        self.config_path = config_path
        """The file ``reload()`` re-reads, if the bot was started from one."""
        self._plugins = [(spec, find_plugin(i, spec)) for i, spec in enumerate(config.bot.plugins)]
        """``[bot] plugins``, imported before anything starts (``ConfigError`` names
        the one that cannot load); ``setup(bot)`` runs in the ``plugins`` child."""
        durable = config.buffer.durable
        self.store = Store(config.data_path() / "nekobot.db" if durable else ":memory:")
        self.status_monitor = StatusMonitor.from_config(config.monitor)
        self.message_buffer = MessageBuffer.from_config(
            config.buffer, store=self.store, monitor=self.status_monitor, deliver=self._deliver
        )
        self.message_router = MessageRouter.from_config(config.router, monitor=self.status_monitor)
        runtime_mailbox: Mailbox[Any] = Mailbox("runtime")
        config_mailbox: Mailbox[Any] = Mailbox("config")
        self.fault_isolation_manager = FaultIsolation.from_config(
            config.fault_isolation,
            monitor=self.status_monitor,
            store=self.store,
            events=runtime_mailbox.ref,
        )
        self._platforms_context = self._platform_context()
        self.runtime_manager = RuntimeManager.from_config(
            config.supervisor,
            fault_isolation=self.fault_isolation_manager,
            platform_factory=self._build_platform,
            monitor=self.status_monitor,
            config_owner=PlatformChanges(config_mailbox.ref),
            mailbox=runtime_mailbox,
        )
        self.config_version_manager = ConfigService(
            config,
            history=ConfigVersionManager(store=self.store),
            runtime=self.runtime_manager,
            mailbox=config_mailbox,
        )
        self.supervisor = Supervisor(
            self._tree(config),
            name="nekobot",
            max_restarts=0,
            period=1.0,
            on_intensity="escalate",
        )
        """The root of the tree (``tree`` in the console shows it)."""
        self.started_at: float | None = None
        """Wall-clock ``time.time()`` when the bot finished starting."""
        self.ready = False
        """True once every child started; ``/readyz`` reports it."""
        self.api_port: int | None = None
        """Port the HTTP API is bound to (when enabled)."""
        self.console_address: Any = None
        """Where the debug console listens (when enabled)."""
        self.nursery: trio.Nursery | None = None
        """Where plugins start background tasks (the tree's ``plugins`` child;
        ``None`` until it starts)."""

    def _tree(self, config: NekoBotConfig) -> list[ChildSpec]:
        """The supervision tree of DESIGN.md §1: started top to bottom, stopped bottom up."""
        grace = config.bot.shutdown_timeout
        router = _EndsAfterStop(self.message_router.run, self._drain_router)
        platforms = _EndsAfterStop(self._run_platforms, self.runtime_manager.begin_shutdown)
        return [
            ChildSpec("monitor", self.status_monitor.run, shutdown=grace),
            ChildSpec("buffer", self.message_buffer.run, shutdown=grace),
            ChildSpec("router", router.run, shutdown=grace, stop=router.stop),
            ChildSpec("fault_isolation", self.fault_isolation_manager.run, shutdown=grace),
            ChildSpec("config", self.config_version_manager.run, shutdown=grace),
            ChildSpec("plugins", self._run_plugins, shutdown=grace),
            ChildSpec("platforms", platforms.run, shutdown=grace, stop=platforms.stop),
            *([ChildSpec("api", self._run_api, shutdown=grace)] if config.api.enable else []),
            *(
                [ChildSpec("console", self._run_console, shutdown=grace)]
                if config.console.enable
                else []
            ),
        ]

    @property
    def config(self) -> NekoBotConfig:
        """The config in force (the config service's snapshot; read-only)."""
        return self.config_version_manager.config

    # ---- the tree's own children --------------------------------------------

    async def _run_plugins(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Run ``[bot] plugins``' ``setup(bot)`` before any platform starts; their
        background tasks (``bot.nursery.start_soon``) live in this child."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                for spec, setup in self._plugins:
                    result = setup(self)
                    if inspect.isawaitable(result):
                        await result
                    log.info("plugin %s loaded", spec)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.nursery = None

    async def _run_platforms(self, *, task_status: trio.TaskStatus[None]) -> None:
        """The runtime manager (it owns the platforms' supervisor), with the
        platforms of the config the bot started with."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.runtime_manager.run)
            await self.runtime_manager.load(self.config.platforms)
            task_status.started()

    async def _run_api(self, *, task_status: trio.TaskStatus[int]) -> None:
        def keep(port: int) -> None:
            self.api_port = port

        await serve_api(self, self.config.api, task_status=_Started(task_status, keep))

    async def _run_console(self, *, task_status: trio.TaskStatus[Any]) -> None:
        def keep(address: Any) -> None:
            self.console_address = address

        await serve_console(self, self.config.console, task_status=_Started(task_status, keep))

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

    # ---- platforms -------------------------------------------------------

    def _platform_context(self) -> PlatformContext:
        """What every platform may reach of the bot (one context, shared: each
        hook takes the platform id, so nothing in it is per platform)."""
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
            report_fault=self.fault_isolation_manager.handle_fault,
            record_metric=monitor.record_metric,
            raise_alert=raise_alert,
            clear_alert=lambda pid, kind: monitor.clear_alert(f"platform:{pid}:{kind}"),
        )

    def _build_platform(self, platform_id: str, pc: PlatformConfig) -> PlatformActor:
        cls = load_platform_class(pc.type)
        return cls(
            platform_id, pc.settings, connection=pc.connection, context=self._platforms_context
        )

    # Buffer queues: one per platform ("qq"), and one per account of a
    # multi-account platform ("qq@10001"), so that one offline account never
    # holds up the platform's others. Platform ids cannot contain "@". The
    # buffer owns which queues are online.

    async def _account_up(self, platform_id: str, account: str) -> None:
        await self.message_buffer.mark_platform_online(f"{platform_id}@{account}")

    async def _account_down(self, platform_id: str, account: str) -> None:
        await self.message_buffer.mark_platform_offline(f"{platform_id}@{account}")

    async def _link_down(self, platform_id: str) -> None:
        await self.message_buffer.mark_platform_offline(platform_id, accounts=True)

    def _buffer_key(self, platform_id: str, message_type: str, content: Any) -> str:
        pc = self.runtime_manager.platform_configs[platform_id]
        account = load_platform_class(pc.type).account_of(message_type, content)
        return platform_id if account is None else f"{platform_id}@{account}"

    async def _deliver(self, message: OutboundMessage) -> SendReceipt:
        """The buffer's way out: send through the platform's current instance."""
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

    # ---- config (the config service is the one path) -----------------------

    async def apply_config(
        self,
        new: NekoBotConfig | Mapping[str, Any],
        *,
        description: str = "",
        author: str = "api",
        base_revision: int | None = None,
    ) -> ConfigVersion:
        """Apply a new config to the running bot and record it as a version.

        See :meth:`nekobot.config.service.ConfigService.apply`: only platforms
        whose section changed restart; other sections are recorded and take
        effect at the next start.

        Raises:
            ConfigError: if the config is invalid; the running config stays.
            RevisionConflict: if ``base_revision`` is not the current revision.
            PlatformStartError: a platform failed to start with its new
                section; the previous config was restored.
            CallTimeout: not applied within the config service's deadline.
        """
        return await self.config_version_manager.apply(
            new, author=author, description=description, base_revision=base_revision
        )

    async def reload(self, *, author: str = "reload") -> ConfigVersion:
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

    async def _run(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Open the store, run the tree, close the store."""
        await self.store.open()
        try:
            if self.store.recovered_from:
                log.error(
                    "the database was corrupt: moved aside to %s; starting with an empty store",
                    self.store.recovered_from,
                )
                self.status_monitor.fire_alert(
                    "storage:corrupt",
                    AlertLevel.ERROR,
                    f"database was corrupt; moved aside to {self.store.recovered_from}",
                )
            try:
                await self.supervisor.run(task_status=_Started(task_status, self._on_ready))
            except ChildStartError as exc:
                crash = _crashed(exc.child_id, exc.error)
                raise crash from crash.cause
            except RestartIntensityExceeded as exc:
                crash = _crashed(exc.child_id, exc.error or exc)
                raise crash from crash.cause
        finally:
            self.ready = False
            with trio.CancelScope(shield=True):
                await self.store.close()

    def _on_ready(self, _value: object) -> None:
        self.started_at = time.time()
        self.ready = True


def _crashed(child_id: str, error: BaseException) -> RootActorCrashed:
    if isinstance(error, BaseExceptionGroup):
        error = sole_exception(error)
    if isinstance(error, OSError | ConfigError):
        # e.g. the API's port is taken: the message says it all
        log.critical("%s could not run: %s", child_id, error)
    else:
        log.critical("root actor %s crashed", child_id, exc_info=error)
    return RootActorCrashed(child_id, error)


def find_plugin(index: int, spec: str) -> Callable[[NekoBot], Any]:
    """Import ``[bot] plugins[index]`` (``"package.module:setup"``; ``setup`` by
    default) and return its setup function, without calling it.

    Raises:
        ConfigError: ``bot.plugins[index]: cannot load …`` naming the cause.
    """
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
            await nursery.start(bot._run)
            await bot.config_version_manager.record_start(
                "start" if path is None else f"start from {path}"
            )
            try:
                yield bot
            finally:
                nursery.cancel_scope.cancel()  # the root stops its children in reverse order
    except BaseExceptionGroup as group:
        # One failure (a crashed root actor, or the body's own exception): raise
        # it as itself rather than wrapped in a group.
        only = sole_exception(group)
        if only is group:
            raise
        raise only from only.__cause__
