"""Hypothesis strategies shared by the test suite (append your section; do not clobber)."""

from __future__ import annotations

from hypothesis import strategies as st

# ---- config versions (issue 7) ----------------------------------------------

_toml_key = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10
)
_toml_scalar = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)

toml_values = st.recursive(
    _toml_scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_toml_key | st.sampled_from(["token", "password"]), inner, max_size=4),
    max_leaves=20,
)
"""Any value a TOML document can hold (no datetimes), nested tables and arrays."""

toml_config_dicts = st.dictionaries(_toml_key, toml_values, max_size=6)
"""TOML-able config dicts of any shape (not necessarily a valid ``nekobot.toml``)."""


@st.composite
def valid_config_dicts(draw: st.DrawFn) -> dict:
    """Dicts that ``parse_config`` accepts; platforms use ``tests.fakes:FakePlatform``."""
    pid = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
    pids = draw(st.lists(pid, max_size=3, unique=True))
    platforms = {
        pid: {
            "type": "tests.fakes:FakePlatform",
            "enabled": draw(st.booleans()),
            "label": draw(st.text(max_size=10)),
            "connection": {"reconnect_interval": draw(st.floats(min_value=0, max_value=100))},
        }
        for pid in pids
    }
    return {
        "bot": {"name": draw(st.text(min_size=1, max_size=12))},
        "router": {
            "max_queue_size": draw(st.integers(min_value=1, max_value=10**6)),
            "enable_dedup": draw(st.booleans()),
        },
        "api": {"token": draw(st.text(alphabet="abcdef0123456789", min_size=8, max_size=16))},
        "platforms": platforms,
    }
