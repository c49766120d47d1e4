"""The HTTP API: every route's auth and body shape, errors, limits, OpenAPI coverage.

Policy: route tests go through ``httpx.ASGITransport`` (no socket); one test
serves with Hypercorn on 127.0.0.1 port 0. Every I/O test runs under
``trio.fail_after``. The bot is a small fake that has only the ``NekoBot``
handle attributes the API is allowed to use (team contract).
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import pytest
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.routing import Route

from nekobot.api.app import create_app, openapi_document, serve_api
from nekobot.config.schema import ApiConfig, NekoBotConfig, PlatformConfig
from nekobot.config.service import ConfigService, ConfigSnapshot, PlatformChanges
from nekobot.config.versions import ConfigVersion, ConfigVersionManager
from nekobot.core.actor import Mailbox
from nekobot.errors import (
    AlertNotFound,
    ConfigError,
    PlatformNotFound,
)

from .fakes import FakeConfig

TOKEN = "s3cret-token"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
WRONG = {"Authorization": "Bearer not-the-token"}


# --------------------------------------------------------------------------
# a minimal fake bot (attribute names from the team contract)


class FakeApplier:
    """What the config service applies ``[platforms]`` to (the runtime's part)."""

    def __init__(self) -> None:
        self.applied: list[dict[str, PlatformConfig]] = []

    async def apply_platforms(
        self,
        platforms: Mapping[str, PlatformConfig],
        *,
        start_added: bool = True,
        restart_changed: bool = True,
    ) -> None:
        self.applied.append(dict(platforms))


class FakeRuntime:
    """The runtime manager's interface: config changes go through the config
    service (its check-and-set, its one lock), as the bot's do."""

    def __init__(self, bot: FakeBot, changes: PlatformChanges) -> None:
        self.state: dict[str, str] = {}
        self.calls: list[tuple[Any, ...]] = []
        self._bot = bot
        self._changes = changes

    @property
    def platform_configs(self) -> Mapping[str, PlatformConfig]:
        return self._bot.config.platforms

    def _get(self, pid: str) -> PlatformConfig:
        if pid not in self.platform_configs:
            raise PlatformNotFound(pid)
        return self.platform_configs[pid]

    async def add_platform(
        self,
        pid: str,
        pc: PlatformConfig,
        auto_start: bool = True,
        *,
        author: str,
        base_revision: int | None = None,
    ) -> None:
        await self._changes.change_platform(
            pid, pc, start=auto_start, author=author, base_revision=base_revision, exists=False
        )
        self.state[pid] = "RUNNING" if auto_start else "STOPPED"

    async def remove_platform(
        self, pid: str, *, author: str, base_revision: int | None = None
    ) -> None:
        await self._changes.change_platform(
            pid, None, author=author, base_revision=base_revision, exists=True
        )
        self.state.pop(pid, None)

    async def update_platform_config(
        self, pid: str, updates: dict[str, Any], *, author: str, base_revision: int | None = None
    ) -> None:
        self.calls.append(("update", pid, updates))
        pc = self._get(pid)
        conn = attrs.evolve(pc.connection, **updates["connection"])
        await self._changes.change_platform(
            pid,
            attrs.evolve(pc, connection=conn),
            author=author,
            base_revision=base_revision,
            exists=True,
        )

    async def start_platform(self, pid: str) -> None:
        self._get(pid)
        self.state[pid] = "RUNNING"

    async def stop_platform(self, pid: str) -> None:
        self._get(pid)
        self.state[pid] = "STOPPED"

    async def restart_platform(self, pid: str) -> None:
        await self.stop_platform(pid)
        await self.start_platform(pid)

    def get_platform_lifecycle_status(self, pid: str | None = None) -> Any:
        if pid is None:
            return {p: {"state": s} for p, s in self.state.items()}
        self._get(pid)
        return {"state": self.state[pid]}

    def get_platform_actor(self, pid: str) -> Any:
        return None


class FakeFaults:
    def __init__(self) -> None:
        self.disabled: dict[str, str] = {}

    def get_isolation_status(self) -> dict[str, Any]:
        return {"platforms": {p: {"disabled_by": by} for p, by in self.disabled.items()}}

    def get_fault_records(self, pid: str | None = None) -> list[dict[str, Any]]:
        return [{"platform_id": "qq", "error_type": "RuntimeError"}]

    async def enable_platform(self, pid: str, *, by: str = "api") -> None:
        self.disabled.pop(pid, None)

    async def disable_platform(self, pid: str, *, by: str = "api", reason: str = "") -> None:
        self.disabled[pid] = by


class FakeRouter:
    def get_stats(self) -> dict[str, Any]:
        return {"received": 3, "processed": 3}


class FakeBuffer:
    def get_buffer_stats(self) -> dict[str, Any]:
        return {"buffered": 1}

    async def get_messages(self, pid: str, limit: int) -> list[dict[str, Any]]:
        return [{"platform_id": pid, "content": {"n": 1}}][:limit]

    async def replay_messages(self, pid: str, max_count: int | None = None) -> list[Any]:
        return [{"platform_id": pid, "content": {"n": 1}}]


class FakeMonitor:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        Counter("nekobot_test_events", "a test counter", registry=self.registry).inc()
        self.alerts = {"a1": {"alert_id": "a1", "level": "WARNING", "resolved": False}}

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def get_status(self) -> dict[str, Any]:
        return {"running": True, "open_alerts": {"WARNING": 1}}

    def get_platform_status(self, pid: str) -> dict[str, Any]:
        return {"throughput_last_minute": 0, "healthy": True}

    def get_alerts(self, level: Any = None, include_resolved: bool = False) -> list[Any]:
        return [a for a in self.alerts.values() if include_resolved or not a["resolved"]]

    async def resolve_alert(self, alert_id: str) -> None:
        if alert_id not in self.alerts:
            raise AlertNotFound(alert_id)
        self.alerts[alert_id]["resolved"] = True


class FakeBot:
    def __init__(self, api: ApiConfig) -> None:
        mailbox: Mailbox[Any] = Mailbox("config")
        self.applier = FakeApplier()
        self.config_version_manager = ConfigService(
            NekoBotConfig(api=api),
            history=ConfigVersionManager(),
            runtime=self.applier,
            mailbox=mailbox,
        )
        self.runtime_manager = FakeRuntime(self, PlatformChanges(mailbox.ref))
        self.fault_isolation_manager = FakeFaults()
        self.message_router = FakeRouter()
        self.message_buffer = FakeBuffer()
        self.status_monitor = FakeMonitor()
        self.ready = True

    @property
    def config(self) -> NekoBotConfig:
        return self.config_version_manager.config

    @config.setter
    def config(self, new: NekoBotConfig) -> None:
        # The tests stand in for a reload that changed [api] (no version recorded).
        cvm = self.config_version_manager
        cvm.publish(ConfigSnapshot(new, cvm.current_revision))

    async def apply_config(
        self,
        new: NekoBotConfig | Mapping[str, Any],
        *,
        description: str = "",
        author: str = "api",
        base_revision: int | None = None,
    ) -> ConfigVersion:
        return await self.config_version_manager.apply(
            new, author=author, description=description, base_revision=base_revision
        )


QQ = {"type": "tests.fakes:FakePlatform", "label": "qq", "connection": {"reconnect_interval": 2.0}}


@pytest.fixture
async def bot(nursery: trio.Nursery) -> FakeBot:
    b = FakeBot(ApiConfig(token=TOKEN, max_body_size=4096))
    await nursery.start(b.config_version_manager.run)
    await b.config_version_manager.record_start("start")
    await b.runtime_manager.add_platform(
        "qq",
        PlatformConfig(type="tests.fakes:FakePlatform", settings=FakeConfig(label="qq")),
        author="test",
    )
    return b


@pytest.fixture
async def client(bot: FakeBot) -> Any:
    transport = httpx.ASGITransport(app=create_app(bot))
    async with httpx.AsyncClient(transport=transport, base_url="http://nekobot") as c:
        yield c


# --------------------------------------------------------------------------
# one row per route: (method, path, request kwargs, status) — the body's keys
# are checked against what /openapi.json declares for the route

ROUTES: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/api/runtime/lifecycle", {}, 200),
    ("POST", "/api/runtime/lifecycle", {"json": {"platform_id": "qq", "action": "restart"}}, 200),
    ("POST", "/api/runtime/platforms", {"json": {"platform_id": "tg", "platform_config": QQ}}, 201),
    ("DELETE", "/api/runtime/platforms", {"params": {"platform_id": "qq"}}, 200),
    ("GET", "/api/connection/stats", {}, 200),
    (
        "POST",
        "/api/connection/config",
        {"json": {"platform_id": "qq", "connection": {"reconnect_interval": 3.5}}},
        200,
    ),
    ("GET", "/api/fault/isolation", {}, 200),
    ("GET", "/api/fault/records", {}, 200),
    ("POST", "/api/fault/platform/enable", {"json": {"platform_id": "qq"}}, 200),
    ("POST", "/api/fault/platform/disable", {"json": {"platform_id": "qq", "reason": "x"}}, 200),
    ("GET", "/api/message/router/stats", {}, 200),
    ("GET", "/api/message/buffer/stats", {}, 200),
    ("GET", "/api/message/buffer/messages", {"params": {"platform_id": "qq"}}, 200),
    ("POST", "/api/message/buffer/replay", {"json": {"platform_id": "qq"}}, 200),
    ("GET", "/api/monitor/status", {}, 200),
    ("GET", "/api/monitor/platforms", {}, 200),
    ("GET", "/api/monitor/alerts", {"params": {"level": "warning"}}, 200),
    ("POST", "/api/monitor/alerts/resolve", {"json": {"alert_id": "a1"}}, 200),
    ("GET", "/api/config/versions", {}, 200),
    ("GET", "/api/config/diff", {"params": {"from": "v1", "to": "v2"}}, 200),
    ("POST", "/api/config/rollback", {"json": {"version_id": "v1"}}, 200),
    ("GET", "/metrics", {}, 200),
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/openapi.json", {}, 200),
]
OPEN = {"/metrics", "/healthz", "/readyz", "/openapi.json"}


