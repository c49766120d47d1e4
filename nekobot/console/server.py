"""The live debug console's server: a line-oriented server in the bot's nursery.

The server (:func:`serve_console`) listens on loopback TCP (``[console] host,
port``; port 0 picks a free port) or on a Unix socket (``[console]
unix_socket``, created with mode 0600). When ``[console] token`` is set, the
first line a client sends must be that token (compared in constant time);
a non-loopback ``host`` without a token is refused at start.

Each connection is one *session* in its own Trio task. Errors are contained in
the session: a refused command (unknown id, bad syntax) prints ``error: …``,
a command that waits on the bot longer than its deadline prints ``error:
<what>: no answer within … s``, anything ``py`` code raises
(``KeyboardInterrupt``, ``SystemExit``, any ``BaseException``; only the bot's
own ``trio.Cancelled`` propagates) prints its traceback, and the session goes
on; a client that disconnects, even in the middle of a command, ends only its
own session. A command in flight is never cancelled because its client left
(it may be half-way through a restart): it finishes, and the session ends when
its answer cannot be written. A write that fails or stalls longer than
:data:`WRITE_TIMEOUT` seconds ends the session.

The protocol is :mod:`nekobot.console.protocol`; a client may half-close its
side (EOF) after its last line: the server answers every line it received,
then closes. ``help`` lists the commands. Secrets are redacted in every
config the console prints (:mod:`nekobot.config.redaction`), and the values of
the running config's secrets, and credentials in URLs, are masked in all
console output, ``py`` included.

The client is ``nekobot console`` (:mod:`nekobot.console.client`).
"""

from __future__ import annotations

import hmac
import logging
import os
import shlex
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..config.redaction import REDACTED, redact_urls, secret_values
from ..config.schema import ConsoleConfig, config_to_dict
from ..config.validators import is_loopback
from ..errors import ConfigError, NekoBotError
from .commands import Commands
from .protocol import AUTH_FAILED, PROMPT, PY_MORE, PY_PROMPT
from .repl import PyRepl
from .tasks import TaskIds

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = [
    "AUTH_FAILED",
    "PROMPT",
    "PY_MORE",
    "PY_PROMPT",
    "WRITE_TIMEOUT",
    "serve_console",
]

log = logging.getLogger("nekobot.console")

WRITE_TIMEOUT = 10.0
"""Seconds (Trio clock) one write to a client may take before its session ends."""
AUTH_TIMEOUT = 10.0
"""Seconds (Trio clock) a client has to send the token line."""
MAX_LINE = 1 << 20
"""Bytes one input line may have; a longer one ends the session."""

# The client's names stay importable from here (``nekobot.console.server``)
# for the callers that import them so; their home is ``nekobot.console.client``.

# --------------------------------------------------------------------------
# helpers


class _SessionEnd(Exception):
    """The session is over (the client left, a write failed, or ``quit``)."""


# --------------------------------------------------------------------------
# sessions


