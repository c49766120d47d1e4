"""The config service: the one path for config changes (apply, rollback, check-and-set).

Policy: the service runs as an actor in the test's nursery over an in-memory
history; the runtime is a fake that records what ``[platforms]`` it was asked
to apply, or fails to. Everything runs under ``trio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import trio

from nekobot.config.loader import parse_config
from nekobot.config.schema import NekoBotConfig, PlatformConfig
from nekobot.config.service import ConfigService, PlatformChanges
from nekobot.config.versions import ConfigChangeType, ConfigVersionManager, VersionNotFound
from nekobot.core.actor import Mailbox
from nekobot.errors import ConfigError, PlatformExists, PlatformNotFound, RevisionConflict
from nekobot.runtime.runtime_manager import PlatformStartError


def _cfg(**labels: str) -> dict[str, Any]:
    return {
        "platforms": {
            pid: {"type": "tests.fakes:FakePlatform", "label": label}
            for pid, label in labels.items()
        }
    }


class Runtime:
    """Records every ``[platforms]`` applied; fails while ``fail`` is set."""

    def __init__(self) -> None:
        self.applied: list[dict[str, PlatformConfig]] = []
        self.fail = False

    async def apply_platforms(
        self,
        platforms: Mapping[str, PlatformConfig],
        *,
        start_added: bool = True,
        restart_changed: bool = True,
    ) -> None:
        self.applied.append(dict(platforms))
        if self.fail:
            self.fail = False  # the restore that follows succeeds
            raise PlatformStartError("qq", RuntimeError("new config failed to start"))


async def _service(nursery: trio.Nursery) -> tuple[ConfigService, Runtime, PlatformChanges]:
    runtime = Runtime()
    mailbox: Mailbox[Any] = Mailbox("config")
    service = ConfigService(
        NekoBotConfig(), history=ConfigVersionManager(), runtime=runtime, mailbox=mailbox
    )
    await nursery.start(service.run)
    await service.record_start("start")
    return service, runtime, PlatformChanges(mailbox.ref)


async def test_rollback_records_a_rollback_version_and_applies_it(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        service, runtime, _ = await _service(nursery)
        await service.apply(_cfg(qq="one"), author="test")
        await service.apply(_cfg(qq="two"), author="test")
        rb = await service.rollback_to_version("v2", "back to one")
    assert rb.version_id == "v4"
    assert rb.change_type is ConfigChangeType.ROLLBACK
    assert rb.parent_id == "v3" and rb.restored_id == "v2"
    assert rb.description == "back to one"
    assert service.current_revision == 4
    label = runtime.applied[-1]["qq"].settings.label  # type: ignore[attr-defined]
    assert label == "one"
    assert service.config.platforms["qq"].settings.label == "one"  # type: ignore[attr-defined]


async def test_a_rollback_that_fails_to_apply_leaves_no_version_behind(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(10):
        service, runtime, _ = await _service(nursery)
        await service.apply(_cfg(qq="one"), author="test")
        await service.apply(_cfg(qq="two"), author="test")
        runtime.fail = True
        with pytest.raises(PlatformStartError, match="failed to start"):
            await service.rollback_to_version("v2")
        assert service.current_revision == 3
        with pytest.raises(VersionNotFound):
            service.get_version("v4")
        # the previous platforms were applied again, and the running config stays
        assert runtime.applied[-1]["qq"].settings.label == "two"  # type: ignore[attr-defined]
        assert service.config.platforms["qq"].settings.label == "two"  # type: ignore[attr-defined]
        nxt = await service.apply(_cfg(qq="three"), author="test")
    assert nxt.version_id == "v4"  # the failed rollback recorded nothing
    assert nxt.parent_id == "v3"


async def test_check_and_set_and_bad_configs_change_nothing(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        service, runtime, _ = await _service(nursery)
        await service.apply(_cfg(qq="one"), author="test", base_revision=1)
        with pytest.raises(RevisionConflict):
            await service.apply(_cfg(qq="two"), author="test", base_revision=1)
        with pytest.raises(ConfigError, match=r"platforms\.qq\.label"):
            await service.apply(
                {"platforms": {"qq": {"type": "tests.fakes:FakePlatform", "label": 3}}},
                author="test",
            )
    assert service.current_revision == 2
    assert len(runtime.applied) == 1


async def test_platform_changes_take_the_same_path(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        service, runtime, changes = await _service(nursery)
        pc = parse_config(_cfg(qq="one")).platforms["qq"]
        await changes.change_platform("qq", pc, author="api", exists=False)
        with pytest.raises(PlatformExists):
            await changes.change_platform("qq", pc, author="api", exists=False)
        with pytest.raises(PlatformNotFound):
            await changes.change_platform("tg", None, author="api")
        await changes.change_platform("qq", None, author="api", base_revision=2)
    assert [v.author for v in service.list_versions()] == ["api", "api", "startup"]
    assert runtime.applied[-1] == {}
    assert "qq" not in service.config.platforms
