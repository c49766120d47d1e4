"""Nothing hangs: the API and the console answer within their deadline, naming what they waited for.

Policy: everything under the ``autojump_clock`` fixture with exact Trio-clock
schedules; the API is driven as raw ASGI (so the answer can be seen before the
request's operations have finished), the console through an in-memory stream.
The bot is a fake with only the handle attributes these paths use.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from nekobot.api.app import create_app, openapi_document
from nekobot.api.deadline import LINGER, OPERATOR_DEADLINE
from nekobot.config.schema import ApiConfig, ConsoleConfig, NekoBotConfig, PlatformConfig
from nekobot.config.versions import ConfigVersionManager
from nekobot.console.protocol import PROMPT
from nekobot.console.server import _ConsoleServer
from nekobot.errors import ActorStopped, CallTimeout

from .fakes import FakeConfig


class SlowRuntime:
    """A runtime manager whose ``restart_platform`` waits until released."""

    def __init__(self) -> None:
        self.platform_configs = {
            "qq": PlatformConfig(type="tests.fakes:FakePlatform", settings=FakeConfig())
        }
        self.release = trio.Event()
        self.finished = False
        self.cancelled = False
        self.raises: BaseException | None = None

    async def restart_platform(self, pid: str) -> None:
        if self.raises is not None:
            raise self.raises
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        self.finished = True

    async def start_platform(self, pid: str) -> None:
        pass

    async def stop_platform(self, pid: str) -> None:
        pass

    def get_platform_lifecycle_status(self, pid: str | None = None) -> Any:
        return {"state": "running"}

    def get_platform_actor(self, pid: str) -> Any:
        return None


class SlowBot:
    def __init__(self) -> None:
        self.config = NekoBotConfig(api=ApiConfig(token=None))
        self.runtime_manager = SlowRuntime()
        self.config_version_manager = ConfigVersionManager()
        self.ready = True


RESTART = b'{"platform_id": "qq", "action": "restart"}'


async def _post(
    nursery: trio.Nursery, app: Any, path: str, body: bytes
) -> tuple[float, int, bytes]:
    """POST as raw ASGI; returns when the answer is complete, with the Trio time
    it was, while the request's operations may still run (``app`` goes on in
    ``nursery``)."""
    answered = trio.Event()
    status: list[int] = []
    chunks: list[bytes] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await trio.sleep_forever()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered.set()

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
        "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")],
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 1234),
    }
    nursery.start_soon(app, scope, receive, send)
    await answered.wait()
    return trio.current_time(), status[0], b"".join(chunks)


async def test_a_route_answers_503_at_its_deadline_and_the_operation_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bot = SlowBot()
    app = create_app(bot)  # type: ignore[arg-type]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        at, status, body = await _post(nursery, app, "/api/runtime/lifecycle", RESTART)
        assert at - t0 == OPERATOR_DEADLINE
        assert status == 503
        assert httpx.Response(503, content=body).json() == {
            "error": {
                "code": "timeout",
                "message": f"restart of platform 'qq': no answer within {OPERATOR_DEADLINE:g} s",
            }
        }
        # The restart was not cancelled because its caller stopped waiting.
        await trio.sleep(5)
        assert not bot.runtime_manager.cancelled and not bot.runtime_manager.finished
        bot.runtime_manager.release.set()
    assert bot.runtime_manager.finished and not bot.runtime_manager.cancelled


async def test_an_operation_that_never_ends_is_cancelled_after_the_linger(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    bot = SlowBot()
    app = create_app(bot)  # type: ignore[arg-type]
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        _, status, _ = await _post(nursery, app, "/api/runtime/lifecycle", RESTART)
        assert status == 503
    assert trio.current_time() - t0 == OPERATOR_DEADLINE + LINGER
    assert bot.runtime_manager.cancelled
    assert "restart of platform 'qq': still running" in caplog.text


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            CallTimeout("actor 'runtime' did not answer RestartPlatform within 5.0 s"),
            "timeout",
            "restart of platform 'qq': actor 'runtime' did not answer RestartPlatform within 5.0 s",
        ),
        (
            ActorStopped("actor 'runtime' is not running"),
            "actor_stopped",
            "restart of platform 'qq': actor 'runtime' is not running",
        ),
    ],
)
async def test_the_bots_own_timeout_or_a_stopped_actor_is_a_503_naming_it(
    autojump_clock: trio.testing.MockClock, error: BaseException, code: str, message: str
) -> None:
    bot = SlowBot()
    bot.runtime_manager.raises = error
    transport = httpx.ASGITransport(app=create_app(bot))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        t0 = trio.current_time()
        r = await c.post("/api/runtime/lifecycle", content=RESTART)
    assert trio.current_time() == t0
    assert r.status_code == 503
    assert r.json() == {"error": {"code": code, "message": message}}


def test_openapi_lists_503_for_every_route_that_waits_on_the_bot() -> None:
    paths = openapi_document()["paths"]
    waiting = {
        ("post", "/api/runtime/lifecycle"),
        ("post", "/api/runtime/platforms"),
        ("delete", "/api/runtime/platforms"),
        ("post", "/api/connection/config"),
        ("post", "/api/fault/platform/enable"),
        ("post", "/api/fault/platform/disable"),
        ("get", "/api/message/buffer/messages"),
        ("post", "/api/message/buffer/replay"),
        ("post", "/api/config/rollback"),
    }
    listed = {
        (m, p) for p, ops in paths.items() for m, op in ops.items() if "503" in op["responses"]
    }
    assert listed == waiting | {("get", "/readyz")}
    reason = openapi_document()["components"]["responses"]["E503"]["description"]
    assert "timeout" in reason


async def test_the_console_prints_the_same_message_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bot = SlowBot()
    server = _ConsoleServer(bot, ConsoleConfig())  # type: ignore[arg-type]
    client, served = trio.testing.memory_stream_pair()
    buf = b""

    async def answer() -> str:
        nonlocal buf
        while not buf.endswith(PROMPT.encode()):
            buf += await client.receive_some()
        text, buf = buf.decode(), b""
        return text

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, served)
        assert "type 'help'" in await answer()
        t0 = trio.current_time()
        await client.send_all(b"restart qq\n")
        text = await answer()
        assert trio.current_time() - t0 == OPERATOR_DEADLINE
        assert text == (
            f"error: restart of platform 'qq': no answer within {OPERATOR_DEADLINE:g} s\n{PROMPT}"
        )
        await client.send_all(b"help\n")
        assert "commands:" in await answer()  # the session goes on meanwhile
        await client.send_all(b"quit\n")
        assert b"bye" in await client.receive_some()
        # The session ends once the restart it started has finished.
        await trio.sleep(1)
        assert server.sessions == 1
        bot.runtime_manager.release.set()
    assert bot.runtime_manager.finished and server.sessions == 0


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nekobot")
