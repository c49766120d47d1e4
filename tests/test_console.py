"""The debug console (nekobot/console.py) against a real bot.

Policy: loopback TCP on port 0 (or a Unix socket under tmp_path); every test
runs under a Trio-clock ``fail_after`` so a bug fails fast instead of hanging.
The platform is :class:`TinyPlatform` below, found by its import path
``tests.test_console:TinyPlatform``; it counts its starts, so a restart shows.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, ParamSpec

import attrs
import pytest
import trio
import trio.testing

from nekobot.app import open_nekobot
from nekobot.config.schema import ConsoleConfig
from nekobot.console.server import AUTH_FAILED, PROMPT, PY_MORE, PY_PROMPT, serve_console
from nekobot.errors import ConfigError
from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.platforms.base import PlatformActor

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "console-token-1234"
API_SECRET = "api-secret-never-shown"
QQ_SECRET = "qq-access-token-never-shown"


@attrs.frozen(kw_only=True)
class TinyConfig:
    label: str = "tiny"
    access_token: str | None = None


class TinyPlatform(PlatformActor):
    """Online at once; counts starts per platform id; runs until cancelled."""

    platform_type = "tiny"
    config_class = TinyConfig
    starts: ClassVar[dict[str, int]] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts[self.platform_id] = self.starts.get(self.platform_id, 0) + 1
        await self.set_online()
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.online = False

    async def send(self, message: OutboundMessage) -> SendReceipt:
        self.require_online()
        return SendReceipt(platform_id=self.platform_id, message_key=message.message_key)


TINY = f"{__name__}:TinyPlatform"
P = ParamSpec("P")


def bot_config(tmp_path: Path, **console: Any) -> dict[str, Any]:
    return {
        "bot": {
            "name": "console-test",
            "data_dir": str(tmp_path / "data"),
            "shutdown_timeout": 2.0,
        },
        "api": {"token": API_SECRET},
        "console": {"enable": True, "port": 0, **console},
        "platforms": {
            "qq": {"type": TINY, "label": "qq", "access_token": QQ_SECRET},
            "tg": {"type": TINY, "label": "tg"},
        },
    }


class Client:
    """A line client that reads each answer up to the next prompt."""

    PROMPTS = (PROMPT.encode(), PY_PROMPT.encode(), PY_MORE.encode())

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def connect(cls, address: Any, token: str | None = None) -> Client:
        if isinstance(address, str):
            stream = await trio.open_unix_socket(address)
        else:
            stream = await trio.open_tcp_stream(*address)
        client = cls(stream)
        if token is not None:
            await stream.send_all(token.encode() + b"\n")
        return client

    async def answer(self) -> str:
        while not self.buf.endswith(self.PROMPTS):
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.buf.decode())
            self.buf += data
        text, self.buf = self.buf.decode(), b""
        return text

    async def cmd(self, line: str) -> str:
        await self.stream.send_all(line.encode() + b"\n")
        return await self.answer()

    async def read_all(self) -> str:
        while data := await self.stream.receive_some(65536):
            self.buf += data
        text, self.buf = self.buf.decode(), b""
        return text


DEADLINE = 20.0
"""Seconds (Trio clock) any one test may take."""


def io_test(fn: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
    """Run the test body under ``trio.fail_after(DEADLINE)``.

    (A ``fail_after`` in a pytest-trio fixture would not cover the test: each
    fixture runs in its own task.)
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        with trio.fail_after(DEADLINE):
            await fn(*args, **kwargs)

    return wrapper


@pytest.fixture
async def bot(tmp_path: Path) -> AsyncIterator[Any]:
    TinyPlatform.starts.clear()
    async with open_nekobot(bot_config(tmp_path)) as b:
        yield b


@pytest.fixture
async def console(bot: Any) -> AsyncIterator[Client]:
    with trio.fail_after(DEADLINE):
        client = await Client.connect(bot.console_address)
        assert "type 'help'" in await client.answer()
    async with client.stream:
        yield client


def _session_tasks(tree: str) -> int:
    """Console sessions alive in a ``tree`` answer (one handler task each)."""
    return tree.count("_highlevel_serve_listeners._run_handler")


# --------------------------------------------------------------------------


@io_test
async def test_started_value_is_the_bound_loopback_address(bot: Any) -> None:
    host, port = bot.console_address
    assert host == "127.0.0.1" and port > 0


