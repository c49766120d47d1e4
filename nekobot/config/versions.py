"""Config history: every change recorded as a version that can be diffed and rolled back.

A :class:`ConfigVersion` holds one whole config as the plain dict a TOML file
would hold (the shape of :func:`~nekobot.config.schema.config_to_dict`). The
dict is stored as canonical JSON text with its sha256 checksum; reading
:attr:`ConfigVersion.config` checks the checksum and returns a fresh deep
copy, so nobody can change a stored version, by accident or otherwise.

Version ids are ``"v<N>"`` where ``N`` is the revision: a counter that only
grows (it is persisted, so ids are never reused, even after pruning or a
failed rollback). Ids are therefore unique and ordered however many versions
are made in one second.

With a :class:`~nekobot.storage.Store` the history lives in SQLite (table
``config_versions``) and survives restarts; without one it is kept in memory.
At most ``max_versions`` are kept: the oldest are pruned, never the current one.

Secrets (the one rule of :mod:`nekobot.config.redaction`: secret key names at
any depth, and credentials inside URLs) are redacted in diffs and in
:meth:`ConfigVersion.to_dict` views; :meth:`export_version` writes them only
when asked.
"""

from __future__ import annotations

import difflib
import logging
import os
import sqlite3
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonpatch
import tomli_w
import trio

from ..errors import (
    ConfigError,
    InvalidRequest,
    RevisionConflict,
    VersionNotFound,
)
from ..storage import Store, transaction
from .loader import parse_config
from .redaction import REDACTED as REDACTED
from .redaction import is_secret_key as is_secret_key
from .redaction import redact as redact
from .schema import config_to_dict
from .version import ConfigChangeType as ConfigChangeType
from .version import ConfigDiff as ConfigDiff
from .version import ConfigVersion as ConfigVersion
from .version import canonical, parse_id, plain_config, sha256_hex

__all__ = [
    "REDACTED",
    "ConfigChangeType",
    "ConfigDiff",
    "ConfigVersion",
    "ConfigVersionManager",
    "is_secret_key",
    "redact",
]

log = logging.getLogger("nekobot.config.versions")


# --------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config_versions (
    revision INTEGER PRIMARY KEY,
    change_type TEXT NOT NULL,
    description TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at REAL NOT NULL,
    parent_revision INTEGER,
    restored_revision INTEGER,
    checksum TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS config_versions_meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLUMNS = (
    "revision, change_type, description, author, created_at, "
    "parent_revision, restored_revision, checksum, config"
)


def _row(v: ConfigVersion) -> tuple[Any, ...]:
    return (
        v.revision,
        v.change_type.value,
        v.description,
        v.author,
        v.created_at,
        v.parent_revision,
        v.restored_revision,
        v.checksum,
        v._text,
    )


def _from_row(row: tuple[Any, ...]) -> ConfigVersion:
    return ConfigVersion(
        revision=row[0],
        change_type=ConfigChangeType(row[1]),
        description=row[2],
        author=row[3],
        created_at=row[4],
        parent_revision=row[5],
        restored_revision=row[6],
        checksum=row[7],
        text=row[8],
    )


# --------------------------------------------------------------------------
# manager


