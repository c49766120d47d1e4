"""The debug console.

``server`` (sessions, :func:`~nekobot.console.server.serve_console`),
``client`` (``nekobot console``), ``protocol`` (prompts), ``commands``,
``tasks`` (the task tree: tree, ps, where), ``repl`` (``py``).
"""