def _id(row: tuple[str, str, dict[str, Any], int]) -> str:
    return f"{row[0]} {row[1]}"


@pytest.mark.parametrize("row", ROUTES, ids=_id)
async def test_route_auth_and_body_shape(client: httpx.AsyncClient, row: Any) -> None:
    method, path, kw, status = row
    with trio.fail_after(10):
        if path not in OPEN:
            assert (await client.request(method, path, **kw)).status_code == 401
            wrong = await client.request(method, path, headers=WRONG, **kw)
            assert wrong.status_code == 401
            assert wrong.json()["error"]["code"] == "unauthorized"
            assert wrong.headers["www-authenticate"].startswith("Bearer")
        good = await client.request(method, path, headers=GOOD, **kw)
    assert good.status_code == status, good.text
    op = openapi_document()["paths"][path][method.lower()]
    content = op["responses"][str(status)]["content"]
    if "application/json" in content:
        body = good.json()
        required = content["application/json"]["schema"]["required"]
        assert required and set(required) <= set(body), body
    else:
        assert "nekobot_test_events_total 1.0" in good.text


def missing_from_openapi(app: Any) -> list[str]:
    """``"METHOD /path"`` of every route of ``app`` that /openapi.json does not document."""
    paths = openapi_document()["paths"]
    out = []
    for route in app.routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            if method.lower() not in paths.get(route.path, {}):
                out.append(f"{method} {route.path}")
    return out


