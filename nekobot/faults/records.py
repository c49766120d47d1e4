"""Fault records: what one fault of one platform was, and their SQLite table.

A fault is kept as a :class:`KeptFault` (the exception itself, cheap to make on
the restart path); its :class:`FaultRecord` with the formatted traceback is
built the first time someone reads it (``get_fault_records``, the HTTP API)
or when the writer persists it to the :class:`~nekobot.storage.Store` (table
``fault_records``, a ring of ``max_fault_records`` rows per platform), off the
restart path.

Times: ``timestamp`` / ``resolved_at`` are wall clock (``time.time()``).
"""

from __future__ import annotations

import enum
import sqlite3
import traceback
from typing import Any

import attrs

from ..storage import transaction

__all__ = ["FaultRecord", "IsolationStrategy", "KeptFault", "load_records", "write_batch"]


class IsolationStrategy(enum.Enum):
    """What fault isolation decided for one fault."""

    CONTINUE = "continue"
    """Nothing to do: the platform keeps running (an error the adapter caught)."""
    RESTART_PLATFORM = "restart_platform"
    """Restart it after its backoff delay (breaker closed)."""
    DISABLE_PLATFORM = "disable_platform"
    """It is disabled by a person: stays stopped until ``enable_platform``."""
    DEGRADED_MODE = "degraded_mode"
    """Breaker open: the platform is isolated (not restarted until the cooldown
    passes) and the bot serves on with the others."""


@attrs.frozen(kw_only=True)
class FaultRecord:
    """One fault of one platform."""

    platform_id: str
    error_type: str
    """The exception's class name."""
    error_message: str
    traceback_str: str
    """The real traceback, ``traceback.format_exception``."""
    timestamp: float
    """Wall clock ``time.time()``."""
    isolation_strategy: IsolationStrategy
    resolved: bool = False
    """The platform recovered (ran healthy again, or was enabled by a person)."""
    resolved_at: float | None = None
    """Wall clock ``time.time()`` of the resolution."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the HTTP API)."""
        d = attrs.asdict(self)
        d["isolation_strategy"] = self.isolation_strategy.value
        return d


class KeptFault:
    """A fault as fault isolation keeps it: the exception, formatted on first read.

    Args:
        platform_id (str): The platform.
        error (BaseException | None): What it raised (``None`` for a record
            loaded from the store, which comes with ``record``).
        timestamp (float): Wall clock ``time.time()``.
        strategy (IsolationStrategy): The decision.
        record (FaultRecord | None): An already built record.
    """

    __slots__ = ("_record", "error", "platform_id", "resolved_at", "strategy", "timestamp")

    def __init__(
        self,
        platform_id: str,
        error: BaseException | None,
        timestamp: float,
        strategy: IsolationStrategy,
        record: FaultRecord | None = None,
    ) -> None:
        self.platform_id = platform_id
        self.error = error
        self.timestamp = timestamp
        self.strategy = strategy
        self.resolved_at: float | None = record.resolved_at if record is not None else None
        self._record = record

    @property
    def resolved(self) -> bool:
        """The platform recovered since."""
        return self.resolved_at is not None

    def resolve(self, at: float) -> None:
        """Mark it resolved at wall-clock ``at`` (once)."""
        if self.resolved_at is None:
            self.resolved_at = at

    def record(self) -> FaultRecord:
        """The :class:`FaultRecord` (the traceback is formatted once, here)."""
        r = self._record
        if r is None:
            err = self.error
            if err is None:  # pragma: no cover - loaded records carry theirs
                raise RuntimeError("a fault kept without its exception or record")
            r = FaultRecord(
                platform_id=self.platform_id,
                error_type=type(err).__name__,
                error_message=str(err),
                traceback_str="".join(traceback.format_exception(err)),
                timestamp=self.timestamp,
                isolation_strategy=self.strategy,
                resolved=self.resolved_at is not None,
                resolved_at=self.resolved_at,
            )
            self._record = r
            self.error = None  # the text is kept; let the frames go
        elif r.resolved_at != self.resolved_at:
            r = attrs.evolve(r, resolved=self.resolved_at is not None, resolved_at=self.resolved_at)
            self._record = r
        return r


_SCHEMA = """
CREATE TABLE IF NOT EXISTS fault_records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    platform_id TEXT NOT NULL,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    timestamp REAL NOT NULL,
    isolation_strategy TEXT NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0,
    resolved_at REAL
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS fault_records_platform ON fault_records (platform_id, id)"

Write = tuple[str, Any]
"""``("insert", KeptFault)`` or ``("resolve", (platform_id, wall-clock time))``."""


def write_batch(conn: sqlite3.Connection, *, batch: list[Write], keep: int) -> None:
    """Write one batch in one transaction; keep at most ``keep`` rows per platform."""
    with transaction(conn):
        conn.execute(_SCHEMA)
        conn.execute(_INDEX)
        touched: set[str] = set()
        for kind, item in batch:
            if kind == "insert":
                r = item.record() if isinstance(item, KeptFault) else item
                conn.execute(
                    "INSERT INTO fault_records (platform_id, error_type, error_message,"
                    " traceback, timestamp, isolation_strategy) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        r.platform_id,
                        r.error_type,
                        r.error_message,
                        r.traceback_str,
                        r.timestamp,
                        r.isolation_strategy.value,
                    ),
                )
                touched.add(r.platform_id)
            else:
                pid, at = item
                conn.execute(
                    "UPDATE fault_records SET resolved = 1, resolved_at = ?"
                    " WHERE platform_id = ? AND resolved = 0 AND timestamp <= ?",
                    (at, pid, at),
                )
        for pid in touched:  # the table is a ring per platform too
            conn.execute(
                "DELETE FROM fault_records WHERE platform_id = ? AND id NOT IN"
                " (SELECT id FROM fault_records WHERE platform_id = ? ORDER BY id DESC LIMIT ?)",
                (pid, pid, keep),
            )


def load_records(conn: sqlite3.Connection, keep: int) -> list[FaultRecord]:
    """The newest ``keep`` records of every platform, oldest first."""
    conn.execute(_SCHEMA)
    conn.execute(_INDEX)
    rows = conn.execute(
        "SELECT platform_id, error_type, error_message, traceback, timestamp,"
        " isolation_strategy, resolved, resolved_at FROM ("
        "  SELECT *, ROW_NUMBER() OVER (PARTITION BY platform_id ORDER BY id DESC) AS n"
        "  FROM fault_records) WHERE n <= ? ORDER BY id",
        (keep,),
    ).fetchall()
    out = []
    for pid, et, em, tb, ts, strat, resolved, resolved_at in rows:
        try:
            strategy = IsolationStrategy(strat)
        except ValueError:
            strategy = IsolationStrategy.CONTINUE
        out.append(
            FaultRecord(
                platform_id=pid,
                error_type=et,
                error_message=em,
                traceback_str=tb,
                timestamp=ts,
                isolation_strategy=strategy,
                resolved=bool(resolved),
                resolved_at=resolved_at,
            )
        )
    return out
