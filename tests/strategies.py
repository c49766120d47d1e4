"""Hypothesis strategies shared by the test suite (append your section; do not clobber)."""

from __future__ import annotations

from hypothesis import strategies as st

# ---- config versions (issue 7) ----------------------------------------------

_toml_key = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=10)
_toml_scalar = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)

toml_values = st.recursive(
    _toml_scalar,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_toml_key | st.sampled_from(["token", "password"]), inner, max_size=4)
    ),
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
            "connection": {"reconnect_interval": draw(st.floats(min_value=0, max_value=60))},
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


# ---- message router (issue 4) -----------------------------------------------

router_model_configs = st.fixed_dictionaries(
    {
        "max_queue_size": st.integers(min_value=1, max_value=6),
        "max_concurrency": st.integers(min_value=1, max_value=3),
        "overflow": st.sampled_from(["block", "drop_lowest"]),
    }
)
"""The parts of ``RouterConfig`` the router model test varies."""

router_ops = st.lists(
    st.one_of(
        # route one message: dedup key (None = never deduplicated), priority 1..4
        st.tuples(
            st.just("route"),
            st.sampled_from([None, 0, 1, 2, 3]),
            st.integers(min_value=1, max_value=4),
        ),
        # route again the key of an earlier route (index taken modulo)
        st.tuples(st.just("dup"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("dup"), st.integers(min_value=0, max_value=1000)),
        # route several keyless messages without letting the router run in between
        st.tuples(st.just("burst"), st.lists(st.integers(min_value=1, max_value=4), max_size=10)),
        st.tuples(st.just("ok")),
        st.tuples(st.just("fail")),
        st.tuples(st.just("jump"), st.sampled_from([0.1, 0.5, 1.0, 2.0, 30.0, 61.0])),
    ),
    min_size=3,
    max_size=50,
)
"""Operations on a router: route / duplicate / burst / handler-ok / handler-fail /
time-jump (seconds on the Trio clock)."""