async def test_openapi_documents_every_route_and_nothing_else(bot: FakeBot) -> None:
    app = create_app(bot)
    assert missing_from_openapi(app) == []
    routes = [r for r in app.routes if isinstance(r, Route)]
    assert len(routes) == len(app.routes)
    served = {(m, r.path) for r in routes for m in (r.methods or ()) if m != "HEAD"}
    documented = {(m.upper(), p) for p, ops in openapi_document()["paths"].items() for m in ops}
    assert served == documented
    assert {(m, p) for m, p, _, _ in ROUTES} == served  # the per-route test covers every route
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    op_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(op_ids) == len(set(op_ids)) == len(served)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path.startswith("/api"):
                assert "401" in op["responses"] and op["security"] == [{"bearer": []}]


async def test_the_openapi_coverage_check_catches_an_undocumented_route(bot: FakeBot) -> None:
    app = create_app(bot)

    async def extra(request: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError

    app.router.routes.append(Route("/api/undocumented", extra, methods=["GET"]))
    assert missing_from_openapi(app) == ["GET /api/undocumented"]


# --------------------------------------------------------------------------
# behaviour behind the routes


async def test_bodies_are_validated_and_the_message_names_the_field(
    client: httpx.AsyncClient,
) -> None:
    cases = [
        ("/api/runtime/lifecycle", {"action": "start"}, "platform_id"),
        ("/api/runtime/lifecycle", {"platform_id": "qq", "action": "explode"}, "action"),
        ("/api/runtime/lifecycle", {"platform_id": 5, "action": "start"}, "platform_id"),
        ("/api/fault/platform/enable", {"platform_id": "qq", "extra": 1}, "extra"),
        ("/api/message/buffer/replay", {"platform_id": "qq", "max_count": 0}, "max_count"),
        (
            "/api/runtime/platforms",
            {
                "platform_id": "tg",
                "platform_config": {"type": "tests.fakes:FakePlatform", "label": 3},
            },
            "platforms.tg.label",
        ),
        (
            "/api/connection/config",
            {"platform_id": "qq", "connection": {"bogus": 1}},
            "connection.bogus",
        ),
        (
            "/api/connection/config",
            {"platform_id": "qq", "connection": {"reconnect_interval": -1}},
            "connection.reconnect_interval",
        ),
    ]
    with trio.fail_after(10):
        for path, body, field in cases:
            r = await client.post(path, json=body, headers=GOOD)
            assert r.status_code == 400, (path, body, r.text)
            assert field in r.json()["error"]["message"], r.text
        r = await client.post("/api/runtime/lifecycle", content=b"{not json", headers=GOOD)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = await client.post("/api/runtime/lifecycle", json=[1, 2], headers=GOOD)
        assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]


