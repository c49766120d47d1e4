"""The operators' HTTP API (DESIGN.md §6): a Starlette app served by Hypercorn's trio worker.

::

    port = await nursery.start(serve_api, bot, bot.config.api)

Every route under ``/api`` needs ``Authorization: Bearer <token>`` when
``[api] token`` is set (compared in constant time with
:func:`hmac.compare_digest`); ``/healthz``, ``/readyz`` and ``/openapi.json``
are open; ``/metrics`` needs the token only with ``[api] metrics_auth``. A bot
whose ``[api] host`` is not a loopback address refuses to serve without a token.

The token (and ``metrics_auth``) checked is that of the config in force,
``bot.config.api``, read on every request: a token rotated by
``bot.apply_config`` / ``bot.reload`` takes effect at once. If the API was
started on a non-loopback address and the config in force has no token, every
``/api`` request is refused (401): removing the token never opens a public API.
The other ``[api]`` keys (``enable``, ``host``, ``port``, ``max_body_size``)
are read when the API starts; changing them needs a restart of the bot.

Cross-site requests (CSRF): a state-changing request (``POST``, ``PUT``,
``PATCH``, ``DELETE``) whose ``Origin`` header is not the API's own origin
(the request's scheme and ``Host`` header: ``scheme://host:port``, default
ports equal to none; ``Origin: null`` is not the API's own), or that has no
``Origin`` but a ``Sec-Fetch-Site`` header other than ``same-origin`` or
``none``, is refused with 403 ``cross_origin`` before anything else, with or
without a token. So a web page the operator opens cannot stop platforms on a
loopback API without a token. Requests without these headers (curl, scripts,
the console) are not affected, nor are reads (``GET``). Behind a reverse
proxy, the proxy must pass the ``Host`` the browser used.

Bodies are JSON objects validated with cattrs (unknown keys refused), nested at
most 64 levels deep; a request body above ``[api] max_body_size`` bytes gets
413. Errors are ``{"error": {"code": ..., "message": ...}}``: 400 a bad body or
parameter (the message names the field, ``body`` for the body as a whole), 401
no or wrong token, 403 a cross-origin change, 404 an unknown platform, version
or alert, 409 a conflict (a platform that exists, a stale ``base_revision``, a
platform that cannot start, e.g. its port is in use). Config-changing routes
take an optional ``base_revision`` (check-and-set against the config history).
Secrets (``token``, ``access_token``, ``password``, ``secret`` keys) are
redacted in every answer.

The app reads the bot only through the ``NekoBot`` handle's attributes:
``runtime_manager``, ``message_router``, ``message_buffer``, ``status_monitor``,
``fault_isolation_manager``, ``config_version_manager``, ``config``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import hmac
import inspect
import json
import logging
import math
import re
import types
import typing
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import attrs
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config.loader import parse_config
from ..config.schema import ApiConfig, converter, structure_section
from ..config.validators import is_loopback
from ..config.versions import redact
from ..errors import (
    ActorStopped,
    CallTimeout,
    ConfigError,
    Conflict,
    InvalidRequest,
    NekoBotError,
    PlatformNotFound,
    PlatformOffline,
    RevisionConflict,
)
from ..platforms.connection_manager import ConnectionConfig
from ..runtime.runtime_manager import PlatformStartError

__all__ = ["create_app", "openapi_document", "serve_api"]

log = logging.getLogger("nekobot.api")

Handler = Callable[[Request], Awaitable[Response]]

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that change state: refused from another origin (CSRF)."""


# --------------------------------------------------------------------------
# errors


