"""``nekobot config …``: the config history from the command line.

::

    nekobot config history [-n N]
    nekobot config show V
    nekobot config diff V1 V2
    nekobot config rollback V
    nekobot config export V FILE [--include-secrets]
    nekobot config import FILE

Every command takes ``-c FILE`` (default ``$NEKOBOT_CONFIG``, else
``./nekobot.toml``); ``V`` is a version id, ``v3`` or ``3``.

How the commands reach the history (the design):

- **Read-only commands** (``history``, ``show``, ``diff``, ``export``) open the
  SQLite store under the config's ``bot.data_dir`` (``nekobot.db``)
  *read-only*. In WAL mode a reader beside a running bot is safe, and the CLI
  never creates, migrates or "recovers" the bot's database. (With
  ``buffer.durable = false`` the bot keeps its history in memory only; the
  CLI says so and points to the console or the API.)
- **rollback** and **import** change the config. When a bot is running they
  go *to that bot*, which applies the change and records the version itself —
  the bot owns the revision counter, so a second writer must not touch the
  store under it:

  1. ``rollback`` goes through the bot's HTTP API when ``[api] enable``
     (``POST /api/config/rollback`` with the ``[api] token``);
  2. otherwise (and always for ``import``, which has no API route) through the
     debug console when ``[console] enable`` (``config rollback V`` /
     ``config import FILE``; the file is read by the bot, so its absolute
     path is sent and must be readable there).

  A bot counts as running when it answers there. If it answers on neither but
  the pid file ``<data_dir>/nekobot.pid`` (written by ``nekobot run``) names
  a live process, the command refuses (exit 1) and changes nothing.
- **When no bot runs**, the change is recorded in the store (a ROLLBACK,
  resp. UPDATE version) and the config file is rewritten so that the next
  start uses it; the previous file is kept as ``FILE.bak-<UTC time>``.
  ``rollback`` writes the version's TOML (real secret values, since the file
  must work; the file's mode is kept); ``import`` copies the imported file's
  text as it is (``${NAME}`` references stay references).

Exit codes: 0 success; 2 a bad config file (the one given with ``-c``, or the
file to import) or bad arguments; 1 any other failure (unknown version, no
history, the bot unreachable or refusing the change).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
import trio

from ..api.serialize import dump_json
from ..console.client import ConsoleTarget, run_client
from ..console.protocol import AUTH_FAILED, PROMPT
from ..errors import ConfigError, NekoBotError
from ..storage import Store
from .loader import load_config
from .redaction import redact
from .schema import NekoBotConfig
from .versions import ConfigVersionManager

__all__ = ["add_config_commands"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

HTTP_TIMEOUT = 30.0
"""Seconds (wall clock) the CLI waits for the bot's HTTP API."""


class CliFailure(Exception):
    """A command failed; the message is printed and the exit code returned."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _BotUnreachable(Exception):
    """Nothing answered at the bot's API / console address."""


# --------------------------------------------------------------------------
# the store, read-only


class _ReadOnlyStore(Store):
    """A :class:`Store` opened ``mode=ro``: no file creation, no corruption recovery."""

    def _open_sync(self) -> None:
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)


class _DatabaseInUse(Exception):
    """Another process has the database open (a running bot)."""


class _ExclusiveStore(Store):
    """A :class:`Store` that holds SQLite's exclusive lock while it is open.

    Taking the lock fails at once when any other connection has the database
    open (in WAL mode every open connection holds a shared lock on the
    ``-shm`` file): that is how an offline change makes sure no bot — not
    even an embedded one without a pid file — is using the history. Holding
    it keeps a bot from starting on the store until the change is written.
    No corruption recovery here: a database that cannot be opened is an error.
    """

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=0)
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise _DatabaseInUse(self.path) from None
            raise
        self._conn = conn


def _db_path(config: NekoBotConfig) -> Path:
    return config.data_path() / "nekobot.db"


