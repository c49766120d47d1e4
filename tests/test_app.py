"""The supervision tree as an embedding program sees it (``open_nekobot``).

Policy: no network (fake platforms from ``tests.fakes``), a Trio-clock
``fail_after`` around each test so a hang fails fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

import nekobot
from nekobot import ConfigError, PlatformNotFound, RootActorCrashed
from tests.fakes import FakePlatform

FAKE = "tests.fakes:FakePlatform"


def config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "bot": {"data_dir": str(tmp_path / "data")},
        "buffer": {"replay_rate": 1000.0},
        "platforms": {"a": {"type": FAKE}, "b": {"type": FAKE, "label": "b1"}},
    }
    data.update(extra)
    return data


@pytest.fixture(autouse=True)
def _clear_sent() -> None:
    FakePlatform.sent_log.clear()


async def wait_until(pred: Any, limit: float = 5.0) -> None:
    with trio.fail_after(limit):
        while not pred():  # noqa: ASYNC110 - polls state that has no event to wait on
            await trio.sleep(0.01)


async def test_start_runs_every_platform_without_alerts(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            status = bot.runtime_manager.get_platform_lifecycle_status()
            assert {pid: s.state.value for pid, s in status.items()} == {
                "a": "running",
                "b": "running",
            }
            assert bot.ready
            await trio.sleep(0.6)  # past the monitor's batch interval
            assert bot.status_monitor.get_alerts() == []


async def test_send_to_online_platform_is_delivered(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            receipt = await bot.send("a", "say", {"text": "hi"})
            assert not receipt.buffered
            assert [m.content for m in FakePlatform.sent_log["a"]] == [{"text": "hi"}]
            with pytest.raises(PlatformNotFound):
                await bot.send("nope", "say", {})
            with pytest.raises(ValueError, match="ttl"):
                await bot.send("a", "say", {}, ttl=0)


async def test_send_while_stopped_is_buffered_then_replayed_in_order(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            await bot.runtime_manager.stop_platform("a")
            receipts = [await bot.send("a", "say", {"n": n}) for n in range(5)]
            assert all(r.buffered for r in receipts)
            assert "a" not in FakePlatform.sent_log
            await trio.sleep(0.6)
            # A person stopped it: that is not a "platform down" alert.
            assert [a.metric_name for a in bot.status_monitor.get_alerts()] == []
            await bot.runtime_manager.start_platform("a")
            await wait_until(lambda: len(FakePlatform.sent_log.get("a", [])) == 5)
            assert [m.content["n"] for m in FakePlatform.sent_log["a"]] == [0, 1, 2, 3, 4]
            assert [m.message_key for m in FakePlatform.sent_log["a"]] == [
                r.message_key for r in receipts
            ]


async def test_apply_config_rebuilds_only_the_changed_platform(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            a_before = bot.runtime_manager.get_platform_actor("a")
            b_before = bot.runtime_manager.get_platform_actor("b")
            new = config(tmp_path)
            new["platforms"]["b"]["label"] = "b2"
            version = await bot.apply_config(new, description="relabel b")
            assert bot.runtime_manager.get_platform_actor("a") is a_before
            b_after = bot.runtime_manager.get_platform_actor("b")
            assert b_after is not b_before
            assert b_after is not None and b_after.config.label == "b2"
            assert bot.config.platforms["b"].settings.label == "b2"
            assert version.description == "relabel b"


async def test_bad_config_refused_and_running_config_stays(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            before = bot.config
            bad = config(tmp_path)
            bad["platforms"]["b"]["label"] = 5
            with pytest.raises(ConfigError, match=r"platforms\.b\.label: expected string"):
                await bot.apply_config(bad)
            assert bot.config == before
            assert bot.runtime_manager.get_platform_lifecycle_status("b").state.value == "running"


async def test_reload_rereads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nekobot.toml"
    path.write_text(f'[bot]\ndata_dir = "{tmp_path / "data"}"\n[platforms.a]\ntype = "{FAKE}"\n')
    with trio.fail_after(10):
        async with nekobot.open_nekobot(path) as bot:
            path.write_text(path.read_text() + f'[platforms.c]\ntype = "{FAKE}"\n')
            await bot.reload()
            assert set(bot.runtime_manager.platform_configs) == {"a", "c"}
            assert bot.runtime_manager.get_platform_lifecycle_status("c").state.value == "running"
            path.write_text("[bot]\nname = 3\n")
            with pytest.raises(ConfigError, match=r"bot\.name"):
                await bot.reload()
            assert set(bot.runtime_manager.platform_configs) == {"a", "c"}


async def test_plugin_that_cannot_load_is_named(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["bot"]["plugins"] = ["tests.no_such_module:setup"]
    with trio.fail_after(10), pytest.raises(ConfigError, match=r"tests\.no_such_module:setup"):
        async with nekobot.open_nekobot(data):
            pass


async def test_root_actor_crash_ends_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = trio.Event()

    async def buggy_run(self: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await crash.wait()
        raise RuntimeError("bug in the router")

    monkeypatch.setattr(nekobot.MessageRouter, "run", buggy_run)
    with trio.fail_after(10), pytest.raises(RootActorCrashed, match="'router' crashed") as info:
        async with nekobot.open_nekobot(config(tmp_path)):
            crash.set()
            await trio.sleep_forever()
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_stale_base_revision_is_a_conflict(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            base = bot.config_version_manager.current_revision
            new = config(tmp_path)
            new["platforms"]["b"]["label"] = "b2"
            await bot.apply_config(new, base_revision=base)
            new["platforms"]["b"]["label"] = "b3"
            with pytest.raises(nekobot.RevisionConflict) as info:
                await bot.apply_config(new, base_revision=base)
            assert info.value.expected == base
            assert info.value.current == base + 1
            assert bot.config.platforms["b"].settings.label == "b2"


async def test_shutdown_handles_the_messages_already_accepted(tmp_path: Path) -> None:
    handled: list[int] = []
    data = config(tmp_path, router={"max_concurrency": 1})
    with trio.fail_after(10):
        async with nekobot.open_nekobot(data) as bot:

            async def slow(message: nekobot.Message) -> None:
                await trio.sleep(0.01)
                handled.append(message.content["n"])

            bot.message_router.register_handler("m", slow)
            for n in range(30):
                await bot.message_router.route_message("a", "m", {"n": n})
            assert bot.message_router.get_stats().queued > 0
        # leaving the block stopped the platforms first, then let the router drain
    assert handled == list(range(30))


async def test_shutdown_drain_is_bounded_and_says_what_was_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = config(tmp_path, router={"max_concurrency": 1})
    data["bot"]["shutdown_timeout"] = 0.2
    with trio.fail_after(10):
        async with nekobot.open_nekobot(data) as bot:

            async def stuck(message: nekobot.Message) -> None:
                await trio.sleep_forever()

            bot.message_router.register_handler("m", stuck)
            for n in range(3):
                await bot.message_router.route_message("a", "m", {"n": n})
            t0 = trio.current_time()
    assert trio.current_time() - t0 < 3
    assert "shutdown: 3 inbound messages were not handled within 0.2 s" in caplog.text


async def test_changes_that_need_a_restart_are_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(10):
        async with nekobot.open_nekobot(config(tmp_path)) as bot:
            new = config(tmp_path, router={"max_concurrency": 3})
            version = await bot.apply_config(new, description="fewer workers")
            assert version.description == "fewer workers (restart needed for: router)"
            assert "changes to [router] take effect at the next start" in caplog.text
            same = config(tmp_path, router={"max_concurrency": 3}, api={"token": "rotated"})
            version = await bot.apply_config(same, description="rotate token")
            assert version.description == "rotate token"