class ApiError(Exception):
    """An error answer: ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


class _BodyTooLarge(Exception):
    pass


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _code_of(exc: BaseException) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _error_response(exc: BaseException, max_body_size: int) -> Response:
    """Map an exception from a handler to its JSON error answer."""
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.code, exc.message)
    if isinstance(exc, _BodyTooLarge):
        return _error(413, "payload_too_large", f"request body exceeds {max_body_size} bytes")
    if isinstance(exc, ConfigError):
        return _error(400, "invalid_config", "; ".join(exc.problems))
    if isinstance(exc, PlatformStartError):
        # The request was fine; the platform could not start (e.g. its port is in use).
        return _error(409, "platform_start_error", str(exc))
    if isinstance(exc, PlatformOffline):
        # The request was fine; the platform has no live link right now.
        return _error(409, "platform_offline", str(exc))
    if isinstance(exc, NekoBotError) and isinstance(exc, LookupError):
        return _error(404, _code_of(exc), str(exc))
    if isinstance(exc, Conflict):
        return _error(409, _code_of(exc), str(exc))
    if isinstance(exc, InvalidRequest | ValueError):
        return _error(
            400, _code_of(exc) if isinstance(exc, NekoBotError) else "invalid_request", str(exc)
        )
    if isinstance(exc, CallTimeout):
        return _error(504, "call_timeout", str(exc))
    if isinstance(exc, ActorStopped):
        return _error(503, "actor_stopped", str(exc))
    if isinstance(exc, NekoBotError):
        return _error(500, _code_of(exc), str(exc))
    log.error("API handler failed", exc_info=exc)
    return _error(500, "internal_error", f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------
# JSON


def to_jsonable(value: Any) -> Any:
    """A JSON-able copy of a snapshot: the object's own ``to_dict()`` when it has
    one, else attrs/dataclass instances become objects; an ``IntEnum`` becomes
    its name (``"WARNING"``), another enum its value (``"running"``);
    non-finite floats become strings (``"inf"``)."""
    if isinstance(value, enum.IntEnum):  # before int: an IntEnum is an int
        return value.name
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict) and not isinstance(value, type):
        return to_jsonable(to_dict())  # the part's own JSON form
    if attrs.has(type(value)):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in attrs.fields(type(value))
            if not f.name.startswith("_")
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple | set | frozenset | collections.deque):
        return [to_jsonable(v) for v in value]
    try:
        return [to_jsonable(v) for v in iter(value)]
    except TypeError:
        return str(value)


def _ok(data: Mapping[str, Any], status: int = 200) -> Response:
    return JSONResponse(redact(to_jsonable(data)), status_code=status)


# --------------------------------------------------------------------------
# request bodies (validated with cattrs; the message names the field)


@attrs.frozen(kw_only=True)
class LifecycleRequest:
    """``POST /api/runtime/lifecycle``."""

    platform_id: str
    action: Literal["start", "stop", "restart"]


@attrs.frozen(kw_only=True)
class AddPlatformRequest:
    """``POST /api/runtime/platforms``."""

    platform_id: str
    platform_config: dict[str, Any]
    """A ``[platforms.<id>]`` table as JSON (``type``, ``enabled``, ``connection``, own keys)."""
    auto_start: bool = True
    base_revision: int | None = None


@attrs.frozen(kw_only=True)
class RemovePlatformRequest:
    """``DELETE /api/runtime/platforms``."""

    platform_id: str
    base_revision: int | None = None


@attrs.frozen(kw_only=True)
class ConnectionConfigRequest:
    """``POST /api/connection/config``: keys of ``ConnectionConfig`` to change."""

    platform_id: str
    connection: dict[str, Any]
    base_revision: int | None = None


@attrs.frozen(kw_only=True)
class EnableRequest:
    """``POST /api/fault/platform/enable``."""

    platform_id: str


@attrs.frozen(kw_only=True)
class DisableRequest:
    """``POST /api/fault/platform/disable``."""

    platform_id: str
    reason: str = ""


@attrs.frozen(kw_only=True)
class ReplayRequest:
    """``POST /api/message/buffer/replay``."""

    platform_id: str
    max_count: int | None = None


@attrs.frozen(kw_only=True)
class ResolveAlertRequest:
    """``POST /api/monitor/alerts/resolve``."""

    alert_id: str


@attrs.frozen(kw_only=True)
class RollbackRequest:
    """``POST /api/config/rollback``."""

    version_id: str
    description: str = ""
    base_revision: int | None = None


T = typing.TypeVar("T")


async def _read_body(request: Request) -> bytes:
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    return b"".join(chunks)


MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays a request body may have (the body is level 1)."""

_TOO_DEEP = f"body: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


async def _body(request: Request, cls: type[T]) -> T:
    raw = await _read_body(request)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise ApiError(400, "invalid_json", _TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({exc})") from None
    if _too_deep(data):
        # Refused before cattrs, redaction and the config parser recurse into it.
        raise ApiError(400, "invalid_json", _TOO_DEEP)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "body: expected a JSON object")
    value, problems = structure_section(data, cls, "")
    if problems:
        raise ApiError(400, "invalid_request", "; ".join(problems))
    return typing.cast(T, value)


def _query_int(request: Request, name: str, default: int | None, lo: int = 1) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"{name}: expected an integer, got {raw!r}"
        ) from None
    if n < lo:
        raise ApiError(400, "invalid_request", f"{name}: must be >= {lo}, got {n}")
    return n


