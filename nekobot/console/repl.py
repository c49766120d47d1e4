"""The console's ``py`` mode: an async Python REPL in the bot's own Trio loop."""

from __future__ import annotations

import ast
import builtins
import codeop
import inspect
import pydoc
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .protocol import PY_MORE, PY_PROMPT

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["MAX_REPR", "PyRepl"]

MAX_REPR = 64 * 1024
"""Characters of one ``py`` result shown; the rest is cut with a note."""


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

    def __init__(self, bot: NekoBot | None) -> None:
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
