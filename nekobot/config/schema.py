"""The shape of ``nekobot.toml``: frozen attrs classes and the one cattrs converter.

Every section of DESIGN.md has a frozen attrs class here, ``[platforms.<id>]``
included (:class:`PlatformConfig`, with its ``[platforms.<id>.connection]``
table, :class:`ConnectionConfig`). :func:`structure_section` turns one table
into its class and reports every problem by key path
(``platforms.qq.port: expected int, got 'abc'``); unknown keys are errors.
:func:`config_to_dict` / :func:`dumps_config` go the other way.

Reading a whole file (``${NAME}`` variables, the platform ``type`` lookup,
checks across sections) is :mod:`nekobot.config.loader`, which sits above
the platforms; this module imports no platform code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
import tomli_w
from cattrs.preconf.tomllib import make_converter

from ..errors import FieldValueError
from .validators import (
    ALLOW_INF,
    check,
    non_negative,
    port_number,
    positive,
    require_not_above,
    unit_interval,
)

__all__ = [
    "SECTIONS",
    "ApiConfig",
    "BotConfig",
    "BufferConfig",
    "ConnectionConfig",
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
    "platform_to_dict",
    "sections_to_dict",
    "structure_section",
]


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
        require_not_above(self, "backoff_min", "backoff_max")


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
        require_not_above(self, "cooldown", "max_cooldown")


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
class ConnectionConfig:
    """``[platforms.<id>.connection]``: how one platform's link is kept alive.

    Times are seconds on the Trio clock. The reconnect delay after the n-th
    consecutive failure is ``reconnect_interval * backoff_factor ** (n - 1)``,
    jittered, then capped at ``max_reconnect_interval``
    (:class:`nekobot.core.backoff.Backoff`).
    """

    auto_reconnect: bool = True
    """Reconnect after a close we did not start (code 1000 included)."""
    max_reconnect_attempts: int = attrs.field(default=0, validator=non_negative)
    """Consecutive failed attempts before a fault is reported; 0 = retry forever."""
    reconnect_interval: float = attrs.field(default=1.0, validator=non_negative)
    """Delay before the first reconnect attempt."""
    max_reconnect_interval: float = attrs.field(default=60.0, validator=non_negative)
    """Cap of the reconnect delay; auth failures wait this long at once."""
    backoff_factor: float = attrs.field(default=2.0, validator=positive)
    """Each failed attempt multiplies the delay by this."""
    jitter: float = attrs.field(
        default=0.1, validator=[non_negative, check(lambda v: v <= 1, "must be <= 1")]
    )
    """Relative jitter in [0, 1], applied before the cap: a delay d becomes
    uniform in [d*(1-jitter), d*(1+jitter)], then capped at ``max_reconnect_interval``."""
    stable_after: float = attrs.field(default=30.0, validator=non_negative)
    """The attempt counter resets only after the link stayed up this long."""
    health_check_interval: float = attrs.field(default=5.0, validator=positive)
    """How often the link's liveness is checked."""
    heartbeat_interval: float = attrs.field(default=30.0, validator=positive)
    """Expected heartbeat period when the peer announces none."""
    heartbeat_timeout: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(positive)
    )
    """Silence after which the link is declared dead; ``None`` = 3 x the heartbeat
    interval the peer announced, else 3 x ``heartbeat_interval``."""

    def __attrs_post_init__(self) -> None:
        require_not_above(self, "reconnect_interval", "max_reconnect_interval")


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


SECTIONS: dict[str, type[Any]] = {
    "bot": BotConfig,
    "supervisor": SupervisorConfig,
    "fault_isolation": FaultIsolationConfig,
    "router": RouterConfig,
    "buffer": BufferConfig,
    "monitor": MonitorConfig,
    "api": ApiConfig,
    "console": ConsoleConfig,
}
"""The top-level tables other than ``[platforms]``, by key, with their classes."""


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
# dump (the inverse of the loader: a TOML-able dict, TOML text)


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def platform_to_dict(pc: PlatformConfig) -> dict[str, Any]:
    """One platform section as the dict its TOML table holds."""
    out: dict[str, Any] = {"type": pc.type, "enabled": pc.enabled}
    if pc.settings is not None:
        out.update(converter.unstructure(pc.settings))
    out["connection"] = converter.unstructure(pc.connection)
    return _drop_none(out)  # type: ignore[no-any-return]


def sections_to_dict(config: NekoBotConfig) -> dict[str, Any]:
    """Every section but ``platforms``, as :func:`config_to_dict` gives them."""
    out = {name: converter.unstructure(getattr(config, name)) for name in SECTIONS}
    return _drop_none(out)  # type: ignore[no-any-return]


def config_to_dict(config: NekoBotConfig) -> dict[str, Any]:
    """The config as the plain dict a TOML file would hold (``None`` values omitted)."""
    out = sections_to_dict(config)
    out["platforms"] = {pid: platform_to_dict(pc) for pid, pc in config.platforms.items()}
    return out


def dumps_config(config: NekoBotConfig | Mapping[str, Any]) -> str:
    """The config as TOML text."""
    data = config_to_dict(config) if isinstance(config, NekoBotConfig) else dict(config)
    return tomli_w.dumps(_drop_none(data))
