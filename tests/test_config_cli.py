"""``nekobot config …`` (nekobot/config/cli.py) against a real SQLite history.

Policy: no network except loopback; the offline paths run the CLI in-process
(``nekobot.cli.main``); a history is made with ``ConfigVersionManager`` first.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
import trio

from nekobot.cli import main
from nekobot.config.loader import load_config
from nekobot.config.schema import config_to_dict
from nekobot.config.versions import ConfigChangeType, ConfigVersionManager
from nekobot.storage import Store

SECRET = "s3cret-api-token-value"

CONFIG_V1 = """
[bot]
name = "cli-test"
data_dir = "data"

[platforms.qq]
type = "tests.fakes:FakePlatform"
label = "first"
"""

CONFIG_V2 = f"""
[bot]
name = "cli-test"
data_dir = "data"

[api]
token = "{SECRET}"

[platforms.qq]
type = "tests.fakes:FakePlatform"
label = "second"
"""


def _record(config_path: Path, texts: list[str]) -> None:
    """Record each text as a version (the last one current), as a bot would."""

    async def run() -> None:
        store = Store(config_path.parent / "data" / "nekobot.db")
        await store.open()
        cvm = ConfigVersionManager(store=store)
        await cvm.open()
        for i, text in enumerate(texts):
            await trio.Path(config_path).write_text(text)
            kind = ConfigChangeType.CREATE if i == 0 else ConfigChangeType.UPDATE
            await cvm.create_version(
                config_to_dict(await trio.to_thread.run_sync(load_config, config_path)),
                kind,
                f"step {i}",
                "test",
            )
        await store.close()

    trio.run(run)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A config file (= v2) and a history v1, v2."""
    path = tmp_path / "nekobot.toml"
    _record(path, [CONFIG_V1, CONFIG_V2])
    return path


def cli(*args: str) -> int:
    return main(["config", *args])