def _check_durable(config: NekoBotConfig) -> None:
    if not config.buffer.durable:
        raise CliFailure(
            "buffer.durable is false: the bot keeps its config history in memory only; "
            "use the console (`config history`) or GET /api/config/versions"
        )


async def _open_manager(config: NekoBotConfig, *, writable: bool) -> tuple[Store, Any]:
    _check_durable(config)
    db = _db_path(config)
    if not await trio.to_thread.run_sync(db.is_file):
        raise CliFailure(f"no config history at {db} (has the bot run with this data_dir?)")
    store: Store = _ExclusiveStore(db) if writable else _ReadOnlyStore(db)
    try:
        await store.open()
    except _DatabaseInUse:
        raise CliFailure(
            f"{db} is in use by another process (a running bot that could not be "
            "reached through [api] or [console]?); nothing was changed"
        ) from None
    manager = ConfigVersionManager(store=store)
    try:
        await manager.open()
    except sqlite3.Error as exc:
        await store.close()
        raise CliFailure(f"cannot read the config history in {db}: {exc}") from None
    return store, manager


async def _with_manager(
    config: NekoBotConfig, fn: Callable[[Any], Any], *, writable: bool = False
) -> Any:
    store, manager = await _open_manager(config, writable=writable)
    try:
        result = fn(manager)
        if hasattr(result, "__await__"):
            result = await result
        return result
    finally:
        await store.close()


def _run(config: NekoBotConfig, fn: Callable[[Any], Any], *, writable: bool = False) -> Any:
    return trio.run(lambda: _with_manager(config, fn, writable=writable))


# --------------------------------------------------------------------------
# formatting


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _line(v: Any) -> str:
    extra = f" (restores {v.restored_id})" if getattr(v, "restored_id", None) else ""
    return (
        f"{v.version_id:>6}  {_when(v.created_at)}  {v.change_type.value:<8}  "
        f"{v.author:<10}  {v.description}{extra}"
    )


# --------------------------------------------------------------------------
# reaching a running bot


