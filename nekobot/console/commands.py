"""The debug console's commands, ``py`` REPL and output formatting.

:mod:`nekobot.console` serves them; this module only answers one command
line at a time. Every answer is text; structured data is shown as indented
JSON (configs as TOML) with secrets redacted (:func:`redact`).
"""

from __future__ import annotations

import ast
import builtins
import codeop
import datetime
import enum
import inspect
import json
import linecache
import math
import traceback
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import tomli_w
import trio

from ..errors import NekoBotError

__all__ = [
    "PY_MORE",
    "PY_PROMPT",
    "REDACTED",
    "CommandError",
    "Commands",
    "PyRepl",
    "TaskIds",
    "redact",
    "secret_values",
]

MAX_REPR = 64 * 1024
"""Characters of one ``py`` result shown; the rest is cut with a note."""
PY_PROMPT = ">>> "
PY_MORE = "... "

_SECRET_WORDS = ("token", "password", "secret", "passwd")
REDACTED = "***"


# --------------------------------------------------------------------------
# formatting and redaction


def _is_secret_key(key: Any) -> bool:
    k = str(key).lower()
    return any(word in k for word in _SECRET_WORDS)


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-named key's value replaced.

    Keys whose name contains ``token``, ``password``, ``passwd`` or ``secret``
    (``access_token``, ``api_token``, ``client_secret`` …) get ``"***"`` when
    their value is not empty.
    """
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if _is_secret_key(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def secret_values(value: Any, out: set[str]) -> set[str]:
    """Add to ``out`` every secret-named string value of 4+ characters in ``value``.

    The console masks these values wherever they appear in its output.
    """
    if isinstance(value, Mapping):
        for k, v in value.items():
            if _is_secret_key(k) and isinstance(v, str) and len(v) >= 4:
                out.add(v)
            else:
                secret_values(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            secret_values(v, out)
    return out


def _plain(obj: Any, _depth: int = 0) -> Any:
    """``obj`` as JSON-able data: attrs instances, enums, sets, paths, inf."""
    if _depth > 20:
        return repr(obj)
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if attrs.has(type(obj)):
        return {
            a.name: _plain(getattr(obj, a.name), _depth + 1)
            for a in attrs.fields(type(obj))
            if not a.name.startswith("_")
        }
    if isinstance(obj, Mapping):
        return {str(_plain(k, _depth + 1)): _plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = [_plain(v, _depth + 1) for v in obj]
        if isinstance(obj, set | frozenset):
            items.sort(key=repr)
        return items
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return str(obj)


def _render(obj: Any) -> str:
    """Structured data as indented JSON, with secrets redacted."""
    return json.dumps(redact(_plain(obj)), indent=2, ensure_ascii=False, sort_keys=False)


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class CommandError(NekoBotError):
    """A console command was refused; the message is shown to the operator."""


# --------------------------------------------------------------------------
# task tree


def _task_subject(task: trio.lowlevel.Task) -> str:
    """What a task runs for: the first platform or actor ``self`` on its await stack."""
    from ..core.actor import Actor
    from ..platforms.base import PlatformActor

    try:
        frames = list(task.iter_await_frames())
    except Exception:  # pragma: no cover - defensive: a frame in an odd state
        return ""
    actor_note = ""
    for frame, _ in frames:
        try:
            me = frame.f_locals.get("self")
        except Exception:  # pragma: no cover - defensive
            continue
        if isinstance(me, PlatformActor):
            state = "online" if me.online else "offline"
            kind = me.platform_type or type(me).__name__
            return f"platform {me.platform_id} ({kind}, {state})"
        if isinstance(me, Actor) and not actor_note:
            st = me.mailbox_statistics()
            cap = "inf" if st.capacity == math.inf else f"{int(st.capacity)}"
            actor_note = f"actor {me.name} (mailbox {st.depth}/{cap})"
    return actor_note


def _where_line(task: trio.lowlevel.Task) -> str:
    frames = list(task.iter_await_frames())
    if not frames:
        return "(not started)"
    # The innermost frame outside Trio itself says what the task waits for.
    outside = [(f, n) for f, n in frames if not f.f_code.co_filename.startswith(_TRIO_DIR)]
    frame, lineno = (outside or frames)[-1]
    return f"{frame.f_code.co_name} {Path(frame.f_code.co_filename).name}:{lineno}"


_TRIO_DIR = str(Path(trio.__file__).parent)


class TaskIds:
    """Small stable numbers for tasks, as long as they live."""

    def __init__(self) -> None:
        self._ids: weakref.WeakKeyDictionary[trio.lowlevel.Task, int] = weakref.WeakKeyDictionary()
        self._next = 1

    def of(self, task: trio.lowlevel.Task) -> int:
        n = self._ids.get(task)
        if n is None:
            n = self._ids[task] = self._next
            self._next += 1
        return n


def _walk(task: trio.lowlevel.Task, depth: int = 0) -> Iterable[tuple[int, trio.lowlevel.Task]]:
    yield depth, task
    for nursery in task.child_nurseries:
        for child in sorted(nursery.child_tasks, key=lambda t: t.name):
            yield from _walk(child, depth + 1)


# --------------------------------------------------------------------------
# the py REPL


def _refuse(name: str) -> Callable[..., Any]:
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(f"{name} would read the bot's own stdin; not available in the console")

    return refused


class PyRepl:
    """An async Python REPL: top-level ``await`` works; ``bot`` is the live handle.

    The code runs in the console session's task, inside the bot's Trio loop:
    ``await`` is fine, a blocking call (``time.sleep``) stalls the whole bot.
    ``print`` and ``help(obj)`` write to the session; ``input()``,
    ``breakpoint()`` and interactive ``help()`` would read the bot process's
    own stdin, so they raise instead.

    Whatever the code raises (``KeyboardInterrupt``, ``SystemExit``,
    ``GeneratorExit``, a bare ``BaseException``, groups of them) is printed as
    a traceback and the REPL goes on; only ``trio.Cancelled`` (the bot or the
    session shutting down) propagates. A Ctrl+C on the *bot's* terminal that
    lands while ``py`` code runs synchronously is caught the same way (press
    it again to stop the bot).
    """

    def __init__(self, bot: Any) -> None:
        self.output: list[str] = []
        self.namespace: dict[str, Any] = {
            "__name__": "__console__",
            "__builtins__": builtins,
            "bot": bot,
            "trio": trio,
            "print": self._print,
            "help": self._help,
            "input": _refuse("input()"),
            "breakpoint": _refuse("breakpoint()"),
        }
        self._buffer: list[str] = []
        self._compiler = codeop.CommandCompiler()
        self._compiler.compiler.flags |= ast.PyCF_ALLOW_TOP_LEVEL_AWAIT

    def _print(self, *args: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
        text = (" " if sep is None else sep).join(str(a) for a in args)
        self.output.append(text + ("\n" if end is None else end))

    def _help(self, *args: Any) -> None:
        if not args:
            raise RuntimeError("interactive help() is not available here; use help(obj)")
        import pydoc

        text = pydoc.render_doc(args[0], renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        self.output.append(text + "\n")

    @property
    def prompt(self) -> str:
        """``>>> ``, or ``... `` while a statement is incomplete."""
        return PY_MORE if self._buffer else PY_PROMPT

    async def push(self, line: str) -> None:
        """Add one line; run the statement when it is complete.

        Output (``print``, the result's ``repr``, a traceback) is appended to
        :attr:`output`.
        """
        self._buffer.append(line)
        source = "\n".join(self._buffer)
        try:
            complete = self._compiler(source, "<console>", "single")
        except (SyntaxError, ValueError, OverflowError) as exc:
            self._buffer.clear()
            self.output.append(self._format_exc(exc))
            return
        if complete is None:
            return
        self._buffer.clear()
        await self._run(source)

    async def _run(self, source: str) -> None:
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        try:
            tree = ast.parse(source, "<console>", "exec")
            last: ast.expr | None = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = tree.body.pop().value  # type: ignore[attr-defined]
            if tree.body:
                code = compile(tree, "<console>", "exec", flags=flags)
                result = eval(code, self.namespace)
                if inspect.iscoroutine(result):
                    await result
            if last is not None:
                code = compile(ast.Expression(last), "<console>", "eval", flags=flags)
                value = eval(code, self.namespace)
                if inspect.iscoroutine(value) and code.co_flags & inspect.CO_COROUTINE:
                    value = await value
                if value is not None:
                    self.namespace["_"] = value
                    text = repr(value)
                    if len(text) > MAX_REPR:
                        text = text[:MAX_REPR] + f"... ({len(text) - MAX_REPR} more characters)"
                    self.output.append(text + "\n")
        except trio.Cancelled:
            raise  # the bot (or this session) is shutting down: let Trio unwind
        except BaseExceptionGroup as group:
            # Report what the code raised; a Cancelled inside belongs to an
            # outer cancel scope (shutdown): re-raise that part.
            cancelled, rest = group.split(trio.Cancelled)
            if rest is not None:
                self.output.append(self._format_exc(rest))
            if cancelled is not None:
                raise cancelled from None
        except BaseException as exc:
            # Everything else the code raised, KeyboardInterrupt, SystemExit,
            # GeneratorExit and bare BaseException included, is the code's own
            # failure: reported, the session (and the bot) go on.
            self.output.append(self._format_exc(exc))

    @staticmethod
    def _format_exc(exc: BaseException) -> str:
        te = traceback.TracebackException.from_exception(exc)
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != __file__])
        lines = list(te.format())
        if len(te.stack) == 0 and lines and lines[0].startswith("Traceback"):
            lines = lines[1:]
        return "".join(lines)


# --------------------------------------------------------------------------
# commands

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


def _version_id(text: str) -> str:
    return f"v{text}" if text.isdigit() else text


class Commands:
    """The console's commands; each returns the text to print."""

    def __init__(self, bot: Any, task_ids: TaskIds) -> None:
        self.bot = bot
        self.task_ids = task_ids

    def table(self) -> dict[str, Callable[[list[str]], Awaitable[str]]]:
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
            "start": self._lifecycle("start_platform"),
            "stop": self._lifecycle("stop_platform"),
            "restart": self._lifecycle("restart_platform"),
            "enable": self.enable,
            "disable": self.disable,
            "config": self.config,
        }

    # ---- helpers -----------------------------------------------------------

    def _part(self, attr: str) -> Any:
        part = getattr(self.bot, attr, None)
        if part is None:
            raise CommandError(f"this bot has no {attr}")
        return part

    def _platform_id(self, args: list[str], usage: str) -> str:
        if len(args) != 1:
            raise CommandError(f"usage: {usage}")
        pid = args[0]
        configs = getattr(self._part("runtime_manager"), "platform_configs", None)
        if configs is not None and pid not in configs:
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
        root = trio.lowlevel.current_root_task()
        if root is None:  # pragma: no cover - always set inside trio.run
            raise CommandError("no Trio root task")
        lines = []
        for depth, task in _walk(root):
            subject = _task_subject(task)
            note = f"  [{subject}]" if subject else ""
            lines.append(f"{'    ' * depth}#{self.task_ids.of(task)} {task.name}{note}")
        return "\n".join(lines) + "\n"

    async def ps(self, args: list[str]) -> str:
        self._no_args(args, "ps")
        root = trio.lowlevel.current_root_task()
        assert root is not None
        rows = [
            (f"#{self.task_ids.of(t)}", t.name, _where_line(t), _task_subject(t))
            for _, t in _walk(root)
        ]
        width = max(len(r[1]) for r in rows)
        out = [f"{'ID':>5}  {'NAME':<{width}}  WAITS IN"]
        for tid, name, where, subject in rows:
            extra = f"  [{subject}]" if subject else ""
            out.append(f"{tid:>5}  {name:<{width}}  {where}{extra}")
        return "\n".join(out) + "\n"

    def _find_task(self, key: str) -> trio.lowlevel.Task:
        root = trio.lowlevel.current_root_task()
        assert root is not None
        tasks = [t for _, t in _walk(root)]
        number = key.lstrip("#")
        if number.isdigit():
            for t in tasks:
                if self.task_ids.of(t) == int(number):
                    return t
            raise CommandError(f"no task #{number} (see ps)")
        exact = [t for t in tasks if t.name == key]
        matches = exact or [t for t in tasks if key in t.name]
        if not matches:
            raise CommandError(f"no task named {key!r} (see ps)")
        if len(matches) > 1:
            names = ", ".join(f"#{self.task_ids.of(t)} {t.name}" for t in matches[:10])
            raise CommandError(f"{key!r} matches {len(matches)} tasks: {names}; use an id")
        return matches[0]

    async def where(self, args: list[str]) -> str:
        if len(args) != 1:
            raise CommandError("usage: where TASK (an id from ps, like #12, or a task name)")
        task = self._find_task(args[0])
        subject = _task_subject(task)
        out = [f"#{self.task_ids.of(task)} {task.name}" + (f"  [{subject}]" if subject else "")]
        frames = list(task.iter_await_frames())
        if not frames:
            out.append("  (no frames: the task has not started or is finishing)")
        for frame, lineno in frames:
            code = frame.f_code
            out.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}')
            text = linecache.getline(code.co_filename, lineno).strip()
            if text:
                out.append(f"    {text}")
        return "\n".join(out) + "\n"

    async def actors(self, args: list[str]) -> str:
        self._no_args(args, "actors")
        rows = []
        for attr in _ACTOR_ATTRS:
            part = getattr(self.bot, attr, None)
            if part is None:
                continue
            running = getattr(part, "running", None)
            tail = "" if running is None else f"  running {running}"
            stats_fn = getattr(part, "mailbox_statistics", None)
            if callable(stats_fn):
                st = stats_fn()
                mean = st.received_total / st.batches_total if st.batches_total else 0.0
                cap = "inf" if st.capacity == math.inf else str(int(st.capacity))
                rows.append(
                    f"{attr:<24} mailbox {st.depth}/{cap}  received {st.received_total}"
                    f"  batches {st.batches_total} (mean {mean:.1f})"
                    f"  senders waiting {st.senders_waiting}{tail}"
                )
            elif attr == "message_router" and hasattr(part, "get_stats"):
                st = part.get_stats()
                rows.append(
                    f"{attr:<24} queue {st.queued}  in flight {st.in_flight}"
                    f"  retry waiting {st.retry_waiting}  received {st.received}"
                    f"  processed {st.processed}  failed {st.failed}{tail}"
                )
            elif attr == "status_monitor" and hasattr(part, "get_status"):
                # The monitor's mailbox is a deque of records (read before a
                # getter applies it).
                pending = len(getattr(part, "_pending", ()))
                st = part.get_status()
                rows.append(
                    f"{attr:<24} mailbox {pending}  applied {st.records_applied}"
                    f"  dropped {st.records_dropped}  rule errors {st.rule_errors}{tail}"
                )
        if not rows:
            return "no actors\n"
        return "\n".join(rows) + "\n"

    async def platforms(self, args: list[str]) -> str:
        self._no_args(args, "platforms")
        rm = self._part("runtime_manager")
        configs = dict(getattr(rm, "platform_configs", {}) or {})
        status = await _maybe_await(rm.get_platform_lifecycle_status())
        if not configs and not status:
            return "no platforms\n"
        out: dict[str, Any] = {}
        for pid in sorted(set(configs) | set(status or {})):
            pc = configs.get(pid)
            actor = rm.get_platform_actor(pid) if hasattr(rm, "get_platform_actor") else None
            lifecycle = (status or {}).get(pid) if isinstance(status, Mapping) else None
            entry: dict[str, Any] = {
                "type": getattr(pc, "type", None),
                "enabled": getattr(pc, "enabled", None),
                "online": None if actor is None else bool(actor.online),
            }
            plain = _plain(lifecycle)
            if isinstance(plain, Mapping):
                entry.update({k: v for k, v in plain.items() if k != "platform_id"})
            elif plain is not None:
                entry["lifecycle"] = plain
            out[pid] = entry
        return _render(out) + "\n"

    async def faults(self, args: list[str]) -> str:
        fi = self._part("fault_isolation_manager")
        if len(args) > 1:
            raise CommandError("usage: faults [ID]")
        pid = self._platform_id(args, "faults [ID]") if args else None
        records = await _maybe_await(fi.get_fault_records(pid))
        status = await _maybe_await(fi.get_isolation_status())
        if pid is not None:
            per_platform = getattr(status, "platforms", None)
            if isinstance(per_platform, Mapping):
                status = per_platform.get(pid)
            elif isinstance(status, Mapping):
                status = status.get(pid, status)
        return _render({"records": records, "isolation": status}) + "\n"

    async def router(self, args: list[str]) -> str:
        self._no_args(args, "router")
        return _render(await _maybe_await(self._part("message_router").get_stats())) + "\n"

    async def buffer(self, args: list[str]) -> str:
        self._no_args(args, "buffer")
        stats = await _maybe_await(self._part("message_buffer").get_buffer_stats())
        return _render(stats) + "\n"

    async def alerts(self, args: list[str]) -> str:
        self._no_args(args, "alerts")
        monitor = self._part("status_monitor")
        alerts = await _maybe_await(monitor.get_alerts())
        if not alerts:
            return "no alerts\n"
        return _render(alerts) + "\n"

    # ---- actions ---------------------------------------------------------------

    def _lifecycle(self, method: str) -> Callable[[list[str]], Awaitable[str]]:
        verb = method.removesuffix("_platform")

        async def run(args: list[str]) -> str:
            pid = self._platform_id(args, f"{verb} ID")
            await getattr(self._part("runtime_manager"), method)(pid)
            return f"{verb}: {pid} done\n"

        return run

    async def enable(self, args: list[str]) -> str:
        pid = self._platform_id(args, "enable ID")
        await self._part("fault_isolation_manager").enable_platform(pid, by="console")
        return f"enabled {pid}\n"

    async def disable(self, args: list[str]) -> str:
        if not args:
            raise CommandError("usage: disable ID [REASON]")
        pid = self._platform_id(args[:1], "disable ID [REASON]")
        reason = " ".join(args[1:]) or "disabled from the console"
        await self._part("fault_isolation_manager").disable_platform(
            pid, by="console", reason=reason
        )
        return f"disabled {pid} ({reason})\n"

    async def config(self, args: list[str]) -> str:
        usage = "usage: config history [N] | show V | diff V1 V2 | rollback V | import FILE"
        if not args:
            raise CommandError(usage)
        cvm = self._part("config_version_manager")
        sub, rest = args[0], args[1:]
        if sub == "history":
            if len(rest) > 1 or (rest and not rest[0].isdigit()):
                raise CommandError("usage: config history [N] (N: how many, default 20)")
            limit = int(rest[0]) if rest else 20
            versions = await _maybe_await(cvm.list_versions(limit))
            if not versions:
                return "no config versions\n"
            return "\n".join(_version_line(v) for v in versions) + "\n"
        if sub == "show" and len(rest) == 1:
            version = await _maybe_await(cvm.get_version(_version_id(rest[0])))
            body = tomli_w.dumps(redact(version.config))
            return f"# {_version_line(version)}\n{body}"
        if sub == "diff" and len(rest) == 2:
            diff = await _maybe_await(
                cvm.compare_versions(_version_id(rest[0]), _version_id(rest[1]))
            )
            return _render_diff(diff)
        if sub == "import" and len(rest) == 1:
            from ..config.loader import load_config

            new_config = await trio.to_thread.run_sync(load_config, rest[0])
            version = await self.bot.apply_config(
                new_config, description=f"import of {Path(rest[0]).name}", author="console"
            )
            return f"imported and applied {rest[0]}: now {_version_line(version)}\n"
        if sub == "rollback" and len(rest) == 1:
            version = await _maybe_await(
                cvm.rollback_to_version(
                    _version_id(rest[0]), "rollback from the console", author="console"
                )
            )
            return f"rolled back to {rest[0]}: now {_version_line(version)}\n"
        raise CommandError(usage)


def _version_line(v: Any) -> str:
    to_dict = getattr(v, "to_dict", None)
    d = to_dict() if callable(to_dict) else _plain(v)
    if not isinstance(d, Mapping):
        return str(v)
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


def _render_diff(diff: Any) -> str:
    d = _plain(diff)
    if isinstance(d, Mapping):
        text = d.get("unified_diff") or d.get("text_diff") or d.get("diff")
        patch = d.get("json_patch") or d.get("patch")
        out = []
        if patch is not None:
            out.append("JSON Patch (RFC 6902):\n" + _render(patch))
        if isinstance(text, str):
            out.append(text if text.strip() else "(no textual difference)")
        if out:
            return "\n".join(o.rstrip("\n") for o in out) + "\n"
    return _render(d) + "\n"
