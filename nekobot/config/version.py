"""One recorded config: :class:`ConfigVersion`, :class:`ConfigDiff`, :class:`ConfigChangeType`.

A version holds a whole config as canonical JSON text (sorted keys, compact)
with its sha256 checksum; :attr:`ConfigVersion.config` checks the checksum and
returns a fresh deep copy. :class:`~nekobot.config.versions.ConfigVersionManager`
records them; the JSON output converter (:mod:`nekobot.api.serialize`) shows them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ..errors import InvalidRequest, VersionCorrupted, VersionNotFound
from .schema import NekoBotConfig, PlatformConfig, platform_to_dict, sections_to_dict

__all__ = [
    "CanonicalTexts",
    "ConfigChangeType",
    "ConfigDiff",
    "ConfigVersion",
    "canonical",
    "parse_id",
    "plain_config",
    "sha256_hex",
]


class ConfigChangeType(enum.Enum):
    """What kind of change a version records (seed names)."""

    CREATE = "create"
    """The first config (bot start with no history)."""
    UPDATE = "update"
    """A change through the API, the console, a reload or an import."""
    DELETE = "delete"
    """A removal (e.g. of a platform), when the caller wants it told apart."""
    ROLLBACK = "rollback"
    """A rollback to an earlier version's config."""


# --------------------------------------------------------------------------
# canonical form


def plain_config(value: Any, path: str) -> Any:
    """A deep copy of a TOML-able value as plain dicts / lists / scalars."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRequest(f"config{path}: keys must be strings, got {k!r}")
            out[k] = plain_config(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [plain_config(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float):
        if math.isnan(value):
            raise InvalidRequest(f"config{path}: NaN cannot be stored in a config version")
        return value
    if isinstance(value, str | bool | int):
        return value
    raise InvalidRequest(
        f"config{path}: {type(value).__name__} is not a TOML value "
        "(expected table, array, string, integer, float or boolean)"
    )


def canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class CanonicalTexts:
    """The canonical text of whole configs, reusing each unchanged platform's text.

    ``text(config) == canonical(config_to_dict(config))``, but a platform
    section whose :class:`~nekobot.config.schema.PlatformConfig` is the same
    object as last time is not converted again: recording a version after one
    platform was added costs the one new section plus joining the others, not
    a conversion of every section (adding 1,000 platforms one by one stays
    linear).
    """

    def __init__(self) -> None:
        self._platforms: dict[str, tuple[PlatformConfig, str]] = {}

    def text(self, config: NekoBotConfig) -> str:
        """The canonical JSON text of ``config`` (see :func:`canonical`)."""
        cached = self._platforms
        fresh: dict[str, tuple[PlatformConfig, str]] = {}
        for pid, pc in config.platforms.items():
            hit = cached.get(pid)
            if hit is None or hit[0] is not pc:  # '"<pid>":<section>', made once
                hit = (pc, f"{_dumps(pid)}:{canonical(platform_to_dict(pc))}")
            fresh[pid] = hit
        self._platforms = fresh
        platforms = ",".join(fresh[pid][1] for pid in sorted(fresh))
        parts = {name: canonical(value) for name, value in sections_to_dict(config).items()}
        parts["platforms"] = "{" + platforms + "}"
        return "{" + ",".join(f"{_dumps(k)}:{parts[k]}" for k in sorted(parts)) + "}"


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_id(version_id: str | int) -> int:
    if isinstance(version_id, int) and not isinstance(version_id, bool):
        return version_id
    if isinstance(version_id, str):
        m = re.fullmatch(r"[vV]?(\d{1,18})", version_id.strip())
        if m:
            return int(m.group(1))
    raise VersionNotFound(str(version_id))


def _vid(revision: int | None) -> str | None:
    return None if revision is None else f"v{revision}"


# --------------------------------------------------------------------------
# data


@attrs.frozen(kw_only=True)
class ConfigVersion:
    """One recorded config; immutable.

    The config itself is held as canonical JSON text; :attr:`config` returns a
    fresh deep copy after checking the sha256 checksum.
    """

    revision: int
    """Position in the history (1, 2, …); grows by one per version, never reused."""
    change_type: ConfigChangeType
    """What kind of change this records."""
    description: str
    """Free text: why the change was made."""
    author: str
    """Who or what made it (``"api"``, ``"console"``, ``"reload"``, ``"startup"`` …)."""
    created_at: float
    """Wall-clock ``time.time()`` when it was recorded."""
    parent_revision: int | None
    """The revision that was current when this one was recorded (``None`` for the
    first). For a ROLLBACK: the version rolled back *from*."""
    restored_revision: int | None = None
    """For a ROLLBACK: the version whose config it restored; else ``None``."""
    checksum: str
    """sha256 (hex) of the canonical JSON text of the config."""
    _text: str = attrs.field(alias="text", repr=False)

    @property
    def version_id(self) -> str:
        """``"v<revision>"``."""
        return f"v{self.revision}"

    @property
    def parent_id(self) -> str | None:
        """``"v<parent_revision>"`` or ``None``."""
        return _vid(self.parent_revision)

    @property
    def restored_id(self) -> str | None:
        """``"v<restored_revision>"`` or ``None``."""
        return _vid(self.restored_revision)

    @property
    def config(self) -> dict[str, Any]:
        """A fresh deep copy of the stored config dict.

        Raises:
            VersionCorrupted: if the stored text no longer matches its checksum.
        """
        if sha256_hex(self._text) != self.checksum:
            raise VersionCorrupted(self.version_id)
        data: dict[str, Any] = json.loads(self._text)
        return data

    @property
    def canonical_text(self) -> str:
        """The stored canonical JSON text of the config (not checked; see :meth:`verify`)."""
        return self._text

    def verify(self) -> bool:
        """Whether the stored config still matches its checksum."""
        return sha256_hex(self._text) == self.checksum


@attrs.frozen(kw_only=True)
class ConfigDiff:
    """What :meth:`ConfigVersionManager.compare_versions` returns; secrets redacted."""

    from_id: str
    """The older side's version id."""
    to_id: str
    """The newer side's version id."""
    patch: list[dict[str, Any]]
    """RFC 6902 JSON Patch turning ``from_id``'s config into ``to_id``'s."""
    unified_diff: str
    """Unified diff of the two configs' TOML text (empty when equal)."""
