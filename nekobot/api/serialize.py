"""The one JSON output converter: what the API, the console and ``nekobot config`` print.

A cattrs JSON preconf converter (:func:`cattrs.preconf.json.make_converter`),
configured once here. Its unstructure rules give every snapshot its JSON form,
so no snapshot class needs a ``to_dict``:

- attrs classes become objects of their public fields (a field whose name
  starts with ``_`` is left out), each by its value's run-time type;
- an ``IntEnum`` becomes its name (``"WARNING"``, ``"HIGH"``), another enum its
  value (``"running"``, ``"half_open"``);
- a non-finite float becomes a string (``"inf"``, ``"-inf"``, ``"nan"``);
  bytes are decoded as UTF-8 (bad bytes replaced); sets become lists;
- anything else that JSON has no form for becomes ``str(value)``;
- :class:`~nekobot.buffer.message_buffer.BufferedMessage` is flattened into its
  message's fields plus ``age``, ``expires_in`` (``null``: never expires) and
  ``attempts``;
  :class:`~nekobot.config.versions.ConfigVersion` shows its ids
  (``version_id``, ``parent_id``, ``restored_id``) and metadata, never its
  config (add that yourself where it is wanted);
  :class:`~nekobot.config.versions.ConfigDiff` is ``{"from", "to", "patch", "diff"}``.

:func:`plain` and :func:`dump_json` also redact (:mod:`nekobot.config.redaction`):
nothing leaves through them with a secret in it.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import cattrs
import cattrs.gen
import cattrs.preconf.json

from ..buffer.message_buffer import BufferedMessage
from ..config.redaction import redact
from ..config.versions import ConfigDiff, ConfigVersion

__all__ = ["converter", "dump_json", "plain"]

_JSON_NATIVE = (str, int, type(None))  # bool is an int


def _fallback(cls: Any) -> Callable[[Any], Any]:
    """What a type without a rule becomes: itself if JSON has it, else its ``str``."""
    if isinstance(cls, type) and issubclass(cls, _JSON_NATIVE):
        return _identity
    return str


def _identity(value: Any) -> Any:
    return value


converter = cattrs.preconf.json.make_converter(unstructure_fallback_factory=_fallback)
"""The converter (unstructure side); see the module docstring for its rules."""


def _is_enum(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, enum.Enum)


def _is_int_enum(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, enum.IntEnum)


def _attrs_public(cls: type[Any]) -> Callable[[Any], dict[str, Any]]:
    # Each value is unstructured by its run-time type, not by the declared one:
    # snapshots name types imported only for the type checker (no import cycles),
    # which cattrs could not resolve from the annotations.
    names = tuple(a.name for a in attrs.fields(cls) if a.name[0] != "_")
    unstructure = converter.unstructure

    def public_fields(obj: Any) -> dict[str, Any]:
        return {name: unstructure(getattr(obj, name)) for name in names}

    return public_fields


def _float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _buffered(b: BufferedMessage) -> dict[str, Any]:
    m = b.message
    return {
        "platform_id": m.platform_id,
        "message_type": m.message_type,
        "content": converter.unstructure(m.content),
        "priority": converter.unstructure(m.priority),
        "message_key": m.message_key,
        "created_at": _float(m.created_at),
        "age": _float(b.age),
        "expires_in": None if math.isinf(b.expires_in) else _float(b.expires_in),
        "attempts": b.attempts,
    }


def _version(v: ConfigVersion) -> dict[str, Any]:
    return {
        "version_id": v.version_id,
        "revision": v.revision,
        "change_type": converter.unstructure(v.change_type),
        "description": v.description,
        "author": v.author,
        "created_at": v.created_at,
        "parent_id": v.parent_id,
        "restored_id": v.restored_id,
        "checksum": v.checksum,
    }


def _diff(d: ConfigDiff) -> dict[str, Any]:
    return {"from": d.from_id, "to": d.to_id, "patch": d.patch, "diff": d.unified_diff}


# Later registrations win: the specific classes after the general rules.
converter.register_unstructure_hook(float, _float)
converter.register_unstructure_hook(bytes, lambda b: b.decode("utf-8", "replace"))
converter.register_unstructure_hook_func(_is_enum, lambda e: converter.unstructure(e.value))
converter.register_unstructure_hook_func(_is_int_enum, lambda e: e.name)
converter.register_unstructure_hook_factory(attrs.has, _attrs_public)
converter.register_unstructure_hook(BufferedMessage, _buffered)
converter.register_unstructure_hook(ConfigVersion, _version)
converter.register_unstructure_hook(ConfigDiff, _diff)


def plain(value: Any, *, redacted: bool = True) -> Any:
    """``value`` as JSON-able data (dicts, lists, str, int, float, bool, None).

    Args:
        value: A snapshot, a list or dict of them, any value.
        redacted (bool): Replace secrets (:func:`~nekobot.config.redaction.redact`);
            only for data known to hold none, such as the OpenAPI document.
    """
    data = converter.unstructure(value)
    return redact(data) if redacted else data


def dump_json(value: Any, *, indent: int | None = None, redacted: bool = True) -> str:
    """``value`` as JSON text (UTF-8 kept, compact unless ``indent``), secrets redacted.

    Raises:
        ValueError: never for what :func:`plain` returns (it has no NaN or
            infinity left); the check stays on (``allow_nan=False``).
    """
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        plain(value, redacted=redacted),
        ensure_ascii=False,
        allow_nan=False,
        indent=indent,
        separators=separators,
    )
