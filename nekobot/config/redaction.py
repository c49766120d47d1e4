"""The one redaction rule: secret key names, and credentials inside URLs.

Everything NekoBot shows an operator (HTTP API answers, console output, config
versions and diffs, exported files, log lines) goes through these functions:

- :func:`is_secret_key`: whether a key (a config key, a JSON key, a URL query
  parameter) names a secret. A name is split into words at ``_``, ``-``, ``.``,
  spaces, digits and camelCase humps, case ignored; it is a secret when one
  word is, or ends in, one of :data:`SECRET_WORDS` (``token``, ``secret``,
  ``password``, ``passwd``, ``authorization``, ``credentials`` …:
  ``accesstoken`` too), or when the name ends in ``<qualifier> key`` with a
  qualifier from :data:`KEY_QUALIFIERS` (``api_key``, ``apiKey``,
  ``private_key``, ``secretkey`` …). So ``access_token``, ``secret_key``,
  ``client_secret``, ``X-Api-Key`` are secrets; ``tokens`` (a count), ``key``,
  ``message_key``, ``author`` and ``metrics_auth`` are not.
- :func:`redact_urls`: in any text, a URL's userinfo becomes ``***``
  (``ws://user:pass@host/`` → ``ws://***@host/``) and the value of every
  secret-named query or fragment parameter becomes ``***``
  (``?access_token=abc&x=1`` → ``?access_token=***&x=1``).
- :func:`redact`: a deep copy of a JSON-like value with both applied: the value
  of every secret-named key is replaced (whatever it holds) and every string
  has its URL credentials replaced.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "KEY_QUALIFIERS",
    "REDACTED",
    "REDACTED_CHANGED",
    "SECRET_WORDS",
    "RedactingFilter",
    "is_secret_key",
    "redact",
    "redact_urls",
    "secret_values",
]

REDACTED = "***"
"""What a secret value is replaced with."""
REDACTED_CHANGED = "*** (changed)"
"""A secret in a diff whose value differs from the other side's."""

SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "credential",
        "credentials",
        "authorization",
        "apikey",
        "cookie",
        "signature",
    }
)
"""A key with a word that is or ends in one of these is a secret (``access_token``)."""

KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "signing", "encryption", "client", "session", "auth"}
)
"""A key ending in ``<one of these> key`` is a secret (``api_key``, ``apikey``)."""

_SECRET_ENDINGS = tuple(sorted(SECRET_WORDS))
_QUALIFIED_KEYS = frozenset(f"{q}key" for q in KEY_QUALIFIERS)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def is_secret_key(key: object) -> bool:
    """Whether a key names a secret (the rule in the module docstring).

    Args:
        key: A dict key or parameter name; non-strings are taken as ``str(key)``.
    """
    return _is_secret_name(key if isinstance(key, str) else str(key))


@functools.lru_cache(maxsize=4096)
def _is_secret_name(key: str) -> bool:
    words = [w.lower() for w in _WORD.findall(key)]
    if any(w.endswith(_SECRET_ENDINGS) or w in _QUALIFIED_KEYS for w in words):
        return True
    return len(words) >= 2 and words[-1] == "key" and words[-2] in KEY_QUALIFIERS


# --------------------------------------------------------------------------
# URLs in text

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
"""A URL with a scheme inside text (it ends at white space or a quote)."""
_PARAM = re.compile(r"(?P<lead>[?&;#])(?P<name>[^=&;#?\s'\"<>`/]+)=(?P<value>[^&;#\s'\"<>`]*)")
"""One ``name=value`` parameter of a query (or fragment), also in a bare path."""


