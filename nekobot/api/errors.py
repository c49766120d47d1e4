"""The API's answers: JSON bodies, and the error shape every failure maps to.

Errors are ``{"error": {"code": ..., "message": ...}}``; :func:`error_response`
maps an exception to its status (DESIGN.md §6): 400 a bad body or parameter,
404 an unknown platform / version / alert (``LookupError``), 409 a conflict
(``Conflict``, a platform that cannot start or has no live link), 413 a body
over the limit, 503 ``timeout`` (``CallTimeout``: the bot did not answer within
its deadline; the message names what was waited for) or ``actor_stopped``.
"""

from __future__ import annotations

import logging
import re

from starlette.responses import Response

from ..errors import (
    ActorStopped,
    CallTimeout,
    ConfigError,
    Conflict,
    InvalidRequest,
    NekoBotError,
    PlatformOffline,
)
from ..runtime.runtime_manager import PlatformStartError
from .serialize import dump_json

__all__ = ["ApiError", "BodyTooLarge", "error_json", "error_response", "json_response"]

log = logging.getLogger("nekobot.api")


class ApiError(Exception):
    """An error answer: ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


class BodyTooLarge(Exception):
    """The request body grew past ``[api] max_body_size`` while it was read."""


def json_response(
    data: object,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    redacted: bool = True,
) -> Response:
    """A JSON answer, through the one converter (secrets redacted unless told)."""
    return Response(
        dump_json(data, redacted=redacted),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def error_json(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """An error answer (credentials in URLs inside ``message`` are redacted)."""
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _code_of(exc: BaseException) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def error_response(exc: BaseException, max_body_size: int) -> Response:
    """Map an exception from a handler to its JSON error answer."""
    if isinstance(exc, ApiError):
        return error_json(exc.status, exc.code, exc.message)
    if isinstance(exc, BodyTooLarge):
        return error_json(413, "payload_too_large", f"request body exceeds {max_body_size} bytes")
    if isinstance(exc, ConfigError):
        return error_json(400, "invalid_config", "; ".join(exc.problems))
    if isinstance(exc, PlatformStartError):
        # The request was fine; the platform could not start (e.g. its port is in use).
        return error_json(409, "platform_start_error", str(exc))
    if isinstance(exc, PlatformOffline):
        # The request was fine; the platform has no live link right now.
        return error_json(409, "platform_offline", str(exc))
    if isinstance(exc, CallTimeout):
        # Before ValueError & co.: the bot did not answer within its deadline.
        return error_json(503, "timeout", str(exc))
    if isinstance(exc, ActorStopped):
        return error_json(503, "actor_stopped", str(exc))
    if isinstance(exc, NekoBotError) and isinstance(exc, LookupError):
        return error_json(404, _code_of(exc), str(exc))
    if isinstance(exc, Conflict):
        return error_json(409, _code_of(exc), str(exc))
    if isinstance(exc, InvalidRequest | ValueError):
        code = _code_of(exc) if isinstance(exc, NekoBotError) else "invalid_request"
        return error_json(400, code, str(exc))
    if isinstance(exc, NekoBotError):
        return error_json(500, _code_of(exc), str(exc))
    log.error("API handler failed", exc_info=exc)
    return error_json(500, "internal_error", f"{type(exc).__name__}: {exc}")
