"""The API's gate: cross-origin refusal, the loopback Host check, the bearer token, body size.

:class:`Gate` is pure ASGI middleware; every HTTP request passes it in this order:

1. **Cross-site changes (CSRF)**: a state-changing request (``POST``, ``PUT``,
   ``PATCH``, ``DELETE``) whose ``Origin`` is not the API's own origin (the
   request's scheme and ``Host``: ``scheme://host:port``, default ports equal
   to none; ``Origin: null`` is not the API's own), or that has no ``Origin``
   but a ``Sec-Fetch-Site`` other than ``same-origin`` or ``none``, gets 403
   ``cross_origin``, with or without a token. Requests without these headers
   (curl, scripts, the console) and reads (``GET``) pass. Behind a reverse
   proxy, the proxy must pass the ``Host`` the browser used.
2. **DNS rebinding**: a loopback API without a token answers only requests
   whose ``Host`` is a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``);
   others get 403 ``host_not_allowed``.
3. **Bearer token**: every ``/api`` route needs ``Authorization: Bearer
   <token>`` when the config in force (``bot.config.api``, read on every
   request, so a rotated token counts at once) has a token, compared in
   constant time (:func:`hmac.compare_digest`); ``/metrics`` only with
   ``metrics_auth``. An API started on a non-loopback address refuses every
   ``/api`` request (401) while the config in force has no token: removing
   the token never opens a public API.
4. **Body size**: a body over ``[api] max_body_size`` bytes gets 413, from its
   ``Content-Length`` or while it streams in (:class:`~nekobot.api.errors.BodyTooLarge`).
"""

from __future__ import annotations

import hmac
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..config.schema import ApiConfig
from ..config.validators import is_loopback
from .errors import BodyTooLarge, error_json

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["UNSAFE_METHODS", "Gate"]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that change state: refused from another origin (CSRF)."""

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


def cross_origin(scope: Any) -> str | None:
    """Why a state-changing request comes from another origin (a web page), or None."""
    if scope.get("method") not in UNSAFE_METHODS:
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


def loopback_host_header(scope: Any) -> bool:
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


class Gate:
    """Pure ASGI middleware: the checks of the module docstring, in that order.

    Args:
        app: The ASGI app behind the gate.
        bot (NekoBot): Its ``config.api`` (the config in force) gives the token
            and ``metrics_auth`` on every request.
        cfg (ApiConfig): The config the API was started with (``host``,
            ``max_body_size``).
    """

    def __init__(self, app: Any, *, bot: NekoBot, cfg: ApiConfig) -> None:
        self.app = app
        self.bot = bot
        self.cfg = cfg
        self._public = not is_loopback(cfg.host)

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
        why = cross_origin(scope)
        if why is not None:
            await error_json(403, "cross_origin", why)(scope, receive, send)
            return
        live = self.bot.config.api
        if not live.token and not self._public and not loopback_host_header(scope):
            # A loopback API without a token trusts whoever can reach it; a page
            # whose host name was rebound to 127.0.0.1 (DNS rebinding) would
            # pass the origin check, so only loopback names may ask.
            response = error_json(
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
            response = error_json(
                401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="nekobot"'}
            )
            await response(scope, receive, send)
            return
        limit = self.cfg.max_body_size
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            response = error_json(413, "payload_too_large", f"request body exceeds {limit} bytes")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        await self.app(scope, limited_receive, send)