async def test_environment_variables_are_not_expanded_in_api_configs(
    client: httpx.AsyncClient,
) -> None:
    cfg = {**QQ, "label": "${HOME}"}
    with trio.fail_after(10):
        r = await client.post(
            "/api/runtime/platforms",
            json={"platform_id": "tg", "platform_config": cfg},
            headers=GOOD,
        )
    assert r.status_code == 400
    assert "HOME" in r.json()["error"]["message"]


async def test_unknown_platform_version_and_alert_are_404(client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/api/runtime/lifecycle", {"params": {"platform_id": "nope"}}),
            ("POST", "/api/runtime/lifecycle", {"json": {"platform_id": "nope", "action": "stop"}}),
            ("DELETE", "/api/runtime/platforms", {"json": {"platform_id": "nope"}}),
            ("POST", "/api/fault/platform/disable", {"json": {"platform_id": "nope"}}),
            ("GET", "/api/message/buffer/messages", {"params": {"platform_id": "nope"}}),
            ("GET", "/api/fault/records", {"params": {"platform_id": "nope"}}),
            ("GET", "/api/config/versions", {"params": {"version_id": "v99"}}),
            ("GET", "/api/config/diff", {"params": {"from": "v1", "to": "v99"}}),
            ("POST", "/api/config/rollback", {"json": {"version_id": "v99"}}),
            ("POST", "/api/monitor/alerts/resolve", {"json": {"alert_id": "zzz"}}),
        ]
        for method, path, kw in cases:
            r = await client.request(method, path, headers=GOOD, **kw)
            assert r.status_code == 404, (path, r.text)
            assert set(r.json()["error"]) == {"code", "message"}
        r = await client.get("/api/no/such/route", headers=GOOD)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await client.put("/api/runtime/lifecycle", headers=GOOD)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_conflicts_are_409(client: httpx.AsyncClient, bot: FakeBot) -> None:
    with trio.fail_after(10):
        r = await client.post(
            "/api/runtime/platforms",
            json={"platform_id": "qq", "platform_config": QQ},
            headers=GOOD,
        )
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "platform_exists"
        current = bot.config_version_manager.current_revision
        assert current == 2
        stale = {"platform_id": "tg", "platform_config": QQ, "base_revision": 1}
        r = await client.post("/api/runtime/platforms", json=stale, headers=GOOD)
        assert r.status_code == 409 and r.json()["error"]["code"] == "revision_conflict"
        assert "tg" not in bot.runtime_manager.platform_configs
        fresh = {**stale, "base_revision": current}
        r = await client.post("/api/runtime/platforms", json=fresh, headers=GOOD)
        assert r.status_code == 201 and r.json()["revision"] == current + 1
        for body in (
            {"version_id": "v1", "base_revision": current},
            {"platform_id": "qq", "connection": {}, "base_revision": 1},
        ):
            path = "/api/config/rollback" if "version_id" in body else "/api/connection/config"
            r = await client.post(path, json=body, headers=GOOD)
            assert r.status_code == 409, (path, r.text)
        r = await client.delete(
            "/api/runtime/platforms", params={"platform_id": "tg", "base_revision": 1}, headers=GOOD
        )
        assert r.status_code == 409
    assert bot.config_version_manager.current_revision == current + 1