def test_history_lists_newest_first_and_marks_current(history: Path, capsys) -> None:
    assert cli("history", "-c", str(history)) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("*") and "v2" in out[0] and "step 1" in out[0]
    assert "v1" in out[1] and "create" in out[1] and not out[1].startswith("*")
    assert cli("history", "-c", str(history), "-n", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_show_prints_toml_with_secrets_redacted(history: Path, capsys) -> None:
    assert cli("show", "v2", "-c", str(history)) == 0
    out = capsys.readouterr().out
    assert SECRET not in out
    body = tomllib.loads(out)  # comment lines + valid TOML
    assert body["api"]["token"] == "***"
    assert body["platforms"]["qq"]["label"] == "second"
    assert cli("show", "1", "-c", str(history)) == 0  # "1" means v1
    assert 'label = "first"' in capsys.readouterr().out


def test_diff_shows_the_change_and_hides_the_secret(history: Path, capsys) -> None:
    assert cli("diff", "v1", "v2", "-c", str(history)) == 0
    out = capsys.readouterr().out
    assert '-label = "first"' in out and '+label = "second"' in out
    assert SECRET not in out and "***" in out


def test_export_redacts_unless_asked(history: Path, tmp_path: Path, capsys) -> None:
    dest = tmp_path / "out.toml"
    assert cli("export", "v2", str(dest), "-c", str(history)) == 0
    assert tomllib.loads(dest.read_text())["api"]["token"] == "***"
    assert cli("export", "v2", str(dest), "--include-secrets", "-c", str(history)) == 0
    assert tomllib.loads(dest.read_text())["api"]["token"] == SECRET


def test_offline_rollback_records_a_version_and_rewrites_the_file(history: Path, capsys) -> None:
    assert cli("rollback", "v1", "-c", str(history)) == 0
    out = capsys.readouterr().out
    assert "no bot is running" in out and "v3" in out
    # The file is now v1's config; the previous one is kept as a backup.
    assert load_config(history).platforms["qq"].settings.label == "first"
    backups = list(history.parent.glob("nekobot.toml.bak-*"))
    assert len(backups) == 1 and 'label = "second"' in backups[0].read_text()
    assert cli("history", "-c", str(history)) == 0
    top = capsys.readouterr().out.splitlines()[0]
    assert "v3" in top and "rollback" in top and "restores v1" in top


def test_offline_import_validates_then_records_and_installs(
    history: Path, tmp_path: Path, capsys
) -> None:
    new = tmp_path / "new.toml"
    new.write_text(CONFIG_V1.replace('"first"', '"imported"'))
    assert cli("import", str(new), "-c", str(history)) == 0
    assert "recorded v3" in capsys.readouterr().out
    assert history.read_text() == new.read_text()
    assert cli("show", "v3", "-c", str(history)) == 0
    assert 'label = "imported"' in capsys.readouterr().out


def test_import_of_an_invalid_file_exits_2_and_records_nothing(
    history: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[bot]\nshutdown_timeout = "soon"\n')
    before = history.read_text()
    assert cli("import", str(bad), "-c", str(history)) == 2
    err = capsys.readouterr().err
    assert "bot.shutdown_timeout" in err and "nothing was imported" in err
    assert history.read_text() == before
    assert cli("history", "-c", str(history)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_unknown_version_exits_1_naming_it(history: Path, capsys) -> None:
    assert cli("show", "v99", "-c", str(history)) == 1
    assert "v99" in capsys.readouterr().err
    assert cli("rollback", "v42", "-c", str(history)) == 1
    assert "v42" in capsys.readouterr().err
    assert history.read_text() == CONFIG_V2


def test_bad_config_or_arguments_exit_2(history: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bot]\ncolour = 1\n")
    assert cli("history", "-c", str(bad)) == 2
    assert "bot.colour: unknown key" in capsys.readouterr().err
    assert cli("diff", "v1", "-c", str(history)) == 2
    assert cli("history", "-n", "0", "-c", str(history)) == 2


def test_no_history_exits_1_and_creates_nothing(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nekobot.toml"
    path.write_text(CONFIG_V1)
    assert cli("history", "-c", str(path)) == 1
    assert "no config history" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_memory_only_history_is_explained(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nekobot.toml"
    path.write_text(CONFIG_V1 + "\n[buffer]\ndurable = false\n")
    assert cli("history", "-c", str(path)) == 1
    assert "in memory" in capsys.readouterr().err


def test_a_running_but_unreachable_bot_is_not_changed(history: Path, capsys) -> None:
    (history.parent / "data" / "nekobot.pid").write_text(f"{os.getpid()}\n")
    assert cli("rollback", "v1", "-c", str(history)) == 1
    err = capsys.readouterr().err
    assert "a bot is running" in err and "nothing was changed" in err
    assert history.read_text() == CONFIG_V2
    assert cli("history", "-c", str(history)) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


# --------------------------------------------------------------------------
# against a running bot: the change goes to the bot, which applies it


def _running_bot_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "bot": {"name": "cli-live", "data_dir": str(tmp_path / "data"), "shutdown_timeout": 2.0},
        "api": {"enable": True, "port": 0, "token": SECRET},
        "console": {"enable": True, "port": 0},
        "platforms": {"qq": {"type": "tests.fakes:FakePlatform", "label": "first"}},
    }


def _cli_file(tmp_path: Path, bot: Any, *, api: bool, console: bool) -> Path:
    """The CLI's view of the running bot: same data_dir, the bound ports."""
    host, console_port = bot.console_address
    path = tmp_path / "cli.toml"
    path.write_text(
        f"""
[bot]
data_dir = "{tmp_path / "data"}"

[api]
enable = {str(api).lower()}
port = {bot.api_port}
token = "{SECRET}"

[console]
enable = {str(console).lower()}
host = "{host}"
port = {console_port}
"""
    )
    return path


async def _label(bot: Any) -> str:
    label: str = bot.runtime_manager.platform_configs["qq"].settings.label
    return label


@pytest.mark.parametrize("via", ["api", "console"])
async def test_rollback_applies_to_the_running_bot(tmp_path: Path, via: str, capsys) -> None:
    from nekobot.app import open_nekobot
    from nekobot.config.loader import parse_config

    with trio.fail_after(20):
        async with open_nekobot(_running_bot_config(tmp_path)) as bot:
            changed = _running_bot_config(tmp_path)
            changed["platforms"]["qq"]["label"] = "second"
            await bot.apply_config(parse_config(changed), description="relabel")
            assert await _label(bot) == "second"
            v2 = bot.config_version_manager.current_revision
            cli_file = await trio.to_thread.run_sync(
                lambda: _cli_file(tmp_path, bot, api=via == "api", console=via == "console")
            )
            # Read-only commands work beside the running bot (WAL).
            code = await trio.to_thread.run_sync(cli, "history", "-c", str(cli_file))
            assert code == 0 and "relabel" in capsys.readouterr().out
            code = await trio.to_thread.run_sync(cli, "rollback", "v1", "-c", str(cli_file))
            out, err = capsys.readouterr()
            assert code == 0, err
            assert f"via its {'HTTP API' if via == 'api' else 'console'}" in out
            current = bot.config_version_manager.current_version
            assert current.revision == v2 + 1
            assert current.change_type is ConfigChangeType.ROLLBACK
            assert current.restored_id == "v1"
            assert current.author == via
            assert await _label(bot) == "first"
            assert bot.runtime_manager.get_platform_actor("qq").online


async def test_import_applies_to_the_running_bot_through_the_console(
    tmp_path: Path, capsys
) -> None:
    from nekobot.app import open_nekobot

    with trio.fail_after(20):
        async with open_nekobot(_running_bot_config(tmp_path)) as bot:
            cli_file = await trio.to_thread.run_sync(
                lambda: _cli_file(tmp_path, bot, api=True, console=True)
            )
            new = trio.Path(tmp_path / "new.toml")
            await new.write_text(
                '[platforms.qq]\ntype = "tests.fakes:FakePlatform"\nlabel = "imported"\n'
            )
            before = bot.config_version_manager.current_revision
            code = await trio.to_thread.run_sync(cli, "import", str(new), "-c", str(cli_file))
            out, err = capsys.readouterr()
            assert code == 0, err
            assert "via its console" in out
            assert await _label(bot) == "imported"
            assert bot.config_version_manager.current_revision == before + 1
            # An invalid file is refused before anything reaches the bot.
            await new.write_text('[platforms.qq]\ntype = "tests.fakes:FakePlatform"\nlabel = 3\n')
            code = await trio.to_thread.run_sync(cli, "import", str(new), "-c", str(cli_file))
            assert code == 2 and "platforms.qq.label" in capsys.readouterr().err
            assert bot.config_version_manager.current_revision == before + 1


def test_offline_change_refused_while_another_process_has_the_store_open(
    history: Path, capsys
) -> None:
    """An embedded bot (no pid file, no API/console) is detected by the store itself."""
    import sqlite3

    other = sqlite3.connect(history.parent / "data" / "nekobot.db")
    try:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("SELECT count(*) FROM config_versions").fetchone()
        assert cli("rollback", "v1", "-c", str(history)) == 1
        err = capsys.readouterr().err
        assert "in use by another process" in err and "nothing was changed" in err
        assert history.read_text() == CONFIG_V2
        # Reading stays possible beside it.
        assert cli("history", "-c", str(history)) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    finally:
        other.close()
    assert cli("rollback", "v1", "-c", str(history)) == 0


def test_diff_of_equal_versions_says_so(history: Path, capsys) -> None:
    assert cli("diff", "v2", "2", "-c", str(history)) == 0
    assert capsys.readouterr().out == "v2 and v2 hold the same config\n"
