"""ConnectionManager: the reconnect loop, backoff, liveness and stats.

Policy: time-based behaviour runs under the ``autojump_clock`` fixture and
asserts exact schedules on the Trio clock; connectors here are fakes (no I/O).
The same rules over real loopback WebSockets are in ``test_onebot_v11.py``.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from nekobot.platforms.base import PlatformContext
from nekobot.platforms.connection_manager import (
    HEARTBEAT_CLOSE_CODE,
    AuthFailed,
    ConnectionConfig,
    ConnectionManager,
    ConnectionStatus,
    Link,
    ReconnectExhausted,
)


def cfg(**kw: Any) -> ConnectionConfig:
    base: dict[str, Any] = dict(
        reconnect_interval=1.0,
        max_reconnect_interval=10.0,
        backoff_factor=2.0,
        jitter=0.0,
        stable_after=30.0,
        health_check_interval=5.0,
        heartbeat_interval=30.0,
    )
    base.update(kw)
    return ConnectionConfig(**base)


class Alerts:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str]] = []
        self.context = PlatformContext(raise_alert=self._alert)

    async def _alert(self, pid: str, level: str, message: str) -> None:
        self.alerts.append((pid, level, message))


def rel(times: list[float], t0: float) -> list[float]:
    return [round(t - t0, 9) for t in times]


async def failing(link: Link) -> None:
    raise OSError("connection refused")


def test_config_defaults_and_validation() -> None:
    c = ConnectionConfig()
    assert c.max_reconnect_attempts == 0 and c.heartbeat_timeout is None
    with pytest.raises(ValueError):
        ConnectionConfig(reconnect_interval=-1)
    with pytest.raises(ValueError):
        ConnectionConfig(backoff_factor=0)


def test_backoff_delays_are_capped() -> None:
    m = ConnectionManager("p", cfg())
    assert [m.backoff_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


async def test_exact_backoff_schedule_for_an_always_failing_connect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    m = ConnectionManager("p", cfg())
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, failing)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    # attempt 1 at once, then 1, 2, 4, 8, 10, 10, ... seconds apart: no storm
    assert rel(m.attempt_times, t0) == [0, 1, 3, 7, 15, 25, 35, 45, 55]
    stats = m.get_connection_stats()
    assert stats.reconnect_count == 8
    assert stats.consecutive_failures == 9
    assert stats.status is ConnectionStatus.RECONNECTING
    assert stats.last_error == "OSError: connection refused"


async def test_jitter_stays_within_bounds(autojump_clock: trio.testing.MockClock) -> None:
    m = ConnectionManager("p", cfg(jitter=0.5, max_reconnect_interval=100), rng=random.Random(7))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, failing)
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    times = rel(m.attempt_times, t0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for n, gap in enumerate(gaps[:6], start=1):
        base = min(2 ** (n - 1), 100)
        assert base * 0.5 - 1e-9 <= gap <= min(base * 1.5, 100) + 1e-9
    assert len(set(gaps)) > 1  # jitter actually varies


async def test_counter_resets_only_after_stable_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # each link stays up for the given seconds, then the peer closes it
    lifetimes = iter([5.0, 5.0, 5.0, 40.0, 5.0])

    async def connector(link: Link) -> None:
        await link.up()
        try:
            life = next(lifetimes)
        except StopIteration:
            await trio.sleep_forever()
        await trio.sleep(life)
        link.closed(1000, "peer closed")  # a 1000 close we did not start

    m = ConnectionManager("p", cfg(stable_after=30.0, heartbeat_interval=1000))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, connector)
        await trio.sleep(200)
        nursery.cancel_scope.cancel()
    # up 5 s, wait 1; up 5, wait 2; up 5, wait 4; up 40 (stable: reset), wait 1; up 5, wait 2
    assert rel(m.attempt_times, t0) == [0, 6, 13, 22, 63, 70]
    assert m.get_connection_stats().last_close_code == 1000


async def test_auth_failure_waits_the_maximum_and_alerts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()

    async def refused(link: Link) -> None:
        raise AuthFailed("handshake rejected with HTTP 401")

    m = ConnectionManager("p", cfg(max_reconnect_interval=60.0), context=alerts.context)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, refused)
        await trio.sleep(150)
        nursery.cancel_scope.cancel()
    assert rel(m.attempt_times, t0) == [0, 60, 120]
    assert len(alerts.alerts) == 3
    pid, level, message = alerts.alerts[0]
    assert (pid, level) == ("p", "error") and message.startswith("auth failed")


async def test_close_1008_counts_as_auth_failure(autojump_clock: trio.testing.MockClock) -> None:
    alerts = Alerts()

    async def policy_close(link: Link) -> None:
        await link.up()
        link.closed(1008, "bad token")

    m = ConnectionManager("p", cfg(max_reconnect_interval=30.0), context=alerts.context)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, policy_close)
        await trio.sleep(70)
        nursery.cancel_scope.cancel()
    assert rel(m.attempt_times, t0) == [0, 30, 60]
    assert alerts.alerts and alerts.alerts[0][2].startswith("auth failed")


async def test_max_reconnect_attempts_reports_a_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()
    m = ConnectionManager("p", cfg(max_reconnect_attempts=4), context=alerts.context)
    t0 = trio.current_time()
    with pytest.raises(ReconnectExhausted, match="4 consecutive"):
        await m.run(failing)
    assert rel(m.attempt_times, t0) == [0, 1, 3, 7]
    assert m.status is ConnectionStatus.ERROR
    assert alerts.alerts[-1][1] == "critical"


async def test_one_loop_per_link() -> None:
    m = ConnectionManager("p", cfg())

    async def forever(link: Link) -> None:
        await link.up()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, forever)
        with pytest.raises(RuntimeError, match="one loop per link"):
            await m.run(forever)
        nursery.cancel_scope.cancel()


async def test_callbacks_connect_disconnect_and_stats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[tuple[str, float]] = []
    closes: list[tuple[int, str]] = []
    release = trio.Event()

    async def on_up() -> None:
        events.append(("up", trio.current_time()))

    async def on_down() -> None:
        events.append(("down", trio.current_time()))

    async def connector(link: Link) -> None:
        async def closer(code: int, reason: str) -> None:
            closes.append((code, reason))

        link.set_closer(closer)
        await link.up()
        await release.wait()

    m = ConnectionManager("p", cfg())
    m.set_callbacks(on_up, on_down)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, connector)
        await trio.sleep(12)
        stats = m.get_connection_stats()
        assert stats.status is ConnectionStatus.CONNECTED
        assert stats.uptime == 12 and stats.links == 1
        assert stats.last_connected is not None
        # a close we start on purpose: no reconnect until connect()
        await m.disconnect()
        assert closes == [(1000, "closed by nekobot")]
        await trio.sleep(100)
        assert len(m.attempt_times) == 1
        assert m.status is ConnectionStatus.DISCONNECTED
        assert await m.connect() is True
        assert len(m.attempt_times) == 2
        assert m.attempt_times[1] - t0 == 112  # at once, no backoff wait
        nursery.cancel_scope.cancel()
    assert [e for e, _ in events] == ["up", "down", "up", "down"]
    assert events[1][1] - t0 == 12


async def test_connect_skips_the_backoff_wait(autojump_clock: trio.testing.MockClock) -> None:
    outcomes = iter([False, False, True])

    async def connector(link: Link) -> None:
        if not next(outcomes):
            raise OSError("down")
        await link.up()
        await trio.sleep_forever()

    m = ConnectionManager("p", cfg(reconnect_interval=50.0, max_reconnect_interval=50.0))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, connector)
        await trio.sleep(10)
        assert m.get_connection_stats().next_attempt_in == 40
        assert await m.connect() is False  # second attempt, made now, failed
        assert await m.connect() is True
        assert rel(m.attempt_times, t0) == [0, 10, 10]
        nursery.cancel_scope.cancel()


async def test_auto_reconnect_off_stops_after_a_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def short(link: Link) -> None:
        await link.up()
        await trio.sleep(1)

    m = ConnectionManager("p", cfg(auto_reconnect=False))
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, short)
        await trio.sleep(100)
        assert len(m.attempt_times) == 1
        assert m.status is ConnectionStatus.DISCONNECTED
        nursery.cancel_scope.cancel()


# ---- liveness ----------------------------------------------------------------


@attrs.define
class SilentPeer:
    """A fake link that comes up, receives ``frames`` at the given times, then is silent."""

    arrivals: list[float] = attrs.field(factory=list)
    heartbeat: float | None = None
    pong: bool = False
    closes: list[tuple[int, str, float]] = attrs.field(factory=list)
    pings: list[float] = attrs.field(factory=list)

    async def __call__(self, link: Link) -> None:
        async def closer(code: int, reason: str) -> None:
            self.closes.append((code, reason, trio.current_time()))

        async def pinger() -> None:
            self.pings.append(trio.current_time())
            if not self.pong:
                await trio.sleep_forever()

        link.set_closer(closer)
        link.set_pinger(pinger)
        await link.up()
        start = trio.current_time()
        if self.heartbeat is not None:
            link.heartbeat(self.heartbeat)
        for at in self.arrivals:
            await trio.sleep_until(start + at)
            link.activity()
        await trio.sleep_forever()


async def test_silent_link_is_declared_dead_exactly_at_the_timeout_and_reconnected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alerts = Alerts()
    peer = SilentPeer(arrivals=[4.0, 7.5])
    m = ConnectionManager(
        "p", cfg(heartbeat_timeout=9.0, health_check_interval=5.0), context=alerts.context
    )
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, peer)
        await trio.sleep(18)
        nursery.cancel_scope.cancel()
    # last arrival at 7.5 -> dead at 16.5 (not rounded up to a check interval)
    assert [(c, r, round(t - t0, 9)) for c, r, t in peer.closes] == [
        (HEARTBEAT_CLOSE_CODE, "heartbeat timeout", 16.5)
    ]
    assert rel(m.attempt_times, t0) == [0, 17.5]  # reconnected after reconnect_interval
    assert m.get_connection_stats().last_close_code == HEARTBEAT_CLOSE_CODE
    assert any(a[2].startswith("heartbeat timeout") for a in alerts.alerts)
    # pinged once idle for min(heartbeat_interval, timeout / 2) = 4.5 s
    assert rel(peer.pings, t0)[0] == 12.0


async def test_default_timeout_is_three_announced_intervals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = SilentPeer(heartbeat=5.0)  # the peer announced 5 s heartbeats
    m = ConnectionManager("p", cfg(heartbeat_interval=30.0, health_check_interval=1.0))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, peer)
        await trio.sleep(1)
        assert m.get_connection_stats().heartbeat_timeout == 15.0
        await trio.sleep(15)
        nursery.cancel_scope.cancel()
    assert [round(t - t0, 9) for _, _, t in peer.closes] == [15.0]


async def test_pong_keeps_a_quiet_link_alive(autojump_clock: trio.testing.MockClock) -> None:
    peer = SilentPeer(pong=True)
    m = ConnectionManager("p", cfg(heartbeat_interval=10.0, health_check_interval=5.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, peer)
        await trio.sleep(300)
        nursery.cancel_scope.cancel()
    assert peer.closes == []
    assert len(m.attempt_times) == 1
    assert len(peer.pings) >= 25  # one per idle heartbeat interval
    assert m.get_connection_stats().avg_latency_ms == 0.0


async def test_accepting_mode_serve_link_tracks_links() -> None:
    m = ConnectionManager("p", cfg())
    downs: list[int] = []

    async def on_up() -> None:
        pass

    async def on_down() -> None:
        downs.append(1)

    m.set_callbacks(on_up, on_down)
    gates = [trio.Event(), trio.Event()]

    async def conn(i: int, link: Link) -> None:
        await link.up()
        await gates[i].wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(m.serve_link, lambda link: conn(0, link))
        nursery.start_soon(m.serve_link, lambda link: conn(1, link))
        await trio.testing.wait_all_tasks_blocked()
        assert m.get_connection_stats().links == 2
        gates[0].set()
        await trio.testing.wait_all_tasks_blocked()
        assert m.status is ConnectionStatus.CONNECTED and downs == []
        gates[1].set()
    assert m.status is ConnectionStatus.DISCONNECTED and downs == [1]
    assert await m.connect() is False  # nothing to dial in accepting mode


# ---- model-based: the schedule for any sequence of outcomes ---------------------
# (Strategies are kept here, not in tests/strategies.py: that file had another
# part's uncommitted edits when this was written.)

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

OUTCOMES = st.lists(
    st.one_of(
        st.just(("fail",)),
        st.just(("auth",)),
        st.tuples(st.just("up"), st.sampled_from([0.5, 3.0, 29.0, 30.0, 45.0])),
    ),
    min_size=1,
    max_size=12,
)
"""Connection attempts: refused, auth refused, or up for some seconds then closed by the peer."""


def model_schedule(outcomes: list[tuple[Any, ...]], c: ConnectionConfig) -> list[float]:
    """The attempt times the rules of issue 6 give, computed plainly."""
    t, failures, times = 0.0, 0, []
    for o in outcomes:
        times.append(t)
        if o[0] == "up":
            t += o[1]
            if o[1] >= c.stable_after:
                failures = 0
        failures += 1
        if o[0] == "auth":
            t += c.max_reconnect_interval
        else:
            t += min(
                c.reconnect_interval * c.backoff_factor ** (failures - 1), c.max_reconnect_interval
            )
    times.append(t)  # the attempt after the last scripted one
    return times


@settings(max_examples=60, deadline=None)
@given(OUTCOMES)
def test_schedule_matches_the_model(outcomes: list[tuple[Any, ...]]) -> None:
    c = cfg(stable_after=30.0, max_reconnect_interval=10.0, heartbeat_interval=1e6)
    script = list(outcomes)

    async def connector(link: Link) -> None:
        if not script:
            await link.up()
            await trio.sleep_forever()
        o = script.pop(0)
        if o[0] == "fail":
            raise OSError("refused")
        if o[0] == "auth":
            raise AuthFailed("401")
        await link.up()
        await trio.sleep(o[1])

    async def main() -> list[float]:
        m = ConnectionManager("p", c)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(m.run, connector)
            await trio.sleep(model_schedule(outcomes, c)[-1] + 1)
            nursery.cancel_scope.cancel()
        return rel(m.attempt_times, t0)

    got = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert got == [round(x, 9) for x in model_schedule(outcomes, c)]


async def test_a_failing_connect_callback_does_not_drop_the_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def boom() -> None:
        raise RuntimeError("buffer unavailable")

    async def connector(link: Link) -> None:
        await link.up()
        await trio.sleep_forever()

    m = ConnectionManager("p", cfg(heartbeat_interval=1e6))
    m.set_callbacks(boom, None)
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, connector)
        await trio.sleep(100)
        assert m.status is ConnectionStatus.CONNECTED
        assert len(m.attempt_times) == 1
        nursery.cancel_scope.cancel()


# ---- the one Backoff -----------------------------------------------------------


def test_reconnect_delays_are_the_core_backoff() -> None:
    from nekobot.core.backoff import Backoff

    m = ConnectionManager("p", cfg(jitter=0.25, stable_after=12.0))
    assert m.backoff == Backoff(
        minimum=1.0, maximum=10.0, factor=2.0, jitter=0.25, reset_after=12.0
    )
    # failure n waits restart number n - 1; a huge count saturates at the cap
    assert m.backoff_delay(1) == m.backoff.base(0) == 1.0
    assert m.backoff_delay(10**6) == 10.0


async def test_jitter_is_applied_before_the_cap(autojump_clock: trio.testing.MockClock) -> None:
    from nekobot.core.backoff import Backoff

    m = ConnectionManager("p", cfg(jitter=0.5), rng=random.Random(3))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, failing)
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(rel(m.attempt_times, t0))]
    same = Backoff(minimum=1.0, maximum=10.0, factor=2.0, jitter=0.5)
    rng = random.Random(3)
    assert gaps == pytest.approx([same.delay(n, rng) for n in range(len(gaps))], abs=1e-6)
    # from the 6th failure on, even the lowest jittered delay (32 * 0.5) is above
    # the 10 s cap: the delay is the cap itself, never a draw below it
    assert gaps[5:] == pytest.approx([10.0] * len(gaps[5:]), abs=1e-6)
    assert len(set(round(g, 6) for g in gaps[:4])) > 1  # jitter below the cap varies


def test_jitter_above_one_is_refused() -> None:
    from nekobot.errors import FieldValueError

    # uniform(d * (1 - j), d * (1 + j)) with j > 1 can draw a negative delay,
    # which trio.move_on_after refuses: the reconnect loop would crash
    with pytest.raises(FieldValueError, match=r"must be <= 1, got 1.5") as info:
        ConnectionConfig(jitter=1.5)
    assert info.value.field == "jitter"
    assert ConnectionConfig(jitter=1.0).jitter == 1.0


async def test_callbacks_given_at_construction(autojump_clock: trio.testing.MockClock) -> None:
    events: list[str] = []

    async def up() -> None:
        events.append("up")

    async def down() -> None:
        events.append("down")

    async def connector(link: Link) -> None:
        await link.up()
        await trio.sleep(1)

    m = ConnectionManager(
        "p", cfg(auto_reconnect=False), connect_callback=up, disconnect_callback=down
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(m.run, connector)
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert events == ["up", "down"]
    assert m.get_connection_stats().last_heartbeat is not None
