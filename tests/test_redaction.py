"""The one redaction rule (nekobot.config.redaction): secret key names, URL credentials.

Unit tests pin the names and URL shapes an operator meets; property tests
(Hypothesis) check that no secret survives, nothing else changes, and that
redacting twice changes nothing more.
"""

from __future__ import annotations

import json
import logging
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nekobot.config.redaction import (
    REDACTED,
    REDACTED_CHANGED,
    RedactingFilter,
    is_secret_key,
    redact,
    redact_urls,
    secret_values,
)

SECRET_NAMES = [
    "token",
    "access_token",
    "accessToken",
    "accesstoken",
    "api_token",
    "secret",
    "secret_key",
    "client_secret",
    "password",
    "passwd",
    "db_password",
    "api_key",
    "apiKey",
    "APIKey",
    "X-Api-Key",
    "private_key",
    "Authorization",
    "credentials",
    "passphrase",
    "TOKEN",
    "session-cookie",
]
NOT_SECRET = [
    "tokens",  # a count (the config history keeps it in clear)
    "key",
    "message_key",
    "dedup_key",
    "author",
    "metrics_auth",
    "include_secrets",
    "monkey",
    "host",
    "url",
    "reason",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", NOT_SECRET)
def test_names_that_are_not_secrets(name: str) -> None:
    assert not is_secret_key(name)


def test_the_keys_the_api_showed_in_clear_are_hidden_like_the_console_hid_them() -> None:
    config = {
        "db": {"passwd": "pw-1234", "secret_key": "sk-5678", "user": "neko"},
        "api_key": "ak-9999",
        "platforms": {"qq": {"access_token": "qq-tok", "url": "ws://127.0.0.1:6700/"}},
    }
    shown = redact(config)
    assert shown == {
        "db": {"passwd": REDACTED, "secret_key": REDACTED, "user": "neko"},
        "api_key": REDACTED,
        "platforms": {"qq": {"access_token": REDACTED, "url": "ws://127.0.0.1:6700/"}},
    }


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ws://user:pass@host/", "ws://***@host/"),
        ("wss://bot@example.org:443/ws", "wss://***@example.org:443/ws"),
        ("ws://host/?access_token=abc&x=1", "ws://host/?access_token=***&x=1"),
        ("http://h/p?token=t1;a=b#frag", "http://h/p?token=***;a=b#frag"),
        ("http://h/cb#access_token=xyz&state=1", "http://h/cb#access_token=***&state=1"),
        ("/onebot/v11/ws?access_token=qq-secret", "/onebot/v11/ws?access_token=***"),
        (
            "cannot connect to ws://u:p@10.0.0.1:6700/?api_key=k1 (refused)",
            "cannot connect to ws://***@10.0.0.1:6700/?api_key=*** (refused)",
        ),
        # nothing to hide: kept byte for byte
        ("ws://host:6700/path?x=1&tokens=3", "ws://host:6700/path?x=1&tokens=3"),
        ("mail me at neko@example.org", "mail me at neko@example.org"),
        ("ws://host/?token=", "ws://host/?token="),
        ("a = b, token = c", "a = b, token = c"),
    ],
)
def test_credentials_in_urls(text: str, shown: str) -> None:
    assert redact_urls(text) == shown
    assert redact({"url": text}) == {"url": shown}


def test_a_diff_says_a_secret_changed_without_showing_it() -> None:
    old = {"api": {"token": "one"}, "db": {"password": "same"}}
    new = {"api": {"token": "two"}, "db": {"password": "same"}}
    assert redact(new, old) == {"api": {"token": REDACTED_CHANGED}, "db": {"password": REDACTED}}


def test_none_is_shown_it_hides_nothing() -> None:
    assert redact({"token": None, "secret": ""}) == {"token": None, "secret": REDACTED}


def test_secret_values_finds_keys_and_url_credentials() -> None:
    found = secret_values(
        {
            "api": {"token": "tok-1234", "short": "x"},
            "list": [{"password": "pw-5678"}],
            "nested": {"secret": {"value": "in-a-table"}},
            "url": "ws://neko:hunter22@h/?access_token=qs-0000",
            "tok": "abc",
        }
    )
    assert found == {"tok-1234", "pw-5678", "in-a-table", "hunter22", "qs-0000"}


