"""Reading ``nekobot.toml``: :func:`load_config` and :func:`parse_config`.

They validate a whole file and report **every** problem by key path
(``platforms.qq.port: expected int, got 'abc'``). Strings may name environment
variables as ``${NAME}`` (or ``${NAME:-default}``), so secrets need not live in
the file. Each ``[platforms.<id>]`` table's ``type`` is looked up among the
platform classes and its own keys are structured into that class's
``config_class`` (:func:`parse_platform`); this is why the loader sits above
``nekobot.platforms`` while :mod:`nekobot.config.schema` stays below it.
Checks across sections (a token for a non-loopback listener, two listeners on
one port) are made here too.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..platforms.base import load_platform_class
from .schema import (
    SECTIONS,
    ApiConfig,
    ConnectionConfig,
    ConsoleConfig,
    NekoBotConfig,
    PlatformConfig,
    structure_section,
)
from .validators import is_loopback

__all__ = ["load_config", "parse_config", "parse_platform"]


# --------------------------------------------------------------------------
# environment variables

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


def _expand_env(data: Any, path: str, env: Mapping[str, str], problems: list[str]) -> Any:
    if isinstance(data, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path}: environment variable {name} is not set")
            return ""

        return _ENV.sub(sub, data)
    if isinstance(data, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else k, env, problems) for k, v in data.items()
        }
    if isinstance(data, list):
        return [_expand_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(data)]
    return data


# --------------------------------------------------------------------------
# load

_PLATFORM_COMMON = ("type", "enabled", "connection")


def parse_platform(pid: str, raw: Any) -> tuple[PlatformConfig | None, list[str]]:
    """Validate one ``[platforms.<pid>]`` table; return ``(config_or_None, problems)``.

    ``type`` is looked up with :func:`~nekobot.platforms.base.load_platform_class`
    and the keys other than ``type``, ``enabled`` and ``connection`` are
    structured into that class's ``config_class``. Problems are key-path lines
    (``"platforms.<pid>.port: expected int, got 'abc'"``).
    """
    path = f"platforms.{pid}"
    if not isinstance(raw, Mapping):
        return None, [f"{path}: expected a table, got {raw!r}"]
    problems: list[str] = []
    ptype = raw.get("type")
    if ptype is None:
        return None, [f"{path}.type: required key missing"]
    if not isinstance(ptype, str):
        return None, [f"{path}.type: expected string, got {ptype!r}"]
    try:
        cls = load_platform_class(ptype)
    except LookupError as exc:
        return None, [f"{path}.type: {exc.args[0] if exc.args else exc}"]
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(f"{path}.enabled: expected bool, got {enabled!r}")
    conn, conn_problems = structure_section(
        raw.get("connection", {}), ConnectionConfig, f"{path}.connection"
    )
    problems += conn_problems
    rest = {k: v for k, v in raw.items() if k not in _PLATFORM_COMMON}
    settings, setting_problems = structure_section(rest, cls.config_class, path)
    problems += setting_problems
    if problems:
        return None, problems
    return PlatformConfig(type=ptype, enabled=enabled, connection=conn, settings=settings), []


def parse_config(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
    source_dir: str | None = None,
) -> NekoBotConfig:
    """Validate a config given as a dict (the parsed TOML).

    Args:
        data: The TOML document as a dict.
        env: Variables for ``${NAME}`` substitution; default ``os.environ``.
        source: Name shown in the error (usually the file path).
        source_dir: Directory that relative paths are resolved against.

    Raises:
        ConfigError: listing every problem by key path.
    """
    problems: list[str] = []
    data = _expand_env(dict(data), "", os.environ if env is None else env, problems)
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key == "platforms":
            continue
        if key not in SECTIONS:
            problems.append(f"{key}: unknown key")
            continue
        section, p = structure_section(value, SECTIONS[key], key)
        problems += p
        sections[key] = section
    platforms: dict[str, PlatformConfig] = {}
    raw_platforms = data.get("platforms", {})
    if not isinstance(raw_platforms, Mapping):
        problems.append(f"platforms: expected a table, got {raw_platforms!r}")
    else:
        for pid, raw in raw_platforms.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", pid):
                problems.append(
                    f"platforms.{pid}: a platform id is 1-64 letters, digits, '_' or '-'"
                )
                continue
            pc, p = parse_platform(pid, raw)
            problems += p
            if pc is not None:
                platforms[pid] = pc
    api = sections.get("api")
    if isinstance(api, ApiConfig) and api.enable and not api.token and not is_loopback(api.host):
        problems.append(
            f"api.token: required when api.host ({api.host!r}) is not a loopback address"
        )
    problems += _port_clashes(sections, platforms)
    con = sections.get("console")
    if isinstance(con, ConsoleConfig) and con.enable and not con.unix_socket:
        if not con.token and not is_loopback(con.host):
            problems.append(
                f"console.token: required when console.host ({con.host!r}) "
                "is not a loopback address"
            )
    if problems:
        raise ConfigError(problems, source=source)
    return NekoBotConfig(
        **{k: v for k, v in sections.items() if v is not None},
        platforms=platforms,
        source_dir=source_dir,
    )


_ANY_HOST = {"0.0.0.0", "::", ""}


def _port_clashes(
    sections: Mapping[str, Any], platforms: Mapping[str, PlatformConfig]
) -> list[str]:
    """Two listeners of this config on one TCP port (0 = any free port never clashes)."""
    listeners: list[tuple[str, str, int]] = []  # (key path, host, port)
    api = sections.get("api")
    if isinstance(api, ApiConfig) and api.enable:
        listeners.append(("api.port", api.host, api.port))
    con = sections.get("console")
    if isinstance(con, ConsoleConfig) and con.enable and not con.unix_socket:
        listeners.append(("console.port", con.host, con.port))
    for pid, pc in platforms.items():
        s = pc.settings
        port, host = getattr(s, "port", None), getattr(s, "host", None)
        if not pc.enabled or not isinstance(port, int) or not isinstance(host, str):
            continue
        if getattr(s, "mode", "reverse") != "reverse":
            continue  # a dialling platform listens on nothing
        listeners.append((f"platforms.{pid}.port", host, port))
    out: list[str] = []
    for i, (path, host, port) in enumerate(listeners):
        if port == 0:
            continue
        for other, ohost, oport in listeners[:i]:
            if oport == port and (host == ohost or host in _ANY_HOST or ohost in _ANY_HOST):
                out.append(f"{path}: port {port} is also used by {other}")
                break
    return out


def load_config(
    path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
) -> NekoBotConfig:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: if the file is missing, not TOML, or invalid (every
            problem listed by key path).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror or exc}"], source=str(p)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(p)) from None
    return parse_config(data, env=env, source=str(p), source_dir=str(p.resolve().parent))