@io_test
async def test_tree_shows_the_platforms_tasks(console: Client) -> None:
    tree = await console.cmd("tree")
    assert "nekobot.platforms" in tree and "nekobot.router" in tree
    assert "[platform qq (tiny, online)]" in tree
    assert "[platform tg (tiny, online)]" in tree
    # Platforms are drawn below the platform supervisor.
    lines = tree.splitlines()
    sup = next(i for i, line in enumerate(lines) if "nekobot.platforms" in line)
    qq = next(i for i, line in enumerate(lines) if "[platform qq" in line)
    indent = len(lines[sup]) - len(lines[sup].lstrip())
    assert qq > sup and len(lines[qq]) - len(lines[qq].lstrip()) > indent


@io_test
async def test_py_restarts_a_platform_with_top_level_await(bot: Any, console: Client) -> None:
    before = bot.runtime_manager.get_platform_actor("qq")
    assert TinyPlatform.starts["qq"] == 1
    assert (await console.cmd("py")).endswith(PY_PROMPT)
    out = await console.cmd('await bot.runtime_manager.restart_platform("qq")')
    assert "Traceback" not in out, out
    assert TinyPlatform.starts == {"qq": 2, "tg": 1}
    after = bot.runtime_manager.get_platform_actor("qq")
    assert after is not before and after.online
    # The REPL keeps its namespace and shows results.
    assert (await console.cmd('a = bot.runtime_manager.get_platform_actor("qq")')) == PY_PROMPT
    assert (await console.cmd("a.online, TinyCount")).startswith("Traceback")
    assert "True" in await console.cmd("a.online")
    assert "left py mode" in await console.cmd("exit")
    assert "[platform qq (tiny, online)]" in await console.cmd("tree")


@io_test
async def test_py_blocks_exceptions_and_print(console: Client) -> None:
    await console.cmd("py")
    assert await console.cmd("for i in range(2):") == PY_MORE
    assert await console.cmd("    print('line', i)") == PY_MORE
    assert await console.cmd("") == "line 0\nline 1\n" + PY_PROMPT
    err = await console.cmd("1 / 0")
    assert "ZeroDivisionError: division by zero" in err and err.endswith(PY_PROMPT)
    assert "SyntaxError" in await console.cmd("def (")
    assert "4" in await console.cmd("await trio.sleep(0) or 2 + 2")
    # Nothing reads the bot process's own stdin; help(obj) answers here.
    assert "RuntimeError" in await console.cmd("input()")
    assert "RuntimeError" in await console.cmd("breakpoint()")
    assert "restart_platform" in await console.cmd("help(bot.runtime_manager.restart_platform)")
    assert "left py mode" in await console.cmd("quit")
    assert "commands:" in await console.cmd("help")


@io_test
async def test_refused_commands_keep_the_session(console: Client) -> None:
    assert "error: unknown command 'frobnicate'" in await console.cmd("frobnicate")
    assert "error: unknown platform 'nope'" in await console.cmd("restart nope")
    assert "error: usage: restart ID" in await console.cmd("restart")
    assert "error: bad syntax" in await console.cmd("where 'unclosed")
    assert "error: no task" in await console.cmd("where no-such-task")
    assert "error:" in await console.cmd("config diff v1 v99")
    assert "error: usage: faults [ID]" in await console.cmd("faults a b")
    # Still serving.
    assert '"qq"' in await console.cmd("platforms")


@io_test
async def test_inspection_commands_answer(bot: Any, console: Client) -> None:
    ps = await console.cmd("ps")
    assert "WAITS IN" in ps and "[platform qq" in ps
    qq_id = next(line.split()[0] for line in ps.splitlines() if "[platform qq" in line)
    where = await console.cmd(f"where {qq_id}")
    assert "test_console.py" in where and "sleep_forever" in where
    actors = await console.cmd("actors")
    assert "message_router" in actors and "queue 0" in actors
    assert "message_buffer" in actors and "mailbox 0/" in actors
    platforms = await console.cmd("platforms")
    assert '"online": true' in platforms and '"type": "' + TINY + '"' in platforms
    for command in ("faults", "faults qq", "router", "buffer", "alerts", "config history"):
        answer = await console.cmd(command)
        assert not answer.startswith("error"), (command, answer)
    assert "v1" in await console.cmd("config history")


@io_test
async def test_stop_start_disable_enable_go_through_the_bot(bot: Any, console: Client) -> None:
    assert "stop: qq done" in await console.cmd("stop qq")
    assert bot.runtime_manager.get_platform_actor("qq") is None or not (
        bot.runtime_manager.get_platform_actor("qq").online
    )
    assert "start: qq done" in await console.cmd("start qq")
    assert TinyPlatform.starts["qq"] == 2
    assert "disabled qq" in await console.cmd("disable qq maintenance window")
    assert "enabled qq" in await console.cmd("enable qq")


