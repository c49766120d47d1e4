"""The config service: the one owner of the running config and its history.

Every change — the HTTP API, the console, ``SIGHUP`` / ``nekobot reload``, a
rollback, an import, and the runtime manager's ``add_platform`` /
``update_platform_config`` / ``remove_platform`` — is one :class:`_Change`
request in this actor's mailbox, handled one at a time (the mailbox is the one
lock). For each: check-and-set against ``base_revision``, build and validate
the new config, apply its ``[platforms]`` to the runtime
(:meth:`PlatformApplier.apply_platforms`: only changed sections restart), record
the version, publish the new :class:`ConfigSnapshot`. If applying or recording
fails, the previous platforms are applied again and nothing is recorded: the
running config stays as it was.

The config exists here only: ``bot.config`` reads this actor's snapshot.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..core.actor import Actor, ActorRef, Call, Mailbox, Request
from ..errors import PlatformExists, PlatformNotFound
from .loader import load_config, parse_config
from .schema import NekoBotConfig, PlatformConfig
from .version import CanonicalTexts
from .versions import ConfigChangeType, ConfigDiff, ConfigVersion, ConfigVersionManager

__all__ = [
    "DEFAULT_CHANGE_TIMEOUT",
    "ConfigService",
    "ConfigSnapshot",
    "PlatformApplier",
    "PlatformChanges",
    "sections_needing_restart",
]

log = logging.getLogger("nekobot.config")

DEFAULT_CHANGE_TIMEOUT = 9.0
"""Seconds (Trio clock) a caller waits for a change to be applied and recorded
before ``CallTimeout`` (the API answers 503); the change itself goes on."""

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


def sections_needing_restart(old: NekoBotConfig, new: NekoBotConfig) -> list[str]:
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


class PlatformApplier(Protocol):
    """What the config service needs of the runtime manager (a lower layer)."""

    async def apply_platforms(
        self,
        platforms: Mapping[str, PlatformConfig],
        *,
        start_added: bool = True,
        restart_changed: bool = True,
    ) -> None:
        """Make the running platforms match ``platforms``; raise if one failed to start."""
        ...


@attrs.frozen
class ConfigSnapshot:
    """What synchronous readers see of the config service."""

    config: NekoBotConfig
    """The config in force."""
    revision: int | None
    """Its version's revision (``None`` before the first is recorded)."""


@attrs.frozen(kw_only=True)
class _Change(Request[ConfigVersion | None]):
    """One change: ``build`` makes the new config from the current one, inside the actor."""

    build: Callable[[NekoBotConfig], NekoBotConfig]
    author: str
    description: str
    base_revision: int | None = None
    change_type: ConfigChangeType = ConfigChangeType.UPDATE
    restored_revision: int | None = None
    start_added: bool = True
    restart_changed: bool = True
    record: bool = True


@attrs.frozen(kw_only=True)
class _RecordStart(Request[ConfigVersion | None]):
    """At start: record the config the bot started with, unless it is the current version."""

    description: str


@attrs.frozen
class _Rollback(Request[ConfigVersion]):
    version_id: str | int
    description: str
    author: str
    base_revision: int | None


_Msg = _Change | _RecordStart | _Rollback


