"""The operators' HTTP API (DESIGN.md §6): a Starlette app served by Hypercorn's trio worker.

::

    port = await nursery.start(serve_api, bot, bot.config.api)

The parts: :mod:`~nekobot.api.security` (cross-origin refusal, the loopback
``Host`` check, the bearer token read from the config in force on every
request, the body size limit), :mod:`~nekobot.api.routes` (the handlers),
:mod:`~nekobot.api.bodies` (request bodies), :mod:`~nekobot.api.openapi`
(``GET /openapi.json``), :mod:`~nekobot.api.errors` and
:mod:`~nekobot.api.serialize` (every answer is JSON from the one converter,
secrets redacted), :mod:`~nekobot.api.deadline` (every route that waits on
the bot answers within :data:`~nekobot.api.deadline.OPERATOR_DEADLINE`
seconds: done, or 503 ``timeout`` naming what it waited for).

A bot whose ``[api] host`` is not a loopback address refuses to serve without a
token. ``[api] token`` and ``metrics_auth`` apply at once when changed; the
other ``[api]`` keys (``enable``, ``host``, ``port``, ``max_body_size``) are
read when the API starts.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import hypercorn.config
import hypercorn.trio
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..config.schema import ApiConfig
from ..config.validators import is_loopback
from ..errors import ConfigError
from .deadline import OPERATOR_DEADLINE, OperationNursery
from .errors import error_json, error_response
from .openapi import openapi_document as openapi_document
from .routes import Handler, Routes
from .security import Gate

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["create_app", "openapi_document", "serve_api"]

log = logging.getLogger("nekobot.api")


def _guarded(fn: Handler, max_body_size: int) -> Handler:
    """The handler, with every exception it raises mapped to its JSON error answer."""

    @functools.wraps(fn)
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except HTTPException:
            raise
        except Exception as exc:
            return error_response(exc, max_body_size)

    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_json(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        f"{exc.detail}: {request.method} {request.url.path}",
        headers=dict(exc.headers or {}),
    )


def create_app(
    bot: NekoBot, cfg: ApiConfig | None = None, *, deadline: float = OPERATOR_DEADLINE
) -> Starlette:
    """The Starlette app of the API, bound to one bot.

    Args:
        bot (NekoBot): The handle (only its documented attributes are used);
            the token and ``metrics_auth`` come from ``bot.config.api`` on every
            request.
        cfg (ApiConfig | None): What the API is started with (``host``,
            ``max_body_size``); default ``bot.config.api``.
        deadline (float): Seconds (Trio clock) a route waits on the bot before
            it answers 503 ``timeout``.
    """
    cfg = cfg if cfg is not None else bot.config.api
    routes = Routes(bot, cfg, deadline=deadline)
    return Starlette(
        routes=[
            Route(path, _guarded(fn, cfg.max_body_size), methods=[method])
            for method, path, fn in routes.routes()
        ],
        middleware=[Middleware(Gate, bot=bot, cfg=cfg), Middleware(OperationNursery)],
        exception_handlers={HTTPException: _http_error},
    )


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve_api(
    bot: NekoBot,
    cfg: ApiConfig,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API with Hypercorn's trio worker until cancelled.

    Start it with ``port = await nursery.start(serve_api, bot, cfg)``: the value
    is the bound TCP port (useful with ``port = 0``).

    Raises:
        ConfigError: if ``cfg.host`` is not a loopback address and ``cfg.token``
            is not set (the API would be open to the network).
        OSError: if the address cannot be bound.
    """
    if not cfg.token and not is_loopback(cfg.host):
        raise ConfigError(
            [f"api.token: required when api.host ({cfg.host!r}) is not a loopback address"]
        )
    config = hypercorn.config.Config()
    config.bind = [_bind_address(cfg.host, cfg.port)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    app: Any = create_app(bot, cfg)  # Starlette's ASGI types differ from Hypercorn's
    started = False
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                functools.partial(hypercorn.trio.serve, app, config, mode="asgi")
            )
            started = True
            port = int(binds[0].rpartition(":")[2])
            log.info("HTTP API listening on %s", ", ".join(binds))
            task_status.started(port)
    except BaseExceptionGroup as group:
        # A bind failure arrives wrapped in Hypercorn's nurseries: raise it plainly.
        bind_error, rest = group.split(OSError)
        if started or bind_error is None or rest is not None:
            raise
        first: BaseException = bind_error
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, OSError)
        raise OSError(
            first.errno, f"cannot serve the HTTP API on {config.bind[0]}: {first.strerror}"
        ) from first