async def test_connection_config_goes_through_update_platform_config(
    client: httpx.AsyncClient, bot: FakeBot
) -> None:
    with trio.fail_after(10):
        r = await client.post(
            "/api/connection/config",
            json={"platform_id": "qq", "connection": {"reconnect_interval": 3.5}},
            headers=GOOD,
        )
    assert r.status_code == 200
    assert r.json()["connection"]["reconnect_interval"] == 3.5
    [(_, pid, updates)] = bot.runtime_manager.calls
    assert pid == "qq" and updates["connection"]["reconnect_interval"] == 3.5
    assert bot.runtime_manager.platform_configs["qq"].connection.reconnect_interval == 3.5


async def test_rollback_and_diff_over_the_api(client: httpx.AsyncClient, bot: FakeBot) -> None:
    with trio.fail_after(10):
        r = await client.post("/api/config/rollback", json={"version_id": "v1"}, headers=GOOD)
        assert r.status_code == 200
        version = r.json()["version"]
        assert version["change_type"] == "rollback"
        assert version["restored_id"] == "v1" and version["parent_id"] == "v2"
        # v1 had no platforms: the rollback applied exactly that, and qq is gone
        assert bot.applier.applied[-1] == {}
        assert "qq" not in bot.config.platforms
        r = await client.get("/api/config/diff", params={"from": "v2"}, headers=GOOD)
        assert r.json()["to"] == "v3"
        assert {"op": "remove", "path": "/platforms/qq"} in r.json()["patch"]
        r = await client.get("/api/config/versions", params={"limit": 2}, headers=GOOD)
        assert [v["version_id"] for v in r.json()["versions"]] == ["v3", "v2"]
        assert r.json()["current"] == "v3"


async def test_secrets_are_redacted_in_answers(client: httpx.AsyncClient) -> None:
    with trio.fail_after(10):
        r = await client.get("/api/config/versions", params={"version_id": "v2"}, headers=GOOD)
    assert r.status_code == 200
    assert TOKEN not in r.text
    assert r.json()["versions"][0]["config"]["api"]["token"] == "***"


async def test_request_bodies_over_the_limit_get_413(client: httpx.AsyncClient) -> None:
    big = {"platform_id": "qq", "reason": "x" * 5000}
    with trio.fail_after(10):
        r = await client.post("/api/fault/platform/disable", json=big, headers=GOOD)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        # No Content-Length (chunked): the body is counted while it streams in.
        status = await _raw_asgi_post(
            client,
            "/api/fault/platform/disable",
            [b'{"platform_id": "qq", "reason": "'] + [b"y" * 1000] * 10,
        )
        assert status == 413
        # Auth is checked before the body is looked at.
        r = await client.post("/api/fault/platform/disable", json=big)
        assert r.status_code == 401


