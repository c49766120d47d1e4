"""The one JSON output converter (nekobot.api.serialize), the API's, console's and CLI's.

What the operator reads: enums, non-finite floats, private fields, the shapes
of buffered messages, config versions and diffs, and that no snapshot's own
``to_dict`` is needed (or called).
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from nekobot.api.serialize import converter, dump_json, plain
from nekobot.buffer.message_buffer import BufferedMessage
from nekobot.config.versions import ConfigChangeType, ConfigVersionManager
from nekobot.messages import MessagePriority, OutboundMessage
from nekobot.monitor.status_monitor import AlertLevel
from nekobot.runtime.runtime_manager import PlatformState


class Colour(enum.Enum):
    RED = "red"


@attrs.frozen
class Snapshot:
    level: AlertLevel
    state: PlatformState
    colour: Colour
    ratio: float
    maybe: float | None
    per: dict[str, Any]
    tags: frozenset[str]
    raw: bytes
    anything: Any
    _private: str = "hidden"

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - must not be called
        raise AssertionError("the converter must not need to_dict")


def test_the_rules_the_api_has_always_shown() -> None:
    snap = Snapshot(
        level=AlertLevel.WARNING,
        state=PlatformState.RUNNING,
        colour=Colour.RED,
        ratio=math.inf,
        maybe=-math.inf,
        per={"a": math.nan, "b": [MessagePriority.HIGH, 1.5]},
        tags=frozenset({"x"}),
        raw=b"caf\xc3\xa9 \xff",
        anything=range(2),
    )
    assert plain(snap) == {
        "level": "WARNING",  # IntEnum: its name
        "state": "running",  # another enum: its value
        "colour": "red",
        "ratio": "inf",
        "maybe": "-inf",
        "per": {"a": "nan", "b": ["HIGH", 1.5]},
        "tags": ["x"],
        "raw": "café \ufffd",
        "anything": "range(0, 2)",  # no JSON form: its str
    }
    text = dump_json({"snap": snap, "n": None, "ok": True})
    assert json.loads(text)["snap"]["ratio"] == "inf"
    assert '"n":null' in text and '"ok":true' in text  # compact, like the API always was


def test_a_buffered_message_is_flat_and_never_expiring_is_null() -> None:
    m = OutboundMessage(
        platform_id="qq",
        message_type="send_msg",
        content={"message": "hi"},
        priority=MessagePriority.LOW,
        message_key="k1",
        created_at=100.0,
    )
    forever = BufferedMessage(message=m, age=1.5, expires_in=math.inf, attempts=2)
    assert plain(forever) == {
        "platform_id": "qq",
        "message_type": "send_msg",
        "content": {"message": "hi"},
        "priority": "LOW",
        "message_key": "k1",
        "created_at": 100.0,
        "age": 1.5,
        "expires_in": None,
        "attempts": 2,
    }
    soon = attrs.evolve(forever, expires_in=3.0)
    assert plain(soon)["expires_in"] == 3.0


async def test_config_versions_and_diffs() -> None:
    mgr = ConfigVersionManager()
    await mgr.create_version({"api": {"token": "t-1"}}, ConfigChangeType.CREATE, "one", "test")
    v2 = await mgr.create_version({"api": {"token": "t-2"}, "x": 1}, description="two")
    shown = plain(v2)
    assert shown == {
        "version_id": "v2",
        "revision": 2,
        "change_type": "update",
        "description": "two",
        "author": "system",
        "created_at": v2.created_at,
        "parent_id": "v1",
        "restored_id": None,
        "checksum": v2.checksum,
    }
    assert "config" not in shown and "_text" not in shown and "text" not in shown
    diff = plain(mgr.compare_versions("v1", "v2"))
    assert set(diff) == {"from", "to", "patch", "diff"}
    assert diff["from"] == "v1" and diff["to"] == "v2"
    assert {"op": "add", "path": "/x", "value": 1} in diff["patch"]
    assert "t-1" not in json.dumps(diff) and "t-2" not in json.dumps(diff)


def test_secrets_are_redacted_unless_told() -> None:
    data = {"token": "s3cret", "url": "ws://u:pw@h/?access_token=a"}
    assert plain(data) == {"token": "***", "url": "ws://***@h/?access_token=***"}
    assert plain(data, redacted=False) == data
    assert "s3cret" not in dump_json(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=15,
    )
)
def test_any_json_like_value_dumps_as_strict_json(value: Any) -> None:
    text = dump_json(value, redacted=False)
    back = json.loads(text)  # allow_nan=False: never NaN/Infinity tokens
    assert back == converter.unstructure(value)
