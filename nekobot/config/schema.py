"""The shape of ``nekobot.toml``: attrs classes, one cattrs converter, load and dump.

Every section of DESIGN.md has a frozen attrs class here. :func:`load_config`
and :func:`parse_config` validate a whole file and report **every** problem by
key path (``platforms.qq.port: expected int, got 'abc'``); unknown keys are
errors. Strings may name environment variables as ``${NAME}`` (or
``${NAME:-default}``), so secrets need not live in the file.

Each ``[platforms.<id>]`` table has the common keys ``type``, ``enabled`` and
``[platforms.<id>.connection]`` (:class:`~nekobot.connection_manager.ConnectionConfig`);
every other key is validated by the platform class's ``config_class``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
import tomli_w
from cattrs.preconf.tomllib import make_converter

from ..errors import ConfigError, FieldValueError
from ..platforms.connection_manager import ConnectionConfig

__all__ = [
    "ApiConfig",
    "BotConfig",
    "BufferConfig",
    "ConsoleConfig",
    "FaultIsolationConfig",
    "MonitorConfig",
    "NekoBotConfig",
    "PlatformConfig",
    "RouterConfig",
    "SupervisorConfig",
    "config_to_dict",
    "converter",
    "dumps_config",
    "load_config",
    "parse_config",
    "structure_section",
]


ALLOW_INF = {"allow_inf": True}
"""Field metadata: this float may be ``inf`` (its docstring says what that means)."""


def _check(pred: Callable[[Any], bool], text: str) -> Any:
    def validator(_inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if (
            isinstance(value, float)
            and math.isinf(value)
            and not attribute.metadata.get("allow_inf", False)
        ):
            raise FieldValueError(attribute.name, f"must be a finite number, got {value!r}")
        if not pred(value):
            raise FieldValueError(attribute.name, f"{text}, got {value!r}")

    return validator


def _not_above(low: str, high: str) -> Callable[[Any], None]:
    """A post-init check: ``low`` must not exceed ``high`` (names the ``low`` field)."""

    def check(inst: Any) -> None:
        lo, hi = getattr(inst, low), getattr(inst, high)
        if lo is not None and hi is not None and lo > hi:
            raise FieldValueError(low, f"must be <= {high} ({hi!r}), got {lo!r}")

    return check


non_negative = _check(lambda v: v >= 0, "must be >= 0")
positive = _check(lambda v: v > 0, "must be > 0")
unit_interval = _check(lambda v: 0 <= v <= 1, "must be between 0 and 1")
port_number = _check(lambda v: 0 <= v <= 65535, "must be a port number 0..65535")


# --------------------------------------------------------------------------
# sections


@attrs.frozen(kw_only=True)
class BotConfig:
    """``[bot]``: the bot as a whole."""

    name: str = "nekobot"
    """Shown in logs and the console."""
    plugins: list[str] = attrs.field(factory=list)
    """Handler plugins, ``"package.module:setup"``; each ``setup(bot)`` runs at start."""
    data_dir: str = "data"
    """Directory of the SQLite store (buffer, config versions, fault records);
    relative paths are relative to the config file's directory."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Logging level of ``nekobot run``."""
    shutdown_timeout: float = attrs.field(default=5.0, validator=non_negative)
    """Seconds each root child gets to stop before it is cancelled."""


@attrs.frozen(kw_only=True)
class SupervisorConfig:
    """``[supervisor]``: how the platform supervisor restarts children (OTP terms)."""

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    """Which children restart when one fails."""
    max_restarts: int = attrs.field(default=5, validator=non_negative)
    """Restart intensity: more than this many restarts within ``period`` seconds
    isolates the child (platform supervisor) or escalates (root)."""
    period: float = attrs.field(default=60.0, validator=positive)
    """Seconds of the restart-intensity window."""
    backoff_min: float = attrs.field(default=0.5, validator=non_negative)
    """Seconds before the first restart."""
    backoff_max: float = attrs.field(default=30.0, validator=non_negative)
    """Cap of the restart delay in seconds; jitter never pushes a delay above it."""
    backoff_factor: float = attrs.field(default=2.0, validator=positive)
    """Each consecutive restart multiplies the delay by this."""
    jitter: float = attrs.field(default=0.1, validator=unit_interval)
    """Relative jitter applied before the cap: d -> uniform(d*(1-j), d*(1+j))."""
    backoff_reset: float = attrs.field(default=30.0, validator=non_negative)
    """Seconds a child must run without failing before its delay resets."""
    shutdown: float = attrs.field(default=5.0, validator=non_negative)
    """Seconds a platform child gets to stop before it is cancelled."""
    start_timeout: float = attrs.field(default=60.0, validator=positive)
    """Seconds a platform gets to call ``task_status.started()`` (Trio clock);
    a start that takes longer is cancelled and fails (``inf`` waits forever)."""

    def __attrs_post_init__(self) -> None:
        _not_above("backoff_min", "backoff_max")(self)