def test_the_log_filter_masks_urls_in_messages_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("nekobot.test_redaction")
    caplog.handler.addFilter(RedactingFilter())
    try:
        log.warning("dialing %s", "ws://u:hunter2@h/?access_token=abc")
        try:
            raise OSError("ws://h/?token=zzz refused")
        except OSError:
            log.exception("failed")
    finally:
        caplog.handler.removeFilter(caplog.handler.filters[-1])
    assert "hunter2" not in caplog.text and "abc" not in caplog.text and "zzz" not in caplog.text
    assert "dialing ws://***@h/?access_token=***" in caplog.text
    assert "ws://h/?token=*** refused" in caplog.text


# --------------------------------------------------------------------------
# properties

_SECRET_ALPHABET = "QZJ"  # secrets are drawn from letters nothing else uses
secret_strings = st.text(alphabet=_SECRET_ALPHABET, min_size=6, max_size=12)
plain_text = st.text(alphabet=string.ascii_lowercase + string.digits + " .:/-", max_size=12)
plain_keys = st.text(alphabet="abcdefghijlmnuvwy_", min_size=1, max_size=8).filter(
    lambda k: not is_secret_key(k)
)
secret_keys = st.sampled_from(SECRET_NAMES) | st.builds(
    lambda a, b: f"{a}_{b}", plain_keys, st.sampled_from(["token", "secret", "password"])
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), plain_text)


@st.composite
def url_with_secrets(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["ws", "wss", "http", "https"]))
    host = draw(st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,4})?", fullmatch=True))
    userinfo = ""
    if draw(st.booleans()):
        userinfo = draw(secret_strings)
        if draw(st.booleans()):
            userinfo = f"user:{userinfo}"
        userinfo += "@"
    path = draw(st.from_regex(r"(/[a-z0-9]{1,6}){0,3}/?", fullmatch=True))
    params = draw(
        st.lists(
            st.one_of(
                st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["x", "page", "n"]), plain_keys),
                st.builds(
                    lambda k, v: f"{k}={v}",
                    st.sampled_from(["access_token", "token", "api_key", "secret"]),
                    secret_strings,
                ),
            ),
            max_size=4,
        )
    )
    query = ("?" + "&".join(params)) if params else ""
    return f"{scheme}://{userinfo}{host}{path}{query}"


json_values = st.recursive(
    scalars | url_with_secrets(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(plain_keys, inner, max_size=4)
        | st.dictionaries(secret_keys, secret_strings | inner, max_size=3)
    ),
    max_leaves=25,
)


def _shape(value: Any) -> Any:
    """The keys at every level, down to secrets (what redaction must keep)."""
    if isinstance(value, dict):
        return {k: None if is_secret_key(k) else _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return None


@given(json_values)
def test_no_secret_survives_and_the_shape_is_kept(value: Any) -> None:
    shown = redact(value)
    text = json.dumps(shown)
    for letter in _SECRET_ALPHABET:
        assert letter not in text, text
    assert _shape(shown) == _shape(value)


@given(json_values)
def test_redacting_twice_changes_nothing_more(value: Any) -> None:
    once = redact(value)
    assert redact(once) == once


@given(st.recursive(scalars, lambda inner: st.lists(inner) | st.dictionaries(plain_keys, inner)))
def test_values_without_secrets_are_kept(value: Any) -> None:
    assert redact(value) == value


@given(url_with_secrets())
def test_a_url_keeps_its_host_path_and_plain_parameters(url: str) -> None:
    shown = redact_urls(url)
    assert not set(_SECRET_ALPHABET) & set(shown)
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    host = authority.rpartition("@")[2]
    assert shown.startswith(f"{scheme}://") and host in shown
    for part in url.partition("?")[2].split("&"):
        name = part.partition("=")[0]
        if part and not is_secret_key(name):
            assert part in shown
    assert redact_urls(shown) == shown


@given(secret_keys, plain_keys)
def test_a_secret_name_stays_secret_with_a_prefix_and_in_any_case(key: str, prefix: str) -> None:
    assert is_secret_key(key.upper()) and is_secret_key(key.lower())
    assert is_secret_key(f"{prefix}_{key}")
