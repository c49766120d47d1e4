"""The debug console's commands: each answers one command line with text.

:mod:`nekobot.console.server` serves them. Structured data is shown as
indented JSON from the one converter (:func:`nekobot.api.serialize.dump_json`),
configs as TOML, secrets redacted either way (:mod:`nekobot.config.redaction`).
A command that waits on the bot (start / stop / restart, enable / disable,
config rollback / import) answers within
:data:`~nekobot.api.deadline.OPERATOR_DEADLINE` seconds: done, or ``error:
<what>: no answer within … s`` (the same message as the API's 503 ``timeout``).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tomli_w
import trio

from ..api.deadline import OPERATOR_DEADLINE, within
from ..api.serialize import converter, dump_json
from ..config.loader import load_config
from ..config.redaction import redact
from ..config.versions import ConfigDiff, ConfigVersion
from ..core.actor import Actor
from ..monitor.status_monitor import StatusMonitor
from ..routing.message_router import MessageRouter
from . import tasks
from .tasks import CommandError, TaskIds

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["CommandError", "Commands"]

T = TypeVar("T")
Command = Callable[[list[str]], Awaitable[str]]

_HELP = """\
commands:
  help                       this text
  tree                       the live Trio task tree (actors and platforms marked)
  ps                         every task: id, name, where it waits
  where TASK                 the await frames of a task (id from ps, or a name)
  actors                     mailbox depth and statistics of the bot's actors
  platforms                  every platform: type, enabled, online, lifecycle
  faults [ID]                fault records (of one platform) and isolation status
  router                     router statistics
  buffer                     buffer statistics
  alerts                     open and recent alerts
  start|stop|restart ID      platform lifecycle (runtime manager)
  enable ID | disable ID [REASON]
                             manual enable / disable (fault isolation)
  config history [N]         the last N config versions (default 20)
  config show V              one version (secrets redacted)
  config diff V1 V2          the difference between two versions
  config rollback V          roll the running bot back to version V
  config import FILE         validate a TOML file (a path the bot can read), apply it
  py                         async Python REPL: `await` works, `bot` is the bot;
                             it runs in the bot's event loop (a blocking call
                             stalls the bot); `exit` or `quit` leaves it
  exit | quit                end the session