@attrs.frozen(kw_only=True)
class FaultIsolationConfig:
    """``[fault_isolation]``: the per-platform circuit breaker."""

    failure_threshold: int = attrs.field(default=5, validator=positive)
    """Faults within ``error_window`` seconds that open the breaker."""
    error_window: float = attrs.field(default=60.0, validator=positive)
    """Seconds over which faults are counted."""
    cooldown: float = attrs.field(default=30.0, validator=non_negative)
    """Seconds an open breaker waits before one half-open trial."""
    max_cooldown: float = attrs.field(default=600.0, validator=non_negative)
    """Cap of the cooldown, which doubles after each failed trial."""
    max_fault_records: int = attrs.field(default=100, validator=positive)
    """Fault records kept per platform (a ring; the oldest go first)."""

    def __attrs_post_init__(self) -> None:
        _not_above("cooldown", "max_cooldown")(self)


@attrs.frozen(kw_only=True)
class RouterConfig:
    """``[router]``: inbound routing."""

    max_queue_size: int = attrs.field(default=10_000, validator=positive)
    """Messages queued at most; then ``overflow`` decides."""
    overflow: Literal["block", "drop_lowest"] = "block"
    """``block``: ``route_message`` waits (backpressure); ``drop_lowest``: the
    oldest message of the lowest priority is dropped and counted."""
    enable_dedup: bool = True
    """Drop a message whose dedup key was handled within ``dedup_window``."""
    dedup_window: float = attrs.field(default=300.0, validator=positive)
    """Seconds a handled message's key is remembered."""
    max_dedup_entries: int = attrs.field(default=100_000, validator=positive)
    """Keys remembered at most; the oldest are forgotten first."""
    max_concurrency: int = attrs.field(default=16, validator=positive)
    """Handler workers running at once."""
    max_retries: int = attrs.field(default=2, validator=non_negative)
    """Retries of a message whose handler raised, before it is dead-lettered."""
    retry_backoff: float = attrs.field(default=0.5, validator=non_negative)
    """Seconds before the first retry; doubles per retry."""
    handler_timeout: float = attrs.field(default=120.0, validator=positive, metadata=ALLOW_INF)
    """Seconds (Trio clock) an ``async`` handler may run on one message before it
    is cancelled and counted as failed (``trio.TooSlowError``; retried, then
    dead-lettered), so a hung handler cannot hold a worker forever; ``inf``
    disables it. Sync handlers in threads cannot be interrupted."""
    dead_letter_size: int = attrs.field(default=1000, validator=positive)
    """Dead-lettered messages kept (a ring)."""


@attrs.frozen(kw_only=True)
class BufferConfig:
    """``[buffer]``: outbound messages held while a platform is offline."""

    max_size: int = attrs.field(default=1000, validator=positive)
    """Default queue bound per platform."""
    platform_max_size: dict[str, int] = attrs.field(factory=dict)
    """Per-platform overrides of ``max_size``: ``{platform_id: size}``."""
    global_max_size: int = attrs.field(default=100_000, validator=positive)
    """Messages held over all platforms at most."""
    policy: Literal["fifo", "lifo", "priority"] = "fifo"
    """Replay order."""
    overflow_strategy: Literal["drop_oldest", "drop_newest", "drop_low_priority"] = "drop_oldest"
    """Which message one overflow drops."""
    default_ttl: float = attrs.field(default=3600.0, validator=positive, metadata=ALLOW_INF)
    """Seconds a message may wait when ``add_message`` gives no ``ttl``; ``inf`` never expires."""
    replay_rate: float = attrs.field(default=50.0, validator=positive)
    """Messages per second at most while replaying to a platform."""
    durable: bool = True
    """Keep the buffer in SQLite under ``bot.data_dir`` (survives ``kill -9``)."""
    overflow_wait: float = attrs.field(default=10.0, validator=non_negative)
    """Seconds (Trio clock) a send to an ONLINE platform whose queue is full waits
    for room before ``overflow_strategy`` drops a message; ``0`` never waits.
    While a platform is offline the strategy applies at once."""
    max_send_attempts: int = attrs.field(default=5, validator=non_negative)
    """Refused replay sends of one message before it is dropped (counted as
    ``send_failed``), so one message the platform always refuses cannot block
    its queue; ``0`` retries forever. Link failures (``ConnectionClosed``,
    ``PlatformOffline``) never count."""
    retry_interval: float = attrs.field(default=1.0, validator=positive)
    """Seconds (Trio clock) a replay waits after a failed send before it retries
    while the platform is still online; doubles per consecutive failure, capped at 60."""