def _query_required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ApiError(400, "invalid_request", f"{name}: required query parameter missing")
    return value


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# --------------------------------------------------------------------------
# OpenAPI: one entry per route, declared next to its handler

_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {}


def _op(
    method: str,
    path: str,
    summary: str,
    *,
    returns: Mapping[str, Any],
    body: type[Any] | None = None,
    query: Mapping[str, tuple[str, bool, str]] | None = None,
    errors: tuple[int, ...] = (),
    status: int = 200,
) -> Callable[[T], T]:
    """Declare a route's OpenAPI operation (``returns``: top-level keys and their schemas)."""

    def deco(fn: T) -> T:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": getattr(fn, "__name__", path).lstrip("_"),
            "responses": {
                str(status): {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": list(returns),
                                "properties": dict(returns),
                            }
                        }
                    },
                }
            },
        }
        if query:
            op["parameters"] = [
                {"name": n, "in": "query", "required": req, "description": d, "schema": {"type": t}}
                for n, (t, req, d) in query.items()
            ]
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{body.__name__}"}
                    }
                },
            }
            _BODY_SCHEMAS[body.__name__] = body
        all_errors = set(errors)
        if body is not None or query:
            all_errors.add(400)
        if method in _UNSAFE_METHODS:
            all_errors.add(403)  # a cross-origin change
        if path.startswith("/api"):
            all_errors.add(401)
            op["security"] = [{"bearer": []}]
        for code in sorted(all_errors):
            op["responses"][str(code)] = {"$ref": f"#/components/responses/E{code}"}
        _OPERATIONS[(method, path)] = op
        return fn

    return deco


_BODY_SCHEMAS: dict[str, type[Any]] = {}

_OBJ = {"type": "object"}
_ARR = {"type": "array"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_NSTR = {"type": ["string", "null"]}


def _json_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_json_schema(a) for a in typing.get_args(tp)]}
    if tp is str:
        return dict(_STR)
    if tp is bool:
        return dict(_BOOL)
    if tp is int:
        return dict(_INT)
    if tp is float:
        return {"type": "number"}
    if tp is dict or origin is dict:
        return dict(_OBJ)
    if tp is list or origin is list:
        return dict(_ARR)
    return {}