class _Session:
    def __init__(self, server: _ConsoleServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.bot = server.bot
        self.stream = stream
        self.commands: Commands | None = None
        """Made when the session runs (it needs the session's operations nursery)."""
        self.repl: PyRepl | None = None

    # ---- I/O -------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self.server.secrets():
            text = text.replace(secret, REDACTED)
        return redact_urls(text)

    async def write(self, text: str) -> None:
        data = self._scrub(text).encode("utf-8", "replace")
        try:
            with trio.fail_after(WRITE_TIMEOUT):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            raise _SessionEnd("write failed") from None

    async def _read_lines(self, send: trio.MemorySendChannel[str]) -> None:
        """Read ahead: split the client's bytes into lines for :meth:`_serve`.

        When the client is gone (reset) or sends an over-long line, the
        channel is closed: the session ends after the command in flight. That
        command is never cancelled because its client left (it may be half-way
        through a restart); it finishes, and its answer goes nowhere.
        """
        buf = bytearray()
        async with send:
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    if buf:
                        await send.send(buf.decode("utf-8", "replace").rstrip("\r"))
                    return
                buf += data
                while (nl := buf.find(b"\n")) >= 0:
                    line = bytes(buf[:nl]).decode("utf-8", "replace").rstrip("\r")
                    del buf[: nl + 1]
                    await send.send(line)
                if len(buf) > MAX_LINE:
                    log.warning("console: a client sent a line over %d bytes; closing", MAX_LINE)
                    return

    # ---- the session -------------------------------------------------------

    async def run(self) -> None:
        send, recv = trio.open_memory_channel[str](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_lines, send)
            try:
                # Calls that wait on the bot run here: one that timed out goes
                # on (it is never cancelled because its client left), and the
                # session ends when it has finished.
                async with trio.open_nursery() as operations:
                    self.commands = Commands(self.bot, self.server.task_ids, operations)
                    try:
                        await self._serve(recv)
                    except _SessionEnd:
                        pass
            finally:
                nursery.cancel_scope.cancel()

    async def _serve(self, lines: trio.MemoryReceiveChannel[str]) -> None:
        token = self.server.cfg.token
        if token:
            line: str | None = None
            with trio.move_on_after(AUTH_TIMEOUT):
                try:
                    line = await lines.receive()
                except trio.EndOfChannel:
                    line = None
            if line is None or not hmac.compare_digest(
                line.strip().encode("utf-8"), token.encode("utf-8")
            ):
                log.warning("console: a client failed to authenticate")
                await self.write(AUTH_FAILED + "\n")
                return
        name = self.bot.config.bot.name
        await self.write(f"nekobot console ({name}); type 'help' for the commands\n{PROMPT}")
        async for line in lines:
            if not await self.handle(line):
                return
            await self.write(self.repl.prompt if self.repl is not None else PROMPT)

    async def handle(self, line: str) -> bool:
        """Run one input line; False ends the session."""
        if self.repl is not None:
            if line.strip() in ("exit", "quit", "exit()", "quit()"):
                self.repl = None
                await self.write("left py mode\n")
                return True
            self.repl.output.clear()
            await self.repl.push(line)
            await self.write("".join(self.repl.output))
            self.repl.output.clear()
            return True
        try:
            words = shlex.split(line)
        except ValueError as exc:
            await self.write(f"error: bad syntax: {exc}\n")
            return True
        if not words:
            return True
        name, args = words[0].lower(), words[1:]
        if name in ("exit", "quit"):
            await self.write("bye\n")
            return False
        if name == "py":
            if args:
                await self.write("error: usage: py (then type Python; `exit` leaves)\n")
                return True
            self.repl = PyRepl(self.bot)
            await self.write(
                "async Python REPL: `await` works, `bot` is the live bot; `exit` leaves\n"
            )
            return True
        assert self.commands is not None
        command = self.commands.table().get(name)
        if command is None:
            await self.write(f"error: unknown command {name!r}; type 'help'\n")
            return True
        try:
            text = await command(args)
        except (NekoBotError, LookupError, ValueError) as exc:
            text = f"error: {exc}\n"
        except Exception as exc:
            log.exception("console command %r failed", line)
            text = f"error: {name} failed: {type(exc).__name__}: {exc}\n"
        await self.write(text)
        return True


# --------------------------------------------------------------------------
# the server


class _ConsoleServer:
    def __init__(self, bot: NekoBot, cfg: ConsoleConfig) -> None:
        self.bot = bot
        self.cfg = cfg
        self.task_ids = TaskIds()
        self.sessions = 0
        """Sessions open now."""
        self._secrets: set[str] = set()
        self._secrets_for: object = object()

    def secrets(self) -> set[str]:
        """Secret values to mask in all output: the console token and the
        running config's secrets (recomputed when ``bot.config`` changes)."""
        config = self.bot.config
        if config is not self._secrets_for:
            out: set[str] = set()
            if self.cfg.token and len(self.cfg.token) >= 4:
                out.add(self.cfg.token)
            secret_values(config_to_dict(config), out)
            self._secrets, self._secrets_for = out, config
        return self._secrets

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """One client's session; nothing it does can raise out of here."""
        self.sessions += 1
        try:
            async with stream:
                await _Session(self, stream).run()
        except Exception as exc:
            if not _client_gone(exc):
                log.exception("console session failed")
        finally:
            self.sessions -= 1


def _client_gone(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) only says the client went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_client_gone(e) for e in exc.exceptions)
    return isinstance(
        exc, _SessionEnd | trio.BrokenResourceError | trio.ClosedResourceError | OSError
    )


async def _unix_listener(path: str) -> trio.SocketListener:
    p = Path(path)
    try:
        st = await trio.to_thread.run_sync(p.lstat)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise ConfigError([f"console.unix_socket: {path} exists and is not a socket"])
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await probe.connect(path)
        except OSError:
            await trio.to_thread.run_sync(p.unlink)  # stale socket of a dead process
        else:
            raise ConfigError([f"console.unix_socket: {path} is in use by another process"])
        finally:
            probe.close()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        # Nobody can connect before listen(): chmod first, so there is no window.
        await trio.to_thread.run_sync(os.chmod, path, 0o600)
        sock.listen(64)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def serve_console(
    bot: NekoBot,
    cfg: ConsoleConfig,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the debug console until cancelled.

    Args:
        bot (NekoBot): The live handle (what the commands inspect and ``py``
            calls ``bot``).
        cfg (ConsoleConfig): ``[console]``: ``host``/``port`` (TCP; port 0
            picks a free one) or ``unix_socket`` (mode 0600), and ``token``.
        task_status: Started with the bound address: ``(host, port)`` for TCP,
            the socket path (str) for a Unix socket.

    Raises:
        ConfigError: if ``host`` is not a loopback address and no token is
            set, or the Unix socket path is taken.
        OSError: if the address cannot be bound.
    """
    server = _ConsoleServer(bot, cfg)
    listeners: list[trio.SocketListener]
    unix_path = cfg.unix_socket
    if unix_path:
        listener = await _unix_listener(unix_path)
        ino = (await trio.to_thread.run_sync(os.stat, unix_path)).st_ino
        listeners = [listener]
        address: Any = unix_path
    else:
        if not cfg.token and not is_loopback(cfg.host):
            raise ConfigError(
                [
                    f"console.token: required when console.host ({cfg.host!r}) is not a "
                    "loopback address (the console runs arbitrary Python)"
                ]
            )
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        if cfg.port == 0:
            # Each address would get its own ephemeral port: keep one.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        sockname = listeners[0].socket.getsockname()
        address = (sockname[0], sockname[1])
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, server.handle_connection, listeners)
            log.info("console listening on %s", address)
            task_status.started(address)
    finally:
        if unix_path:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_remove_socket, unix_path, ino)


def _remove_socket(path: str, ino: int) -> None:
    """Remove our socket file (not one another process bound since)."""
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------
# the client: ``nekobot console``