@attrs.frozen(kw_only=True)
class MonitorConfig:
    """``[monitor]``: metrics windows and alert rules."""

    history_size: int = attrs.field(default=10_000, validator=positive)
    """Samples kept per platform window (bounded memory)."""
    window: float = attrs.field(default=60.0, validator=positive)
    """Seconds of the sliding window behind per-platform figures."""
    alert_interval: float = attrs.field(default=10.0, validator=positive)
    """Seconds between evaluations of the alert rules."""
    error_rate_threshold: float = attrs.field(default=0.2, validator=unit_interval)
    """An error rate above this in the window raises an alert and marks the platform unhealthy."""
    min_messages_for_error_rate: int = attrs.field(default=10, validator=non_negative)
    """Messages the window must hold before the error-rate rule may fire."""
    latency_p95_threshold_ms: float = attrs.field(default=1000.0, validator=positive)
    """A p95 latency above this (milliseconds) raises an alert and marks the platform unhealthy."""
    max_alerts: int = attrs.field(default=1000, validator=positive)
    """Alerts kept (resolved ones are pruned first)."""


@attrs.frozen(kw_only=True)
class ApiConfig:
    """``[api]``: the operators' HTTP API (DESIGN.md §6)."""

    enable: bool = False
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=port_number)
    token: str | None = None
    """Bearer token for ``/api``; required when ``host`` is not loopback."""
    metrics_auth: bool = False
    """Require the token on ``/metrics`` too."""
    max_body_size: int = attrs.field(default=1_048_576, validator=positive)
    """Bytes a request body may have."""


@attrs.frozen(kw_only=True)
class ConsoleConfig:
    """``[console]``: the debug console (loopback TCP or a Unix socket, mode 0600)."""

    enable: bool = False
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8765, validator=port_number)
    unix_socket: str | None = None
    """Path of a Unix socket to listen on instead of TCP."""
    token: str | None = None


@attrs.frozen(kw_only=True)
class PlatformConfig:
    """One ``[platforms.<id>]`` table."""

    type: str
    """Platform class: a built-in name, an entry point in ``nekobot.platforms``,
    or ``package.module:ClassName``."""
    enabled: bool = True
    """Start this platform with the bot."""
    connection: ConnectionConfig = attrs.field(factory=ConnectionConfig)
    """``[platforms.<id>.connection]``."""
    settings: Any = None
    """The platform's own keys, structured into its ``config_class``."""


@attrs.frozen(kw_only=True)
class NekoBotConfig:
    """The whole of ``nekobot.toml``."""

    bot: BotConfig = attrs.field(factory=BotConfig)
    supervisor: SupervisorConfig = attrs.field(factory=SupervisorConfig)
    fault_isolation: FaultIsolationConfig = attrs.field(factory=FaultIsolationConfig)
    router: RouterConfig = attrs.field(factory=RouterConfig)
    buffer: BufferConfig = attrs.field(factory=BufferConfig)
    monitor: MonitorConfig = attrs.field(factory=MonitorConfig)
    api: ApiConfig = attrs.field(factory=ApiConfig)
    console: ConsoleConfig = attrs.field(factory=ConsoleConfig)
    platforms: dict[str, PlatformConfig] = attrs.field(factory=dict)
    source_dir: str | None = attrs.field(default=None, eq=False)
    """Directory of the file this was loaded from (resolves ``bot.data_dir``)."""

    def data_path(self) -> Path:
        """``bot.data_dir`` as an absolute path."""
        p = Path(self.bot.data_dir).expanduser()
        if not p.is_absolute() and self.source_dir is not None:
            p = Path(self.source_dir) / p
        return p.resolve()


# --------------------------------------------------------------------------
# converter


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: errors name the value, not echo it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _t: Any) -> Any:
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"expected {name}, got {_short(value)}")
            if value != value:  # NaN compares unequal to itself
                raise TypeError(f"expected {name} (a number, not NaN), got nan")
            return float(value)
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {name}, got {_short(value)}")
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {_short(value)}")
        return value

    return hook


def _is_literal(t: Any) -> bool:
    origin: Any = get_origin(t)
    return bool(origin is Literal)


def _literal_hook(t: Any) -> Callable[[Any, Any], Any]:
    allowed = get_args(t)
    text = ", ".join(repr(a) for a in allowed)

    def hook(value: Any, _t: Any) -> Any:
        for a in allowed:
            if value == a and type(value) is type(a):
                return a
        raise ValueError(f"expected one of {text}, got {_short(value)}")

    return hook


def _make_converter() -> cattrs.Converter:
    c = make_converter(forbid_extra_keys=True, detailed_validation=True)
    c.register_structure_hook_factory(_is_literal, _literal_hook)
    c.register_structure_hook(int, _strict(int, "int"))
    c.register_structure_hook(float, _strict(float, "float"))
    c.register_structure_hook(str, _strict(str, "string"))
    c.register_structure_hook(bool, _strict(bool, "bool"))
    return c