def _class_schema(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {}
    required = []
    for f in attrs.fields(cls):
        props[f.name] = _json_schema(hints[f.name])
        if f.default is attrs.NOTHING:
            required.append(f.name)
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
        "description": (cls.__doc__ or "").strip(),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route (``GET /openapi.json``)."""
    from .. import __version__

    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in sorted(_OPERATIONS.items(), key=lambda kv: kv[0][1]):
        paths.setdefault(path, {})[method.lower()] = op
    error_schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": _STR, "message": _STR},
            }
        },
    }
    reasons = {
        400: "Bad request (the message names the field)",
        401: "No or wrong bearer token",
        404: "Unknown platform, version or alert",
        403: "A state change from another origin (cross-site request)",
        409: "Conflict (exists already, a stale base_revision, or it cannot start)",
        413: "Request body too large",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NekoBot API",
            "version": __version__,
            "description": "Operate a running NekoBot: platforms, faults, messages, config.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": error_schema,
                **{name: _class_schema(cls) for name, cls in sorted(_BODY_SCHEMAS.items())},
            },
            "responses": {
                f"E{code}": {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
                for code, text in reasons.items()
            },
        },
    }


# --------------------------------------------------------------------------
# the app


class _Api:
    """The route handlers of one app, bound to one bot."""

    def __init__(self, bot: Any, cfg: ApiConfig) -> None:
        self.bot = bot
        self.cfg = cfg
        self._change_lock = trio.Lock()

    # ---- helpers -------------------------------------------------------------

    def _known(self, pid: str) -> None:
        if pid not in self.bot.runtime_manager.platform_configs:
            raise PlatformNotFound(pid)

    async def _changing(
        self, base_revision: int | None, change: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run a config change; check-and-set against the config history first."""
        async with self._change_lock:
            if base_revision is not None:
                current = self.bot.config_version_manager.current_revision
                if base_revision != (current or 0):
                    raise RevisionConflict(base_revision, current)
            return await change()

    def _lifecycle(self, pid: str | None = None) -> Any:
        return self.bot.runtime_manager.get_platform_lifecycle_status(pid)

    # ---- runtime -------------------------------------------------------------

    @_op(
        "GET",
        "/api/runtime/lifecycle",
        "Lifecycle state of every platform, or of one",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": _OBJ},
        errors=(404,),
    )
    async def get_lifecycle(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        if pid:
            self._known(pid)
            return _ok({"platforms": {pid: self._lifecycle(pid)}})
        return _ok({"platforms": self._lifecycle()})

    @_op(
        "POST",
        "/api/runtime/lifecycle",
        "Start, stop or restart a platform",
        body=LifecycleRequest,
        returns={"platform_id": _STR, "action": _STR, "status": _OBJ},
        errors=(404, 409),
    )
    async def post_lifecycle(self, request: Request) -> Response:
        req = await _body(request, LifecycleRequest)
        rm = self.bot.runtime_manager
        fn = {"start": rm.start_platform, "stop": rm.stop_platform, "restart": rm.restart_platform}
        await fn[req.action](req.platform_id)
        return _ok(
            {
                "platform_id": req.platform_id,
                "action": req.action,
                "status": self._lifecycle(req.platform_id),
            }
        )

    @_op(
        "POST",
        "/api/runtime/platforms",
        "Add a platform (started at once unless auto_start is false)",
        body=AddPlatformRequest,
        returns={"platform_id": _STR, "status": _OBJ, "revision": {"type": ["integer", "null"]}},
        errors=(409,),
        status=201,
    )
    async def add_platform(self, request: Request) -> Response:
        req = await _body(request, AddPlatformRequest)
        # No ${ENV} expansion for configs that arrive over the network.
        parsed = parse_config({"platforms": {req.platform_id: req.platform_config}}, env={})
        pc = parsed.platforms[req.platform_id]
        rm = self.bot.runtime_manager
        await self._changing(
            req.base_revision,
            lambda: rm.add_platform(req.platform_id, pc, auto_start=req.auto_start),
        )
        return _ok(
            {
                "platform_id": req.platform_id,
                "status": self._lifecycle(req.platform_id),
                "revision": self.bot.config_version_manager.current_revision,
            },
            status=201,
        )

    @_op(
        "DELETE",
        "/api/runtime/platforms",
        "Remove a platform (stopped first)",
        body=RemovePlatformRequest,
        query={"platform_id": ("string", False, "Instead of the body")},
        returns={"platform_id": _STR, "removed": _BOOL, "revision": {"type": ["integer", "null"]}},
        errors=(404, 409),
    )
    async def remove_platform(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        base: int | None = None
        if pid:
            base = _query_int(request, "base_revision", None, lo=0)
        else:
            req = await _body(request, RemovePlatformRequest)
            pid, base = req.platform_id, req.base_revision
        self._known(pid)
        rm = self.bot.runtime_manager
        await self._changing(base, lambda: rm.remove_platform(pid))
        return _ok(
            {
                "platform_id": pid,
                "removed": True,
                "revision": self.bot.config_version_manager.current_revision,
            }
        )

    # ---- connection ----------------------------------------------------------

    def _connection_entry(self, pid: str) -> dict[str, Any]:
        rm = self.bot.runtime_manager
        pc = rm.platform_configs[pid]
        actor = rm.get_platform_actor(pid)
        stats: Any = None
        for owner in (actor, getattr(actor, "connection_manager", None)):
            getter = getattr(owner, "get_connection_stats", None)
            if callable(getter):
                stats = getter()
                break
        return {
            "running": actor is not None,
            "online": bool(actor is not None and actor.online),
            "config": converter.unstructure(pc.connection),
            "stats": stats,
        }

    @_op(
        "GET",
        "/api/connection/stats",
        "Connection stats and settings per platform",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": _OBJ},
        errors=(404,),
    )
    async def connection_stats(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        if pid:
            self._known(pid)
            pids = [pid]
        else:
            pids = list(self.bot.runtime_manager.platform_configs)
        return _ok({"platforms": {p: self._connection_entry(p) for p in pids}})

    @_op(
        "POST",
        "/api/connection/config",
        "Change a platform's [platforms.<id>.connection] (the platform is rebuilt)",
        body=ConnectionConfigRequest,
        returns={
            "platform_id": _STR,
            "connection": _OBJ,
            "revision": {"type": ["integer", "null"]},
        },
        errors=(404, 409),
    )
    async def connection_config(self, request: Request) -> Response:
        req = await _body(request, ConnectionConfigRequest)
        self._known(req.platform_id)
        rm = self.bot.runtime_manager
        current = converter.unstructure(rm.platform_configs[req.platform_id].connection)
        new, problems = structure_section(
            {**current, **req.connection}, ConnectionConfig, "connection"
        )
        if problems:  # each names its key: "connection.jitter: must be >= 0, got -1.0"
            raise ApiError(400, "invalid_request", "; ".join(problems))
        merged = converter.unstructure(new)
        await self._changing(
            req.base_revision,
            lambda: rm.update_platform_config(req.platform_id, {"connection": merged}),
        )
        return _ok(
            {
                "platform_id": req.platform_id,
                "connection": merged,
                "revision": self.bot.config_version_manager.current_revision,
            }
        )

    # ---- faults --------------------------------------------------------------

    @_op(
        "GET",
        "/api/fault/isolation",
        "Isolation status: breakers, manual and automatic disables, degradation",
        returns={"isolation": _OBJ},
    )
    async def fault_isolation(self, request: Request) -> Response:
        return _ok({"isolation": self.bot.fault_isolation_manager.get_isolation_status()})

    @_op(
        "GET",
        "/api/fault/records",
        "Fault records (newest last), of every platform or one",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"records": _ARR},
        errors=(404,),
    )
    async def fault_records(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id") or None
        if pid is not None:
            self._known(pid)
        return _ok({"records": self.bot.fault_isolation_manager.get_fault_records(pid)})

    @_op(
        "POST",
        "/api/fault/platform/enable",
        "Enable a platform a person disabled (also closes its breaker)",
        body=EnableRequest,
        returns={"platform_id": _STR, "enabled": _BOOL},
        errors=(404, 409),
    )
    async def enable_platform(self, request: Request) -> Response:
        req = await _body(request, EnableRequest)
        self._known(req.platform_id)
        await self.bot.fault_isolation_manager.enable_platform(req.platform_id, by="api")
        return _ok({"platform_id": req.platform_id, "enabled": True})

    @_op(
        "POST",
        "/api/fault/platform/disable",
        "Disable a platform by hand; no automatic path starts it again",
        body=DisableRequest,
        returns={"platform_id": _STR, "enabled": _BOOL},
        errors=(404,),
    )
    async def disable_platform(self, request: Request) -> Response:
        req = await _body(request, DisableRequest)
        self._known(req.platform_id)
        await self.bot.fault_isolation_manager.disable_platform(
            req.platform_id, by="api", reason=req.reason
        )
        return _ok({"platform_id": req.platform_id, "enabled": False})

    # ---- messages ------------------------------------------------------------

    @_op("GET", "/api/message/router/stats", "Router stats", returns={"stats": _OBJ})
    async def router_stats(self, request: Request) -> Response:
        return _ok({"stats": self.bot.message_router.get_stats()})

    @_op("GET", "/api/message/buffer/stats", "Buffer stats", returns={"stats": _OBJ})
    async def buffer_stats(self, request: Request) -> Response:
        return _ok({"stats": self.bot.message_buffer.get_buffer_stats()})

    @_op(
        "GET",
        "/api/message/buffer/messages",
        "Messages buffered for one platform, in replay order",
        query={
            "platform_id": ("string", True, "The platform"),
            "limit": ("integer", False, "At most this many (default 100)"),
        },
        returns={"platform_id": _STR, "messages": _ARR},
        errors=(404,),
    )
    async def buffer_messages(self, request: Request) -> Response:
        pid = _query_required(request, "platform_id")
        limit = _query_int(request, "limit", 100)
        self._known(pid)
        messages = await self.bot.message_buffer.get_messages(pid, limit)
        return _ok({"platform_id": pid, "messages": messages})

    @_op(
        "POST",
        "/api/message/buffer/replay",
        "Replay a platform's buffered messages now",
        body=ReplayRequest,
        returns={"platform_id": _STR, "replayed": _INT, "messages": _ARR},
        errors=(404,),
    )
    async def buffer_replay(self, request: Request) -> Response:
        req = await _body(request, ReplayRequest)
        if req.max_count is not None and req.max_count < 1:
            raise ApiError(400, "invalid_request", f"max_count: must be >= 1, got {req.max_count}")
        self._known(req.platform_id)
        done = await self.bot.message_buffer.replay_messages(req.platform_id, req.max_count)
        return _ok({"platform_id": req.platform_id, "replayed": len(done), "messages": done})

    # ---- monitor -------------------------------------------------------------

    def _platform_status(self, pid: str) -> Any:
        try:
            return self.bot.status_monitor.get_platform_status(pid)
        except LookupError:
            return None  # no message seen yet

    @_op(
        "GET",
        "/api/monitor/status",
        "Overall status: readiness, the monitor's overview, lifecycle and isolation",
        returns={"ready": _BOOL, "monitor": _OBJ, "platforms": _OBJ, "isolation": _OBJ},
    )
    async def monitor_status(self, request: Request) -> Response:
        return _ok(
            {
                "ready": bool(getattr(self.bot, "ready", True)),
                "monitor": self.bot.status_monitor.get_status(),
                "platforms": self._lifecycle(),
                "isolation": self.bot.fault_isolation_manager.get_isolation_status(),
            }
        )

    @_op(
        "GET",
        "/api/monitor/platforms",
        "Per-platform figures over the sliding window (null: no message yet)",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": _OBJ},
        errors=(404,),
    )
    async def monitor_platforms(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        if pid:
            self._known(pid)
            return _ok({"platforms": {pid: self._platform_status(pid)}})
        pids = list(self.bot.runtime_manager.platform_configs)
        return _ok({"platforms": {p: self._platform_status(p) for p in pids}})

    @_op(
        "GET",
        "/api/monitor/alerts",
        "Alerts, in the order they opened",
        query={
            "level": ("string", False, "Only this level: INFO, WARNING, ERROR or CRITICAL"),
            "include_resolved": ("boolean", False, "Also resolved ones (default false)"),
        },
        returns={"alerts": _ARR},
    )
    async def monitor_alerts(self, request: Request) -> Response:
        from ..monitor.status_monitor import AlertLevel

        level_name = request.query_params.get("level")
        level = None
        if level_name:
            try:
                level = AlertLevel[level_name.upper()]
            except KeyError:
                allowed = ", ".join(m.name for m in AlertLevel)
                raise ApiError(
                    400, "invalid_request", f"level: expected one of {allowed}, got {level_name!r}"
                ) from None
        flag = request.query_params.get("include_resolved", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise ApiError(
                400, "invalid_request", f"include_resolved: expected true or false, got {flag!r}"
            )
        alerts = self.bot.status_monitor.get_alerts(level, include_resolved=flag in ("true", "1"))
        return _ok({"alerts": alerts})

    @_op(
        "POST",
        "/api/monitor/alerts/resolve",
        "Resolve an alert by hand",
        body=ResolveAlertRequest,
        returns={"alert_id": _STR, "resolved": _BOOL},
        errors=(404,),
    )
    async def resolve_alert(self, request: Request) -> Response:
        req = await _body(request, ResolveAlertRequest)
        await _maybe_await(self.bot.status_monitor.resolve_alert(req.alert_id))
        return _ok({"alert_id": req.alert_id, "resolved": True})

    # ---- config --------------------------------------------------------------

    @_op(
        "GET",
        "/api/config/versions",
        "Config history, newest first; or one version with its config (secrets redacted)",
        query={
            "limit": ("integer", False, "At most this many"),
            "version_id": ("string", False, "Show this version with its config"),
        },
        returns={"current": _NSTR, "versions": _ARR},
        errors=(404,),
    )
    async def config_versions(self, request: Request) -> Response:
        cvm = self.bot.config_version_manager
        current = cvm.current_revision
        vid = request.query_params.get("version_id")
        if vid:
            versions = [cvm.get_version(vid).to_dict(include_config=True)]
        else:
            limit = _query_int(request, "limit", None)
            versions = [v.to_dict() for v in cvm.list_versions(limit)]
        return _ok({"current": None if current is None else f"v{current}", "versions": versions})

    @_op(
        "GET",
        "/api/config/diff",
        "JSON Patch (RFC 6902) and unified TOML diff between two versions (secrets redacted)",
        query={
            "from": ("string", True, "Older version id, e.g. v3"),
            "to": ("string", False, "Newer version id (default: the current one)"),
        },
        returns={"from": _STR, "to": _STR, "patch": _ARR, "diff": _STR},
        errors=(404,),
    )
    async def config_diff(self, request: Request) -> Response:
        cvm = self.bot.config_version_manager
        a = _query_required(request, "from")
        b = request.query_params.get("to") or (
            f"v{cvm.current_revision}" if cvm.current_revision is not None else ""
        )
        if not b:
            raise ApiError(404, "version_not_found", "there is no config version yet")
        return _ok(cvm.compare_versions(a, b).to_dict())

    @_op(
        "POST",
        "/api/config/rollback",
        "Roll the running config back to a version (records a ROLLBACK version)",
        body=RollbackRequest,
        returns={"version": _OBJ},
        errors=(404, 409),
    )
    async def config_rollback(self, request: Request) -> Response:
        req = await _body(request, RollbackRequest)
        cvm = self.bot.config_version_manager
        async with self._change_lock:
            version = await cvm.rollback_to_version(
                req.version_id, req.description, author="api", base_revision=req.base_revision
            )
        return _ok({"version": version.to_dict()})

    # ---- operations ----------------------------------------------------------

    @_op(
        "GET",
        "/metrics",
        "Prometheus text exposition of the bot's registry",
        returns={},
    )
    async def metrics(self, request: Request) -> Response:
        body, content_type = self.bot.status_monitor.exposition()
        return Response(body, headers={"Content-Type": content_type})

    @_op("GET", "/healthz", "Liveness: the API answers", returns={"status": _STR})
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @_op(
        "GET",
        "/readyz",
        "Readiness: every part of the bot started (503 while starting or stopping)",
        returns={"status": _STR},
        errors=(503,),
    )
    async def readyz(self, request: Request) -> Response:
        if getattr(self.bot, "ready", True):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready"}, status_code=503)

    @_op("GET", "/openapi.json", "This document", returns={"openapi": _STR, "paths": _OBJ})
    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())


_OPERATIONS[("GET", "/metrics")]["responses"]["200"]["content"] = {
    "text/plain; version=0.0.4": {"schema": {"type": "string"}}
}
_OPERATIONS[("GET", "/readyz")]["responses"]["503"] = {"description": "Not ready"}


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope: Any, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return None


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` with the default port filled in; None if malformed."""
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = scheme.lower()
    if not host or scheme not in _DEFAULT_PORTS:
        return None
    return scheme, host.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _own_origin(scope: Any) -> tuple[str, str, int] | None:
    """The API's origin as the client addressed it: the scheme and ``Host`` header."""
    scheme = str(scope.get("scheme") or "http")
    host = _header(scope, b"host")
    if host is not None:
        return _origin_tuple(scheme, host.decode("latin-1").strip())
    server = scope.get("server")
    if not server:
        return None
    name, port = server[0], server[1]
    return _origin_tuple(scheme, f"[{name}]:{port}" if ":" in name else f"{name}:{port}")


def _cross_origin(scope: Any) -> str | None:
    """Why a state-changing request comes from another origin (a web page), or None."""
    if scope.get("method") not in _UNSAFE_METHODS:
        return None
    raw_origin = _header(scope, b"origin")
    if raw_origin is not None:
        origin = raw_origin.decode("latin-1").strip()
        scheme, sep, rest = origin.partition("://")
        theirs = _origin_tuple(scheme, rest) if sep and "/" not in rest else None
        ours = _own_origin(scope)
        if theirs is None or ours is None or theirs != ours:
            return f"origin {origin!r} is not this API's own; cross-site changes are refused"
        return None
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site.strip().lower() not in (b"same-origin", b"none"):
        shown = site.decode("latin-1").strip()
        return f"Sec-Fetch-Site {shown!r}: a change from another origin is refused"
    return None


def _loopback_host_header(scope: Any) -> bool:
    """Whether the request's ``Host`` names a loopback address (or is absent)."""
    raw = _header(scope, b"host")
    if raw is None:
        return True  # HTTP/1.0 without Host: not a browser after DNS rebinding
    host = raw.decode("latin-1").strip().lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name == "localhost" or is_loopback(name)


class _Gate:
    """Pure ASGI middleware: the cross-origin check, bearer auth, the body size limit.

    Args:
        bot: Its ``config.api`` (the config in force) gives the token and
            ``metrics_auth`` on every request.
        cfg (ApiConfig): The config the API was started with (``host``,
            ``max_body_size``).
    """

    def __init__(self, app: Any, *, bot: Any, cfg: ApiConfig) -> None:
        self.app = app
        self.bot = bot
        self.cfg = cfg
        self._public = not is_loopback(cfg.host)

    def _live(self) -> ApiConfig:
        live = getattr(getattr(self.bot, "config", None), "api", None)
        return live if isinstance(live, ApiConfig) else self.cfg

    def _needs_auth(self, path: str, live: ApiConfig) -> bool:
        if path == "/api" or path.startswith("/api/"):
            return bool(live.token) or self._public
        return path == "/metrics" and live.metrics_auth and (bool(live.token) or self._public)

    def _authorized(self, scope: Any, token: str | None) -> bool:
        if not token:
            return False  # a public API without a token: closed, never open
        header = _header(scope, b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        # compare_digest takes time independent of where the tokens differ.
        return hmac.compare_digest(given.strip(), token.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        why = _cross_origin(scope)
        if why is not None:
            response = _error(403, "cross_origin", why)
            await response(scope, receive, send)
            return
        live = self._live()
        if not live.token and not self._public and not _loopback_host_header(scope):
            # A loopback API without a token trusts whoever can reach it; a page
            # whose host name was rebound to 127.0.0.1 (DNS rebinding) would
            # pass the origin check, so only loopback names may ask.
            response = _error(
                403,
                "host_not_allowed",
                "without an [api] token this API answers only requests addressed to "
                "a loopback name (localhost, 127.0.0.1, [::1]); set a token to use another",
            )
            await response(scope, receive, send)
            return
        if self._needs_auth(scope["path"], live) and not self._authorized(scope, live.token):
            message = "missing or wrong bearer token (Authorization: Bearer <token>)"
            if not live.token:
                message = (
                    "the API serves on a non-loopback address and [api] token is not set"
                    " in the config in force; set one"
                )
            response = _error(
                401,
                "unauthorized",
                message,
                headers={"WWW-Authenticate": 'Bearer realm="nekobot"'},
            )
            await response(scope, receive, send)
            return
        limit = self.cfg.max_body_size
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    response = _error(
                        413, "payload_too_large", f"request body exceeds {limit} bytes"
                    )
                    await response(scope, receive, send)
                    return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        await self.app(scope, limited_receive, send)


def _guarded(fn: Handler, max_body_size: int) -> Handler:
    @functools.wraps(fn)
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except HTTPException:
            raise
        except Exception as exc:
            return _error_response(exc, max_body_size)

    return handler


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return _error(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        f"{exc.detail}: {request.method} {request.url.path}",
        headers=dict(exc.headers or {}),
    )


def create_app(bot: Any, cfg: ApiConfig | None = None) -> Starlette:
    """The Starlette app of the API, bound to one bot.

    Args:
        bot: The ``NekoBot`` handle (only its documented attributes are used);
            the token and ``metrics_auth`` come from ``bot.config.api`` on every
            request.
        cfg (ApiConfig | None): What the API is started with (``host``,
            ``max_body_size``); default ``bot.config.api``.
    """
    cfg = cfg if cfg is not None else bot.config.api
    api = _Api(bot, cfg)
    m = cfg.max_body_size

    def r(path: str, fn: Handler, method: str) -> Route:
        return Route(path, _guarded(fn, m), methods=[method])

    routes = [
        r("/api/runtime/lifecycle", api.get_lifecycle, "GET"),
        r("/api/runtime/lifecycle", api.post_lifecycle, "POST"),
        r("/api/runtime/platforms", api.add_platform, "POST"),
        r("/api/runtime/platforms", api.remove_platform, "DELETE"),
        r("/api/connection/stats", api.connection_stats, "GET"),
        r("/api/connection/config", api.connection_config, "POST"),
        r("/api/fault/isolation", api.fault_isolation, "GET"),
        r("/api/fault/records", api.fault_records, "GET"),
        r("/api/fault/platform/enable", api.enable_platform, "POST"),
        r("/api/fault/platform/disable", api.disable_platform, "POST"),
        r("/api/message/router/stats", api.router_stats, "GET"),
        r("/api/message/buffer/stats", api.buffer_stats, "GET"),
        r("/api/message/buffer/messages", api.buffer_messages, "GET"),
        r("/api/message/buffer/replay", api.buffer_replay, "POST"),
        r("/api/monitor/status", api.monitor_status, "GET"),
        r("/api/monitor/platforms", api.monitor_platforms, "GET"),
        r("/api/monitor/alerts", api.monitor_alerts, "GET"),
        r("/api/monitor/alerts/resolve", api.resolve_alert, "POST"),
        r("/api/config/versions", api.config_versions, "GET"),
        r("/api/config/diff", api.config_diff, "GET"),
        r("/api/config/rollback", api.config_rollback, "POST"),
        r("/metrics", api.metrics, "GET"),
        r("/healthz", api.healthz, "GET"),
        r("/readyz", api.readyz, "GET"),
        r("/openapi.json", api.openapi, "GET"),
    ]
    from starlette.middleware import Middleware

    return Starlette(
        routes=routes,
        middleware=[Middleware(_Gate, bot=bot, cfg=cfg)],
        exception_handlers={HTTPException: _http_error},
    )


# --------------------------------------------------------------------------
# serving


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve_api(
    bot: Any,
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
    import hypercorn.config
    import hypercorn.trio

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
