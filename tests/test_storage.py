"""The SQLite store: corruption is moved aside, a lock is never mistaken for it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nekobot.storage import Store, transaction


async def test_rows_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d" / "nekobot.db"
    store = Store(path)
    await store.open()
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    await store.run(lambda c: c.execute("INSERT INTO t VALUES (1), (2)"))
    await store.close()
    again = Store(path)
    await again.open()
    rows = await again.run(lambda c: c.execute("SELECT x FROM t ORDER BY x").fetchall())
    assert rows == [(1,), (2,)]
    assert again.recovered_from is None
    await again.close()


async def test_corrupt_file_is_moved_aside_and_a_fresh_one_made(tmp_path: Path) -> None:
    path = tmp_path / "nekobot.db"
    path.write_bytes(b"this is not a database" * 100)
    store = Store(path)
    await store.open()
    assert store.recovered_from is not None
    assert Path(store.recovered_from).read_bytes().startswith(b"this is not a database")
    assert await store.run(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
    await store.close()


async def test_locked_database_is_not_treated_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "nekobot.db"
    first = Store(path)
    await first.open()
    await first.run(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    await first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = Store(path, busy_timeout=0.05)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await store.open()
        assert store.recovered_from is None
        assert path.exists()
        assert not list(tmp_path.glob("*.corrupt-*"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_run_before_open_is_a_clear_error() -> None:
    store = Store(":memory:")
    with pytest.raises(RuntimeError, match="not open"):
        await store.run(lambda c: c.execute("SELECT 1"))


async def test_transaction_commits_or_rolls_back_as_a_whole(tmp_path: Path) -> None:
    store = Store(tmp_path / "nekobot.db")
    await store.open()
    await store.run(lambda c: c.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))

    def insert(rows: list[int]) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany("INSERT INTO t VALUES (?)", [(x,) for x in rows])

        store.run_sync(fn)

    insert([1, 2])
    with pytest.raises(sqlite3.IntegrityError):
        insert([3, 1])  # 3 goes in, then 1 collides: neither stays
    rows = await store.run(lambda c: c.execute("SELECT x FROM t ORDER BY x").fetchall())
    assert rows == [(1,), (2,)]
    await store.close()