converter: cattrs.Converter = _make_converter()
"""The one converter for NekoBot's config (strict types, unknown keys refused)."""


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required key missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return "\x00" + ",".join(sorted(exc.extra_fields))
    if isinstance(exc, FieldValueError):
        return f"\x01{exc.field}\x01{exc}"
    if isinstance(exc, TypeError | ValueError) and str(exc).startswith("expected"):
        return str(exc)
    if isinstance(exc, cattrs.errors.BaseValidationError):  # pragma: no cover - defensive
        return str(exc)
    return f"invalid value ({exc})"


def _problems(exc: Exception, prefix: str) -> list[str]:
    out: list[str] = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format_exception):
        msg, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        path = re.sub(r"\['([^']*)'\]", r".\1", path).lstrip(".")
        full = ".".join(p for p in (prefix, path) if p)
        if msg.startswith("\x00"):
            for key in msg[1:].split(","):
                out.append(f"{'.'.join(p for p in (full, key) if p)}: unknown key")
        elif msg.startswith("\x01"):
            _, field, text = msg.split("\x01", 2)
            out.append(f"{'.'.join(p for p in (full, field) if p)}: {text}")
        else:
            out.append(f"{full or '(top level)'}: {msg}")
    return out


def structure_section(data: Any, cls: type[Any], path: str) -> tuple[Any, list[str]]:
    """Structure ``data`` into ``cls``; return ``(value_or_None, problems)``.

    Problems are ``"key.path: what is wrong"`` lines, with ``path`` as prefix.
    """
    if not isinstance(data, Mapping):
        return None, [f"{path}: expected a table, got {_short(data)}"]
    try:
        return converter.structure(dict(data), cls), []
    except Exception as exc:
        problems = _problems(exc, path)
        return None, problems + _range_problems(data, cls, path, problems)


def _range_problems(
    data: Mapping[str, Any], cls: type[Any], path: str, known: list[str]
) -> list[str]:
    """Run the validators of fields that structured fine, so one bad key does not
    hide another's range problem (cattrs only builds the class when every field
    structured)."""
    out: list[str] = []
    if not attrs.has(cls):
        return out
    for field in attrs.fields(cls):
        value = data.get(field.alias or field.name, None)
        if field.validator is None or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or value != value:
            continue
        key = f"{path}.{field.name}" if path else field.name
        if any(p.startswith(f"{key}:") for p in known):
            continue
        try:
            field.validator(None, field, value)
        except FieldValueError as exc:
            out.append(f"{key}: {exc}")
        except Exception:  # a validator that needs the whole instance
            continue
    return out


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
# load / dump

_SECTIONS: dict[str, type[Any]] = {
    "bot": BotConfig,
    "supervisor": SupervisorConfig,
    "fault_isolation": FaultIsolationConfig,
    "router": RouterConfig,
    "buffer": BufferConfig,
    "monitor": MonitorConfig,
    "api": ApiConfig,
    "console": ConsoleConfig,
}

_PLATFORM_COMMON = ("type", "enabled", "connection")


def _parse_platform(pid: str, raw: Any) -> tuple[PlatformConfig | None, list[str]]:
    from ..platforms.base import load_platform_class  # late: platforms import schema users

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
        if key not in _SECTIONS:
            problems.append(f"{key}: unknown key")
            continue
        section, p = structure_section(value, _SECTIONS[key], key)
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
            pc, p = _parse_platform(pid, raw)
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is ``localhost`` or a loopback address."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return value
    return value


def platform_to_dict(pc: PlatformConfig) -> dict[str, Any]:
    """One platform section as the dict its TOML table holds."""
    out: dict[str, Any] = {"type": pc.type, "enabled": pc.enabled}
    if pc.settings is not None:
        out.update(converter.unstructure(pc.settings))
    out["connection"] = converter.unstructure(pc.connection)
    return _drop_none(out)  # type: ignore[no-any-return]


def config_to_dict(config: NekoBotConfig) -> dict[str, Any]:
    """The config as the plain dict a TOML file would hold (``None`` values omitted)."""
    out: dict[str, Any] = {name: converter.unstructure(getattr(config, name)) for name in _SECTIONS}
    out["platforms"] = {pid: platform_to_dict(pc) for pid, pc in config.platforms.items()}
    return _drop_none(out)  # type: ignore[no-any-return]


def dumps_config(config: NekoBotConfig | Mapping[str, Any]) -> str:
    """The config as TOML text."""
    data = config_to_dict(config) if isinstance(config, NekoBotConfig) else dict(config)
    return tomli_w.dumps(_drop_none(data))
