"""Request bodies and query parameters of the API: parsed, bounded and validated.

Bodies are JSON objects validated with cattrs into the attrs classes below
(unknown keys refused; a problem names its field, ``body`` for the body as a
whole), nested at most :data:`MAX_JSON_DEPTH` levels deep. Config-changing
bodies take an optional ``base_revision``: the revision the change was based
on (check-and-set, done by the bot; ``0`` when there is no version yet).
"""

from __future__ import annotations

import json
import typing
from typing import Any, Literal, TypeVar

import attrs
from starlette.requests import Request

from ..config.schema import structure_section
from ..config.validators import nesting_exceeds
from .errors import ApiError

__all__ = [
    "MAX_JSON_DEPTH",
    "AddPlatformRequest",
    "ConnectionConfigRequest",
    "DisableRequest",
    "EnableRequest",
    "LifecycleRequest",
    "RemovePlatformRequest",
    "ReplayRequest",
    "ResolveAlertRequest",
    "RollbackRequest",
    "parse_body",
    "query_int",
    "query_required",
]


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


T = TypeVar("T")


async def read_body(request: Request) -> bytes:
    """The whole request body (the gate's size limit applies while it streams in)."""
    chunks = []
    async for chunk in request.stream():
        chunks.append(chunk)
    return b"".join(chunks)


MAX_JSON_DEPTH = 64
"""Deepest nesting of objects and arrays a request body may have (the body is level 1)."""

_TOO_DEEP = f"body: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"


async def parse_body(request: Request, cls: type[T]) -> T:
    """The body as a ``cls`` instance (an empty body is ``{}``).

    Raises:
        ApiError: 400 ``invalid_json`` (not JSON, or nested deeper than
            :data:`MAX_JSON_DEPTH`), 400 ``invalid_request`` (not an object, or
            fields refused by cattrs; each problem names its field).
        BodyTooLarge: if the body grows past ``[api] max_body_size``.
    """
    raw = await read_body(request)
    try:
        data = json.loads(raw) if raw.strip() else {}
    except RecursionError:
        raise ApiError(400, "invalid_json", _TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body: not valid JSON ({exc})") from None
    if nesting_exceeds(data, MAX_JSON_DEPTH):
        # Refused before cattrs, redaction and the config parser recurse into it.
        raise ApiError(400, "invalid_json", _TOO_DEEP)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "body: expected a JSON object")
    value, problems = structure_section(data, cls, "")
    if problems:
        raise ApiError(400, "invalid_request", "; ".join(problems))
    return typing.cast(T, value)


def query_int(request: Request, name: str, default: int | None, lo: int = 1) -> int | None:
    """Query parameter ``name`` as an int >= ``lo`` (``default`` when absent).

    Raises:
        ApiError: 400 ``invalid_request`` naming the parameter.
    """
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


def query_required(request: Request, name: str) -> str:
    """Query parameter ``name``, which must be given and not empty.

    Raises:
        ApiError: 400 ``invalid_request`` naming the parameter.
    """
    value = request.query_params.get(name)
    if not value:
        raise ApiError(400, "invalid_request", f"{name}: required query parameter missing")
    return value