@io_test
async def test_secrets_are_redacted_everywhere(console: Client) -> None:
    outputs = [await console.cmd("config show v1"), await console.cmd("platforms")]
    await console.cmd("py")
    outputs.append(await console.cmd("bot.config"))
    outputs.append(await console.cmd("print(bot.config.api.token)"))
    text = "".join(outputs)
    assert API_SECRET not in text and QQ_SECRET not in text
    assert "***" in text


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "close"])
@io_test
async def test_a_client_leaving_mid_command_never_affects_the_bot(
    bot: Any, reset: bool, caplog: pytest.LogCaptureFixture
) -> None:
    gate = trio.Event()
    bot.console_test_gate = gate
    leaver = await Client.connect(bot.console_address)
    await leaver.answer()
    await leaver.cmd("py")
    await leaver.stream.send_all(
        b"await bot.console_test_gate.wait(); bot.console_test_done = True; print('x' * 1000000)\n"
    )
    await trio.testing.wait_all_tasks_blocked()
    # Leave while the command runs: reset the connection (RST), or close it
    # (FIN; then the 1 MB answer hits a closed socket).
    if reset:
        linger = struct.pack("ii", 1, 0)
        leaver.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    await leaver.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    other = await Client.connect(bot.console_address)
    await other.answer()
    # The leaver's session still runs its command: it is not cancelled.
    assert _session_tasks(await other.cmd("tree")) == 2
    assert not hasattr(bot, "console_test_done")
    gate.set()
    for _ in range(100):
        tree = await other.cmd("tree")
        if _session_tasks(tree) == 1:
            break
        await trio.testing.wait_all_tasks_blocked()
    assert _session_tasks(tree) == 1, tree
    assert bot.console_test_done is True
    assert "[platform qq (tiny, online)]" in tree
    assert bot.runtime_manager.get_platform_actor("qq").online
    await other.stream.aclose()
    # The session ended quietly: leaving is not an error of the console.
    assert not [r for r in caplog.records if r.name == "nekobot.console" and r.levelno >= 40]


@io_test
async def test_half_closed_client_gets_every_answer(bot: Any) -> None:
    client = await Client.connect(bot.console_address)
    async with client.stream:
        await client.stream.send_all(b"help\nnope\nplatforms\n")
        await client.stream.send_eof()
        text = await client.read_all()
    assert "commands:" in text and "error: unknown command 'nope'" in text and '"tg"' in text


@io_test
async def test_token_is_required_and_checked(tmp_path: Path) -> None:
    async with open_nekobot(bot_config(tmp_path, token=TOKEN)) as b:
        wrong = await Client.connect(b.console_address, token="wrong")
        async with wrong.stream:
            assert (await wrong.read_all()).startswith(AUTH_FAILED)
        none = await Client.connect(b.console_address)
        async with none.stream:
            await none.stream.send_all(b"help\n")  # a command instead of the token
            assert (await none.read_all()).startswith(AUTH_FAILED)
        good = await Client.connect(b.console_address, token=TOKEN)
        assert "type 'help'" in await good.answer()
        assert '"qq"' in await good.cmd("platforms")
        assert TOKEN not in await good.cmd("config show v1")
        await good.stream.aclose()


@io_test
async def test_non_loopback_host_without_token_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"console\.token"):
        await serve_console(object(), ConsoleConfig(host="0.0.0.0", port=0))


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
@io_test
async def test_unix_socket_is_private_and_removed(tmp_path: Path) -> None:
    path = str(tmp_path / "console.sock")
    async with open_nekobot(bot_config(tmp_path, unix_socket=path)) as b:
        assert b.console_address == path
        assert stat.S_IMODE((await trio.Path(path).stat()).st_mode) == 0o600
        client = await Client.connect(path)
        await client.answer()
        assert "[platform tg" in await client.cmd("tree")
        await client.stream.aclose()
    assert not await trio.Path(path).exists()


@io_test
async def test_nekobot_console_cli_relays_piped_stdin(bot: Any) -> None:
    host, port = bot.console_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nekobot", "console", "--host", host, "--port", str(port)],
            input="platforms\nnope\npy\n6 * 7\n",
            capture_output=True,
            text=True,
            timeout=15,
            env=env,
        )

    done = await trio.to_thread.run_sync(run)
    assert done.returncode == 0, done.stderr
    assert '"qq"' in done.stdout and "error: unknown command 'nope'" in done.stdout
    assert "42" in done.stdout
    assert bot.runtime_manager.get_platform_actor("qq").online


