"""Connection management: reconnect with backoff, heartbeat, health.

``ConnectionConfig`` is the per-platform ``[platforms.<id>.connection]`` table
(defined in :mod:`nekobot.config.schema`, re-exported here under its seed name).
:class:`ConnectionManager` keeps one platform's link alive (issue 6):

* exactly one reconnect loop per link (:meth:`ConnectionManager.run`); the
  delay after the n-th consecutive failure is ``reconnect_interval *
  backoff_factor ** (n - 1)`` with relative ``jitter``, capped at
  ``max_reconnect_interval`` (the one :class:`~nekobot.core.backoff.Backoff`:
  jitter before the cap); the failure counter resets only after a link stayed
  up ``stable_after`` seconds;
* a close we did not start, code 1000 included, is reconnected;
* auth failures (handshake 401/403, close 1008) wait the maximum delay at once
  and raise an alert;
* liveness is judged by arrival time on the Trio clock: a link silent for the
  heartbeat timeout is closed with code 4000 and reconnected.

All times are seconds on the Trio clock unless a name says wall clock.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable

import trio

from ..config.schema import ConnectionConfig as ConnectionConfig
from ..core.backoff import Backoff
from .base import PlatformContext, record_metric
from .link import HEARTBEAT_CLOSE_CODE as HEARTBEAT_CLOSE_CODE
from .link import AuthFailed as AuthFailed
from .link import ConnectionStats as ConnectionStats
from .link import ConnectionStatus as ConnectionStatus
from .link import Link as Link
from .link import LinkClosed as LinkClosed
from .link import ReconnectExhausted as ReconnectExhausted
from .link import effective_timeout

__all__ = [
    "HEARTBEAT_CLOSE_CODE",
    "AuthFailed",
    "ConnectionConfig",
    "ConnectionManager",
    "ConnectionStats",
    "ConnectionStatus",
    "Link",
    "LinkClosed",
    "ReconnectExhausted",
]

log = logging.getLogger(__name__)

_FAILING_AFTER = 3
"""Consecutive failed connection attempts after which a WARNING alert is raised."""

_CALLBACK_DEADLINE = 2.0
"""Seconds a shielded callback (link down, alert) may take during cleanup."""

Callback = Callable[[], Awaitable[None]]
"""``await callback()``: a link came up (connect) or the last one went down."""
Connector = Callable[[Link], Awaitable[None]]
"""``await connector(link)``: opens and serves one connection (see :class:`ConnectionManager`)."""


class ConnectionManager:
    """Keeps one platform's link alive: reconnect with backoff, liveness, stats.

    Two ways to use it:

    * **dialling** (we connect out, e.g. OneBot forward WebSocket): run
      :meth:`run` with a *connector* ``async def connector(link)`` that opens
      one connection, calls ``await link.up()``, serves it, and returns (peer
      closed) or raises (failed; :class:`AuthFailed` for refused credentials).
      :meth:`run` is the single reconnect loop of the link.
    * **accepting** (the peer connects to us, e.g. reverse WebSocket): wrap each
      accepted connection in :meth:`serve_link`; the peer does the reconnecting.

    Either way, while a link is up a watchdog wakes at the link's deadline
    (last arrival + heartbeat timeout, arrival time on the Trio clock, never
    timestamps inside frames) and at least every ``health_check_interval``
    seconds; once idle for a heartbeat interval (or half the timeout, if
    shorter) it sends a WebSocket ping, and the pong counts as an arrival. A
    link silent until its deadline is closed with code 4000 and, when
    dialling, reconnected.

    Args:
        platform_id (str): The platform this link belongs to.
        config (ConnectionConfig): Reconnect and heartbeat settings.
        context (PlatformContext | None): The platform's hooks (alerts, metrics).
        rng (random.Random | None): Source of jitter (tests pass a seeded one).
        connect_callback: ``await connect_callback()`` when the first usable
            link comes up (a platform passes its ``set_online``).
        disconnect_callback: ``await disconnect_callback()`` when the last
            one goes down (``set_offline``).
    """

    def __init__(
        self,
        platform_id: str,
        config: ConnectionConfig | None = None,
        *,
        context: PlatformContext | None = None,
        rng: random.Random | None = None,
        connect_callback: Callback | None = None,
        disconnect_callback: Callback | None = None,
    ) -> None:
        self.platform_id = platform_id
        self.config = config or ConnectionConfig()
        self.context = context
        self._rng = rng or random.Random()
        self._connect_cb = connect_callback
        self._disconnect_cb = disconnect_callback
        self._status = ConnectionStatus.DISCONNECTED
        self._links: dict[int, Link] = {}
        self._generation = 0
        self._wanted = True
        self._wake = trio.Event()
        self._attempt_done = trio.Event()
        self._attempt_ok = False
        self._failures = 0
        self._reconnect_count = 0
        self._last_connected_wall: float | None = None
        self._last_arrival_wall: float | None = None
        self._latencies: collections.deque[float] = collections.deque(maxlen=100)
        self._next_attempt_at: float | None = None
        self._last_close: tuple[int | None, str | None] = (None, None)
        self._last_error: str | None = None
        self._online_links = 0
        self._auth_alert_open = False
        self.attempt_times: list[float] = []
        """Trio-clock times of every connection attempt (for tests and the console)."""

    # ---- seed API ---------------------------------------------------------

    def set_callbacks(
        self, connect_callback: Callback | None, disconnect_callback: Callback | None
    ) -> None:
        """``await connect_callback()`` when the first usable link comes up;
        ``await disconnect_callback()`` when the last one goes down.

        The seed's API; prefer passing both to the constructor (before any link exists).
        """
        self._connect_cb = connect_callback
        self._disconnect_cb = disconnect_callback

    async def connect(self) -> bool:
        """Allow the link again and attempt now (skipping a pending backoff wait).

        Returns:
            bool: True if a link is up when the next attempt finished (at once if
            one is already up), False if that attempt failed. In accepting mode it
            returns at once whether a link is up.
        """
        self._wanted = True
        if any(link.is_up for link in self._links.values()):
            return True
        if not self._dialling:
            return False
        self._attempt_done = trio.Event()
        self._wake.set()
        await self._attempt_done.wait()
        return self._attempt_ok

    async def disconnect(self) -> None:
        """Close every link on purpose (code 1000) and stop reconnecting until
        :meth:`connect` is called. In accepting mode new peers are refused meanwhile."""
        self._wanted = False
        self._wake.set()
        for link in list(self._links.values()):
            await self.close_link(link, 1000, "closed by nekobot")
        self._set_status(ConnectionStatus.DISCONNECTED)

    @property
    def accepting(self) -> bool:
        """False after :meth:`disconnect` (until :meth:`connect`)."""
        return self._wanted

    def get_connection_stats(self) -> ConnectionStats:
        """A snapshot of the link's state (sync, no round trip; call it inside Trio)."""
        now = trio.current_time()
        up = [link for link in self._links.values() if link.is_up]
        uptime = max((now - link.up_at for link in up if link.up_at is not None), default=0.0)
        failures = 0 if up and uptime >= self.config.stable_after else self._failures
        hb = min((link.heartbeat_timeout() for link in up), default=None)
        if hb is None:
            hb = effective_timeout(self.config, None)
        return ConnectionStats(
            platform_id=self.platform_id,
            status=self._status,
            links=len(up),
            reconnect_count=self._reconnect_count,
            consecutive_failures=failures,
            last_connected=self._last_connected_wall,
            last_heartbeat=self._last_arrival(),
            uptime=uptime,
            avg_latency_ms=(
                sum(self._latencies) / len(self._latencies) if self._latencies else None
            ),
            heartbeat_timeout=hb,
            next_attempt_in=(
                max(0.0, self._next_attempt_at - now) if self._next_attempt_at is not None else None
            ),
            last_close_code=self._last_close[0],
            last_close_reason=self._last_close[1],
            last_error=self._last_error,
        )

    @property
    def status(self) -> ConnectionStatus:
        """The current :class:`ConnectionStatus`."""
        return self._status

    def record_latency(self, latency_ms: float) -> None:
        """Add one request round trip (milliseconds) to ``avg_latency_ms``."""
        self._latencies.append(latency_ms)

    @property
    def backoff(self) -> Backoff:
        """The reconnect delays of :attr:`config` as the one :class:`Backoff`
        (restart number n = consecutive failures - 1)."""
        cfg = self.config
        return Backoff(
            minimum=cfg.reconnect_interval,
            maximum=cfg.max_reconnect_interval,
            factor=cfg.backoff_factor,
            jitter=cfg.jitter,
            reset_after=cfg.stable_after,
        )

    def backoff_delay(self, failures: int) -> float:
        """Delay (seconds) before the next attempt after ``failures`` consecutive
        failures (>= 1), before jitter: ``reconnect_interval * backoff_factor **
        (failures - 1)``, capped at ``max_reconnect_interval``."""
        return min(self.backoff.base(failures - 1), self.config.max_reconnect_interval)

    def _last_arrival(self) -> float | None:
        """Wall-clock time of the last arrival on any link, ended ones included."""
        times = [link.last_arrival_wall for link in self._links.values()]
        return max((t for t in (self._last_arrival_wall, *times) if t is not None), default=None)

    # ---- dialling ---------------------------------------------------------

    _dialling = False

    async def run(
        self,
        connector: Connector,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The reconnect loop (one per link): dial, serve, back off, repeat.

        ``task_status.started()`` is called once the first attempt is scheduled,
        before it completes: a bot starts even when the peer is down.

        Raises:
            ReconnectExhausted: after ``max_reconnect_attempts`` (> 0)
                consecutive failed attempts; status becomes ERROR.
        """
        if self._dialling:
            raise RuntimeError("ConnectionManager.run is already running (one loop per link)")
        self._dialling = True
        cfg = self.config
        first = True
        try:
            task_status.started()
            while True:
                if not self._wanted:
                    self._set_status(ConnectionStatus.DISCONNECTED)
                    while not self._wanted:
                        self._wake = trio.Event()
                        await self._wake.wait()
                    first = True
                self._set_status(
                    ConnectionStatus.CONNECTING if first else ConnectionStatus.RECONNECTING
                )
                if not first:
                    self._reconnect_count += 1
                first = False
                self.attempt_times.append(trio.current_time())
                link = self._new_link()
                error: Exception | None = None
                try:
                    await self._serve(link, connector)
                except Exception as exc:  # any connector failure is a failed attempt
                    error = exc
                finally:
                    was_up = link.is_up
                    with trio.CancelScope(shield=True):
                        await self._end_link(link)
                self._attempt_ok = was_up and error is None
                self._attempt_done.set()
                if not self._wanted:
                    continue
                if (
                    was_up
                    and link.up_at is not None
                    and (trio.current_time() - link.up_at >= cfg.stable_after)
                ):
                    self._failures = 0
                self._failures += 1
                if isinstance(error, AuthFailed) or link.close_code == 1008:
                    delay = cfg.max_reconnect_interval
                    await self._alert(
                        "error",
                        f"auth failed: {self.platform_id} refused our credentials "
                        f"({error or 'close 1008'}); retrying every {delay:g} s",
                    )
                else:
                    delay = self.backoff.delay(self._failures - 1, self._rng)
                    if was_up and self._auth_alert_open:
                        self._auth_alert_open = False
                    if self._failures >= _FAILING_AFTER:
                        # The bot runs, but this link does not come up: say so
                        # (one alert, updated; resolved once the link is up).
                        await self._alert(
                            "warning",
                            f"connect failing: {self.platform_id} failed {self._failures} "
                            f"consecutive attempts ({error or 'closed'}); next in {delay:.3g} s",
                        )
                if error is not None:
                    self._last_error = f"{type(error).__name__}: {error}"
                if cfg.max_reconnect_attempts > 0 and self._failures >= cfg.max_reconnect_attempts:
                    self._set_status(ConnectionStatus.ERROR)
                    await self._alert(
                        "critical",
                        f"reconnect exhausted: {self.platform_id} failed "
                        f"{self._failures} consecutive attempts",
                    )
                    raise ReconnectExhausted(
                        f"platform {self.platform_id!r}: {self._failures} consecutive "
                        f"connection attempts failed (last: {self._last_error})"
                    ) from error
                if not cfg.auto_reconnect:
                    self._wanted = False
                    continue
                self._set_status(ConnectionStatus.RECONNECTING)
                self._next_attempt_at = trio.current_time() + delay
                self._wake = trio.Event()
                with trio.move_on_after(delay):
                    await self._wake.wait()
                self._next_attempt_at = None
        finally:
            self._dialling = False

    # ---- accepting --------------------------------------------------------

    async def serve_link(self, connector: Connector) -> Link:
        """Run one accepted connection under the manager's liveness watchdog.

        ``connector(link)`` serves the connection (calling ``link.up()``) and
        returns when it ends. Returns the finished :class:`Link`.
        """
        link = self._new_link()
        try:
            await self._serve(link, connector)
        finally:
            with trio.CancelScope(shield=True):
                await self._end_link(link)
        return link

    # ---- internals --------------------------------------------------------

    def _new_link(self) -> Link:
        self._generation += 1
        link = Link(self._generation, self.config, self._link_up)
        self._links[link.generation] = link
        return link

    async def _serve(self, link: Link, connector: Connector) -> None:
        error: Exception | None = None
        with link.cancel_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watchdog, link)
                try:
                    await connector(link)
                except Exception as exc:  # re-raised below, unwrapped from the nursery
                    error = exc
                nursery.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _watchdog(self, link: Link) -> None:
        cfg = self.config
        pinging = False

        async def ping() -> None:
            nonlocal pinging
            assert link.pinger is not None
            t0 = trio.current_time()
            try:
                await link.pinger()
            except Exception:
                return
            finally:
                pinging = False
            link.activity()
            self.record_latency((trio.current_time() - t0) * 1000.0)

        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                if not link.is_up:
                    await trio.sleep(cfg.health_check_interval)
                    continue
                timeout = link.heartbeat_timeout()
                deadline = link.last_arrival + timeout
                if now >= deadline:
                    await self._declare_dead(link, now - link.last_arrival)
                    return
                interval = link.announced_interval or cfg.heartbeat_interval
                ping_at = link.last_arrival + min(interval, timeout / 2)
                if link.pinger is not None and not pinging and now >= ping_at:
                    pinging = True
                    nursery.start_soon(ping)
                wake = deadline
                if link.pinger is not None and not pinging and ping_at < wake:
                    wake = ping_at
                # re-check at least every health_check_interval (arrivals move the
                # deadline); a silent link is caught exactly at its deadline
                await trio.sleep_until(min(wake, now + cfg.health_check_interval))

    async def _declare_dead(self, link: Link, idle: float) -> None:
        link.dead = True
        self._last_error = f"heartbeat timeout: nothing arrived for {idle:g} s"
        await self._alert(
            "warning",
            f"heartbeat timeout: {self.platform_id} link silent for {idle:g} s; closing it",
        )
        await self.close_link(link, HEARTBEAT_CLOSE_CODE, "heartbeat timeout")

    async def close_link(self, link: Link, code: int, reason: str) -> None:
        """Close one link on purpose with ``code`` (waiting at most 1 s for the
        closing handshake), then cancel its task."""
        link.closed(code, reason)
        if link.closer is not None:
            with trio.move_on_after(1.0):
                try:
                    await link.closer(code, reason)
                except Exception:  # the socket may be gone already
                    pass
        link.cancel_scope.cancel()

    async def _link_up(self, link: Link) -> None:
        self._last_connected_wall = link.last_arrival_wall or time.time()
        self._set_status(ConnectionStatus.CONNECTED)
        self._attempt_ok = True
        self._attempt_done.set()
        self._auth_alert_open = False
        clear = None if self.context is None else self.context.clear_alert
        if clear is not None:
            # The link is up again: auth and liveness alerts of this platform are over.
            kinds = ("auth failed", "connect failing", "heartbeat timeout", "reconnect exhausted")
            for kind in kinds:
                try:
                    clear(self.platform_id, kind)
                except Exception:
                    log.exception("%s: clearing an alert failed", self.platform_id)
        if link.api_capable:
            self._online_links += 1
            if self._online_links == 1 and self._connect_cb is not None:
                try:
                    await self._connect_cb()
                except Exception:  # the link is up regardless; do not drop it
                    log.exception("%s: connect callback failed", self.platform_id)
        self._metric("platform_connection_up", 1.0, "gauge")

    async def _end_link(self, link: Link) -> None:
        self._links.pop(link.generation, None)
        if link.last_arrival_wall is not None:  # remembered after the link is gone
            self._last_arrival_wall = max(link.last_arrival_wall, self._last_arrival_wall or 0.0)
        if link.close_code is not None or link.close_reason is not None:
            self._last_close = (link.close_code, link.close_reason)
        if link.is_up:
            link.is_up = False
            if link.api_capable:
                self._online_links -= 1
                if self._online_links == 0 and self._disconnect_cb is not None:
                    with trio.move_on_after(_CALLBACK_DEADLINE) as scope:
                        scope.shield = True
                        try:
                            await self._disconnect_cb()
                        except Exception:
                            log.exception("%s: disconnect callback failed", self.platform_id)
        if not any(other.is_up for other in self._links.values()):
            if not self._dialling:
                self._set_status(ConnectionStatus.DISCONNECTED)
            self._metric("platform_connection_up", 0.0, "gauge")

    def _set_status(self, status: ConnectionStatus) -> None:
        self._status = status

    def _metric(self, name: str, value: float, kind: str) -> None:
        record_metric(self.context, name, value, kind, {"platform_id": self.platform_id})

    async def _alert(self, level: str, message: str) -> None:
        if message.startswith("auth failed"):
            self._auth_alert_open = True
        log.warning("%s", message)
        hook = None if self.context is None else self.context.raise_alert
        if hook is not None:
            with trio.move_on_after(_CALLBACK_DEADLINE) as scope:
                scope.shield = True
                try:
                    await hook(self.platform_id, level, message)
                except Exception:
                    log.exception("%s: raising an alert failed", self.platform_id)