"""


_ACTOR_ATTRS = (
    "status_monitor",
    "message_buffer",
    "message_router",
    "fault_isolation_manager",
    "runtime_manager",
    "config_version_manager",
)


def _render(value: object) -> str:
    """Structured data as indented JSON, with secrets redacted."""
    return dump_json(value, indent=2)


def _version_id(text: str) -> str:
    return f"v{text}" if text.isdigit() else text


class Commands:
    """The console's commands for one session; each returns the text to print.

    Args:
        bot (NekoBot): The live handle.
        task_ids (TaskIds): The server's task numbering (shared by its sessions).
        operations (trio.Nursery): Where calls that wait on the bot run
            (:func:`~nekobot.api.deadline.within`): it outlives a command that
            timed out, and the session.
        deadline (float): Seconds (Trio clock) a command waits on the bot.
    """

    def __init__(
        self,
        bot: NekoBot,
        task_ids: TaskIds,
        operations: trio.Nursery,
        *,
        deadline: float = OPERATOR_DEADLINE,
    ) -> None:
        self.bot = bot
        self.task_ids = task_ids
        self.operations = operations
        self.deadline = deadline

    def table(self) -> dict[str, Command]:
        """Command name -> command."""
        return {
            "help": self.help,
            "tree": self.tree,
            "ps": self.ps,
            "where": self.where,
            "actors": self.actors,
            "platforms": self.platforms,
            "faults": self.faults,
            "router": self.router,
            "buffer": self.buffer,
            "alerts": self.alerts,
            "start": self._lifecycle("start"),
            "stop": self._lifecycle("stop"),
            "restart": self._lifecycle("restart"),
            "enable": self.enable,
            "disable": self.disable,
            "config": self.config,
        }

    # ---- helpers -----------------------------------------------------------

    async def _wait(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await within(self.operations, what, call, deadline=self.deadline)

    def _platform_id(self, args: list[str], usage: str) -> str:
        if len(args) != 1:
            raise CommandError(f"usage: {usage}")
        pid = args[0]
        configs = self.bot.runtime_manager.platform_configs
        if pid not in configs:
            known = ", ".join(sorted(configs)) or "none"
            raise CommandError(f"unknown platform {pid!r} (known: {known})")
        return pid

    @staticmethod
    def _no_args(args: list[str], name: str) -> None:
        if args:
            raise CommandError(f"usage: {name} (takes no arguments)")

    # ---- introspection -------------------------------------------------------

    async def help(self, args: list[str]) -> str:
        return _HELP

    async def tree(self, args: list[str]) -> str:
        self._no_args(args, "tree")
        return tasks.tree(self.task_ids)

    async def ps(self, args: list[str]) -> str:
        self._no_args(args, "ps")
        return tasks.ps(self.task_ids)

    async def where(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError("usage: where TASK (an id from ps, like #12, or a task name)")
        return tasks.where(self.task_ids, args[0])

    async def actors(self, args: list[str]) -> str:
        self._no_args(args, "actors")
        rows = []
        for attr in _ACTOR_ATTRS:
            part: object = getattr(self.bot, attr, None)
            if part is None:
                continue
            running = getattr(part, "running", None)
            tail = "" if running is None else f"  running {running}"
            row = f"{attr:<24}"
            if isinstance(part, Actor):
                st = part.mailbox_statistics()
                mean = st.received_total / st.batches_total if st.batches_total else 0.0
                cap = "inf" if st.capacity == math.inf else str(int(st.capacity))
                row += (
                    f" mailbox {st.depth}/{cap}  received {st.received_total}"
                    f"  batches {st.batches_total} (mean {mean:.1f})"
                    f"  senders waiting {st.senders_waiting}"
                )
            if isinstance(part, MessageRouter):
                rs = part.get_stats()
                row += (
                    f"  queue {rs.queued}  in flight {rs.in_flight}"
                    f"  retry waiting {rs.retry_waiting}  routed {rs.received}"
                    f"  processed {rs.processed}  failed {rs.failed}"
                )
            elif isinstance(part, StatusMonitor):
                ms = part.get_status()
                row += (
                    f"  applied {ms.records_applied}"
                    f"  dropped {ms.records_dropped}  rule errors {ms.rule_errors}"
                )
            rows.append(row + tail)
        if not rows:
            return "no actors\n"
        return "\n".join(rows) + "\n"

    async def platforms(self, args: list[str]) -> str:
        self._no_args(args, "platforms")
        rm = self.bot.runtime_manager
        configs = rm.platform_configs
        every = rm.get_platform_lifecycle_status()
        status = every if isinstance(every, Mapping) else {}
        if not configs and not status:
            return "no platforms\n"
        out: dict[str, Any] = {}
        for pid in sorted(set(configs) | set(status)):
            pc = configs.get(pid)
            actor = rm.get_platform_actor(pid)
            entry: dict[str, Any] = {
                "type": None if pc is None else pc.type,
                "enabled": None if pc is None else pc.enabled,
                "online": None if actor is None else bool(actor.online),
            }
            lifecycle = converter.unstructure(status.get(pid))
            if isinstance(lifecycle, Mapping):
                entry.update({k: v for k, v in lifecycle.items() if k != "platform_id"})
            elif lifecycle is not None:
                entry["lifecycle"] = lifecycle
            out[pid] = entry
        return _render(out) + "\n"

    async def faults(self, args: list[str]) -> str:
        fi = self.bot.fault_isolation_manager
        if len(args) > 1:
            raise CommandError("usage: faults [ID]")
        pid = self._platform_id(args, "faults [ID]") if args else None
        records = fi.get_fault_records(pid)
        status = fi.get_isolation_status()
        isolation: object = status if pid is None else status.platforms.get(pid)
        return _render({"records": records, "isolation": isolation}) + "\n"

    async def router(self, args: list[str]) -> str:
        self._no_args(args, "router")
        return _render(self.bot.message_router.get_stats()) + "\n"

    async def buffer(self, args: list[str]) -> str:
        self._no_args(args, "buffer")
        return _render(self.bot.message_buffer.get_buffer_stats()) + "\n"

    async def alerts(self, args: list[str]) -> str:
        self._no_args(args, "alerts")
        alerts = self.bot.status_monitor.get_alerts()
        if not alerts:
            return "no alerts\n"
        return _render(alerts) + "\n"

    # ---- actions ---------------------------------------------------------------

    def _lifecycle(self, verb: str) -> Command:
        async def run(args: list[str]) -> str:
            pid = self._platform_id(args, f"{verb} ID")
            rm = self.bot.runtime_manager
            method = {
                "start": rm.start_platform,
                "stop": rm.stop_platform,
                "restart": rm.restart_platform,
            }[verb]
            await self._wait(f"{verb} of platform {pid!r}", lambda: method(pid))
            return f"{verb}: {pid} done\n"

        return run

    async def enable(self, args: list[str]) -> str:
        pid = self._platform_id(args, "enable ID")
        fi = self.bot.fault_isolation_manager
        await self._wait(
            f"enabling platform {pid!r}", lambda: fi.enable_platform(pid, by="console")
        )
        return f"enabled {pid}\n"

    async def disable(self, args: list[str]) -> str:
        if not args:
            raise CommandError("usage: disable ID [REASON]")
        pid = self._platform_id(args[:1], "disable ID [REASON]")
        reason = " ".join(args[1:]) or "disabled from the console"
        fi = self.bot.fault_isolation_manager
        await self._wait(
            f"disabling platform {pid!r}",
            lambda: fi.disable_platform(pid, by="console", reason=reason),
        )
        return f"disabled {pid} ({reason})\n"

    async def config(self, args: list[str]) -> str:
        usage = "usage: config history [N] | show V | diff V1 V2 | rollback V | import FILE"
        if not args:
            raise CommandError(usage)
        cvm = self.bot.config_version_manager
        sub, rest = args[0], args[1:]
        if sub == "history":
            if len(rest) > 1 or (rest and not rest[0].isdigit()):
                raise CommandError("usage: config history [N] (N: how many, default 20)")
            versions = cvm.list_versions(int(rest[0]) if rest else 20)
            if not versions:
                return "no config versions\n"
            return "\n".join(_version_line(v) for v in versions) + "\n"
        if sub == "show" and len(rest) == 1:
            version = cvm.get_version(_version_id(rest[0]))
            body = tomli_w.dumps(redact(version.config))
            return f"# {_version_line(version)}\n{body}"
        if sub == "diff" and len(rest) == 2:
            return _render_diff(cvm.compare_versions(_version_id(rest[0]), _version_id(rest[1])))
        if sub == "import" and len(rest) == 1:
            path = rest[0]

            async def apply() -> Any:
                new_config = await trio.to_thread.run_sync(load_config, path)
                return await self.bot.apply_config(
                    new_config, description=f"import of {Path(path).name}", author="console"
                )

            version = await self._wait(f"import of {path}", apply)
            return f"imported and applied {path}: now {_version_line(version)}\n"
        if sub == "rollback" and len(rest) == 1:
            vid = _version_id(rest[0])
            version = await self._wait(
                f"rollback to {vid}",
                lambda: cvm.rollback_to_version(vid, "rollback from the console", author="console"),
            )
            return f"rolled back to {rest[0]}: now {_version_line(version)}\n"
        raise CommandError(usage)


def _version_line(v: ConfigVersion) -> str:
    d = converter.unstructure(v)
    parts = [str(d.get("version_id", d.get("revision", "?")))]
    created = d.get("created_at")
    if isinstance(created, int | float):
        stamp = datetime.datetime.fromtimestamp(created, datetime.UTC)
        parts.append(stamp.strftime("%Y-%m-%d %H:%M:%SZ"))
    for key in ("change_type", "author", "description"):
        if d.get(key) not in (None, ""):
            parts.append(str(d[key]))
    for key, label in (("parent_id", "parent"), ("restored_id", "restores")):
        if d.get(key):
            parts.append(f"{label} {d[key]}")
    return "  ".join(parts)


def _render_diff(diff: ConfigDiff) -> str:
    text = diff.unified_diff
    out = [
        "JSON Patch (RFC 6902):\n" + _render(diff.patch),
        text if text.strip() else "(no textual difference)",
    ]
    return "\n".join(o.rstrip("\n") for o in out) + "\n"