def _userinfo(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    authority = rest[:end]
    at = authority.rfind("@")
    if at == -1:
        return url
    return f"{scheme}{sep}{REDACTED}@{rest[at + 1 :]}"


def _param(m: re.Match[str]) -> str:
    if not is_secret_key(m["name"]) or m["value"] in ("", REDACTED):
        return m[0]
    return f"{m['lead']}{m['name']}={REDACTED}"


def redact_urls(text: str) -> str:
    """``text`` with the credentials in every URL it holds replaced by ``***``.

    The userinfo of a ``scheme://`` URL (``user:password@``) and the value of
    every secret-named parameter after ``?``, ``&``, ``;`` or ``#`` (also in a
    path without a scheme, ``/onebot?access_token=…``) are replaced; the rest of
    the text is kept byte for byte.
    """
    if "@" in text and "://" in text:
        text = _URL.sub(lambda m: _userinfo(m[0]), text)
    if "=" in text:
        text = _PARAM.sub(_param, text)
    return text


def _url_secrets(text: str, out: set[str]) -> None:
    for m in _URL.finditer(text):
        rest = m[0].partition("://")[2]
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" in authority:
            info = authority.rpartition("@")[0]
            user, _, password = info.partition(":")
            out.update(s for s in (password or user,) if len(s) >= 4 and s != REDACTED)
    for m in _PARAM.finditer(text):
        if is_secret_key(m["name"]) and len(m["value"]) >= 4 and m["value"] != REDACTED:
            out.add(m["value"])


# --------------------------------------------------------------------------
# JSON-like values

_MISSING: Any = object()


def redact(value: Any, other: Any = None) -> Any:
    """A deep copy of a JSON-like value with every secret replaced.

    The value of a secret-named key (:func:`is_secret_key`) becomes ``"***"``
    whatever it holds (a table, an array), unless it is ``None`` (nothing is
    set, nothing to hide); every string has its URL credentials replaced
    (:func:`redact_urls`). Tuples become lists; other values are kept.

    Args:
        value: A config dict, an API answer, any JSON-like value.
        other: The same value in another version, walked in parallel: a secret
            whose value differs from ``other``'s becomes ``"*** (changed)"``, so
            a diff still shows that a token changed without showing it.
    """
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            o = other.get(k, _MISSING) if isinstance(other, Mapping) else _MISSING
            if is_secret_key(k) and v is not None:
                out[k] = REDACTED if (o is _MISSING or o == v) else REDACTED_CHANGED
            else:
                out[k] = redact(v, None if o is _MISSING else o)
        return out
    if isinstance(value, list | tuple):
        others = other if isinstance(other, list | tuple) else []
        return [redact(v, others[i] if i < len(others) else None) for i, v in enumerate(value)]
    if isinstance(value, str):
        return redact_urls(value)
    return value


def secret_values(value: Any, out: set[str] | None = None) -> set[str]:
    """Every secret string of 4+ characters in a JSON-like value, added to ``out``.

    The strings held by secret-named keys (at any depth, in lists too), and the
    passwords and secret parameter values of URLs in any string. The console
    masks these wherever they appear in its output (``py`` included).
    """
    found = set() if out is None else out
    if isinstance(value, Mapping):
        for k, v in value.items():
            if is_secret_key(k):
                _strings(v, found)
            else:
                secret_values(v, found)
    elif isinstance(value, list | tuple):
        for v in value:
            secret_values(v, found)
    elif isinstance(value, str):
        _url_secrets(value, found)
    return found


def _strings(value: Any, out: set[str]) -> None:
    if isinstance(value, str):
        if len(value) >= 4 and value != REDACTED:
            out.add(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list | tuple):
        for v in value:
            _strings(v, out)


# --------------------------------------------------------------------------
# logs


class RedactingFilter(logging.Filter):
    """A logging filter that replaces URL credentials in log records.

    Attach it to a *handler* (a logger's own filters do not see its children's
    records): ``handler.addFilter(RedactingFilter())``. The message (with its
    arguments merged) and the formatted traceback go through
    :func:`redact_urls`; the record is always let through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler
            return True
        clean = redact_urls(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_urls(record.exc_text)
        return True
