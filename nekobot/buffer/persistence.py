"""The buffer's SQLite table and its group commit.

The table ``buffer_messages`` holds one row per buffered message, keyed by the
message's ``seq`` (arrival order). The actor collects a batch's inserts and
deletes in :class:`PendingWrites` and writes them in ONE transaction
(:meth:`BufferTable.write`) before it answers the batch's ``add_message``
calls, so every message whose ``add_message`` returned survives ``kill -9``.
A row's TTL is stored as a wall-clock deadline (``time.time()`` based), since
the Trio clock does not survive a restart.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import InvalidRequest
from ..messages import OutboundMessage
from ..storage import transaction
from .requests import check_priority, check_text

if TYPE_CHECKING:
    from ..storage import Store
    from .queue import Item

__all__ = ["TABLE", "BufferTable", "PendingWrites", "StoredRow", "decode_row"]

TABLE = "buffer_messages"

_COLUMNS = (
    "seq, platform_id, message_key, message_type, content, priority, created_at, expires_wall"
)


@attrs.frozen
class StoredRow:
    """One decoded row."""

    seq: int
    msg: OutboundMessage
    content_json: str
    expires_wall: float | None
    """Wall clock; ``None`` never expires."""


def _name(value: object) -> str | None:
    try:
        return check_text("platform_id", value)
    except InvalidRequest:
        return None


def _number(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"{label} {value!r} is not a number")
    return float(value)


def decode_row(row: tuple[Any, ...]) -> StoredRow | tuple[int | None, str | None, str]:
    """A row as stored, or ``(seq, queue, why)`` if it cannot be decoded.

    ``seq`` is ``None`` when not even the row's key is an integer, ``queue``
    when its ``platform_id`` is no valid queue name.
    """
    seq, pid, key, mtype, content_json, prio, created_at, expires_wall = row
    try:
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError(f"seq {seq!r} is not an integer")
        check_text("platform_id", pid)
        check_text("message_key", key)
        check_text("message_type", mtype)
        if not isinstance(content_json, str):
            raise TypeError("content is not text")
        msg = OutboundMessage(
            platform_id=pid,
            message_type=mtype,
            content=json.loads(content_json),
            priority=check_priority(prio),
            message_key=key,
            created_at=_number("created_at", created_at),
        )
        wall = None if expires_wall is None else _number("expires_wall", expires_wall)
    except (ValueError, TypeError, RecursionError) as exc:
        return (seq if isinstance(seq, int) else None, _name(pid), str(exc)[:200])
    return StoredRow(seq, msg, content_json, wall)


def _text(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw  # decode_row refuses it


class PendingWrites:
    """The inserts and deletes of the batch being handled (not yet committed)."""

    __slots__ = ("deletes", "inserts")

    def __init__(self) -> None:
        self.inserts: dict[int, Item] = {}
        self.deletes: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.inserts or self.deletes)

    def insert(self, item: Item) -> None:
        self.inserts[item.seq] = item

    def delete(self, seq: int) -> None:
        """Delete row ``seq``; an insert of this batch is simply not written."""
        if self.inserts.pop(seq, None) is None:
            self.deletes.add(seq)

    def forget(self, seq: int) -> None:
        """Neither insert nor delete ``seq`` (its row was never written)."""
        self.inserts.pop(seq, None)
        self.deletes.discard(seq)

    def take(self) -> tuple[list[tuple[Any, ...]], list[tuple[int]]]:
        """The rows to insert and the seqs to delete; empties the batch."""
        rows = [
            (
                it.seq,
                it.msg.platform_id,
                it.msg.message_key,
                it.msg.message_type,
                it.content_json,
                int(it.msg.priority),
                it.msg.created_at,
                it.expires_wall,
            )
            for it in self.inserts.values()
        ]
        dels = [(s,) for s in self.deletes]
        self.inserts = {}
        self.deletes = set()
        return rows, dels


class BufferTable:
    """The ``buffer_messages`` table of one :class:`~nekobot.storage.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def load(self) -> list[tuple[Any, ...]]:
        """Create the table if needed and read every row in ``seq`` order.

        Raises:
            sqlite3.Error: if the store cannot be read.
        """

        def load(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                " seq INTEGER PRIMARY KEY,"
                " platform_id TEXT NOT NULL,"
                " message_key TEXT NOT NULL,"
                " message_type TEXT NOT NULL,"
                " content TEXT NOT NULL,"
                " priority INTEGER NOT NULL,"
                " created_at REAL NOT NULL,"
                " expires_wall REAL)"
            )
            factory = conn.text_factory
            conn.text_factory = _text  # a row that is not UTF-8 is corrupt, not fatal
            try:
                return conn.execute(f"SELECT {_COLUMNS} FROM {TABLE} ORDER BY seq").fetchall()
            finally:
                conn.text_factory = factory

        return await self.store.run(load)

    async def write(self, pending: PendingWrites) -> None:
        """Commit the pending inserts and deletes in one transaction (emptying ``pending``).

        Raises:
            sqlite3.Error: if the transaction failed (nothing of it was written).
        """
        rows, dels = pending.take()

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                if rows:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO {TABLE} ({_COLUMNS})"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                if dels:
                    conn.executemany(f"DELETE FROM {TABLE} WHERE seq = ?", dels)

        await self.store.run(write)