async def _raw_asgi_post(client: httpx.AsyncClient, path: str, chunks: list[bytes]) -> int:
    app = client._transport.app  # type: ignore[attr-defined]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", GOOD["Authorization"].encode())],
        "server": ("nekobot", 80),
        "client": ("127.0.0.1", 1234),
    }
    pending = list(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        body = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert pending, "the app should stop reading once the limit is passed"
    return int(sent[0]["status"])


async def test_metrics_auth_is_configurable_and_readyz_reports_starting(bot: FakeBot) -> None:
    bot.config = attrs.evolve(bot.config, api=ApiConfig(token=TOKEN, metrics_auth=True))
    app = create_app(bot)
    transport = httpx.ASGITransport(app=app)
    with trio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://nekobot") as c:
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers=GOOD)).status_code == 200
            assert (await c.get("/healthz")).status_code == 200
            bot.ready = False
            r = await c.get("/readyz")
            assert r.status_code == 503 and r.json() == {"status": "not_ready"}


async def test_without_a_token_the_loopback_api_is_open(bot: FakeBot) -> None:
    bot.config = attrs.evolve(bot.config, api=ApiConfig(token=None))
    app = create_app(bot)
    transport = httpx.ASGITransport(app=app)
    with trio.fail_after(10):
        for base in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
            async with httpx.AsyncClient(transport=transport, base_url=base) as c:
                assert (await c.get("/api/runtime/lifecycle")).status_code == 200


