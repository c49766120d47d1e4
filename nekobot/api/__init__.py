"""The operators' HTTP API (Starlette on Hypercorn's trio worker).

``app`` (create_app, serve_api), ``routes`` (the handlers), ``bodies`` (request
bodies), ``security`` (origin, Host, token, body size), ``openapi``,
``errors`` (the error shape), ``serialize`` (the one JSON output converter,
also used by the console and ``nekobot config``), ``deadline`` (every wait on
the bot answers in time).
"""
