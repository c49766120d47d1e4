"""The API's route handlers (DESIGN.md §6), each declared with its OpenAPI operation.

The handlers read the bot only through the ``NekoBot`` handle's attributes
(``runtime_manager``, ``message_router``, ``message_buffer``,
``status_monitor``, ``fault_isolation_manager``, ``config_version_manager``,
``config``, ``ready``). Getters answer from the parts' published snapshots;
every call that waits on the bot goes through
:func:`~nekobot.api.deadline.within`, so it answers within its deadline (503
``timeout`` naming what it waited for). Config changes pass ``author="api"``
and the body's ``base_revision`` to the bot, which does the check-and-set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from ..config.loader import parse_config
from ..config.schema import ApiConfig, structure_section
from ..config.schema import converter as config_converter
from ..errors import PlatformNotFound
from ..monitor.status_monitor import AlertLevel
from ..platforms.connection_manager import ConnectionConfig
from .bodies import (
    AddPlatformRequest,
    ConnectionConfigRequest,
    DisableRequest,
    EnableRequest,
    LifecycleRequest,
    RemovePlatformRequest,
    ReplayRequest,
    ResolveAlertRequest,
    RollbackRequest,
    parse_body,
    query_int,
    query_required,
)
from .deadline import NURSERY_KEY, OPERATOR_DEADLINE, within
from .errors import ApiError, json_response
from .openapi import ARR, BOOL, INT, NINT, NSTR, OBJ, OPERATIONS, STR, openapi_document, operation
from .serialize import converter as json_converter

if TYPE_CHECKING:
    from ..app import NekoBot

__all__ = ["Handler", "Routes"]

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


class Routes:
    """The route handlers of one app, bound to one bot.

    Args:
        bot (NekoBot): The handle the handlers read and call.
        cfg (ApiConfig): The config the API was started with.
        deadline (float): Seconds (Trio clock) a handler waits on the bot.
    """

    def __init__(
        self, bot: NekoBot, cfg: ApiConfig, *, deadline: float = OPERATOR_DEADLINE
    ) -> None:
        self.bot = bot
        self.cfg = cfg
        self.deadline = deadline

    def routes(self) -> list[tuple[str, str, Handler]]:
        """``(method, path, handler)`` of every route."""
        return [
            ("GET", "/api/runtime/lifecycle", self.get_lifecycle),
            ("POST", "/api/runtime/lifecycle", self.post_lifecycle),
            ("POST", "/api/runtime/platforms", self.add_platform),
            ("DELETE", "/api/runtime/platforms", self.remove_platform),
            ("GET", "/api/connection/stats", self.connection_stats),
            ("POST", "/api/connection/config", self.connection_config),
            ("GET", "/api/fault/isolation", self.fault_isolation),
            ("GET", "/api/fault/records", self.fault_records),
            ("POST", "/api/fault/platform/enable", self.enable_platform),
            ("POST", "/api/fault/platform/disable", self.disable_platform),
            ("GET", "/api/message/router/stats", self.router_stats),
            ("GET", "/api/message/buffer/stats", self.buffer_stats),
            ("GET", "/api/message/buffer/messages", self.buffer_messages),
            ("POST", "/api/message/buffer/replay", self.buffer_replay),
            ("GET", "/api/monitor/status", self.monitor_status),
            ("GET", "/api/monitor/platforms", self.monitor_platforms),
            ("GET", "/api/monitor/alerts", self.monitor_alerts),
            ("POST", "/api/monitor/alerts/resolve", self.resolve_alert),
            ("GET", "/api/config/versions", self.config_versions),
            ("GET", "/api/config/diff", self.config_diff),
            ("POST", "/api/config/rollback", self.config_rollback),
            ("GET", "/metrics", self.metrics),
            ("GET", "/healthz", self.healthz),
            ("GET", "/readyz", self.readyz),
            ("GET", "/openapi.json", self.openapi),
        ]

    # ---- helpers -------------------------------------------------------------

    async def _wait(self, request: Request, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Wait on the bot within the deadline (503 ``timeout`` naming ``what``)."""
        nursery = request.scope[NURSERY_KEY]
        return await within(nursery, what, call, deadline=self.deadline)

    def _known(self, pid: str) -> None:
        if pid not in self.bot.runtime_manager.platform_configs:
            raise PlatformNotFound(pid)

    def _revision(self) -> int | None:
        return self.bot.config_version_manager.current_revision

    # ---- runtime -------------------------------------------------------------

    @operation(
        "GET",
        "/api/runtime/lifecycle",
        "Lifecycle state of every platform, or of one",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": OBJ},
        errors=(404,),
    )
    async def get_lifecycle(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        rm = self.bot.runtime_manager
        if pid:
            self._known(pid)
            return json_response({"platforms": {pid: rm.get_platform_lifecycle_status(pid)}})
        return json_response({"platforms": rm.get_platform_lifecycle_status()})

    @operation(
        "POST",
        "/api/runtime/lifecycle",
        "Start, stop or restart a platform",
        body=LifecycleRequest,
        returns={"platform_id": STR, "action": STR, "status": OBJ},
        errors=(404, 409, 503),
    )
    async def post_lifecycle(self, request: Request) -> Response:
        req = await parse_body(request, LifecycleRequest)
        rm = self.bot.runtime_manager
        fn = {"start": rm.start_platform, "stop": rm.stop_platform, "restart": rm.restart_platform}
        action, pid = fn[req.action], req.platform_id
        await self._wait(request, f"{req.action} of platform {pid!r}", lambda: action(pid))
        return json_response(
            {
                "platform_id": req.platform_id,
                "action": req.action,
                "status": rm.get_platform_lifecycle_status(req.platform_id),
            }
        )

    @operation(
        "POST",
        "/api/runtime/platforms",
        "Add a platform (started at once unless auto_start is false)",
        body=AddPlatformRequest,
        returns={"platform_id": STR, "status": OBJ, "revision": NINT},
        errors=(409, 503),
        status=201,
    )
    async def add_platform(self, request: Request) -> Response:
        req = await parse_body(request, AddPlatformRequest)
        # No ${ENV} expansion for configs that arrive over the network.
        parsed = parse_config({"platforms": {req.platform_id: req.platform_config}}, env={})
        pc = parsed.platforms[req.platform_id]
        rm = self.bot.runtime_manager
        await self._wait(
            request,
            f"adding platform {req.platform_id!r}",
            lambda: rm.add_platform(
                req.platform_id,
                pc,
                auto_start=req.auto_start,
                author="api",
                base_revision=req.base_revision,
            ),
        )
        return json_response(
            {
                "platform_id": req.platform_id,
                "status": rm.get_platform_lifecycle_status(req.platform_id),
                "revision": self._revision(),
            },
            status=201,
        )

    @operation(
        "DELETE",
        "/api/runtime/platforms",
        "Remove a platform (stopped first)",
        body=RemovePlatformRequest,
        query={"platform_id": ("string", False, "Instead of the body")},
        returns={"platform_id": STR, "removed": BOOL, "revision": NINT},
        errors=(404, 409, 503),
    )
    async def remove_platform(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        base: int | None = None
        if pid:
            base = query_int(request, "base_revision", None, lo=0)
        else:
            req = await parse_body(request, RemovePlatformRequest)
            pid, base = req.platform_id, req.base_revision
        self._known(pid)
        rm = self.bot.runtime_manager
        await self._wait(
            request,
            f"removing platform {pid!r}",
            lambda: rm.remove_platform(
                pid,
                author="api",
                base_revision=base,
            ),
        )
        return json_response({"platform_id": pid, "removed": True, "revision": self._revision()})

    # ---- connection ----------------------------------------------------------

    def _connection_entry(self, pid: str) -> dict[str, Any]:
        rm = self.bot.runtime_manager
        pc = rm.platform_configs[pid]
        actor = rm.get_platform_actor(pid)
        stats: object = None
        for owner in (actor, getattr(actor, "connection_manager", None)):
            getter = getattr(owner, "get_connection_stats", None)
            if callable(getter):
                stats = getter()
                break
        return {
            "running": actor is not None,
            "online": bool(actor is not None and actor.online),
            "config": config_converter.unstructure(pc.connection),
            "stats": stats,
        }

    @operation(
        "GET",
        "/api/connection/stats",
        "Connection stats and settings per platform",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": OBJ},
        errors=(404,),
    )
    async def connection_stats(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        if pid:
            self._known(pid)
            pids = [pid]
        else:
            pids = list(self.bot.runtime_manager.platform_configs)
        return json_response({"platforms": {p: self._connection_entry(p) for p in pids}})

    @operation(
        "POST",
        "/api/connection/config",
        "Change a platform's [platforms.<id>.connection] (the platform is rebuilt)",
        body=ConnectionConfigRequest,
        returns={"platform_id": STR, "connection": OBJ, "revision": NINT},
        errors=(404, 409, 503),
    )
    async def connection_config(self, request: Request) -> Response:
        req = await parse_body(request, ConnectionConfigRequest)
        self._known(req.platform_id)
        rm = self.bot.runtime_manager
        current = config_converter.unstructure(rm.platform_configs[req.platform_id].connection)
        new, problems = structure_section(
            {**current, **req.connection}, ConnectionConfig, "connection"
        )
        if problems:  # each names its key: "connection.jitter: must be >= 0, got -1.0"
            raise ApiError(400, "invalid_request", "; ".join(problems))
        merged = config_converter.unstructure(new)
        await self._wait(
            request,
            f"changing the connection of platform {req.platform_id!r}",
            lambda: rm.update_platform_config(
                req.platform_id,
                {"connection": merged},
                author="api",
                base_revision=req.base_revision,
            ),
        )
        return json_response(
            {"platform_id": req.platform_id, "connection": merged, "revision": self._revision()}
        )

    # ---- faults --------------------------------------------------------------

    @operation(
        "GET",
        "/api/fault/isolation",
        "Isolation status: breakers, manual and automatic disables, degradation",
        returns={"isolation": OBJ},
    )
    async def fault_isolation(self, request: Request) -> Response:
        return json_response({"isolation": self.bot.fault_isolation_manager.get_isolation_status()})

    @operation(
        "GET",
        "/api/fault/records",
        "Fault records (newest last), of every platform or one",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"records": ARR},
        errors=(404,),
    )
    async def fault_records(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id") or None
        if pid is not None:
            self._known(pid)
        return json_response({"records": self.bot.fault_isolation_manager.get_fault_records(pid)})

    @operation(
        "POST",
        "/api/fault/platform/enable",
        "Enable a platform a person disabled (also closes its breaker)",
        body=EnableRequest,
        returns={"platform_id": STR, "enabled": BOOL},
        errors=(404, 409, 503),
    )
    async def enable_platform(self, request: Request) -> Response:
        req = await parse_body(request, EnableRequest)
        self._known(req.platform_id)
        fi = self.bot.fault_isolation_manager
        await self._wait(
            request,
            f"enabling platform {req.platform_id!r}",
            lambda: fi.enable_platform(req.platform_id, by="api"),
        )
        return json_response({"platform_id": req.platform_id, "enabled": True})

    @operation(
        "POST",
        "/api/fault/platform/disable",
        "Disable a platform by hand; no automatic path starts it again",
        body=DisableRequest,
        returns={"platform_id": STR, "enabled": BOOL},
        errors=(404, 503),
    )
    async def disable_platform(self, request: Request) -> Response:
        req = await parse_body(request, DisableRequest)
        self._known(req.platform_id)
        fi = self.bot.fault_isolation_manager
        await self._wait(
            request,
            f"disabling platform {req.platform_id!r}",
            lambda: fi.disable_platform(req.platform_id, by="api", reason=req.reason),
        )
        return json_response({"platform_id": req.platform_id, "enabled": False})

    # ---- messages ------------------------------------------------------------

    @operation("GET", "/api/message/router/stats", "Router stats", returns={"stats": OBJ})
    async def router_stats(self, request: Request) -> Response:
        return json_response({"stats": self.bot.message_router.get_stats()})

    @operation("GET", "/api/message/buffer/stats", "Buffer stats", returns={"stats": OBJ})
    async def buffer_stats(self, request: Request) -> Response:
        return json_response({"stats": self.bot.message_buffer.get_buffer_stats()})

    @operation(
        "GET",
        "/api/message/buffer/messages",
        "Messages buffered for one platform, in replay order",
        query={
            "platform_id": ("string", True, "The platform"),
            "limit": ("integer", False, "At most this many (default 100)"),
        },
        returns={"platform_id": STR, "messages": ARR},
        errors=(404, 503),
    )
    async def buffer_messages(self, request: Request) -> Response:
        pid = query_required(request, "platform_id")
        limit = query_int(request, "limit", 100)
        self._known(pid)
        buffer = self.bot.message_buffer
        messages = await self._wait(
            request, f"the buffered messages of {pid!r}", lambda: buffer.get_messages(pid, limit)
        )
        return json_response({"platform_id": pid, "messages": messages})

    @operation(
        "POST",
        "/api/message/buffer/replay",
        "Replay a platform's buffered messages now",
        body=ReplayRequest,
        returns={"platform_id": STR, "replayed": INT, "messages": ARR},
        errors=(404, 409, 503),
    )
    async def buffer_replay(self, request: Request) -> Response:
        req = await parse_body(request, ReplayRequest)
        if req.max_count is not None and req.max_count < 1:
            raise ApiError(400, "invalid_request", f"max_count: must be >= 1, got {req.max_count}")
        self._known(req.platform_id)
        buffer = self.bot.message_buffer
        done = await self._wait(
            request,
            f"replay of the buffer of {req.platform_id!r}",
            lambda: buffer.replay_messages(req.platform_id, req.max_count),
        )
        return json_response(
            {"platform_id": req.platform_id, "replayed": len(done), "messages": done}
        )

    # ---- monitor -------------------------------------------------------------

    def _platform_status(self, pid: str) -> object:
        try:
            return self.bot.status_monitor.get_platform_status(pid)
        except LookupError:
            return None  # no message seen yet

    @operation(
        "GET",
        "/api/monitor/status",
        "Overall status: readiness, the monitor's overview, lifecycle and isolation",
        returns={"ready": BOOL, "monitor": OBJ, "platforms": OBJ, "isolation": OBJ},
    )
    async def monitor_status(self, request: Request) -> Response:
        return json_response(
            {
                "ready": bool(self.bot.ready),
                "monitor": self.bot.status_monitor.get_status(),
                "platforms": self.bot.runtime_manager.get_platform_lifecycle_status(),
                "isolation": self.bot.fault_isolation_manager.get_isolation_status(),
            }
        )

    @operation(
        "GET",
        "/api/monitor/platforms",
        "Per-platform figures over the sliding window (null: no message yet)",
        query={"platform_id": ("string", False, "Only this platform")},
        returns={"platforms": OBJ},
        errors=(404,),
    )
    async def monitor_platforms(self, request: Request) -> Response:
        pid = request.query_params.get("platform_id")
        if pid:
            self._known(pid)
            return json_response({"platforms": {pid: self._platform_status(pid)}})
        pids = list(self.bot.runtime_manager.platform_configs)
        return json_response({"platforms": {p: self._platform_status(p) for p in pids}})

    @operation(
        "GET",
        "/api/monitor/alerts",
        "Alerts, in the order they opened",
        query={
            "level": ("string", False, "Only this level: INFO, WARNING, ERROR or CRITICAL"),
            "include_resolved": ("boolean", False, "Also resolved ones (default false)"),
        },
        returns={"alerts": ARR},
    )
    async def monitor_alerts(self, request: Request) -> Response:
        level_name = request.query_params.get("level")
        level = None
        if level_name:
            try:
                level = AlertLevel[level_name.upper()]
            except KeyError:
                allowed = ", ".join(m.name for m in AlertLevel)
                raise ApiError(
                    400, "invalid_request", f"level: expected one of {allowed}, got {level_name!r}"
                ) from None
        flag = request.query_params.get("include_resolved", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise ApiError(
                400, "invalid_request", f"include_resolved: expected true or false, got {flag!r}"
            )
        alerts = self.bot.status_monitor.get_alerts(level, include_resolved=flag in ("true", "1"))
        return json_response({"alerts": alerts})

    @operation(
        "POST",
        "/api/monitor/alerts/resolve",
        "Resolve an alert by hand",
        body=ResolveAlertRequest,
        returns={"alert_id": STR, "resolved": BOOL},
        errors=(404,),
    )
    async def resolve_alert(self, request: Request) -> Response:
        req = await parse_body(request, ResolveAlertRequest)
        await self._wait(
            request,
            f"resolving alert {req.alert_id!r}",
            lambda: self.bot.status_monitor.resolve_alert(req.alert_id),
        )
        return json_response({"alert_id": req.alert_id, "resolved": True})

    # ---- config --------------------------------------------------------------

    @operation(
        "GET",
        "/api/config/versions",
        "Config history, newest first; or one version with its config (secrets redacted)",
        query={
            "limit": ("integer", False, "At most this many"),
            "version_id": ("string", False, "Show this version with its config"),
        },
        returns={"current": NSTR, "versions": ARR},
        errors=(404,),
    )
    async def config_versions(self, request: Request) -> Response:
        cvm = self.bot.config_version_manager
        current = cvm.current_revision
        vid = request.query_params.get("version_id")
        versions: list[Any]
        if vid:
            version = cvm.get_version(vid)
            # The converter shows a version without its config: add it (redacted below).
            versions = [{**json_converter.unstructure(version), "config": version.config}]
        else:
            versions = list(cvm.list_versions(query_int(request, "limit", None)))
        return json_response(
            {"current": None if current is None else f"v{current}", "versions": versions}
        )

    @operation(
        "GET",
        "/api/config/diff",
        "JSON Patch (RFC 6902) and unified TOML diff between two versions (secrets redacted)",
        query={
            "from": ("string", True, "Older version id, e.g. v3"),
            "to": ("string", False, "Newer version id (default: the current one)"),
        },
        returns={"from": STR, "to": STR, "patch": ARR, "diff": STR},
        errors=(404,),
    )
    async def config_diff(self, request: Request) -> Response:
        cvm = self.bot.config_version_manager
        a = query_required(request, "from")
        b = request.query_params.get("to") or (
            f"v{cvm.current_revision}" if cvm.current_revision is not None else ""
        )
        if not b:
            raise ApiError(404, "version_not_found", "there is no config version yet")
        return json_response(cvm.compare_versions(a, b))

    @operation(
        "POST",
        "/api/config/rollback",
        "Roll the running config back to a version (records a ROLLBACK version)",
        body=RollbackRequest,
        returns={"version": OBJ},
        errors=(404, 409, 503),
    )
    async def config_rollback(self, request: Request) -> Response:
        req = await parse_body(request, RollbackRequest)
        cvm = self.bot.config_version_manager
        version = await self._wait(
            request,
            f"rollback to {req.version_id}",
            lambda: cvm.rollback_to_version(
                req.version_id, req.description, author="api", base_revision=req.base_revision
            ),
        )
        return json_response({"version": version})

    # ---- operations ----------------------------------------------------------

    @operation("GET", "/metrics", "Prometheus text exposition of the bot's registry", returns={})
    async def metrics(self, request: Request) -> Response:
        body, content_type = self.bot.status_monitor.exposition()
        return Response(body, headers={"Content-Type": content_type})

    @operation("GET", "/healthz", "Liveness: the API answers", returns={"status": STR})
    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    @operation(
        "GET",
        "/readyz",
        "Readiness: every part of the bot started (503 while starting or stopping)",
        returns={"status": STR},
        errors=(503,),
    )
    async def readyz(self, request: Request) -> Response:
        if self.bot.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "not_ready"}, status=503)

    @operation("GET", "/openapi.json", "This document", returns={"openapi": STR, "paths": OBJ})
    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(), redacted=False)


OPERATIONS[("GET", "/metrics")]["responses"]["200"]["content"] = {
    "text/plain; version=0.0.4": {"schema": {"type": "string"}}
}
OPERATIONS[("GET", "/readyz")]["responses"]["503"] = {"description": "Not ready"}
