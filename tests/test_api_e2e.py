"""End to end: a real bot (``open_nekobot``) with its HTTP API on 127.0.0.1 port 0.

Add a platform over the API, see it running, disable it, see it disabled by a
person in the isolation status, roll the config back, diff two versions.
Policy: loopback only, port 0, ``trio.fail_after`` around the whole test.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from nekobot.app import NekoBot, open_nekobot
from nekobot.errors import RevisionConflict
from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.platforms.base import PlatformActor

TOKEN = "e2e-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@attrs.frozen(kw_only=True)
class TinyConfig:
    greeting: str = "hi"


class TinyPlatform(PlatformActor):
    """Online at once; runs until cancelled."""

    platform_type = "tiny"
    config_class = TinyConfig

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.set_online()
        task_status.started()
        await trio.sleep_forever()

    async def send(self, message: OutboundMessage) -> SendReceipt:
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key)


TINY = f"{__name__}:TinyPlatform"


def until_the_runtime_takes_author(bot: NekoBot) -> None:
    """Test-only guard while the branches are apart: give ``bot.runtime_manager``'s
    config-changing methods the keyword-only ``author`` / ``base_revision`` of the
    interface (with the check-and-set the bot does) if they lack them yet.
    Inert once the runtime manager takes them; then delete it."""
    rm = bot.runtime_manager
    if "author" in inspect.signature(rm.add_platform).parameters:
        return
    cvm = bot.config_version_manager

    def shim(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def call(*args: Any, author: str, base_revision: int | None = None, **kw: Any) -> Any:
            current = cvm.current_revision
            if base_revision is not None and base_revision != (current or 0):
                raise RevisionConflict(base_revision, current)
            return await method(*args, **kw)

        return call

    for name in ("add_platform", "update_platform_config", "remove_platform"):
        setattr(rm, name, shim(getattr(rm, name)))


async def test_operate_a_running_bot_over_http(tmp_path: Path) -> None:
    config = {
        "bot": {"data_dir": str(tmp_path), "shutdown_timeout": 2.0},
        "api": {"enable": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
    }
    with trio.fail_after(30):
        async with open_nekobot(config) as bot:
            until_the_runtime_takes_author(bot)
            assert bot.api_port
            base = f"http://127.0.0.1:{bot.api_port}"
            async with httpx.AsyncClient(base_url=base, headers=AUTH) as api:

                async def call(method: str, path: str, status: int = 200, **kw: Any) -> Any:
                    r = await api.request(method, path, **kw)
                    assert r.status_code == status, (method, path, r.text)
                    return r.json()

                async with httpx.AsyncClient(base_url=base) as anonymous:
                    assert (await anonymous.get("/readyz")).status_code == 200
                    assert (await anonymous.get("/api/fault/isolation")).status_code == 401
                assert (await call("GET", "/api/config/versions"))["current"] == "v1"

                # add a platform over the API
                added = await call(
                    "POST",
                    "/api/runtime/platforms",
                    201,
                    json={
                        "platform_id": "tiny",
                        "platform_config": {"type": TINY, "greeting": "hello"},
                        "base_revision": 1,
                    },
                )
                assert added["revision"] == 2
                life = await call("GET", "/api/runtime/lifecycle", params={"platform_id": "tiny"})
                assert life["platforms"]["tiny"]["state"] == "running"
                assert bot.runtime_manager.get_platform_actor("tiny") is not None

                # change its connection settings: rebuilt with the new config, recorded
                conn = await call(
                    "POST",
                    "/api/connection/config",
                    json={"platform_id": "tiny", "connection": {"reconnect_interval": 4.0}},
                )
                assert conn["revision"] == 3
                assert (
                    bot.runtime_manager.platform_configs["tiny"].connection.reconnect_interval
                    == 4.0
                )
                stats = await call("GET", "/api/connection/stats", params={"platform_id": "tiny"})
                assert stats["platforms"]["tiny"]["config"]["reconnect_interval"] == 4.0
                assert stats["platforms"]["tiny"]["online"] is True

                # every read-only route answers with the real parts' snapshots
                for path, params in [
                    ("/api/runtime/lifecycle", {}),
                    ("/api/connection/stats", {}),
                    ("/api/fault/isolation", {}),
                    ("/api/fault/records", {}),
                    ("/api/message/router/stats", {}),
                    ("/api/message/buffer/stats", {}),
                    ("/api/message/buffer/messages", {"platform_id": "tiny"}),
                    ("/api/monitor/status", {}),
                    ("/api/monitor/platforms", {}),
                    ("/api/monitor/alerts", {"include_resolved": "true"}),
                ]:
                    await call("GET", path, params=params)
                restarted = await call(
                    "POST",
                    "/api/runtime/lifecycle",
                    json={"platform_id": "tiny", "action": "restart"},
                )
                assert restarted["status"]["state"] == "running"
                assert restarted["status"]["restart_count"] == 1
                replay = await call(
                    "POST", "/api/message/buffer/replay", json={"platform_id": "tiny"}
                )
                assert replay["replayed"] == 0
                metrics = await api.get("/metrics")
                assert metrics.status_code == 200 and "# TYPE" in metrics.text

                # disable it by hand: stopped, and shown as disabled by a person
                await call(
                    "POST",
                    "/api/fault/platform/disable",
                    json={"platform_id": "tiny", "reason": "maintenance"},
                )
                iso = (await call("GET", "/api/fault/isolation"))["isolation"]
                tiny = iso["platforms"]["tiny"]
                assert tiny["manually_disabled"] is True
                assert tiny["disabled_by"] == "api"
                assert tiny["disabled_reason"] == "maintenance"
                life = await call("GET", "/api/runtime/lifecycle", params={"platform_id": "tiny"})
                assert life["platforms"]["tiny"]["state"] == "disabled"

                # roll the config back to before the platform existed
                history = await call("GET", "/api/config/versions")
                ids = [v["version_id"] for v in history["versions"]]
                assert ids[-1] == "v1" and "v2" in ids
                rolled = await call(
                    "POST", "/api/config/rollback", json={"version_id": "v1", "description": "undo"}
                )
                version = rolled["version"]
                assert version["change_type"] == "rollback"
                assert version["restored_id"] == "v1"
                assert version["parent_id"] == history["current"]
                assert "tiny" not in bot.runtime_manager.platform_configs
                await call("GET", "/api/runtime/lifecycle", 404, params={"platform_id": "tiny"})
                assert (await call("GET", "/api/runtime/lifecycle"))["platforms"] == {}

                # diff two versions: the platform's section went away, secrets stay hidden
                diff = await call(
                    "GET", "/api/config/diff", params={"from": "v2", "to": version["version_id"]}
                )
                assert {"op": "remove", "path": "/platforms/tiny"} in diff["patch"]
                assert "-[platforms.tiny]" in diff["diff"]
                shown = await call("GET", "/api/config/versions", params={"version_id": "v2"})
                assert shown["versions"][0]["config"]["api"]["token"] == "***"
                assert TOKEN not in str(diff) + str(shown)

                # stale check-and-set is refused
                stale = {
                    "platform_id": "tiny",
                    "platform_config": {"type": TINY},
                    "base_revision": 1,
                }
                await call("POST", "/api/runtime/platforms", 409, json=stale)
                assert "t2" not in bot.runtime_manager.platform_configs


async def test_rotated_token_csrf_and_a_platform_that_cannot_start(tmp_path: Path) -> None:
    config = {
        "bot": {"data_dir": str(tmp_path), "shutdown_timeout": 2.0},
        "api": {"enable": True, "host": "127.0.0.1", "port": 0, "token": TOKEN},
    }
    rotated = {"Authorization": "Bearer rotated-token-456"}
    with trio.fail_after(30), trio.socket.socket() as busy:
        await busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        async with open_nekobot(config) as bot:
            until_the_runtime_takes_author(bot)
            base = f"http://127.0.0.1:{bot.api_port}"
            async with httpx.AsyncClient(base_url=base) as api:
                assert (await api.get("/api/runtime/lifecycle", headers=AUTH)).status_code == 200

                # rotate the token by applying a config: the new one counts at once
                new_api = attrs.evolve(bot.config.api, token="rotated-token-456")
                await bot.apply_config(attrs.evolve(bot.config, api=new_api))
                r = await api.get("/api/runtime/lifecycle", headers=AUTH)
                assert r.status_code == 401, r.text
                assert (await api.get("/api/runtime/lifecycle", headers=rotated)).status_code == 200
                revision = bot.config_version_manager.current_revision

                # a platform whose port is busy: 409 naming the cause, not added
                r = await api.post(
                    "/api/runtime/platforms",
                    headers=rotated,
                    json={
                        "platform_id": "qq2",
                        "platform_config": {
                            "type": "onebot_v11",
                            "host": "127.0.0.1",
                            "port": busy_port,
                        },
                    },
                )
                assert r.status_code == 409, r.text
                error = r.json()["error"]
                assert error["code"] == "platform_start_error"
                assert "'qq2' failed to start" in error["message"]
                assert "in use" in error["message"], error
                assert "qq2" not in bot.runtime_manager.platform_configs
                assert bot.config_version_manager.current_revision == revision
                r = await api.get(
                    "/api/runtime/lifecycle", headers=rotated, params={"platform_id": "qq2"}
                )
                assert r.status_code == 404

                # a cross-site change is refused; the API's own origin is not
                add = {"platform_id": "tiny", "platform_config": {"type": TINY}}
                evil = {**rotated, "Origin": "http://evil.example"}
                r = await api.post("/api/runtime/platforms", headers=evil, json=add)
                assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
                assert "tiny" not in bot.runtime_manager.platform_configs
                own = {**rotated, "Origin": base}
                r = await api.post("/api/runtime/platforms", headers=own, json=add)
                assert r.status_code == 201, r.text