@io_test
async def test_nekobot_console_takes_address_and_token_from_the_config(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with open_nekobot(bot_config(tmp_path, token=TOKEN)) as b:
        host, port = b.console_address
        cli_file = trio.Path(tmp_path / "cli.toml")
        await cli_file.write_text(
            f'[console]\nenable = true\nhost = "{host}"\nport = {port}\ntoken = "{TOKEN}"\n'
        )

        def run(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "nekobot", "console", "-c", str(cli_file), *extra],
                input="platforms\n",
                capture_output=True,
                text=True,
                timeout=15,
                env=env,
            )

        done = await trio.to_thread.run_sync(run)
        assert done.returncode == 0, done.stderr
        assert '"qq"' in done.stdout and TOKEN not in done.stdout
        refused = await trio.to_thread.run_sync(run, "--token", "wrong")
        assert refused.returncode == 1
        assert "refused the token" in refused.stderr
        assert '"qq"' not in refused.stdout


@io_test
async def test_nekobot_console_errors_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nekobot.cli import main

    def cli(*args: str) -> int:
        return main(["console", *args])

    bad = trio.Path(tmp_path / "bad.toml")
    await bad.write_text("[console]\nport = 'x'\n")
    assert await trio.to_thread.run_sync(cli, "-c", str(bad)) == 2
    assert "console.port" in capsys.readouterr().err
    assert await trio.to_thread.run_sync(cli, "--unix", "/nonexistent.sock", "--port", "1") == 2
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert await trio.to_thread.run_sync(cli, "--host", "127.0.0.1", "--port", str(port)) == 1
    assert "cannot connect to 127.0.0.1" in capsys.readouterr().err


@io_test
async def test_py_contains_every_base_exception_and_the_bot_lives_on(
    bot: Any, console: Client
) -> None:
    await console.cmd("py")
    for line, shown in [
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
        ('raise BaseException("boom")', "BaseException: boom"),
        ("raise GeneratorExit", "GeneratorExit"),
        ("raise SystemExit(3)", "SystemExit: 3"),
        ("import sys; sys.exit(0)", "SystemExit: 0"),
        ("await trio.sleep(0); raise KeyboardInterrupt", "KeyboardInterrupt"),
        (
            'raise BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError("v")])',
            "ValueError: v",
        ),
    ]:
        out = await console.cmd(line)
        assert shown in out and out.endswith(PY_PROMPT), (line, out)
    # the same session still works, and so does the bot
    assert "2" in await console.cmd("1 + 1")
    assert "left py mode" in await console.cmd("exit")
    tree = await console.cmd("tree")
    assert "[platform qq (tiny, online)]" in tree
    assert bot.runtime_manager.get_platform_actor("qq").online
    other = await Client.connect(bot.console_address)
    async with other.stream:
        assert "type 'help'" in await other.answer()


async def test_py_lets_the_bots_own_cancellation_through() -> None:
    from nekobot.console.repl import PyRepl

    repl = PyRepl(None)
    reached = False
    with trio.fail_after(DEADLINE):
        with trio.CancelScope() as scope:
            scope.cancel()
            await repl.push("await trio.sleep_forever()")
            reached = True
        assert scope.cancelled_caught and not reached and repl.output == []
        # a Cancelled inside a group the code raised (its nursery was cancelled
        # from outside) propagates as well; nothing is swallowed
        with trio.CancelScope() as scope:
            scope.cancel()
            await repl.push(
                "async with trio.open_nursery() as n:\n    n.start_soon(trio.sleep_forever)\n"
            )
            reached = True
        assert scope.cancelled_caught and not reached


@io_test
async def test_bot_shuts_down_while_py_code_awaits(tmp_path: Path) -> None:
    async with open_nekobot(bot_config(tmp_path)) as b:
        client = await Client.connect(b.console_address)
        await client.answer()
        await client.cmd("py")
        await client.stream.send_all(b"await trio.sleep_forever()\n")
        await trio.testing.wait_all_tasks_blocked()
    # the session ended with the bot, without a traceback
    text = await client.read_all()
    assert "Cancelled" not in text and "Traceback" not in text
    await client.stream.aclose()


@io_test
async def test_nekobot_console_exits_quietly_when_stdout_closes(bot: Any) -> None:
    """``nekobot console | head``: the reader leaves early; no BrokenPipe traceback."""
    host, port = bot.console_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> tuple[int, bytes, bytes]:
        with subprocess.Popen(
            [sys.executable, "-m", "nekobot", "console", "--host", host, "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        ) as proc:
            assert proc.stdin and proc.stdout and proc.stderr
            # ~300 kB of answers: far more than a pipe holds, so the client
            # is still writing when the reader goes away.
            proc.stdin.write(b"help\n" * 200)
            proc.stdin.close()
            head = proc.stdout.read(20)
            proc.stdout.close()
            err = proc.stderr.read()
            return proc.wait(timeout=15), head, err

    code, head, err = await trio.to_thread.run_sync(run)
    assert head.startswith(b"nekobot console")
    assert err == b"", err.decode()
    assert code == 0
    assert bot.runtime_manager.get_platform_actor("qq").online
