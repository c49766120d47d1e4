"""Config history: ids, immutability, checksums, pruning, rollback, diff, export/import.

Policy: no network; files only under ``tmp_path``; SQLite through ``Store``
(``":memory:"`` or a file in ``tmp_path``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
import tomli_w
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nekobot.api.serialize import dump_json
from nekobot.config.loader import parse_config
from nekobot.config.schema import NekoBotConfig, config_to_dict
from nekobot.config.version import CanonicalTexts, canonical
from nekobot.config.versions import REDACTED, ConfigChangeType, ConfigVersionManager, redact
from nekobot.errors import (
    ConfigError,
    Conflict,
    RevisionConflict,
    VersionCorrupted,
    VersionNotFound,
)
from nekobot.storage import Store

from .strategies import toml_config_dicts, valid_config_dicts


async def open_manager(path: str | Path = ":memory:", **kw: Any) -> ConfigVersionManager:
    store = Store(path)
    await store.open()
    mgr = ConfigVersionManager(store=store, **kw)
    await mgr.open()
    return mgr


@pytest.mark.parametrize("durable", [False, True])
async def test_200_versions_in_a_tight_loop_have_200_distinct_ordered_ids(durable: bool) -> None:
    mgr = await open_manager(max_versions=500) if durable else ConfigVersionManager(500)
    ids = []
    for i in range(200):
        v = await mgr.create_version({"n": i}, ConfigChangeType.UPDATE, f"change {i}", "test")
        ids.append(v.version_id)
    assert len(set(ids)) == 200
    assert ids == [f"v{i}" for i in range(1, 201)]
    assert [v.version_id for v in mgr.list_versions(3)] == ["v200", "v199", "v198"]
    assert mgr.current_revision == 200


async def test_changing_the_live_config_leaves_the_stored_version_as_it_was() -> None:
    mgr = ConfigVersionManager()
    live: dict[str, Any] = {"platforms": {"qq": {"access_token": "a", "ids": [1, 2]}}}
    before = json.loads(json.dumps(live))
    v = await mgr.create_version(live, ConfigChangeType.CREATE, "start", "test")
    checksum = v.checksum
    live["platforms"]["qq"]["access_token"] = "changed"
    live["platforms"]["qq"]["ids"].append(3)
    live["new"] = True
    # A copy handed out is also the caller's own: changing it changes nothing stored.
    handed_out = mgr.get_version("v1").config
    handed_out["platforms"]["qq"]["ids"].clear()
    stored = mgr.get_version("v1")
    assert stored.config == before
    assert stored.checksum == checksum
    assert (
        checksum
        == hashlib.sha256(
            json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )


async def test_checksum_is_checked_when_a_stored_version_is_read(tmp_path: Path) -> None:
    db = tmp_path / "nekobot.db"
    mgr = await open_manager(db)
    await mgr.create_version({"a": 1}, ConfigChangeType.CREATE, "", "test")
    await mgr.create_version({"a": 2}, ConfigChangeType.UPDATE, "", "test")
    await mgr.store.close()  # type: ignore[union-attr]
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE config_versions SET config = ? WHERE revision = 1", ('{"a":666}',))
    conn.close()
    mgr2 = await open_manager(db)
    assert mgr2.get_version("v2").config == {"a": 2}
    with pytest.raises(VersionCorrupted):
        _ = mgr2.get_version("v1").config
    with pytest.raises(VersionCorrupted):
        await mgr2.rollback_to_version("v1")
    assert mgr2.current_revision == 2


async def test_oldest_versions_are_pruned_and_history_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "nekobot.db"
    mgr = await open_manager(db, max_versions=3)
    for i in range(5):
        await mgr.create_version({"n": i}, ConfigChangeType.UPDATE, "", "test")
    assert [v.version_id for v in mgr.list_versions()] == ["v5", "v4", "v3"]
    with pytest.raises(VersionNotFound):
        mgr.get_version("v1")
    await mgr.store.close()  # type: ignore[union-attr]

    mgr2 = await open_manager(db, max_versions=3)
    assert [v.version_id for v in mgr2.list_versions()] == ["v5", "v4", "v3"]
    assert mgr2.current_revision == 5
    assert mgr2.get_version("v4").config == {"n": 3}
    v6 = await mgr2.create_version({"n": 5}, ConfigChangeType.UPDATE, "", "test")
    assert v6.version_id == "v6"
    assert v6.parent_id == "v5"
    assert [v.version_id for v in mgr2.list_versions()] == ["v6", "v5", "v4"]


async def test_max_versions_one_keeps_the_current() -> None:
    mgr = ConfigVersionManager(max_versions=1)
    for i in range(3):
        await mgr.create_version({"n": i}, ConfigChangeType.UPDATE, "", "test")
    assert [v.version_id for v in mgr.list_versions()] == ["v3"]
    assert mgr.current_version is not None and mgr.current_version.config == {"n": 2}


async def test_rollback_records_a_rollback_version() -> None:
    # Applying it to a running bot is the config service's part (test_config_service.py).
    mgr = await open_manager()
    await mgr.create_version({"port": 1}, ConfigChangeType.CREATE, "", "test")
    await mgr.create_version({"port": 2}, ConfigChangeType.UPDATE, "", "test")
    rb = await mgr.rollback_to_version("v1", "back to one")
    assert rb.version_id == "v3"
    assert rb.change_type is ConfigChangeType.ROLLBACK
    assert rb.parent_id == "v2"  # the version rolled back from
    assert rb.restored_id == "v1"
    assert rb.description == "back to one"
    assert rb.config == {"port": 1}
    assert mgr.current_revision == 3


async def test_check_and_set_refuses_a_stale_base_revision() -> None:
    mgr = ConfigVersionManager()
    await mgr.create_version({"a": 0}, ConfigChangeType.CREATE, "", "t", base_revision=0)
    await mgr.create_version({"a": 1}, ConfigChangeType.UPDATE, "", "t", base_revision=1)
    with pytest.raises(RevisionConflict) as info:
        await mgr.create_version({"a": 2}, ConfigChangeType.UPDATE, "", "t", base_revision=1)
    assert isinstance(info.value, Conflict)
    assert info.value.current == 2
    with pytest.raises(RevisionConflict):
        await mgr.rollback_to_version("v1", base_revision=1)
    assert mgr.current_revision == 2
    await mgr.rollback_to_version("v1", base_revision=2)
    assert mgr.current_revision == 3


async def test_unknown_versions_are_not_found() -> None:
    mgr = ConfigVersionManager()
    await mgr.create_version({"a": 0}, ConfigChangeType.CREATE, "", "t")
    assert mgr.get_version("v1") is mgr.get_version(1) is mgr.get_version("1")
    for bad in ("v2", "x", "", "v-1"):
        with pytest.raises(VersionNotFound):
            mgr.get_version(bad)
    with pytest.raises(LookupError):
        mgr.compare_versions("v1", "v9")


async def test_diff_is_a_json_patch_and_a_toml_diff_with_secrets_redacted() -> None:
    mgr = ConfigVersionManager()
    one = {
        "api": {"token": "tok-ONE-secret", "port": 8080},
        "platforms": {"qq": {"access_token": "qq-ONE", "nested": {"password": "pw-same"}}},
    }
    two = json.loads(json.dumps(one))
    two["api"]["port"] = 9090
    two["platforms"]["qq"]["access_token"] = "qq-TWO"
    two["platforms"]["tg"] = {"secret": "tg-NEW"}
    await mgr.create_version(one, ConfigChangeType.CREATE, "", "t")
    await mgr.create_version(two, ConfigChangeType.UPDATE, "", "t")
    diff = mgr.compare_versions("v1", "v2")
    text = dump_json(diff)  # what the API and the console print
    for secret in ("tok-ONE", "qq-ONE", "qq-TWO", "pw-same", "tg-NEW"):
        assert secret not in text
    ops = {(op["op"], op["path"]): op.get("value") for op in diff.patch}
    assert ops[("replace", "/api/port")] == 9090
    assert ops[("replace", "/platforms/qq/access_token")] == "*** (changed)"
    assert ops[("add", "/platforms/tg")] == {"secret": REDACTED}
    assert ("replace", "/api/token") not in ops  # unchanged secrets do not show as changes
    assert "-port = 8080" in diff.unified_diff and "+port = 9090" in diff.unified_diff
    assert diff.unified_diff.startswith("--- v1\n+++ v2\n")
    assert mgr.compare_versions("v2", "v2").patch == []
    v2 = mgr.get_version("v2")
    shown = json.loads(dump_json({"version": v2, "config": v2.config}))
    assert shown["config"]["platforms"]["qq"]["access_token"] == REDACTED
    assert "qq-TWO" not in json.dumps(shown)


def test_redact_walks_lists_and_depth() -> None:
    cfg = {
        "a": [{"token": "x"}, {"b": {"my_secret": "y", "tokens": 3}}],
        "password": "z",
        "secret": {"value": "w", "list": ["v"]},
        "api_token": ["u"],
    }
    assert redact(cfg) == {
        "a": [{"token": REDACTED}, {"b": {"my_secret": REDACTED, "tokens": 3}}],
        "password": REDACTED,
        "secret": REDACTED,
        "api_token": REDACTED,
    }
    assert redact(cfg, {**cfg, "secret": {"value": "other"}})["secret"] == "*** (changed)"


async def test_export_and_import_round_trip(tmp_path: Path) -> None:
    cfg = config_to_dict(
        parse_config(
            {
                "api": {"token": "hunter2-token"},
                "platforms": {"qq": {"type": "tests.fakes:FakePlatform", "label": "x"}},
            }
        )
    )
    mgr = await open_manager()
    await mgr.create_version(cfg, ConfigChangeType.CREATE, "", "t")

    redacted = await mgr.export_version("v1", tmp_path / "redacted.toml")
    assert "hunter2" not in redacted.read_text()
    assert tomllib.loads(redacted.read_text())["api"]["token"] == REDACTED

    full = await mgr.export_version("v1", tmp_path / "full.toml", include_secrets=True)
    v2 = await mgr.import_version(full, "restore from file")
    assert v2.version_id == "v2"
    assert v2.change_type is ConfigChangeType.UPDATE
    assert v2.description == "restore from file"
    assert v2.config == cfg
    assert mgr.compare_versions("v1", "v2").patch == []


async def test_import_validates_before_it_records(tmp_path: Path) -> None:
    mgr = ConfigVersionManager()
    bad = tmp_path / "bad.toml"
    bad.write_text('[router]\nmax_queue_size = "lots"\n')
    with pytest.raises(ConfigError, match=r"router\.max_queue_size"):
        await mgr.import_version(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        await mgr.import_version(tmp_path / "missing.toml")
    (tmp_path / "junk.toml").write_text("[[[")
    with pytest.raises(ConfigError, match="TOML"):
        await mgr.import_version(tmp_path / "junk.toml")
    assert len(mgr) == 0 and mgr.current_revision is None


async def test_values_toml_cannot_hold_are_refused() -> None:
    mgr = ConfigVersionManager()
    for bad in ({"a": None}, {"a": float("nan")}, {"a": object()}, {1: 2}):
        with pytest.raises(ValueError):
            await mgr.create_version(bad, ConfigChangeType.UPDATE, "", "t")  # type: ignore[arg-type]
    assert len(mgr) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=toml_config_dicts)
async def test_any_toml_dict_round_trips_through_a_version(cfg: dict[str, Any]) -> None:
    mgr = ConfigVersionManager()
    v = await mgr.create_version(cfg, ConfigChangeType.UPDATE, "", "t")
    assert v.config == cfg
    assert v.verify()
    assert tomllib.loads(tomli_w.dumps(v.config)) == cfg
    assert mgr.compare_versions(v.version_id, v.version_id).patch == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=valid_config_dicts())
async def test_valid_configs_round_trip_through_export_and_import(raw: dict[str, Any]) -> None:
    cfg = config_to_dict(parse_config(raw))
    mgr = ConfigVersionManager()
    v1 = await mgr.create_version(cfg, ConfigChangeType.CREATE, "", "t")
    with tempfile.TemporaryDirectory() as d:
        path = await mgr.export_version(v1.version_id, Path(d) / "c.toml", include_secrets=True)
        v2 = await mgr.import_version(path)
    assert v2.config == cfg
    assert v2.checksum == v1.checksum


async def test_concurrent_check_and_set_lets_exactly_one_change_win() -> None:
    mgr = await open_manager()
    await mgr.create_version({"n": 0}, ConfigChangeType.CREATE, "", "t")
    won: list[str] = []
    lost: list[int] = []

    async def change(i: int) -> None:
        try:
            v = await mgr.create_version(
                {"n": i}, ConfigChangeType.UPDATE, "", f"w{i}", base_revision=1
            )
            won.append(v.author)
        except RevisionConflict as exc:
            lost.append(exc.current or 0)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(1, 11):
                nursery.start_soon(change, i)
    assert len(won) == 1 and len(lost) == 9
    assert set(lost) == {2}
    assert mgr.current_revision == 2 and mgr.get_version("v2").author == won[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raws=st.lists(valid_config_dicts(), min_size=1, max_size=4))
def test_canonical_texts_equal_the_canonical_form_of_every_config(
    raws: list[dict[str, Any]],
) -> None:
    # One CanonicalTexts over a sequence of configs (its cache carried from one
    # to the next, some platform sections kept as the same objects): each text
    # is exactly the one the checksum of a version made from the dict has.
    texts = CanonicalTexts()
    previous: NekoBotConfig | None = None
    for raw in raws:
        cfg = parse_config(raw)
        if previous is not None:  # keep the sections the previous config had, as objects
            kept = {**cfg.platforms, **previous.platforms}
            cfg = attrs.evolve(cfg, platforms=kept)
        assert texts.text(cfg) == canonical(config_to_dict(cfg))
        previous = cfg
