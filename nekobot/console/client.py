"""``nekobot console``: the client of the debug console.

It connects to ``[console]`` of the config file (or ``--host/--port``,
``--unix``), sends the token line if there is one, relays stdin lines (piped
input works) and prints the answers. Exit 0 when the session ended (also when
stdout's reader left early, ``| head``), 1 when the console cannot be reached
or refused the token, 2 for a bad config file or contradicting arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from ..config.loader import load_config
from ..config.schema import ConsoleConfig
from ..errors import ConfigError
from .protocol import AUTH_FAILED

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "ConsoleTarget",
    "add_console_command",
    "cmd_console",
    "resolve_target",
    "run_client",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


@attrs.frozen
class ConsoleTarget:
    """Where ``nekobot console`` connects."""

    host: str | None = None
    """TCP host (with :attr:`port`)."""
    port: int | None = None
    """TCP port."""
    unix_socket: str | None = None
    """A Unix socket path instead of TCP."""
    token: str | None = None
    """Sent as the first line when set."""

    def describe(self) -> str:
        """The address as the operator reads it."""
        return self.unix_socket if self.unix_socket else f"{self.host}:{self.port}"


def resolve_target(args: argparse.Namespace) -> ConsoleTarget:
    """The console address and token from the arguments and the config file.

    Explicit ``--host/--port/--unix/--token`` win; the rest comes from
    ``[console]`` of the config file (``-c``, else ``$NEKOBOT_CONFIG``, else
    ``./nekobot.toml``). The token may also come from ``$NEKOBOT_CONSOLE_TOKEN``.

    Raises:
        ConfigError: if the config file is needed (or named with ``-c``) and
            invalid, or the arguments contradict each other.
    """
    if args.unix and (args.host or args.port is not None):
        raise ConfigError(["console: give either --unix or --host/--port, not both"])
    explicit = bool(args.unix or args.port is not None)
    path = args.config or os.environ.get("NEKOBOT_CONFIG", "nekobot.toml")
    cfg: ConsoleConfig | None = None
    if args.config or not explicit:
        cfg = load_config(path).console
    elif Path(path).is_file():
        try:
            cfg = load_config(path).console
        except ConfigError:
            cfg = None  # explicit address: the default file is only a source of defaults
    token = args.token or os.environ.get("NEKOBOT_CONSOLE_TOKEN") or (cfg.token if cfg else None)
    if args.unix:
        return ConsoleTarget(unix_socket=args.unix, token=token)
    if cfg is not None and cfg.unix_socket and not args.host and args.port is None:
        return ConsoleTarget(unix_socket=cfg.unix_socket, token=token)
    host = args.host or (cfg.host if cfg else "127.0.0.1")
    port = args.port if args.port is not None else (cfg.port if cfg else None)
    if not port:
        raise ConfigError(
            [f"console.port: {port!r} names no fixed port (0 is ephemeral); pass --port"]
        )
    if cfg is not None and not cfg.enable and not explicit:
        print(f"note: [console] enable is false in {path}", file=sys.stderr)
    return ConsoleTarget(host=host, port=port, token=token)


async def run_client(
    target: ConsoleTarget,
    read_line: Callable[[], bytes],
    write: Callable[[bytes], None],
) -> int:
    """Relay lines from ``read_line`` to the console and its answers to ``write``.

    Args:
        target (ConsoleTarget): Where to connect.
        read_line: Blocking; returns one line (bytes, with its newline) or
            ``b""`` at end of input. Runs in a worker thread.
        write: Prints a chunk of the console's output. It may raise
            ``BrokenPipeError`` when its reader is gone: the session then
            ends quietly.

    Returns:
        int: 0 when the session ended normally (or the output's reader left),
        1 if authentication failed.

    Raises:
        OSError: if the console cannot be reached.
    """
    if target.unix_socket:
        stream: trio.abc.HalfCloseableStream = await trio.open_unix_socket(target.unix_socket)
    else:
        assert target.host is not None and target.port is not None
        stream = await trio.open_tcp_stream(target.host, target.port)
    head = bytearray()
    async with stream:
        if target.token:
            await stream.send_all(target.token.encode("utf-8") + b"\n")

        async def pump_input() -> None:
            while True:
                line = await trio.to_thread.run_sync(read_line, abandon_on_cancel=True)
                if not line:
                    break
                try:
                    await stream.send_all(line if line.endswith(b"\n") else line + b"\n")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
            try:
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_input)
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:
                    break
                if len(head) < 64:
                    head += data[:64]
                try:
                    write(bytes(data))
                except BrokenPipeError:
                    break  # nobody reads our output any more (`| head`): end quietly
            nursery.cancel_scope.cancel()
    return EXIT_FAILURE if bytes(head).startswith(AUTH_FAILED.encode()) else EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    """``nekobot console``: exit 0, 1 (cannot connect, refused) or 2 (bad config/arguments).

    Exit 0 as well, without a traceback, when stdout's reader leaves early
    (``nekobot console | head``).
    """
    try:
        target = resolve_target(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG

    def write(data: bytes) -> None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # ``nekobot console | head``: the reader left. Point stdout at
            # /dev/null so the flush at interpreter exit cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
            raise

    try:
        code = trio.run(run_client, target, sys.stdin.buffer.readline, write)
    except OSError as exc:
        print(
            f"nekobot console: cannot connect to {target.describe()}: {exc} "
            "(is the bot running with [console] enable = true?)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    if code == EXIT_FAILURE:
        print("nekobot console: the console refused the token (see --token)", file=sys.stderr)
    elif sys.stdout.isatty():
        print()
    return code


def add_console_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``nekobot console [-c FILE] [--host H --port P | --unix PATH] [--token T]``."""
    p = sub.add_parser(
        "console",
        help="connect to a running bot's debug console",
        description="Connect to a running bot's debug console and relay stdin lines "
        "(works with piped input). The address and token default to [console] of "
        "the config file.",
    )
    p.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="FILE",
        help="config file (default: $NEKOBOT_CONFIG or ./nekobot.toml)",
    )
    p.add_argument("--host", default=None, help="console host (default: [console] host)")
    p.add_argument("--port", type=int, default=None, help="console TCP port")
    p.add_argument("--unix", default=None, metavar="PATH", help="console Unix socket")
    p.add_argument(
        "--token",
        default=None,
        help="console token (default: $NEKOBOT_CONSOLE_TOKEN, else [console] token)",
    )
    p.set_defaults(func=cmd_console)
