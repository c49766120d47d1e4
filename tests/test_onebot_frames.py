"""No data from a OneBot v11 peer may stop the platform.

Every frame a peer can send is counted and either emitted or dropped, with the
link kept up; a handshake the platform cannot read is refused, with the
listener kept serving. Policy as ``test_onebot_v11.py``: loopback only, port 0,
a Trio-clock ``fail_after`` around every I/O test; input frames are the
fixtures in ``tests/fixtures/onebot11`` with one field made hostile.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events

from nekobot.config.validators import nesting_exceeds
from nekobot.errors import OneBotActionFailed
from nekobot.platforms.onebot_v11.frames import (
    MAX_NESTING,
    Drop,
    Event,
    Response,
    account_id,
    dedup_key,
    echo_key,
    encode_action,
    heartbeat_seconds,
    parse_frame,
)
from nekobot.platforms.onebot_v11.websocket import Accepted, Rejected, check_handshake
from tests.onebot_peer import EVENTS, open_reverse_peer, reverse_headers
from tests.test_onebot_v11 import TOKEN, emitted, running, wait_for

PRIVATE = json.loads(EVENTS[2])  # a private message event, message_id 1
HEARTBEAT = json.loads(EVENTS[1])  # interval 5000 ms


def with_(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**base, **fields}


def nested(levels: int) -> Any:
    """``levels`` arrays, one inside the other, around a 0."""
    value: Any = 0
    for _ in range(levels):
        value = [value]
    return value


# ---- over a live link ----------------------------------------------------------


async def test_hostile_field_values_are_handled_and_the_link_stays_up() -> None:
    # Each of these raised out of the frame reader before (ValueError from
    # int("²") and int("--5"), OverflowError from a 401-digit heartbeat
    # interval) and took the listener, and so the platform, down.
    hostile_events = [
        with_(PRIVATE, message_id="²"),
        with_(PRIVATE, message_id="--5"),
        with_(PRIVATE, message_id=7, self_id={"a": [1]}),
        with_(PRIVATE, message_id=8, self_id=True),
        with_(PRIVATE, message_id=10**400),
    ]
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            for frame in hostile_events:
                await peer.send(frame)
            await peer.send(with_(HEARTBEAT, interval=10**400))
            await peer.send(with_(HEARTBEAT, interval=float("inf")))  # sent as Infinity
            await peer.send(EVENTS[2])
            await wait_for(lambda: len(emitted(platform)) == 8)
            keys = [m.dedup_key for m in emitted(platform)]
            assert keys[:5] == [(10001, "²"), (10001, "--5"), None, (True, 8), (10001, 10**400)]
            assert keys[7] == (10001, 1)
            c = platform.counters
            assert c["events"] == 8 and c["frames_failed"] == 0
            assert sum(v for k, v in c.items() if k.startswith("dropped_")) == 0
            assert platform.online and platform.get_connection_stats()["links"] == 1
            # the connection still carries calls
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.answer, {"ok": 1})
                assert await platform.call_api("get_status") == {"ok": 1}


async def test_deep_nesting_lone_surrogates_and_huge_literals_are_dropped() -> None:
    deep = MAX_NESTING + 50
    frames = [
        json.dumps(with_(PRIVATE, message=nested(deep))),  # an event nested too deep
        json.dumps({"status": "ok", "retcode": 0, "echo": nested(deep)}),  # a response
        '{"post_type":"message","message":"\\ud800 cut","message_id":3}',  # lone surrogate
        '{"post_type":"message","message_id":' + "9" * 5000 + "}",  # over 4300 digits
    ]
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            for frame in frames:
                await peer.send(frame)
            await peer.send(EVENTS[2])
            await wait_for(lambda: len(emitted(platform)) == 1)
            c = platform.counters
            assert c["dropped_not_json"] == 3
            assert c["dropped_invalid_unicode"] == 1
            assert c["frames_received"] == 5 and c["frames_failed"] == 0
            assert [m.content for m in emitted(platform)] == [PRIVATE]
            assert platform.get_connection_stats()["links"] == 1


async def test_a_paired_surrogate_escape_is_text_and_is_emitted() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            await peer.send(json.dumps(with_(PRIVATE, message="猫 😺"), ensure_ascii=True))
            await wait_for(lambda: len(emitted(platform)) == 1)
            assert emitted(platform)[0].content["message"] == "猫 😺"


async def test_odd_response_fields_fail_only_their_call() -> None:
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):

            async def implementation() -> None:
                for retcode in ("0", [0], None, 10**400):
                    action = await peer.recv_action()
                    await peer.send({"status": "ok", "retcode": retcode, "echo": action["echo"]})

            async with trio.open_nursery() as nursery:
                nursery.start_soon(implementation)
                for _ in range(4):
                    with pytest.raises(OneBotActionFailed):
                        await platform.call_api("get_status")
            await peer.send(EVENTS[2])
            await wait_for(lambda: len(emitted(platform)) == 1)
            assert platform.counters["frames_failed"] == 0


async def test_a_lone_surrogate_in_a_call_goes_out_escaped() -> None:
    # Text from an inbound event (JSON may carry a lone surrogate) echoed in a
    # reply: it cannot be sent as UTF-8, so the frame uses \u escapes instead
    # of failing with UnicodeEncodeError.
    with trio.fail_after(10):
        async with (
            running() as platform,
            open_reverse_peer(platform.bound_port, token=TOKEN) as peer,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(platform.call_api, "send_msg", {"message": "a\ud800b"})
                action = await peer.answer({"message_id": 1})
            assert action["params"] == {"message": "a\ud800b"}


async def test_a_handshake_target_that_is_not_a_url_is_refused_and_the_listener_serves() -> None:
    # "//[x" made urllib's urlsplit raise ValueError inside the handshake handler.
    with trio.fail_after(10):
        async with running() as platform:
            assert platform.bound_port is not None
            stream = await trio.open_tcp_stream("127.0.0.1", platform.bound_port)
            ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
            request = wsproto.events.Request(
                host="127.0.0.1", target="//[x", extra_headers=reverse_headers(token=TOKEN)
            )
            await stream.send_all(ws.send(request))
            answers: list[wsproto.events.Event] = []
            while not answers:
                ws.receive_data(await stream.receive_some(65536))
                answers = list(ws.events())
            assert isinstance(answers[0], wsproto.events.RejectConnection)
            assert answers[0].status_code == 404
            await stream.aclose()
            async with open_reverse_peer(platform.bound_port, token=TOKEN) as peer:
                await peer.send(EVENTS[2])
                await wait_for(lambda: emitted(platform))
            assert platform.counters["handshakes_rejected_other"] == 1


# ---- the rules, without a socket -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (EVENTS[2], Event),
        ('{"status":"ok","retcode":0,"echo":1}', Response),
        ('{"retcode":0}', Response),
        ("not json", Drop.NOT_JSON),
        (b"\xff\xfe", Drop.NOT_JSON),
        ("[" * 4000, Drop.NOT_JSON),
        (json.dumps({"a": nested(MAX_NESTING)}), Drop.NOT_JSON),
        ("1" * 5000, Drop.NOT_JSON),
        ('{"post_type":"message","x":"\\udc80"}', Drop.INVALID_UNICODE),
        ("[1]", Drop.NOT_OBJECT),
        ('"text"', Drop.NOT_OBJECT),
        ('{"post_type":""}', Drop.NO_POST_TYPE),
        ('{"post_type":5,"echo":1}', Drop.NO_POST_TYPE),
        ('{"post_type":"x","pad":"' + "x" * 100 + '"}', Drop.OVERSIZED),
        (b'{"post_type":"x","pad":"' + b"x" * 100 + b'"}', Drop.OVERSIZED),
    ],
)
def test_parse_frame_classifies(data: str | bytes, expected: Any) -> None:
    got = parse_frame(data, 100 if expected is Drop.OVERSIZED else 1 << 20)
    if isinstance(expected, Drop):
        assert got is expected
    else:
        assert isinstance(got, expected)


def test_nesting_at_the_bound_is_accepted() -> None:
    frame = json.dumps({"post_type": "message", "x": nested(MAX_NESTING - 1)})
    assert isinstance(parse_frame(frame, 1 << 20), Event)
    assert not nesting_exceeds(json.loads(frame), MAX_NESTING)
    assert nesting_exceeds({"x": nested(MAX_NESTING)}, MAX_NESTING)
    assert not nesting_exceeds(5, 0)


def test_heartbeat_interval_in_milliseconds() -> None:
    assert heartbeat_seconds(5000) == 5.0
    assert heartbeat_seconds(1500.0) == 1.5
    for bad in (0, -5, True, "5000", None, math.inf, math.nan, 10**400, [5000]):
        assert heartbeat_seconds(bad) is None


def test_ids_and_accounts() -> None:
    assert dedup_key(10001, "123") == (10001, 123)
    assert dedup_key("10001", -5) == (10001, -5)
    assert dedup_key(10001, None) is None
    assert dedup_key(10001, [1]) is None
    assert dedup_key(10001, "²") == (10001, "²")  # not ASCII digits: kept as text
    assert dedup_key(10001, "1" * 30) == (10001, "1" * 30)
    assert account_id(10001) == "10001"
    assert account_id(" 10001 ") == "10001"
    for bad in (None, True, "", "  ", 1.5, {"a": 1}, [1]):
        assert account_id(bad) is None


def test_echo_keys_match_by_value_and_never_raise() -> None:
    assert echo_key({"b": [2], "a": 1}) == echo_key({"a": 1, "b": [2]})
    assert echo_key({1, 2}) is None
    loop: list[Any] = []
    loop.append(loop)
    assert echo_key(loop) is None


def test_encode_action_sizes_and_escapes() -> None:
    text, size = encode_action("send_msg", {"message": "猫"}, "e1")
    assert json.loads(text) == {"action": "send_msg", "params": {"message": "猫"}, "echo": "e1"}
    assert "猫" in text and size == len(text.encode("utf-8"))
    text, size = encode_action("send_msg", {"message": "\ud800"}, 1)
    assert text.isascii() and size == len(text)
    assert json.loads(text)["params"]["message"] == "\ud800"


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        ("/onebot/v11/ws", {"X-Self-ID": "1"}, Accepted("1", "Universal")),
        ("/onebot/v11/ws/", {"X-Self-ID": "1", "X-Client-Role": "event"}, Accepted("1", "Event")),
        ("/onebot/v11/ws/api", {"X-Self-ID": "1"}, Accepted("1", "API")),
        ("/onebot/v11/ws?access_token=t", {"X-Self-ID": "1"}, Accepted("1", "Universal")),
        ("/elsewhere", {"X-Self-ID": "1"}, Rejected(404, b"unknown path")),
        ("//[x", {"X-Self-ID": "1"}, Rejected(404, b"unknown path")),
        ("/onebot/v11/ws", {"X-Client-Role": "Universal"}, 400),
        ("/onebot/v11/ws", {"X-Self-ID": "1", "X-Client-Role": "boss"}, 400),
    ],
)
def test_check_handshake(target: str, headers: dict[str, str], expected: Any) -> None:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    if "access_token" not in target:
        raw.append((b"Authorization", b"Bearer t"))
    got = check_handshake(target, raw, path="/onebot/v11/ws", token="t")
    if isinstance(expected, int):
        assert isinstance(got, Rejected) and got.status == expected
    else:
        assert got == expected


def test_check_handshake_token_and_accepting() -> None:
    raw = [(b"X-Self-ID", b"1")]
    assert check_handshake("/p", raw, path="/p", token="t") == Rejected(
        401, b"missing or wrong access token", auth=True
    )
    wrong = [*raw, (b"Authorization", b"Token nope")]
    assert isinstance(check_handshake("/p", wrong, path="/p", token="t"), Rejected)
    assert check_handshake("/p", raw, path="/p", token=None) == Accepted("1", "Universal")
    stopped = check_handshake("/p", raw, path="/p", token=None, accepting=False)
    assert isinstance(stopped, Rejected) and stopped.status == 503
