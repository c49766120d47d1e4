"""The ``nekobot`` command line (argparse).

- ``nekobot run [-c FILE]``: run the bot until SIGINT/SIGTERM (exit 0);
  SIGHUP re-reads the config file and applies it.
- ``nekobot check-config [-c FILE]``: validate and print a summary.
- ``nekobot reload [-c FILE]``: ask the running bot to re-read its config.
- ``nekobot console``: connect to a running bot's debug console.
- ``nekobot config …``: the config history (see ``nekobot config -h``).

Exit codes: 0 success, 2 a bad config or bad arguments, 1 any other failure.
The config file defaults to ``$NEKOBOT_CONFIG``, else ``./nekobot.toml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from .app import RootActorCrashed, find_plugin, open_nekobot
from .config.cli import add_config_commands
from .config.loader import load_config
from .config.redaction import RedactingFilter
from .config.schema import NekoBotConfig
from .console.client import add_console_command
from .errors import ConfigError

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

log = logging.getLogger("nekobot")


def _default_config() -> str:
    return os.environ.get("NEKOBOT_CONFIG", "nekobot.toml")


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="FILE",
        help="config file (default: $NEKOBOT_CONFIG or ./nekobot.toml)",
    )


def _load(path: str | None) -> tuple[NekoBotConfig, str]:
    p = path or _default_config()
    return load_config(p), p


def _print_config_error(exc: ConfigError) -> None:
    print(str(exc), file=sys.stderr)


def _pid_file(config: NekoBotConfig) -> Path:
    return config.data_path() / "nekobot.pid"


# ---- run ------------------------------------------------------------------


async def _run_bot(config_path: str) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with open_nekobot(config_path) as bot:
            pid_file = _pid_file(bot.config)
            await trio.to_thread.run_sync(_write_pid, pid_file)
            names = ", ".join(bot.config.platforms) or "none"
            log.info("nekobot %r running; platforms: %s", bot.config.bot.name, names)
            print(f"nekobot is running (platforms: {names}); Ctrl+C to stop", flush=True)
            try:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        try:
                            version = await bot.reload(author="sighup")
                            log.info("config reloaded (%s)", getattr(version, "version_id", "-"))
                        except ConfigError as exc:
                            log.error("reload refused; the running config stays:\n%s", exc)
                        except Exception:
                            log.exception("reload failed; the previous config was restored")
                        continue
                    log.info("%s received; stopping", signal.Signals(signum).name)
                    break
            finally:
                await trio.to_thread.run_sync(_remove_pid, pid_file)


def _write_pid(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def _is_nekobot(pid: int) -> bool:
    """Whether ``pid`` runs nekobot (Linux ``/proc``; elsewhere: whether it exists).

    A pid file left by a killed bot may name a pid the system has since given
    to another program: never signal that one.
    """
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        # `nekobot run …` (console script) or `python -m nekobot run …`
        for i, arg in enumerate(args[:-1]):
            if (arg == b"nekobot" or arg.endswith(b"/nekobot")) and args[i + 1] == b"run":
                return True
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _remove_pid(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config, path = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    logging.basicConfig(
        level=getattr(logging, config.bot.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    try:
        trio.run(_run_bot, path)
    except KeyboardInterrupt:
        # Ctrl+C before the signal receiver was installed (during start-up):
        # once it is, SIGINT reaches _run_bot as a signal, never as an exception.
        return EXIT_OK
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"nekobot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except RootActorCrashed as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            _print_config_error(cause)
            return EXIT_CONFIG
        if isinstance(cause, OSError):
            print(f"nekobot: {exc.actor} could not run: {cause}", file=sys.stderr)
        else:
            print(f"nekobot: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# ---- check-config ------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config, path = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_CONFIG
    problems = _plugin_problems(config)
    if problems:
        _print_config_error(ConfigError(problems, source=path))
        return EXIT_CONFIG
    print(f"{path}: OK")
    print(f"  bot: {config.bot.name!r}, data_dir {config.data_path()}")
    print(f"  plugins: {', '.join(config.bot.plugins) or 'none'}")
    for pid, pc in config.platforms.items():
        state = "enabled" if pc.enabled else "disabled"
        print(f"  platform {pid}: type {pc.type}, {state}")
    if not config.platforms:
        print("  platforms: none")
    api = config.api
    print(f"  api: {f'http://{api.host}:{api.port}' if api.enable else 'off'}")
    con = config.console
    where = con.unix_socket or f"{con.host}:{con.port}"
    print(f"  console: {where if con.enable else 'off'}")
    return EXIT_OK


def _plugin_problems(config: NekoBotConfig) -> list[str]:
    """Import each ``[bot] plugins`` entry (without calling it), as ``run`` would."""
    out: list[str] = []
    for i, spec in enumerate(config.bot.plugins):
        try:
            find_plugin(i, spec)
        except ConfigError as exc:
            out += exc.problems
    return out


# ---- reload ------------------------------------------------------------------


def cmd_reload(args: argparse.Namespace) -> int:
    try:
        config, path = _load(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        print("nothing was sent: the running bot keeps its config", file=sys.stderr)
        return EXIT_CONFIG
    pid_file = _pid_file(config)
    try:
        pid = int(pid_file.read_text().strip())
        if not _is_nekobot(pid):
            raise ProcessLookupError(f"pid {pid} is not a running nekobot (a stale pid file?)")
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"nekobot: no running bot found through {pid_file}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"sent SIGHUP to nekobot (pid {pid}); it re-reads {path}")
    return EXIT_OK


# ---- parser ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nekobot", description="Keeps a chat bot's platform connections alive."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run the bot (SIGINT/SIGTERM stop it, SIGHUP reloads)")
    _add_config_arg(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check-config", help="validate a config file and print a summary")
    _add_config_arg(p)
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("reload", help="make the running bot re-read its config file")
    _add_config_arg(p)
    p.set_defaults(func=cmd_reload)
    add_console_command(sub)
    add_config_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nekobot`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    return int(args.func(args))
