"""The runtime manager's config-changing calls (a part of :class:`RuntimeManager`).

``load`` and ``apply_platforms`` make the running platforms match a
``[platforms]`` table (the config service calls ``apply_platforms`` inside its
actor); ``add_platform``, ``update_platform_config`` and ``remove_platform``
are facade methods that run in the caller's task and go through the config
owner, which calls ``apply_platforms`` back: they never hold the runtime
actor's loop while they wait.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..config.loader import parse_platform
from ..config.schema import PlatformConfig, platform_to_dict
from ..errors import ConfigError, InvalidRequest, PlatformExists, PlatformNotFound
from .lifecycle import PlatformBusy, PlatformLifecycleStatus, PlatformStartError
from .operations import deep_merge
from .requests import Msg, Put, Register, Start

if TYPE_CHECKING:
    from .parts import ConfigOwner, Entry

__all__ = ["BAD_ID", "LOAD_BATCH", "PID", "ConfigChanges"]

log = logging.getLogger("nekobot.runtime_manager")

PID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
"""What a platform id may be."""
BAD_ID = "platform_id: 1-64 letters, digits, '_' or '-', got {!r}"
LOAD_BATCH = 256
"""Platforms :meth:`ConfigChanges.load` starts at once."""


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for the initial load.

    The load allocates the long-lived structures of every platform in one
    burst; the generational collector would scan all of them again about
    log1.25(N) times while they pile up (1.3 s of 3.2 s at N = 10,000 in
    ``bench/bench_scale.py``). Reference counting still frees what dies; the
    collector is switched back on afterwards if it was on.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ConfigChanges:
    """Mixed into :class:`~nekobot.runtime.runtime_manager.RuntimeManager`."""

    if TYPE_CHECKING:
        config_owner: ConfigOwner
        entries: dict[str, Entry]
        _configs: dict[str, PlatformConfig]

        async def ask(self, msg: Msg, what: str, timeout: float | None) -> Any: ...
        def _status(self, e: Entry) -> PlatformLifecycleStatus: ...
        async def _settle(self) -> None: ...

    async def load(self, platforms: Mapping[str, PlatformConfig]) -> None:
        """Add every platform and start the enabled ones.

        They are added in this order (the reverse is the stop order), then
        started :data:`LOAD_BATCH` at a time (the starts of a batch overlap). A
        platform that fails to start does not stop the others: it is recorded
        as a fault and restarted by policy (its status shows it).
        """

        with _cyclic_gc_paused():
            await self._load(tuple(platforms.items()))

    async def _load(self, items: tuple[tuple[str, PlatformConfig], ...]) -> None:
        await self.ask(Register(items), "loading the platforms", None)

        async def start(pid: str) -> None:
            try:
                await self.ask(Start(pid, recover=True), f"start of platform {pid!r}", None)
            except PlatformStartError as exc:
                log.error("%s", exc)

        enabled = [pid for pid, pc in items if pc.enabled]
        for i in range(0, len(enabled), LOAD_BATCH):
            async with trio.open_nursery() as nursery:
                for pid in enabled[i : i + LOAD_BATCH]:
                    nursery.start_soon(start, pid)
        await self._settle()

    async def apply_platforms(
        self,
        platforms: Mapping[str, PlatformConfig],
        *,
        start_added: bool = True,
        restart_changed: bool = True,
    ) -> None:
        """Make the platforms match ``platforms``, touching only what changed.

        Removed platforms are stopped and forgotten (first, so their ports are
        free), changed ones are rebuilt (the old instance stopped first, then a
        new one started; if it fails, the previous section is started again),
        added ones are added and, with ``start_added``, started if enabled (one
        that fails to start is removed again). Each step of one phase runs in
        parallel.

        Raises:
            PlatformStartError: the first platform that failed to start (the
                other changes stay applied).
            CallTimeout: a platform did not answer in time.
        """
        current = self._configs
        removed = [pid for pid in current if pid not in platforms]
        changed, added = [], []
        for pid, pc in platforms.items():
            old = current.get(pid)
            if old is None:
                added.append(pid)
            elif old is not pc and old != pc:
                changed.append(pid)
        errors: list[Exception] = []

        async def put(msg: Put) -> None:
            try:
                await self.ask(msg, f"applying platform {msg.platform_id!r}", None)
            except PlatformStartError as exc:
                errors.append(exc)

        for phase in (
            [Put(platform_id=pid, config=None) for pid in removed],
            [
                Put(platform_id=pid, config=platforms[pid], restart=restart_changed)
                for pid in changed
            ],
            [Put(platform_id=pid, config=platforms[pid], start=start_added) for pid in added],
        ):
            if len(phase) == 1:
                await put(phase[0])
            elif phase:
                async with trio.open_nursery() as nursery:
                    for msg in phase:
                        nursery.start_soon(put, msg)
        if errors:
            raise errors[0]

    def _coerce(
        self, pid: str, platform_config: PlatformConfig | Mapping[str, Any]
    ) -> PlatformConfig:
        if isinstance(platform_config, PlatformConfig):
            return platform_config
        if not isinstance(platform_config, Mapping):
            raise InvalidRequest(
                f"platform_config: expected a PlatformConfig or a table, got {platform_config!r}"
            )
        pc, problems = parse_platform(pid, platform_config)
        if problems or pc is None:
            raise ConfigError(problems or [f"platforms.{pid}: invalid"])
        return pc

    async def add_platform(
        self,
        platform_id: str,
        platform_config: PlatformConfig | Mapping[str, Any],
        auto_start: bool = True,
        *,
        author: str = "runtime",
        base_revision: int | None = None,
        timeout: float | None = None,
    ) -> PlatformLifecycleStatus:
        """Add a platform (through the config owner); start it if ``auto_start`` and enabled.

        Raises:
            PlatformExists: the id is taken.
            InvalidRequest: a bad id.
            ConfigError: a bad config dict (problems by key path).
            RevisionConflict: ``base_revision`` is not the current revision.
            PlatformStartError: it failed to start: it is removed again, as
                if never added.
            CallTimeout: no answer within ``timeout``.
        """
        if not isinstance(platform_id, str) or not PID.fullmatch(platform_id):
            raise InvalidRequest(BAD_ID.format(platform_id))
        pc = self._coerce(platform_id, platform_config)
        if platform_id in self._configs:
            raise PlatformExists(platform_id)
        await self.config_owner.change_platform(
            platform_id,
            pc,
            start=auto_start,
            author=author,
            base_revision=base_revision,
            description=f"add platform {platform_id}",
            exists=False,
            timeout=timeout,
        )
        return self._after(platform_id)

    def _after(self, platform_id: str) -> PlatformLifecycleStatus:
        e = self.entries.get(platform_id)
        if e is None:
            raise PlatformBusy(platform_id, "gone (removed meanwhile)")
        return self._status(e)

    async def update_platform_config(
        self,
        platform_id: str,
        config_updates: Mapping[str, Any],
        apply_immediately: bool = True,
        *,
        author: str = "runtime",
        base_revision: int | None = None,
        timeout: float | None = None,
    ) -> PlatformLifecycleStatus:
        """Merge ``config_updates`` into the platform's section and apply it.

        ``config_updates`` has the shape of the ``[platforms.<id>]`` table
        (nested tables such as ``connection`` are merged key by key). With
        ``apply_immediately`` a platform that should run is rebuilt: the old
        instance is stopped first, then a **new** one starts from the merged
        config; if that fails, the previous config is started again and the
        error raised. Otherwise the config is stored for the next start.

        Raises:
            PlatformNotFound: unknown id.
            InvalidRequest: ``config_updates`` is not a table.
            ConfigError: the merged section is invalid (by key path).
            PlatformStartError: the new config failed to start (rolled back).
            CallTimeout: no answer within ``timeout``.
        """
        if not isinstance(config_updates, Mapping):
            raise InvalidRequest(f"config_updates: expected a table, got {config_updates!r}")
        old = self._configs.get(platform_id)
        if old is None:
            raise PlatformNotFound(platform_id)
        new = self._coerce(platform_id, deep_merge(platform_to_dict(old), config_updates))
        if new != old:
            await self.config_owner.change_platform(
                platform_id,
                new,
                restart=apply_immediately,
                author=author,
                base_revision=base_revision,
                description=f"update platform {platform_id}: {', '.join(sorted(config_updates))}",
                exists=True,
                timeout=timeout,
            )
        return self._after(platform_id)

    async def remove_platform(
        self,
        platform_id: str,
        *,
        author: str = "runtime",
        base_revision: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Stop and forget a platform (through the config owner).

        Raises:
            PlatformNotFound: unknown id.
            CallTimeout: no answer within ``timeout``.
        """
        if platform_id not in self._configs:
            raise PlatformNotFound(platform_id)
        await self.config_owner.change_platform(
            platform_id,
            None,
            author=author,
            base_revision=base_revision,
            description=f"remove platform {platform_id}",
            exists=True,
            timeout=timeout,
        )