def _api_rollback(config: NekoBotConfig, version_id: str) -> dict[str, Any]:
    api = config.api
    host = "127.0.0.1" if api.host in ("0.0.0.0", "") else api.host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    url = f"http://{host}:{api.port}/api/config/rollback"
    body = dump_json({"version_id": version_id, "description": "rollback from the CLI"})
    request = urllib.request.Request(
        url, data=body.encode("utf-8"), method="POST", headers={"Content-Type": "application/json"}
    )
    if api.token:
        request.add_header("Authorization", f"Bearer {api.token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as exc:
        try:
            err = json.loads(exc.read())["error"]
            message = f"{err.get('code', exc.code)}: {err.get('message', '')}"
        except Exception:
            message = f"HTTP {exc.code} {exc.reason}"
        if exc.code == 401:
            message += " (check [api] token)"
        raise CliFailure(f"the bot's API refused the rollback: {message}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise _BotUnreachable(url) from None
        raise CliFailure(f"cannot reach the bot's API at {url}: {exc.reason}") from None
    except ConnectionRefusedError:
        raise _BotUnreachable(url) from None


def _console_command(config: NekoBotConfig, command: str) -> str:
    con = config.console
    if con.unix_socket:
        target = ConsoleTarget(unix_socket=con.unix_socket, token=con.token)
    else:
        if not con.port:
            raise CliFailure("console.port is 0 (ephemeral): the CLI cannot find the console")
        target = ConsoleTarget(host=con.host, port=con.port, token=con.token)
    lines = [command.encode("utf-8") + b"\n", b"quit\n"]
    out = bytearray()
    try:
        code = trio.run(run_client, target, lambda: lines.pop(0) if lines else b"", out.extend)
    except (ConnectionRefusedError, FileNotFoundError):
        raise _BotUnreachable(target.describe()) from None
    except OSError as exc:
        raise CliFailure(f"cannot reach the bot's console at {target.describe()}: {exc}") from None
    text = out.decode("utf-8", "replace")
    if code != EXIT_OK or text.startswith(AUTH_FAILED):
        raise CliFailure("the bot's console refused the token (check [console] token)")
    # The answer is what comes between the first two prompts.
    parts = text.split(PROMPT)
    answer = parts[1] if len(parts) > 1 else text
    if answer.startswith("error:"):
        raise CliFailure(f"the bot refused: {answer.strip().removeprefix('error: ')}")
    return answer.strip()


def _pid_alive(config: NekoBotConfig) -> int | None:
    pid_file = config.data_path() / "nekobot.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _refuse_if_running(config: NekoBotConfig, tried: list[str]) -> None:
    pid = _pid_alive(config)
    if pid is not None:
        where = " or ".join(tried) if tried else "neither [api] nor [console] is enabled"
        raise CliFailure(
            f"a bot is running (pid {pid}) but cannot be reached ({where}); nothing was "
            "changed: enable [api] or [console], or stop the bot first"
        )


# --------------------------------------------------------------------------
# writing the config file (no bot running)


def _backup_and_write(config_path: Path, text: str) -> Path | None:
    """Keep ``FILE.bak-<UTC time>`` and write ``text`` atomically, keeping the mode."""
    backup: Path | None = None
    mode = 0o644
    if config_path.exists():
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = config_path.with_name(f"{config_path.name}.bak-{stamp}")
        shutil.copy2(config_path, backup)
        mode = config_path.stat().st_mode & 0o777
    tmp = config_path.with_name(f".{config_path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, config_path)
    return backup


# --------------------------------------------------------------------------
# commands


def cmd_history(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise CliFailure("-n must be >= 1", EXIT_CONFIG)
    versions = _run(config, lambda m: m.list_versions(args.n))
    if not versions:
        print("no config versions")
        return EXIT_OK
    current = versions[0].version_id
    for v in versions:
        print(("* " if v.version_id == current else "  ") + _line(v))
    return EXIT_OK


def cmd_show(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    version = _run(config, lambda m: m.get_version(args.version))
    print(f"# {_line(version).strip()}")
    print(f"# checksum sha256 {version.checksum}")
    print(tomli_w.dumps(redact(version.config)), end="")
    return EXIT_OK


def cmd_diff(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    diff = _run(config, lambda m: m.compare_versions(args.v1, args.v2))
    text = diff.unified_diff or f"{diff.from_id} and {diff.to_id} hold the same config\n"
    print(text, end="" if text.endswith("\n") else "\n")
    return EXIT_OK


def cmd_export(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    written = _run(
        config, lambda m: m.export_version(args.version, args.file, args.include_secrets)
    )
    note = (
        "" if args.include_secrets else ' (secrets written as "***"; --include-secrets keeps them)'
    )
    print(f"wrote {args.version} to {written}{note}")
    return EXIT_OK


def cmd_rollback(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    vid = args.version
    tried: list[str] = []
    if config.api.enable:
        try:
            answer = _api_rollback(config, vid)
        except _BotUnreachable as exc:
            tried.append(f"API at {exc}")
        else:
            version = answer.get("version", answer)
            new_id = version.get("version_id", "?") if isinstance(version, dict) else "?"
            print(f"the running bot rolled back to {vid}: recorded {new_id} (via its HTTP API)")
            return EXIT_OK
    if config.console.enable:
        try:
            answer_text = _console_command(config, f"config rollback {vid}")
        except _BotUnreachable as exc:
            tried.append(f"console at {exc}")
        else:
            print(f"the running bot {answer_text} (via its console)")
            return EXIT_OK
    _refuse_if_running(config, tried)

    async def offline(m: Any) -> Any:
        target = m.get_version(vid)
        version = await m.rollback_to_version(
            vid, f"rollback to {target.version_id} (CLI, offline)", author="cli"
        )
        return version, target.config

    version, data = _run(config, offline, writable=True)
    text = (
        f"# Rolled back to {version.restored_id} by `nekobot config rollback` "
        f"({_when(version.created_at)}); recorded as {version.version_id}.\n" + tomli_w.dumps(data)
    )
    backup = _backup_and_write(path, text)
    print(f"no bot is running: recorded {version.version_id} (rollback to {version.restored_id})")
    print(f"wrote {path}" + (f"; the previous file is {backup}" if backup else ""))
    print("the next start uses it")
    return EXIT_OK


def cmd_import(config: NekoBotConfig, path: Path, args: argparse.Namespace) -> int:
    source = Path(args.file)
    try:
        load_config(source)  # validate first: nothing happens for an invalid file
    except ConfigError as exc:
        raise CliFailure(f"{exc}\nnothing was imported", EXIT_CONFIG) from None
    tried: list[str] = []
    if config.console.enable:
        try:
            answer = _console_command(config, f"config import {_quote(str(source.resolve()))}")
        except _BotUnreachable as exc:
            tried.append(f"console at {exc}")
        else:
            print(f"the running bot {answer} (via its console)")
            return EXIT_OK
    if config.api.enable:
        tried.append("the HTTP API has no import route")
    _refuse_if_running(config, tried)
    version = _run(
        config,
        lambda m: m.import_version(source, f"import of {source.name} (CLI, offline)", author="cli"),
        writable=True,
    )
    same = source.resolve() == path.resolve()
    backup = None if same else _backup_and_write(path, source.read_text(encoding="utf-8"))
    print(f"no bot is running: recorded {version.version_id} (import of {source})")
    if not same:
        print(f"wrote {path}" + (f"; the previous file is {backup}" if backup else ""))
    print("the next start uses it")
    return EXIT_OK


def _quote(text: str) -> str:
    return shlex.quote(text)


_COMMANDS: dict[str, Callable[[NekoBotConfig, Path, argparse.Namespace], int]] = {
    "history": cmd_history,
    "show": cmd_show,
    "diff": cmd_diff,
    "export": cmd_export,
    "rollback": cmd_rollback,
    "import": cmd_import,
}


def cmd_config(args: argparse.Namespace) -> int:
    """Run one ``nekobot config`` subcommand; returns the exit code."""
    path = Path(args.config or os.environ.get("NEKOBOT_CONFIG", "nekobot.toml"))
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _COMMANDS[args.config_command](config, path, args)
    except CliFailure as exc:
        print(f"nekobot config {args.config_command}: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"nekobot config {args.config_command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (NekoBotError, OSError, sqlite3.Error) as exc:
        print(f"nekobot config {args.config_command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def add_config_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``nekobot config history | show | diff | rollback | export | import``."""
    p = sub.add_parser(
        "config",
        help="the config history: history, show, diff, rollback, export, import",
        description="The config history (every change is a version v<N>). "
        "rollback and import apply to a running bot through its API or console; "
        "with no bot running they record the version and rewrite the config file "
        "(keeping a backup).",
    )
    csub = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        q = csub.add_parser(name, help=help_)
        q.add_argument(
            "-c",
            "--config",
            default=None,
            metavar="FILE",
            help="config file (default: $NEKOBOT_CONFIG or ./nekobot.toml)",
        )
        q.set_defaults(func=cmd_config)
        return q

    q = add("history", "list config versions, newest first (* = current)")
    q.add_argument("-n", type=int, default=None, metavar="N", help="show at most N")
    q = add("show", "print one version's config as TOML (secrets redacted)")
    q.add_argument("version", metavar="V")
    q = add("diff", "unified diff of two versions' TOML (secrets redacted)")
    q.add_argument("v1", metavar="V1")
    q.add_argument("v2", metavar="V2")
    q = add("rollback", "roll back to a version (applied to a running bot)")
    q.add_argument("version", metavar="V")
    q = add("export", "write one version's config to a TOML file")
    q.add_argument("version", metavar="V")
    q.add_argument("file", metavar="FILE")
    q.add_argument(
        "--include-secrets", action="store_true", help="write secrets as they are (default: ***)"
    )
    q = add("import", "validate a TOML file and make it the config (applied to a running bot)")
    q.add_argument("file", metavar="FILE")