class ConfigService(Actor[_Msg, ConfigSnapshot]):
    """Owns the running :class:`NekoBotConfig` and its :class:`ConfigVersionManager`.

    It is ``bot.config_version_manager``: the seed's history methods
    (``list_versions``, ``get_version``, ``compare_versions``,
    ``export_version`` read; ``create_version``, ``rollback_to_version``,
    ``import_version`` change) work on the running bot, and every change is
    applied before it is recorded.

    Args:
        config (NekoBotConfig): The config the bot starts with.
        history (ConfigVersionManager): The version store (opened by this actor).
        runtime (PlatformApplier): Applies ``[platforms]`` (the runtime manager).
        mailbox (Mailbox | None): Made beforehand when the runtime manager
            needs this actor's address at its construction.
        change_timeout (float): Default deadline of a change, seconds (Trio clock).
    """

    def __init__(
        self,
        config: NekoBotConfig,
        *,
        history: ConfigVersionManager,
        runtime: PlatformApplier,
        mailbox: Mailbox[_Msg] | None = None,
        change_timeout: float = DEFAULT_CHANGE_TIMEOUT,
    ) -> None:
        super().__init__("config", mailbox=mailbox)
        self.history = history
        self._texts = CanonicalTexts()
        self._runtime = runtime
        self.change_timeout = change_timeout
        self.publish(ConfigSnapshot(config, None))

    # ---- reads (snapshots; no round trip) ----------------------------------

    @property
    def config(self) -> NekoBotConfig:
        """The config in force."""
        snap = self.snapshot
        assert snap is not None  # published in __init__
        return snap.config

    @property
    def current_revision(self) -> int | None:
        """The revision of the config in force (``None`` before the first version)."""
        return self.history.current_revision

    @property
    def current_version(self) -> ConfigVersion | None:
        """The version in force, or ``None``."""
        return self.history.current_version

    def get_version(self, version_id: str | int) -> ConfigVersion:
        """One version by id. Raises ``VersionNotFound``."""
        return self.history.get_version(version_id)

    def list_versions(self, limit: int | None = None) -> list[ConfigVersion]:
        """Versions, newest first (at most ``limit``)."""
        return self.history.list_versions(limit)

    def compare_versions(self, version_id1: str | int, version_id2: str | int) -> ConfigDiff:
        """JSON Patch and unified TOML diff between two versions, secrets redacted."""
        return self.history.compare_versions(version_id1, version_id2)

    async def export_version(
        self,
        version_id: str | int,
        file_path: str | os.PathLike[str],
        include_secrets: bool = False,
    ) -> Path:
        """Write one version's config as a TOML file (see ``ConfigVersionManager``)."""
        return await self.history.export_version(version_id, file_path, include_secrets)

    # ---- changes -----------------------------------------------------------

    async def _ask(self, msg: _Msg, timeout: float | None) -> Any:
        return await self.ref.call(msg, timeout=self.change_timeout if timeout is None else timeout)

    async def apply(
        self,
        new: NekoBotConfig | Mapping[str, Any],
        *,
        author: str,
        description: str = "",
        base_revision: int | None = None,
        change_type: ConfigChangeType = ConfigChangeType.UPDATE,
        timeout: float | None = None,
    ) -> ConfigVersion:
        """Apply a whole new config to the running bot and record it as a version.

        Only platforms whose ``[platforms.<id>]`` section changed restart;
        added ones start, removed ones stop; ``api.token`` applies at once.
        Other sections take effect at the next start: the log and the
        version's description say ``(restart needed for: router, …)``.

        Args:
            new: A ``NekoBotConfig`` or the dict of a TOML document.
            author (str): Who (``"api"``, ``"console"``, ``"reload"`` …).
            base_revision (int | None): Check-and-set: the revision the change
                was based on (``0`` when there was none yet).
            timeout (float | None): Seconds to wait (default ``change_timeout``).

        Raises:
            ConfigError: the config is invalid (problems by key path); the
                running config stays.
            RevisionConflict: ``base_revision`` is not the current revision.
            PlatformStartError: a platform failed to start with its new
                section; the previous config was applied again.
            CallTimeout: not applied within ``timeout`` (it may still be).
        """
        if not isinstance(new, NekoBotConfig):
            new = parse_config(new, source_dir=self.config.source_dir)
        parsed = new
        version = await self._ask(
            _Change(
                build=lambda _current: parsed,
                author=author,
                description=description or "config update",
                base_revision=base_revision,
                change_type=change_type,
            ),
            timeout,
        )
        assert version is not None
        return version  # type: ignore[no-any-return]

    async def create_version(
        self,
        config: Mapping[str, Any],
        change_type: ConfigChangeType = ConfigChangeType.UPDATE,
        description: str = "",
        author: str = "system",
        *,
        base_revision: int | None = None,
    ) -> ConfigVersion:
        """Seed name: apply ``config`` (a TOML-shaped dict) and record it."""
        return await self.apply(
            config,
            author=author,
            description=description,
            base_revision=base_revision,
            change_type=ConfigChangeType(change_type),
        )

    async def rollback_to_version(
        self,
        version_id: str | int,
        description: str = "",
        *,
        author: str = "api",
        base_revision: int | None = None,
        timeout: float | None = None,
    ) -> ConfigVersion:
        """Apply an earlier version's config again; records a ROLLBACK version.

        Raises:
            VersionNotFound: unknown ``version_id``.
            VersionCorrupted: its stored config fails the checksum.
            ConfigError: its config is no longer valid (e.g. a plugin is gone).
            RevisionConflict: ``base_revision`` is not the current revision.
            PlatformStartError: a platform failed to start; nothing recorded.
        """
        return await self._ask(  # type: ignore[no-any-return]
            _Rollback(version_id, description, author, base_revision), timeout
        )

    async def import_version(
        self,
        file_path: str | os.PathLike[str],
        description: str = "",
        *,
        author: str = "import",
        base_revision: int | None = None,
        timeout: float | None = None,
    ) -> ConfigVersion:
        """Validate a TOML file, apply it to the running bot and record it (UPDATE).

        Raises:
            ConfigError: unreadable, not TOML, or invalid (by key path); nothing changes.
            RevisionConflict: ``base_revision`` is not the current revision.
        """
        path = Path(file_path)
        new = await trio.to_thread.run_sync(load_config, path)
        return await self.apply(
            new,
            author=author,
            description=description or f"import of {path.name}",
            base_revision=base_revision,
            timeout=timeout,
        )

    async def record_start(self, description: str) -> ConfigVersion | None:
        """Record the config the bot started with (CREATE, or UPDATE if it differs
        from the current version; nothing if it is the same)."""
        return await self._ask(_RecordStart(description=description), None)  # type: ignore[no-any-return]

    # ---- the actor's side --------------------------------------------------

    async def on_start(self) -> None:
        await self.history.open()
        self.publish(ConfigSnapshot(self.config, self.history.current_revision))

    async def handle_batch(self, batch: list[Any]) -> None:
        for item in batch:
            if not isinstance(item, Call) or item.abandoned:
                continue  # a change whose caller gave up before it began is not made
            try:
                msg = item.msg
                if isinstance(msg, _Change):
                    result: Any = await self._change(msg)
                elif isinstance(msg, _Rollback):
                    result = await self._rollback(msg)
                else:
                    result = await self._record_start(msg)
            except Exception as exc:
                item.fail(exc)
            else:
                item.reply(result)

    async def _change(self, ch: _Change) -> ConfigVersion | None:
        self.history.check_base(ch.base_revision)
        old = self.config
        new = attrs.evolve(ch.build(old), source_dir=old.source_dir)
        description = ch.description
        later = sections_needing_restart(old, new)
        if later:
            log.warning(
                "config applied; changes to [%s] take effect at the next start", ", ".join(later)
            )
            description += f" (restart needed for: {', '.join(later)})"
        try:
            await self._runtime.apply_platforms(
                new.platforms, start_added=ch.start_added, restart_changed=ch.restart_changed
            )
            version = (
                await self.history.record_text(
                    self._texts.text(new),
                    ch.change_type,
                    description,
                    ch.author,
                    restored_revision=ch.restored_revision,
                )
                if ch.record
                else None
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._restore(old, ch)
            raise
        self.publish(ConfigSnapshot(new, self.history.current_revision))
        return version

    async def _restore(self, old: NekoBotConfig, ch: _Change) -> None:
        try:
            await self._runtime.apply_platforms(
                old.platforms, start_added=ch.start_added, restart_changed=ch.restart_changed
            )
        except Exception:
            log.exception("restoring the previous platforms after a failed change failed too")

    async def _rollback(self, msg: _Rollback) -> ConfigVersion:
        self.history.check_base(msg.base_revision)
        target = self.history.get_version(msg.version_id)
        new = parse_config(target.config, source_dir=self.config.source_dir)
        version = await self._change(
            _Change(
                build=lambda _current: new,
                author=msg.author,
                description=msg.description or f"rollback to {target.version_id}",
                change_type=ConfigChangeType.ROLLBACK,
                restored_revision=target.revision,
            )
        )
        assert version is not None
        return version

    async def _record_start(self, msg: _RecordStart) -> ConfigVersion | None:
        current = self.history.current_version
        text = self._texts.text(self.config)
        if current is not None and current.verify() and current.canonical_text == text:
            return None
        change = ConfigChangeType.CREATE if current is None else ConfigChangeType.UPDATE
        version = await self.history.record_text(text, change, msg.description, "startup")
        self.publish(ConfigSnapshot(self.config, self.history.current_revision))
        return version


class PlatformChanges:
    """The runtime manager's way to change ``[platforms]``: through the config service.

    Given to the runtime manager at construction (it holds the address of the
    config service's mailbox, made before either), so that its seed methods
    ``add_platform`` / ``update_platform_config`` / ``remove_platform`` take
    the one path: check-and-set, apply, record.
    """

    def __init__(self, ref: ActorRef[_Msg], *, timeout: float = DEFAULT_CHANGE_TIMEOUT) -> None:
        self._ref = ref
        self.timeout = timeout

    async def change_platform(
        self,
        platform_id: str,
        config: PlatformConfig | None,
        *,
        start: bool = True,
        restart: bool = True,
        author: str = "runtime",
        base_revision: int | None = None,
        description: str = "",
        exists: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Set (``config``) or remove (``None``) one platform's section, apply, record.

        Args:
            start (bool): Start it if it is new (``add_platform(auto_start=)``).
            restart (bool): Rebuild it now if it changed
                (``update_platform_config(apply_immediately=)``).
            exists (bool | None): ``False``: it must be new (else
                ``PlatformExists``); ``True``: it must exist (else
                ``PlatformNotFound``); ``None``: either.

        Raises:
            PlatformExists, PlatformNotFound, RevisionConflict, PlatformStartError,
            CallTimeout: as for :meth:`ConfigService.apply`.
        """

        def build(current: NekoBotConfig) -> NekoBotConfig:
            there = platform_id in current.platforms
            if exists is False and there:
                raise PlatformExists(platform_id)
            if (exists or config is None) and not there:
                raise PlatformNotFound(platform_id)
            platforms = dict(current.platforms)
            if config is None:
                del platforms[platform_id]
            else:
                platforms[platform_id] = config
            return attrs.evolve(current, platforms=platforms)

        verb = "remove" if config is None else "set"
        await self._ref.call(
            _Change(
                build=build,
                author=author,
                description=description or f"{verb} platform {platform_id}",
                base_revision=base_revision,
                start_added=start,
                restart_changed=restart,
            ),
            timeout=self.timeout if timeout is None else timeout,
        )
