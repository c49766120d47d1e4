"""The live Trio task tree, as the console's ``tree``, ``ps`` and ``where`` show it.

Tasks are numbered by :class:`TaskIds` (small, stable while a task lives); a
task running a platform or an actor is marked with what it runs for, found as
the first ``self`` on its await stack that is a
:class:`~nekobot.platforms.base.PlatformActor` or a
:class:`~nekobot.core.actor.Actor`.
"""

from __future__ import annotations

import linecache
import math
import weakref
from collections.abc import Iterable
from pathlib import Path

import trio

from ..core.actor import Actor
from ..errors import NekoBotError
from ..platforms.base import PlatformActor

__all__ = ["CommandError", "TaskIds", "find_task", "ps", "tree", "where"]

_TRIO_DIR = str(Path(trio.__file__).parent)


class CommandError(NekoBotError):
    """A console command was refused; the message is shown to the operator."""


class TaskIds:
    """Small stable numbers for tasks, as long as they live."""

    def __init__(self) -> None:
        self._ids: weakref.WeakKeyDictionary[trio.lowlevel.Task, int] = weakref.WeakKeyDictionary()
        self._next = 1

    def of(self, task: trio.lowlevel.Task) -> int:
        """The task's number (a new one the first time it is seen)."""
        n = self._ids.get(task)
        if n is None:
            n = self._ids[task] = self._next
            self._next += 1
        return n


def _subject(task: trio.lowlevel.Task) -> str:
    """What a task runs for: the first platform or actor ``self`` on its await stack."""
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


def _walk(task: trio.lowlevel.Task, depth: int = 0) -> Iterable[tuple[int, trio.lowlevel.Task]]:
    yield depth, task
    for nursery in task.child_nurseries:
        for child in sorted(nursery.child_tasks, key=lambda t: t.name):
            yield from _walk(child, depth + 1)


def _root() -> trio.lowlevel.Task:
    root = trio.lowlevel.current_root_task()
    if root is None:  # pragma: no cover - always set inside trio.run
        raise CommandError("no Trio root task")
    return root


def tree(ids: TaskIds) -> str:
    """Every task, indented under its parent: ``#id name  [subject]``."""
    lines = []
    for depth, task in _walk(_root()):
        subject = _subject(task)
        note = f"  [{subject}]" if subject else ""
        lines.append(f"{'    ' * depth}#{ids.of(task)} {task.name}{note}")
    return "\n".join(lines) + "\n"


def ps(ids: TaskIds) -> str:
    """A table of every task: id, name, where it waits."""
    rows = [(f"#{ids.of(t)}", t.name, _where_line(t), _subject(t)) for _, t in _walk(_root())]
    width = max(len(r[1]) for r in rows)
    out = [f"{'ID':>5}  {'NAME':<{width}}  WAITS IN"]
    for tid, name, where_, subject in rows:
        extra = f"  [{subject}]" if subject else ""
        out.append(f"{tid:>5}  {name:<{width}}  {where_}{extra}")
    return "\n".join(out) + "\n"


def find_task(ids: TaskIds, key: str) -> trio.lowlevel.Task:
    """The task with this id (``#12`` or ``12``) or (part of a) name.

    Raises:
        CommandError: if none matches, or a name matches several.
    """
    tasks = [t for _, t in _walk(_root())]
    number = key.lstrip("#")
    if number.isdigit():
        for t in tasks:
            if ids.of(t) == int(number):
                return t
        raise CommandError(f"no task #{number} (see ps)")
    exact = [t for t in tasks if t.name == key]
    matches = exact or [t for t in tasks if key in t.name]
    if not matches:
        raise CommandError(f"no task named {key!r} (see ps)")
    if len(matches) > 1:
        names = ", ".join(f"#{ids.of(t)} {t.name}" for t in matches[:10])
        raise CommandError(f"{key!r} matches {len(matches)} tasks: {names}; use an id")
    return matches[0]


def where(ids: TaskIds, key: str) -> str:
    """The await frames of one task (see :func:`find_task`), innermost last.

    Raises:
        CommandError: if no single task matches ``key``.
    """
    task = find_task(ids, key)
    subject = _subject(task)
    out = [f"#{ids.of(task)} {task.name}" + (f"  [{subject}]" if subject else "")]
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
