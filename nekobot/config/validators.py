"""The one set of validators for config classes (attrs ``validator=`` and post-init checks).

Each raises :class:`~nekobot.errors.FieldValueError` naming the field; the
config loader reports it as ``"<key.path>.<field>: <message>, got <value>"``.
A float must be finite (NaN and infinity refused) unless the field's metadata is
:data:`ALLOW_INF`, whose docstring then says what infinity means.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..errors import FieldValueError

__all__ = [
    "ALLOW_INF",
    "Validator",
    "check",
    "is_loopback",
    "nesting_exceeds",
    "non_negative",
    "one_of",
    "port_number",
    "positive",
    "positive_finite",
    "require_not_above",
    "starts_with",
    "unit_interval",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
"""An attrs field validator: ``validator(instance, attribute, value)``."""

ALLOW_INF = {"allow_inf": True}
"""Field metadata: this float may be ``inf`` (its docstring says what that means)."""


def check(pred: Callable[[Any], bool], text: str, *, finite: bool = True) -> Validator:
    """A validator refusing values for which ``pred`` is false (or raises ``TypeError``).

    Args:
        pred: The condition a valid value meets.
        text: What is wrong, e.g. ``"must be > 0"``; the error reads
            ``"<text>, got <value>"``.
        finite (bool): Refuse NaN and infinity first ("must be a finite number")
            unless the field's metadata is :data:`ALLOW_INF`. False when ``pred``
            itself speaks of finiteness.
    """

    def validator(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if (
            finite
            and isinstance(value, float)
            and not math.isfinite(value)
            and not (math.isinf(value) and attribute.metadata.get("allow_inf", False))
        ):
            raise FieldValueError(attribute.name, f"must be a finite number, got {value!r}")
        try:
            ok = pred(value)
        except TypeError:  # a value of the wrong type built in code
            ok = False
        if not ok:
            raise FieldValueError(attribute.name, f"{text}, got {value!r}")

    return validator


def one_of(*choices: object) -> Validator:
    """The value is one of ``choices`` ("must be 'reverse' or 'forward'")."""
    names = [repr(c) for c in choices]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return check(lambda v: v in choices, f"must be {text}")


def starts_with(prefix: str) -> Validator:
    """The value is a string starting with ``prefix``."""
    return check(
        lambda v: isinstance(v, str) and v.startswith(prefix), f"must start with {prefix!r}"
    )


non_negative = check(lambda v: v >= 0, "must be >= 0")
"""A number >= 0."""
positive = check(lambda v: v > 0, "must be > 0")
"""A number > 0."""
unit_interval = check(lambda v: 0 <= v <= 1, "must be between 0 and 1")
"""A number in [0, 1] (a probability, a relative jitter)."""
port_number = check(lambda v: 0 <= v <= 65535, "must be 0..65535")
"""A TCP port; 0 means any free port."""
positive_finite = check(
    lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0", finite=False
)
"""Seconds of a deadline that must pass: finite and > 0."""


def require_not_above(inst: object, low: str, high: str) -> None:
    """A post-init check: field ``low`` must not exceed field ``high`` (names ``low``).

    Raises:
        FieldValueError: ``"<low>: must be <= <high> (<hi>), got <lo>"``.
    """
    lo, hi = getattr(inst, low), getattr(inst, high)
    if lo is not None and hi is not None and lo > hi:
        raise FieldValueError(low, f"must be <= {high} ({hi!r}), got {lo!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def nesting_exceeds(value: object, limit: int) -> bool:
    """Whether JSON-like ``value`` nests objects/arrays more than ``limit`` levels
    (``value`` itself is level 1); iterative, so any depth is safe to check.

    Untrusted JSON (a peer's frame, a request body) is refused past a bound
    before anything recursive (cattrs, ``json.dumps``, ``repr``) walks it.
    """
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