class ConfigVersionManager:
    """The config history of one bot (seed API, DESIGN.md §5, plus ``get_version``).

    It only records: applying a config to a running bot is the
    :class:`~nekobot.config.service.ConfigService`'s job (which owns one of
    these). A new version's revision is reserved and the in-memory index
    updated before the store write is awaited, so concurrent callers never
    share a revision and no lock is needed; a failed write takes the version
    back out. Getters are synchronous and read the in-memory index.

    Args:
        max_versions (int): Versions kept at most; the oldest are pruned first,
            never the current one.
        store (Store | None): SQLite store (opened by the caller before
            :meth:`open`); ``None`` keeps the history in memory only.

    Raises:
        InvalidRequest: if ``max_versions`` < 1.
    """

    def __init__(self, max_versions: int = 50, *, store: Store | None = None) -> None:
        if not isinstance(max_versions, int) or max_versions < 1:
            raise InvalidRequest(f"max_versions must be an int >= 1, got {max_versions!r}")
        self.max_versions = max_versions
        self.store = store
        self._versions: dict[int, ConfigVersion] = {}
        self._counter = 0
        self._current: int | None = None
        self._opened = store is None

    # ---- setup -------------------------------------------------------------

    async def open(self) -> None:
        """Create the tables if needed and load the history from the store.

        A no-op without a store. Rows are loaded as stored; a row whose
        checksum fails raises :class:`VersionCorrupted` when its config is read
        (and is logged now).
        """
        if self.store is None:
            self._opened = True
            return

        def load(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            conn.executescript(_SCHEMA)
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM config_versions ORDER BY revision"
            ).fetchall()
            meta = conn.execute(
                "SELECT value FROM config_versions_meta WHERE key = 'counter'"
            ).fetchone()
            return rows, int(meta[0]) if meta else 0

        rows, counter = await self.store.run(load)
        self._versions = {}
        for row in rows:
            v = _from_row(row)
            if not v.verify():
                log.error("config version %s fails its checksum (corrupted)", v.version_id)
            self._versions[v.revision] = v
        self._counter = max([counter, *self._versions])
        self._current = max(self._versions) if self._versions else None
        self._opened = True

    # ---- getters -----------------------------------------------------------

    @property
    def current_revision(self) -> int | None:
        """The revision of the config in force (``None`` before the first version)."""
        return self._current

    @property
    def current_version(self) -> ConfigVersion | None:
        """The version in force, or ``None``."""
        return None if self._current is None else self._versions[self._current]

    def get_version(self, version_id: str | int) -> ConfigVersion:
        """One version by id (``"v3"``, ``"3"`` or ``3``).

        Raises:
            VersionNotFound: if there is no such version (or it was pruned).
        """
        rev = parse_id(version_id)
        try:
            return self._versions[rev]
        except KeyError:
            raise VersionNotFound(str(version_id)) from None

    def list_versions(self, limit: int | None = None) -> list[ConfigVersion]:
        """Versions, newest first.

        Args:
            limit (int | None): At most this many (``None``: all kept).
        """
        out = [self._versions[r] for r in sorted(self._versions, reverse=True)]
        return out if limit is None else out[: max(0, limit)]

    def __len__(self) -> int:
        return len(self._versions)

    # ---- recording ---------------------------------------------------------

    def check_base(self, base_revision: int | None) -> None:
        """The one check-and-set rule: ``base_revision`` must be the current
        revision (``0`` when there is none yet); ``None`` skips the check.

        Raises:
            RevisionConflict: naming both revisions.
        """
        if base_revision is not None and base_revision != (self._current or 0):
            raise RevisionConflict(base_revision, self._current)

    async def _record(
        self,
        config: Mapping[str, Any],
        change_type: ConfigChangeType,
        description: str,
        author: str,
        restored_revision: int | None = None,
    ) -> ConfigVersion:
        """Check and deep-copy ``config`` into its canonical text, then record it."""
        if not isinstance(config, Mapping):
            raise InvalidRequest(f"config must be a dict, got {type(config).__name__}")
        return await self.record_text(
            canonical(plain_config(config, "")),
            change_type,
            description,
            author,
            restored_revision=restored_revision,
        )

    async def record_text(
        self,
        text: str,
        change_type: ConfigChangeType,
        description: str,
        author: str,
        *,
        restored_revision: int | None = None,
    ) -> ConfigVersion:
        """Record a config given as its canonical JSON text (no check, no copy).

        The config service's path: its text comes from
        :class:`~nekobot.config.version.CanonicalTexts`, built from a validated
        config. The version's revision is reserved and the in-memory index
        updated before the store write is awaited; a failed write takes the
        version back out (its revision number is not reused).

        Raises:
            RuntimeError: if :meth:`open` was not awaited.
            sqlite3.Error: if the store could not write it.
        """
        if not self._opened:
            raise RuntimeError("ConfigVersionManager.open() was not awaited")
        revision = self._counter + 1
        parent = self._current
        version = ConfigVersion(
            revision=revision,
            change_type=ConfigChangeType(change_type),
            description=str(description),
            author=str(author),
            created_at=time.time(),
            parent_revision=parent,
            restored_revision=restored_revision,
            checksum=sha256_hex(text),
            text=text,
        )
        before = self._versions
        keep = dict(before)
        keep[revision] = version
        pruned: list[int] = []
        for rev in sorted(keep):
            if len(keep) <= self.max_versions:
                break
            if rev == revision:  # the new current: never pruned
                continue
            del keep[rev]
            pruned.append(rev)
        self._versions, self._counter, self._current = keep, revision, revision
        if self.store is None:
            return version
        row = _row(version)

        def write(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    f"INSERT INTO config_versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)", row
                )
                conn.execute(
                    "INSERT INTO config_versions_meta (key, value) VALUES ('counter', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (revision,),
                )
                conn.executemany(
                    "DELETE FROM config_versions WHERE revision = ?", [(r,) for r in pruned]
                )

        try:
            await self.store.run(write)
        except BaseException:
            # Not written: take it back out (its revision number is not reused).
            self._versions = {r: v for r, v in self._versions.items() if r != revision}
            for r in pruned:
                if r in before:
                    self._versions[r] = before[r]
            if self._current == revision:
                self._current = (
                    parent if parent in self._versions else max(self._versions, default=None)
                )
            raise
        return version

    async def create_version(
        self,
        config: Mapping[str, Any],
        change_type: ConfigChangeType = ConfigChangeType.UPDATE,
        description: str = "",
        author: str = "system",
        *,
        base_revision: int | None = None,
        restored_revision: int | None = None,
    ) -> ConfigVersion:
        """Record ``config`` as the new current version.

        The dict is deep-copied at once: changing it afterwards does not change
        the version or its checksum.

        Args:
            config: The whole config as a TOML-able dict (``config_to_dict``).
            change_type (ConfigChangeType): What kind of change.
            description (str): Why.
            author (str): Who or what.
            base_revision (int | None): Check-and-set: the revision the change
                was based on (``0`` when there was none yet).
            restored_revision (int | None): For a ROLLBACK, the version restored.

        Returns:
            ConfigVersion: The recorded version (it is now current).

        Raises:
            RevisionConflict: if ``base_revision`` is given and is not current.
            InvalidRequest: if ``config`` holds something TOML cannot (NaN, None,
                non-string keys, objects).
        """
        self.check_base(base_revision)
        return await self._record(
            config, change_type, description, author, restored_revision=restored_revision
        )

    async def rollback_to_version(
        self,
        version_id: str | int,
        description: str = "",
        *,
        author: str = "api",
        base_revision: int | None = None,
    ) -> ConfigVersion:
        """Record a ROLLBACK version whose config is an earlier version's.

        ``parent`` is the version rolled back from, ``restored`` is
        ``version_id``. This only records (``nekobot config rollback`` with no
        bot running); on a running bot ``bot.config_version_manager`` is the
        config service, whose ``rollback_to_version`` applies it first.

        Raises:
            VersionNotFound: if ``version_id`` is unknown.
            VersionCorrupted: if its stored config fails the checksum.
            RevisionConflict: if ``base_revision`` is given and is not current.
        """
        self.check_base(base_revision)
        target = self.get_version(version_id)
        return await self._record(
            target.config,
            ConfigChangeType.ROLLBACK,
            description or f"rollback to {target.version_id}",
            author,
            restored_revision=target.revision,
        )

    # ---- comparing -----------------------------------------------------------

    def compare_versions(self, version_id1: str | int, version_id2: str | int) -> ConfigDiff:
        """What changed from one version to another, secrets redacted.

        Returns:
            ConfigDiff: an RFC 6902 JSON Patch (``jsonpatch``) from the first to
            the second, and a unified diff of their TOML text. A secret that
            differs shows as ``"*** (changed)"``.

        Raises:
            VersionNotFound: if either id is unknown.
            VersionCorrupted: if either fails its checksum.
        """
        a = self.get_version(version_id1)
        b = self.get_version(version_id2)
        ca, cb = a.config, b.config
        ra = redact(ca)
        rb = redact(cb, ca)
        patch = jsonpatch.make_patch(ra, rb).patch
        diff = "".join(
            difflib.unified_diff(
                tomli_w.dumps(ra).splitlines(keepends=True),
                tomli_w.dumps(rb).splitlines(keepends=True),
                fromfile=a.version_id,
                tofile=b.version_id,
            )
        )
        return ConfigDiff(from_id=a.version_id, to_id=b.version_id, patch=patch, unified_diff=diff)

    # ---- files ---------------------------------------------------------------

    async def export_version(
        self,
        version_id: str | int,
        file_path: str | os.PathLike[str],
        include_secrets: bool = False,
    ) -> Path:
        """Write one version's config as a TOML file (atomically: temp file + rename).

        Args:
            include_secrets (bool): Write secrets as they are; by default they
                are written as ``"***"`` (such a file is not usable as it is).

        Returns:
            Path: The file written.

        Raises:
            VersionNotFound: if the id is unknown.
            VersionCorrupted: if its stored config fails the checksum.
            OSError: if the file cannot be written.
        """
        version = self.get_version(version_id)
        config = version.config
        text = tomli_w.dumps(config if include_secrets else redact(config))
        path = Path(file_path)

        def write() -> None:
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)

        await trio.to_thread.run_sync(write)
        return path

    async def import_version(
        self,
        file_path: str | os.PathLike[str],
        description: str = "",
        *,
        author: str = "import",
        base_revision: int | None = None,
    ) -> ConfigVersion:
        """Validate a TOML file and record it as the new current version (UPDATE).

        The file is validated with :func:`~nekobot.config.schema.parse_config`
        (``${NAME}`` variables expanded) and recorded in its normalised form
        (defaults filled in). It is not applied; roll back to it to apply it.

        Raises:
            ConfigError: if the file is unreadable, not TOML, or invalid
                (every problem by key path). Nothing is recorded.
            RevisionConflict: if ``base_revision`` is given and is not current.
        """
        path = Path(file_path)

        def read() -> tuple[str, str]:
            return path.read_text(encoding="utf-8"), str(path.resolve().parent)

        try:
            text, source_dir = await trio.to_thread.run_sync(read)
        except OSError as exc:
            problem = f"cannot read {path}: {exc.strerror or exc}"
            raise ConfigError([problem], source=str(path)) from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from None
        parsed = parse_config(raw, source=str(path), source_dir=source_dir)
        return await self.create_version(
            config_to_dict(parsed),
            ConfigChangeType.UPDATE,
            description or f"import of {path.name}",
            author,
            base_revision=base_revision,
        )
