"""The ``nekobot.toml`` schema: every problem named by key path, env secrets, dumps."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from nekobot.config.loader import load_config, parse_config
from nekobot.config.schema import NekoBotConfig, config_to_dict, dumps_config
from nekobot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
FAKE = "tests.fakes:FakePlatform"


def problems_of(data: dict, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kw)
    return info.value.problems


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "nekobot.toml")
    assert "qq" in config.platforms
    assert config.platforms["qq"].type == "onebot_v11"
    assert config.bot.plugins == ["nekobot.plugins.echo:setup"]
    assert config.data_path() == (ROOT / "data").resolve()


def test_empty_config_takes_defaults() -> None:
    assert parse_config({}) == NekoBotConfig()


def test_wrong_type_unknown_key_and_missing_key_all_reported_by_path() -> None:
    data = {
        "bot": {"name": "x", "colour": "red"},
        "api": {"port": "abc"},
        "platforms": {"qq": {"port": 1}, "tg": {"type": FAKE, "label": 3}},
    }
    problems = problems_of(data)
    assert "bot.colour: unknown key" in problems
    assert "api.port: expected int, got 'abc'" in problems
    assert "platforms.qq.type: required key missing" in problems
    assert "platforms.tg.label: expected string, got 3" in problems
    assert len(problems) == 4


def test_unknown_top_level_section_and_platform_key() -> None:
    problems = problems_of({"routr": {}, "platforms": {"a": {"type": FAKE, "lable": "x"}}})
    assert problems == ["routr: unknown key", "platforms.a.lable: unknown key"]


def test_range_errors_name_the_field() -> None:
    problems = problems_of({"router": {"max_queue_size": 0}, "supervisor": {"jitter": 2.0}})
    assert "router.max_queue_size: must be > 0, got 0" in problems
    assert "supervisor.jitter: must be between 0 and 1, got 2.0" in problems


def test_bool_is_not_an_int_and_strings_are_not_numbers() -> None:
    problems = problems_of({"router": {"max_concurrency": True, "dedup_window": "5"}})
    assert "router.max_concurrency: expected int, got True" in problems
    assert "router.dedup_window: expected float, got '5'" in problems


def test_literal_choices_are_listed() -> None:
    (problem,) = problems_of({"buffer": {"policy": "random"}})
    assert problem == "buffer.policy: expected one of 'fifo', 'lifo', 'priority', got 'random'"


def test_connection_section_validated_with_path() -> None:
    problems = problems_of(
        {"platforms": {"qq": {"type": FAKE, "connection": {"reconnect_interval": "soon", "x": 1}}}}
    )
    assert "platforms.qq.connection.reconnect_interval: expected float, got 'soon'" in problems
    assert "platforms.qq.connection.x: unknown key" in problems


def test_unknown_platform_type_names_the_choices() -> None:
    (problem,) = problems_of({"platforms": {"qq": {"type": "onebot_v12"}}})
    assert problem.startswith("platforms.qq.type: unknown platform type 'onebot_v12'")
    assert "onebot_v11" in problem


def test_env_secret_substituted() -> None:
    data = {"api": {"token": "${NB_TOKEN}"}}
    config = parse_config(data, env={"NB_TOKEN": "s3cret"})
    assert config.api.token == "s3cret"


def test_missing_env_variable_is_named() -> None:
    problems = problems_of({"api": {"token": "${NB_TOKEN}"}}, env={})
    assert problems == ["api.token: environment variable NB_TOKEN is not set"]


def test_env_default_used_when_unset() -> None:
    config = parse_config({"bot": {"name": "${NB_NAME:-neko}"}}, env={})
    assert config.bot.name == "neko"


def test_non_loopback_api_needs_token() -> None:
    problems = problems_of({"api": {"enable": True, "host": "0.0.0.0"}})
    assert problems == ["api.token: required when api.host ('0.0.0.0') is not a loopback address"]
    parse_config({"api": {"enable": True, "host": "0.0.0.0", "token": "t"}})
    parse_config({"api": {"enable": True, "host": "::1"}})


def test_bad_platform_id() -> None:
    (problem,) = problems_of({"platforms": {"a b": {"type": FAKE}}})
    assert problem.startswith("platforms.a b:")


def test_toml_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bot\nname=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_dump_round_trip(tmp_path: Path) -> None:
    config = parse_config(
        {
            "bot": {"name": "n", "plugins": ["a.b:setup"]},
            "buffer": {"platform_max_size": {"qq": 10}},
            "platforms": {"qq": {"type": FAKE, "label": "L", "connection": {"jitter": 0.0}}},
        }
    )
    text = dumps_config(config)
    again = parse_config(tomllib.loads(text))
    assert again == config
    assert config_to_dict(again) == config_to_dict(config)


def test_connection_range_error_names_the_field() -> None:
    problems = problems_of({"platforms": {"qq": {"type": FAKE, "connection": {"jitter": -1}}}})
    assert problems == ["platforms.qq.connection.jitter: must be >= 0, got -1.0"]


def test_non_loopback_console_needs_token() -> None:
    problems = problems_of({"console": {"enable": True, "host": "0.0.0.0"}})
    assert problems == [
        "console.token: required when console.host ('0.0.0.0') is not a loopback address"
    ]


def test_nan_and_infinity_refused_where_they_mean_nothing() -> None:
    nan, inf = float("nan"), float("inf")
    problems = problems_of(
        {
            "buffer": {"replay_rate": inf},
            "platforms": {
                "qq": {
                    "type": FAKE,
                    "connection": {"heartbeat_interval": nan, "reconnect_interval": inf},
                }
            },
        }
    )
    assert problems == [
        "buffer.replay_rate: must be a finite number, got inf",
        "platforms.qq.connection.heartbeat_interval: expected float (a number, not NaN), got nan",
        "platforms.qq.connection.reconnect_interval: must be a finite number, got inf",
    ]


def test_infinity_allowed_where_documented() -> None:
    inf = float("inf")
    config = parse_config({"buffer": {"default_ttl": inf}, "router": {"handler_timeout": inf}})
    assert config.buffer.default_ttl == inf and config.router.handler_timeout == inf


def test_a_type_error_does_not_hide_a_range_error_in_the_same_section() -> None:
    problems = problems_of({"supervisor": {"strategy": "x", "max_restarts": -5}})
    assert problems == [
        "supervisor.strategy: expected one of 'one_for_one', 'one_for_all', 'rest_for_one', "
        "got 'x'",
        "supervisor.max_restarts: must be >= 0, got -5",
    ]


def test_bounds_that_contradict_each_other() -> None:
    problems = problems_of(
        {
            "supervisor": {"backoff_min": 100.0, "backoff_max": 30.0},
            "platforms": {"qq": {"type": FAKE, "connection": {"reconnect_interval": 100.0}}},
        }
    )
    assert problems == [
        "supervisor.backoff_min: must be <= backoff_max (30.0), got 100.0",
        "platforms.qq.connection.reconnect_interval: must be <= max_reconnect_interval (60.0), "
        "got 100.0",
    ]


def test_two_listeners_on_one_port_are_refused() -> None:
    problems = problems_of(
        {
            "api": {"enable": True, "port": 6700},
            "platforms": {
                "qq": {"type": "onebot_v11", "port": 6700},
                "tg": {"type": "onebot_v11", "port": 6800, "host": "0.0.0.0"},
                "tg2": {"type": "onebot_v11", "port": 6800},
                "fw": {"type": "onebot_v11", "mode": "forward", "url": "ws://x/", "port": 6800},
                "any": {"type": "onebot_v11", "port": 0},
                "any2": {"type": "onebot_v11", "port": 0},
            },
        }
    )
    assert problems == [
        "platforms.qq.port: port 6700 is also used by api.port",
        "platforms.tg2.port: port 6800 is also used by platforms.tg.port",
    ]


def test_buffer_overflow_wait_reaches_the_buffer() -> None:
    from nekobot.buffer.message_buffer import MessageBuffer

    config = parse_config({"buffer": {"overflow_wait": 2.5, "durable": False}})
    assert MessageBuffer.from_config(config.buffer).overflow_wait == 2.5


def test_forward_onebot_url_must_be_a_websocket_url() -> None:
    problems = problems_of(
        {"platforms": {"fw": {"type": "onebot_v11", "mode": "forward", "url": "not a url"}}}
    )
    assert problems == ["platforms.fw.url: must be a ws:// or wss:// URL, got 'not a url'"]


def test_a_long_bad_value_is_named_not_echoed_in_full() -> None:
    (problem,) = problems_of({"api": {"port": "x" * 5000}})
    assert problem.startswith("api.port: expected int, got 'xxxx")
    assert len(problem) < 120 and problem.endswith("…")


def test_connection_jitter_above_one_is_refused_by_path() -> None:
    problems = problems_of({"platforms": {"qq": {"type": FAKE, "connection": {"jitter": 1.5}}}})
    assert problems == ["platforms.qq.connection.jitter: must be <= 1, got 1.5"]


def test_one_validators_module_names_the_field() -> None:
    from nekobot.config.schema import ApiConfig, ConnectionConfig, SupervisorConfig
    from nekobot.errors import FieldValueError
    from nekobot.platforms.onebot_v11 import OneBotV11Config

    cases: list[tuple[Any, dict[str, Any], str]] = [
        (ApiConfig, {"port": 70000}, "must be 0..65535, got 70000"),
        (SupervisorConfig, {"jitter": -0.5}, "must be between 0 and 1, got -0.5"),
        (SupervisorConfig, {"period": float("nan")}, "must be a finite number, got nan"),
        (ConnectionConfig, {"heartbeat_timeout": 0.0}, "must be > 0, got 0.0"),
        (ConnectionConfig, {"stable_after": float("inf")}, "must be a finite number, got inf"),
        (ConnectionConfig, {"reconnect_interval": "soon"}, "must be >= 0, got 'soon'"),
        (OneBotV11Config, {"path": 5}, "must start with '/', got 5"),
        (OneBotV11Config, {"mode": None}, "must be 'reverse' or 'forward', got None"),
    ]
    for cls, kw, text in cases:
        with pytest.raises(FieldValueError) as info:
            cls(**kw)
        assert (info.value.field, str(info.value)) == (next(iter(kw)), text)
    assert ConnectionConfig(heartbeat_timeout=None).heartbeat_timeout is None


def test_is_loopback() -> None:
    from nekobot.config.validators import is_loopback

    for host in ("localhost", "127.0.0.1", "127.8.9.10", "::1"):
        assert is_loopback(host)
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
        assert not is_loopback(host)


def test_platform_types_are_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    from nekobot.platforms import base
    from tests.fakes import FakePlatform

    scans: list[str] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        scans.append(group)
        return [EntryPoint("fake_ep", "tests.fakes:FakePlatform", group)]

    monkeypatch.setattr(base, "entry_points", entry_points)
    base._entry_points.cache_clear()
    base.load_platform_class.cache_clear()
    try:
        for _ in range(100):
            assert base.load_platform_class("fake_ep") is FakePlatform
            assert base.load_platform_class(FAKE) is FakePlatform
            with pytest.raises(LookupError, match="unknown platform type 'nope'"):
                base.load_platform_class("nope")
        assert scans == ["nekobot.platforms"]  # once, not once per lookup
    finally:
        base._entry_points.cache_clear()
        base.load_platform_class.cache_clear()


def test_a_failed_platform_lookup_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (problem,) = problems_of({"platforms": {"x": {"type": "nb_late_plugin:Late"}}})
    assert problem.startswith("platforms.x.type: cannot import platform type 'nb_late_plugin:Late'")
    (tmp_path / "nb_late_plugin.py").write_text(
        "import attrs\n"
        "from nekobot.platforms.base import PlatformActor\n"
        "@attrs.frozen\n"
        "class LateConfig:\n"
        "    pass\n"
        "class Late(PlatformActor):\n"
        "    config_class = LateConfig\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = parse_config({"platforms": {"x": {"type": "nb_late_plugin:Late"}}})
    assert config.platforms["x"].type == "nb_late_plugin:Late"


def test_a_plugin_that_raises_on_import_is_a_config_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "nb_broken_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = problems_of({"platforms": {"x": {"type": "nb_broken_plugin:P"}}})
    assert problem == (
        "platforms.x.type: cannot import platform type 'nb_broken_plugin:P': broken on purpose"
    )


def test_config_schema_imports_no_platform_code() -> None:
    # The layering that keeps the import graph acyclic (issue 10): the schema and
    # validators sit below the platforms; only the loader reaches up to them.
    import ast

    import nekobot.config.schema
    import nekobot.config.validators
    import nekobot.platforms.base

    for module in (nekobot.config.schema, nekobot.config.validators, nekobot.platforms.base):
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.col_offset == 0, f"{module.__name__}: a function-level import"
                target = node.module or ""
                assert not target.startswith(("platforms", "runtime", "app", "api")), (
                    f"{module.__name__} imports {target}"
                )
                assert target != "loader", f"{module.__name__} imports the loader"