async def test_without_a_token_only_loopback_host_names_are_answered(bot: FakeBot) -> None:
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1
    is same-origin to itself, so the Host header is what gives it away."""
    bot.config = attrs.evolve(bot.config, api=ApiConfig(token=None))
    transport = httpx.ASGITransport(app=create_app(bot))
    with trio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example:8080") as c:
            r = await c.get("/api/runtime/lifecycle")
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "host_not_allowed"
        bot.config = attrs.evolve(bot.config, api=ApiConfig(token=TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example:8080") as c:
            r = await c.get("/api/runtime/lifecycle", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200  # with a token, any name may ask


async def test_serve_api_refuses_a_public_host_without_a_token(bot: FakeBot) -> None:
    with pytest.raises(ConfigError, match=r"api\.token"):
        await serve_api(bot, ApiConfig(host="0.0.0.0", port=0))


async def test_served_by_hypercorn_on_port_0(bot: FakeBot) -> None:
    cfg = ApiConfig(host="127.0.0.1", port=0, token=TOKEN)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_api, bot, cfg)
            assert isinstance(port, int) and port > 0
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
                assert (await c.get("/healthz")).json() == {"status": "ok"}
                assert (await c.get("/api/runtime/lifecycle")).status_code == 401
                r = await c.get("/api/runtime/lifecycle", headers=GOOD)
                assert r.json() == {"platforms": {"qq": {"state": "RUNNING"}}}
            nursery.cancel_scope.cancel()


# Hypercorn's Config.create_sockets() does not close a socket whose bind failed;
# collect it here so its ResourceWarning cannot surface in another test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_busy_port_fails_with_a_plain_clear_error(bot: FakeBot) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with trio.fail_after(10), pytest.raises(OSError, match="cannot serve the HTTP API on"):
            await serve_api(bot, ApiConfig(host="127.0.0.1", port=port, token=TOKEN))
    gc.collect()


# --------------------------------------------------------------------------
# fixes from the user test


def _client(app: Any, base_url: str = "http://127.0.0.1:8080") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_cross_origin_state_changes_are_refused(bot: FakeBot) -> None:
    # The shipped default: loopback, no token. A web page the operator opens
    # must not be able to stop platforms (CSRF with a "simple" request).
    bot.config = attrs.evolve(bot.config, api=ApiConfig(token=None))
    faults = bot.fault_isolation_manager
    body = b'{"platform_id":"qq","reason":"csrf"}'
    plain = {"Content-Type": "text/plain"}
    with trio.fail_after(10):
        async with _client(create_app(bot)) as c:

            async def disable(headers: dict[str, str]) -> httpx.Response:
                return await c.post(
                    "/api/fault/platform/disable", content=body, headers={**plain, **headers}
                )

            for headers in (
                {"Origin": "http://evil.example"},
                {"Origin": "null"},
                {"Origin": "http://127.0.0.1:8081"},  # another port is another origin
                {"Origin": "https://127.0.0.1:8080"},  # another scheme too
                {"Origin": "http://localhost:8080"},  # another host name too
                {"Sec-Fetch-Site": "cross-site"},
                {"Sec-Fetch-Site": "same-site"},
            ):
                r = await disable(headers)
                assert r.status_code == 403, (headers, r.text)
                assert r.json()["error"]["code"] == "cross_origin", r.text
                assert "origin" in r.json()["error"]["message"]
            assert faults.disabled == {}
            for method, path in [
                ("DELETE", "/api/runtime/platforms?platform_id=qq"),
                ("PUT", "/api/runtime/lifecycle"),
                ("PATCH", "/api/runtime/lifecycle"),
            ]:
                r = await c.request(method, path, headers={"Origin": "http://evil.example"})
                assert r.status_code == 403, (method, r.text)
            assert "qq" in bot.runtime_manager.platform_configs
            # reads are not state changes (and the browser does not let the page read them)
            r = await c.get("/api/runtime/lifecycle", headers={"Origin": "http://evil.example"})
            assert r.status_code == 200

            # curl and scripts send no Origin; the API's own origin is fine too
            for headers in (
                {},
                {"Origin": "http://127.0.0.1:8080"},
                {"Origin": "HTTP://127.0.0.1:8080"},
                {"Sec-Fetch-Site": "same-origin"},
                {"Sec-Fetch-Site": "none"},
            ):
                faults.disabled.clear()
                r = await disable(headers)
                assert r.status_code == 200, (headers, r.text)
                assert faults.disabled == {"qq": "api"}
        async with _client(create_app(bot), "http://[::1]") as c:
            r = await c.post(
                "/api/fault/platform/disable", content=body, headers={"Origin": "http://[::1]:80"}
            )
            assert r.status_code == 200, r.text  # the default port may be left out
        # with a token the check applies as well
        bot.config = attrs.evolve(bot.config, api=ApiConfig(token=TOKEN))
        async with _client(create_app(bot)) as c:
            r = await disable_with(c, body, {**GOOD, "Origin": "http://evil.example"})
            assert r.status_code == 403


async def disable_with(
    c: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await c.post("/api/fault/platform/disable", content=body, headers=headers)


@pytest.mark.parametrize("depth", [100_000, 1_000, 65])
async def test_deeply_nested_json_is_a_400_naming_the_body(
    bot: FakeBot, caplog: pytest.LogCaptureFixture, depth: int
) -> None:
    bot.config = attrs.evolve(bot.config, api=ApiConfig(token=TOKEN, max_body_size=1 << 20))
    deep = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    in_config = b'{"platform_id":"tg","platform_config":{"type":"x","a":' + b'{"a":' * depth
    in_config += b"1" + b"}" * depth + b"}}"
    routes = [(m, p) for m, p, _, _ in ROUTES if m in ("POST", "DELETE")]
    assert len(routes) == 9
    with trio.fail_after(20):
        async with _client(create_app(bot)) as c:
            for method, path in routes:
                for body in (deep, in_config):
                    r = await c.request(method, path, content=body, headers=GOOD)
                    assert r.status_code == 400, (path, r.text[:300])
                    assert r.json()["error"] == {
                        "code": "invalid_json",
                        "message": "body: JSON nested too deeply (more than 64 levels)",
                    }
    assert not [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")]


async def test_a_rotated_token_takes_effect_at_once(bot: FakeBot) -> None:
    with trio.fail_after(10):
        async with _client(create_app(bot)) as c:
            assert (await c.get("/api/runtime/lifecycle", headers=GOOD)).status_code == 200
            bot.config = attrs.evolve(bot.config, api=ApiConfig(token="rotated"))
            assert (await c.get("/api/runtime/lifecycle", headers=GOOD)).status_code == 401
            new = {"Authorization": "Bearer rotated"}
            assert (await c.get("/api/runtime/lifecycle", headers=new)).status_code == 200
            bot.config = attrs.evolve(bot.config, api=ApiConfig(token=None))
            assert (await c.get("/api/runtime/lifecycle")).status_code == 200
        # served on a public address: removing the token shuts the API, never opens it
        public = ApiConfig(host="0.0.0.0", token=TOKEN)
        async with _client(create_app(bot, public)) as c:
            r = await c.get("/api/runtime/lifecycle", headers=GOOD)
            assert r.status_code == 401 and "token" in r.json()["error"]["message"]
            assert (await c.get("/healthz")).status_code == 200


async def test_a_platform_that_cannot_start_is_409(bot: FakeBot) -> None:
    from nekobot.runtime.runtime_manager import PlatformStartError

    async def fail(pid: str, pc: Any, auto_start: bool = True, **kw: Any) -> None:
        raise PlatformStartError(pid, OSError(98, "Address already in use"))

    bot.runtime_manager.add_platform = fail  # type: ignore[method-assign]
    with trio.fail_after(10):
        async with _client(create_app(bot)) as c:
            r = await c.post(
                "/api/runtime/platforms",
                json={"platform_id": "qq2", "platform_config": QQ},
                headers=GOOD,
            )
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "platform_start_error"
    assert "Address already in use" in r.json()["error"]["message"]
    doc = openapi_document()
    assert "409" in doc["paths"]["/api/runtime/lifecycle"]["post"]["responses"]
    assert "403" in doc["paths"]["/api/runtime/platforms"]["delete"]["responses"]
    assert "403" not in doc["paths"]["/api/runtime/lifecycle"]["get"]["responses"]


async def test_replay_to_an_offline_platform_is_a_409(bot: FakeBot) -> None:
    from nekobot.api.errors import error_response as _error_response
    from nekobot.errors import PlatformOffline

    response = _error_response(PlatformOffline("platform 'qq' is not online"), 1024)
    assert response.status_code == 409
    assert b'"platform_offline"' in response.body


async def test_connection_config_errors_name_the_key_and_the_values_sent(
    client: httpx.AsyncClient,
) -> None:
    with trio.fail_after(10):
        r = await client.post(
            "/api/connection/config",
            json={
                "platform_id": "qq",
                "connection": {
                    "reconnect_interval": 100,
                    "max_reconnect_interval": 1,
                    "jitter": -1,
                },
            },
            headers=GOOD,
        )
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "connection.jitter: must be >= 0, got -1.0" in message
    r2 = None
    with trio.fail_after(10):
        r2 = await client.post(
            "/api/connection/config",
            json={
                "platform_id": "qq",
                "connection": {"reconnect_interval": 100, "max_reconnect_interval": 1},
            },
            headers=GOOD,
        )
    assert r2.status_code == 400
    assert r2.json()["error"]["message"] == (
        "connection.reconnect_interval: must be <= max_reconnect_interval (1.0), got 100.0"
    )


async def test_every_answer_hides_secret_names_and_url_credentials(bot: FakeBot) -> None:
    # The one rule (nekobot.config.redaction): keys the API used to show in
    # clear (passwd, secret_key, api_key) and credentials inside URLs.
    leaky = {
        "db": {"passwd": "pw-1", "secret_key": "sk-2", "api_key": "ak-3", "user": "neko"},
        "url": "ws://neko:pw-4@10.0.0.1:6700/?access_token=tok-5&x=1",
    }
    bot.message_router.get_stats = lambda: leaky  # type: ignore[method-assign]
    with trio.fail_after(10):
        async with _client(create_app(bot)) as c:
            r = await c.get("/api/message/router/stats", headers=GOOD)
    assert r.status_code == 200
    for secret in ("pw-1", "sk-2", "ak-3", "pw-4", "tok-5"):
        assert secret not in r.text
    assert r.json()["stats"] == {
        "db": {"passwd": "***", "secret_key": "***", "api_key": "***", "user": "neko"},
        "url": "ws://***@10.0.0.1:6700/?access_token=***&x=1",
    }
