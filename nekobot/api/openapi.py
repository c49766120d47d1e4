"""The OpenAPI 3.1 document of the API (``GET /openapi.json``), declared next to each handler.

Each route handler is decorated with :func:`operation` (method, path, summary,
the keys its answer has, its body class and query parameters, the errors it
can answer). :func:`openapi_document` assembles them; the test suite checks
that every served route is documented and nothing else is. Errors added by
every route of a kind: 400 with a body or query, 413 with a body, 403 for a
state change (cross-origin), 401 under ``/api``.
"""

from __future__ import annotations

import importlib.metadata
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import attrs

from .security import UNSAFE_METHODS

__all__ = [
    "ARR",
    "BOOL",
    "INT",
    "NSTR",
    "OBJ",
    "OPERATIONS",
    "STR",
    "openapi_document",
    "operation",
]

T = TypeVar("T")

OBJ: dict[str, Any] = {"type": "object"}
ARR: dict[str, Any] = {"type": "array"}
STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
NSTR: dict[str, Any] = {"type": ["string", "null"]}
NINT: dict[str, Any] = {"type": ["integer", "null"]}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {}
"""``(METHOD, path) -> operation object``, filled by :func:`operation`."""

_BODY_SCHEMAS: dict[str, type[Any]] = {}

_REASONS = {
    400: "Bad request (the message names the field)",
    401: "No or wrong bearer token",
    403: "A state change from another origin (cross-site request)",
    404: "Unknown platform, version or alert",
    409: "Conflict (exists already, a stale base_revision, or it cannot start)",
    413: "Request body too large",
    503: (
        "The bot did not answer within its deadline (code timeout; the message names "
        "what was waited for) or a part of it is not running (code actor_stopped)"
    ),
}


def operation(
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
    """Declare a route's OpenAPI operation.

    Args:
        returns: The answer's top-level keys and their JSON schemas (all required).
        body: The attrs class of the request body, if any.
        query: ``{name: (json type, required, description)}``.
        errors: Statuses the route can answer besides those every route of its
            kind gets (see the module docstring); 503 for a route that waits on the bot.
        status: The success status.
    """

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
        all_errors = set(errors)
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
            all_errors.add(413)
        if body is not None or query:
            all_errors.add(400)
        if method in UNSAFE_METHODS:
            all_errors.add(403)  # a cross-origin change
        if path.startswith("/api"):
            all_errors.add(401)
            op["security"] = [{"bearer": []}]
        for code in sorted(all_errors):
            op["responses"][str(code)] = {"$ref": f"#/components/responses/E{code}"}
        OPERATIONS[(method, path)] = op
        return fn

    return deco


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
        return dict(STR)
    if tp is bool:
        return dict(BOOL)
    if tp is int:
        return dict(INT)
    if tp is float:
        return {"type": "number"}
    if tp is dict or origin is dict:
        return dict(OBJ)
    if tp is list or origin is list:
        return dict(ARR)
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


def _version() -> str:
    try:
        return importlib.metadata.version("nekobot")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0+unknown"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route (``GET /openapi.json``)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in sorted(OPERATIONS.items(), key=lambda kv: kv[0][1]):
        paths.setdefault(path, {})[method.lower()] = op
    error_schema = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": STR, "message": STR},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NekoBot API",
            "version": _version(),
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
                for code, text in _REASONS.items()
            },
        },
    }
