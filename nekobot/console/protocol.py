"""The console's line protocol: the prompts and the refusal both sides know.

The client sends UTF-8 lines; after each answer the server sends a prompt
without a newline: :data:`PROMPT`, or :data:`PY_PROMPT` / :data:`PY_MORE` in
``py`` mode. A wrong or missing token gets :data:`AUTH_FAILED`, then the
server closes.
"""

from __future__ import annotations

__all__ = ["AUTH_FAILED", "PROMPT", "PY_MORE", "PY_PROMPT"]

PROMPT = "nekobot> "
"""The prompt after each answer (``py`` mode: ``>>> `` and ``... ``)."""
PY_PROMPT = ">>> "
"""The ``py`` prompt for a new statement."""
PY_MORE = "... "
"""The ``py`` prompt while a statement is incomplete."""
AUTH_FAILED = "error: authentication failed"
"""The only answer to a wrong or missing token; then the server closes."""
