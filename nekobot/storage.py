"""The SQLite store (WAL) behind the buffer, config versions and fault records.

One database file, ``<data_dir>/nekobot.db``. Every statement runs in a worker
thread (``trio.to_thread.run_sync``) so the Trio loop never blocks on disk;
a lock serialises the threads' use of the one connection. Each module keeps
its own tables (``CREATE TABLE IF NOT EXISTS`` in its own code) and runs its
work as a function of a ``sqlite3.Connection`` through :meth:`Store.run`.

A file that is not a database (or fails ``PRAGMA quick_check``) is moved
aside to ``nekobot.db.corrupt-<unix time>`` and a fresh one is created;
:attr:`Store.recovered_from` then names the moved file so the bot can log it
and raise an alert.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import trio

__all__ = ["Store", "transaction"]

T = TypeVar("T")


class Store:
    """One SQLite database used from Trio.

    Args:
        path: The database file, or ``":memory:"`` (tests, ``durable = false``).
        synchronous (str): SQLite ``PRAGMA synchronous``: ``"NORMAL"`` (default;
            with WAL a committed transaction survives a process crash such as
            ``kill -9``, though not a power loss) or ``"FULL"``.
        busy_timeout (float): Seconds a statement waits for another process's
            lock before it raises ``sqlite3.OperationalError``.
    """

    def __init__(
        self, path: str | Path, *, synchronous: str = "NORMAL", busy_timeout: float = 5.0
    ) -> None:
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._thread_lock = threading.Lock()
        self._lock = trio.Lock()
        self.recovered_from: str | None = None
        """Path the corrupt database was moved to at open, if it was."""

    # ---- open / close -------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=self.busy_timeout
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        row = conn.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            conn.close()
            raise sqlite3.DatabaseError(f"quick_check failed: {row[0] if row else 'no answer'}")
        return conn

    def _open_sync(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.OperationalError:
            # "database is locked", "unable to open": not corruption; never move
            # a live database aside.
            raise
        except sqlite3.DatabaseError:
            if self.path == ":memory:":
                raise
            aside = f"{self.path}.corrupt-{int(time.time())}"
            Path(self.path).rename(aside)
            for suffix in ("-wal", "-shm"):
                side = Path(self.path + suffix)
                if side.exists():
                    side.rename(aside + suffix)
            self.recovered_from = aside
            self._conn = self._connect()

    async def open(self) -> None:
        """Open (creating the directory and file if needed), recovering from corruption."""
        await trio.to_thread.run_sync(self._open_sync)

    def open_sync(self) -> None:
        """Like :meth:`open`, for synchronous callers (CLI commands)."""
        self._open_sync()

    async def close(self) -> None:
        """Close the connection; waits for a running statement."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    # ---- work ------------------------------------------------------------

    def _locked(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError(f"store {self.path!r} is not open")
        with self._thread_lock:
            return fn(self._conn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in a worker thread and return its result.

        Use ``with conn:`` inside ``fn`` for a transaction (the connection is in
        autocommit mode otherwise). Calls are serialised in arrival order.

        Raises:
            RuntimeError: if the store is not open.
            sqlite3.Error: whatever ``fn`` raised.
        """
        async with self._lock:
            return await trio.to_thread.run_sync(self._locked, fn)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the calling thread (CLI, tests)."""
        return self._locked(fn)

    @property
    def is_open(self) -> bool:
        return self._conn is not None


def transaction(conn: sqlite3.Connection) -> AbstractContextManager[sqlite3.Connection]:
    """``with transaction(conn):`` — ``BEGIN IMMEDIATE`` … ``COMMIT``, or
    ``ROLLBACK`` if the block raised (the exception propagates)."""
    return _Tx(conn)


class _Tx(AbstractContextManager[sqlite3.Connection]):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.conn.execute("COMMIT" if et is None else "ROLLBACK")
