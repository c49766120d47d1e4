"""StatusMonitor: windows, exact figures, alerts, rules, Prometheus exposition.

Policy: no I/O; the ``autojump_clock`` fixture for anything about time (tests
assert exact Trio-clock schedules); no real sleeps. Each monitor has its own
``CollectorRegistry``, so tests never touch the global one. The monitor is an
actor: a test runs it (``running``) and ``await mon.flush()`` before reading
what it just recorded (the getters read the last published snapshot).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from nekobot.config.schema import MonitorConfig
from nekobot.errors import AlertNotFound, InvalidRequest, NekoBotError, PlatformNotFound
from nekobot.monitor.status_monitor import Alert, AlertLevel, MetricType, StatusMonitor


def make(**cfg: object) -> StatusMonitor:
    return StatusMonitor.from_config(MonitorConfig(**cfg))  # type: ignore[arg-type]


@asynccontextmanager
async def running(mon: StatusMonitor) -> AsyncIterator[StatusMonitor]:
    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        yield mon
        nursery.cancel_scope.cancel()


async def test_error_rate_is_exactly_half() -> None:
    async with running(make()) as mon:
        for i in range(10):
            mon.record_message("qq", "message", 5.0, success=i % 2 == 0, error_type="Timeout")
        await mon.flush()
    st = mon.get_platform_status("qq")
    assert st.throughput_last_minute == 10
    assert st.error_count == 5
    assert st.error_rate == 0.5
    assert st.error_breakdown == {"Timeout": 5}
    assert (st.messages_total, st.errors_total) == (10, 5)


async def test_throughput_counts_1000_in_a_minute_uncapped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(make(history_size=100)) as mon:  # samples are capped; counts are not
        t0 = trio.current_time()
        for i in range(1000):
            mon.record_message("qq", "message", float(i % 7), success=True)
            await trio.sleep(0.059)
        assert trio.current_time() - t0 == pytest.approx(59.0)
        await mon.flush()
        st = mon.get_platform_status("qq")
        assert st.throughput_last_minute == 1000
        assert st.error_rate == 0.0
        assert (st.latency_min_ms, st.latency_max_ms) == (0.0, 6.0)
        # the window slides: 30 s later the 508 newer than 60 s remain (plus at most
        # one 0.5 s bucket of older ones, 8 here); 61 s after the last, none
        await trio.sleep(30.0)
        await mon.flush()
        half = mon.get_platform_status("qq").throughput_last_minute
        assert 508 <= half <= 516
        await trio.sleep(31.0)
        await mon.flush()
        st = mon.get_platform_status("qq")
        assert st.throughput_last_minute == 0 and st.latency_p50_ms is None
        assert st.messages_total == 1000


async def test_window_edge_moves_in_small_steps(autojump_clock: trio.testing.MockClock) -> None:
    async with running(make(window=60.0)) as mon:
        mon.record_message("qq", "message", 1.0, True)
        await trio.sleep(59.0)
        await mon.flush()
        assert mon.get_platform_status("qq").throughput_last_minute == 1
        await trio.sleep(1.5)  # past the window plus one bucket (0.5 s)
        await mon.flush()
        assert mon.get_platform_status("qq").throughput_last_minute == 0


async def test_latency_figures() -> None:
    async with running(make()) as mon:
        for ms in range(1, 101):
            mon.record_message("qq", "message", float(ms), True)
        await mon.flush()
    st = mon.get_platform_status("qq")
    assert (st.latency_p50_ms, st.latency_p95_ms, st.latency_p99_ms) == (50.0, 95.0, 99.0)
    assert st.latency_avg_ms == 50.5
    assert (st.latency_min_ms, st.latency_max_ms) == (1.0, 100.0)


async def test_unknown_platform_raises_and_creates_nothing() -> None:
    async with running(make()) as mon:
        with pytest.raises(PlatformNotFound) as info:
            mon.get_platform_status("nope")
        assert isinstance(info.value, LookupError) and isinstance(info.value, NekoBotError)
        mon.forget_platform("nope")  # a cast: an unknown platform is ignored
        await mon.flush()
        with pytest.raises(PlatformNotFound):
            mon.get_platform_status("nope")
        assert mon.platform_ids() == []
        assert mon.get_all_platform_status() == {}


async def test_full_mailbox_counts_drops_and_never_raises() -> None:
    mon = StatusMonitor(MonitorConfig(), mailbox_size=5)
    for _ in range(8):
        mon.record_message("qq", "message", 1.0, True)
    assert mon.get_status().records_dropped == 3
    async with running(mon):
        await mon.flush()
    s = mon.get_status()
    assert (s.records_applied, s.records_dropped) == (5, 3)
    assert "nekobot_monitor_records_dropped_total 3.0" in mon.exposition()[0].decode()


async def test_fire_same_key_updates_one_open_alert_and_clear_resolves() -> None:
    async with running(make()) as mon:
        await _fire_same_key_updates_one_open_alert_and_clear_resolves(mon)


async def _fire_same_key_updates_one_open_alert_and_clear_resolves(mon: StatusMonitor) -> None:
    mon.fire_alert("breaker:qq", AlertLevel.WARNING, "breaker half-open", platform_id="qq")
    mon.fire_alert("breaker:qq", AlertLevel.ERROR, "breaker open", platform_id="qq")
    await mon.flush()
    (a,) = mon.get_alerts()
    assert (a.level, a.message, a.count, a.key, a.platform_id) == (
        AlertLevel.ERROR,
        "breaker open",
        2,
        "breaker:qq",
        "qq",
    )
    mon.clear_alert("breaker:qq")
    mon.clear_alert("breaker:qq")  # no open alert: nothing happens
    await mon.flush()
    assert mon.get_alerts() == []
    (r,) = mon.get_alerts(include_resolved=True)
    assert r.alert_id == a.alert_id and r.resolved and r.resolved_by == "clear"
    mon.fire_alert("breaker:qq", AlertLevel.ERROR, "breaker open again")
    await mon.flush()
    (b,) = mon.get_alerts()
    assert b.alert_id != a.alert_id and b.count == 1


async def test_resolve_alert_by_hand_and_unknown_id() -> None:
    async with running(make()) as mon:
        mon.fire_alert("k", AlertLevel.CRITICAL, "bad")
        await mon.flush()
        (a,) = mon.get_alerts()
        r = await mon.resolve_alert(a.alert_id)
        assert r.resolved and r.resolved_by == "manual" and r.resolved_at is not None
        assert mon.get_alerts() == []  # published before the call returned
        assert mon.get_alert(a.alert_id) == r
        assert await mon.resolve_alert(a.alert_id) == r  # idempotent
        with pytest.raises(AlertNotFound) as info:
            await mon.resolve_alert("alert-999")
        assert isinstance(info.value, LookupError)
        # the key is free again: the condition opens a new alert
        mon.fire_alert("k", AlertLevel.CRITICAL, "bad")
        await mon.flush()
        assert len(mon.get_alerts()) == 1 and mon.get_alerts()[0].alert_id != a.alert_id


async def test_get_alerts_filters_by_level() -> None:
    async with running(make()) as mon:
        mon.fire_alert("a", AlertLevel.INFO, "a")
        mon.fire_alert("b", AlertLevel.ERROR, "b")
        mon.fire_alert("c", AlertLevel.ERROR, "c")
        mon.clear_alert("c")
        await mon.flush()
    assert [a.key for a in mon.get_alerts(AlertLevel.ERROR)] == ["b"]
    assert [a.key for a in mon.get_alerts(AlertLevel.ERROR, include_resolved=True)] == ["b", "c"]
    assert [a.key for a in mon.get_alerts()] == ["a", "b"]
    assert mon.get_status().open_alerts == {"INFO": 1, "WARNING": 0, "ERROR": 1, "CRITICAL": 0}


async def test_alert_history_is_bounded_resolved_pruned_first() -> None:
    async with running(make(max_alerts=3)) as mon:
        mon.fire_alert("open1", AlertLevel.ERROR, "x")
        for i in range(5):
            mon.fire_alert(f"k{i}", AlertLevel.INFO, "x")
            mon.clear_alert(f"k{i}")
        mon.fire_alert("open2", AlertLevel.ERROR, "x")
        await mon.flush()
        kept = mon.get_alerts(include_resolved=True)
        assert len(kept) == 3
        assert [a.key for a in kept if not a.resolved] == ["open1", "open2"]
        # all open: the oldest open one is forgotten
        mon.fire_alert("open3", AlertLevel.ERROR, "x")
        mon.fire_alert("open4", AlertLevel.ERROR, "x")
        await mon.flush()
    assert [a.key for a in mon.get_alerts(include_resolved=True)] == ["open2", "open3", "open4"]


async def test_error_rate_rule_fires_on_schedule_and_clears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = make(alert_interval=10.0, error_rate_threshold=0.2, min_messages_for_error_rate=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        t0 = trio.current_time()
        for i in range(10):
            mon.record_message("qq", "message", 1.0, success=i < 7)
        await trio.sleep(9.9)
        assert mon.get_alerts() == []
        await trio.sleep(0.1)
        await trio.testing.wait_all_tasks_blocked()
        (a,) = mon.get_alerts()
        assert a.key == "error_rate:qq" and a.level == AlertLevel.ERROR
        assert a.timestamp - t0 == 10.0
        assert a.metric_name == "nekobot_messages_total"
        assert not mon.get_platform_status("qq").healthy
        # still above: the same alert is updated, not duplicated
        await trio.sleep(10.0)
        await trio.testing.wait_all_tasks_blocked()
        (b,) = mon.get_alerts()
        assert b.alert_id == a.alert_id and b.count == 2
        # the bad messages leave the window: resolved by itself at the next evaluation
        await trio.sleep(50.0)
        await trio.testing.wait_all_tasks_blocked()
        assert mon.get_alerts() == []
        (r,) = mon.get_alerts(include_resolved=True)
        assert r.resolved_at is not None and r.resolved_at - t0 == 70.0
        assert mon.get_platform_status("qq").healthy
        nursery.cancel_scope.cancel()


async def test_error_rate_rule_needs_min_messages() -> None:
    async with running(make(min_messages_for_error_rate=10)) as mon:
        for _ in range(9):
            mon.record_message("qq", "message", 1.0, success=False)
        await mon.evaluate_rules()
        assert mon.get_alerts() == []
        assert mon.get_platform_status("qq").healthy
        mon.record_message("qq", "message", 1.0, success=False)
        await mon.evaluate_rules()
        assert [a.key for a in mon.get_alerts()] == ["error_rate:qq"]


async def test_latency_p95_rule() -> None:
    async with running(make(latency_p95_threshold_ms=100.0)) as mon:
        for _ in range(95):
            mon.record_message("qq", "message", 10.0, True)
        for _ in range(5):
            mon.record_message("qq", "message", 500.0, True)
        await mon.evaluate_rules()
        assert mon.get_alerts() == []  # p95 is 10 ms
        mon.record_message("qq", "message", 500.0, True)
        await mon.evaluate_rules()
    (a,) = mon.get_alerts()
    assert a.key == "latency_p95:qq" and a.level == AlertLevel.WARNING


async def test_platform_down_follows_state_at_once() -> None:
    async with running(make()) as mon:
        await _platform_down_follows_state_at_once(mon)


async def _platform_down_follows_state_at_once(mon: StatusMonitor) -> None:
    mon.set_platform_state("qq", True)
    await mon.flush()
    st = mon.get_platform_status("qq")
    assert st.running is True and st.healthy and st.throughput_last_minute == 0
    mon.set_platform_state("qq", False)
    await mon.flush()
    (a,) = mon.get_alerts()
    assert (a.key, a.level, a.platform_id) == ("platform_down:qq", AlertLevel.ERROR, "qq")
    st = mon.get_platform_status("qq")
    assert not st.healthy and st.open_alerts == 1
    mon.set_platform_state("qq", True)
    await mon.flush()
    assert mon.get_alerts() == []
    assert mon.get_platform_status("qq").healthy
    mon.set_platform_state("qq", False, expected=True)  # asked for: no alert
    await mon.flush()
    assert mon.get_alerts() == []
    assert mon.get_platform_status("qq").running is False
    text = mon.exposition()[0].decode()
    assert 'nekobot_platform_up{platform_id="qq"} 0.0' in text


async def test_breaker_alert_from_fault_isolation_marks_platform_unhealthy() -> None:
    async with running(make()) as mon:
        mon.record_message("qq", "message", 1.0, True)
        mon.fire_alert(
            "breaker:qq", AlertLevel.ERROR, "circuit open", platform_id="qq", metric_name="breaker"
        )
        await mon.flush()
        assert not mon.get_platform_status("qq").healthy
        assert mon.get_status().healthy_platforms == 0
        mon.clear_alert("breaker:qq")
        await mon.flush()
        assert mon.get_platform_status("qq").healthy
        assert mon.get_status().healthy_platforms == 1


async def test_custom_rule_evaluated_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = make(alert_interval=5.0)
    state = {"bad": False, "calls": 0}

    async def queue_rule(m: StatusMonitor) -> Alert | None:
        state["calls"] += 1
        if state["bad"]:
            return Alert(level=AlertLevel.CRITICAL, message="queue too deep", platform_id="qq")
        return None

    async def broken_rule(m: StatusMonitor) -> Alert | None:
        raise RuntimeError("rule bug")

    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        name = await mon.register_alert_rule(queue_rule, name="queue")
        await mon.register_alert_rule(broken_rule, name="broken")
        with pytest.raises(InvalidRequest):
            await mon.register_alert_rule(queue_rule, name="queue")
        await trio.sleep(12.0)  # evaluations at 5 and 10
        assert state["calls"] == 2
        state["bad"] = True
        await trio.sleep(5.0)
        (a,) = mon.get_alerts()
        assert (a.key, a.level, a.message) == ("rule:queue", AlertLevel.CRITICAL, "queue too deep")
        await trio.sleep(5.0)
        (b,) = mon.get_alerts()
        assert b.alert_id == a.alert_id and b.count == 2
        state["bad"] = False
        await trio.sleep(5.0)
        assert mon.get_alerts() == []
        assert mon.get_status().rule_errors == 5
        assert mon.get_status().alert_rules == ("queue", "broken")
        state["bad"] = True
        await trio.sleep(5.0)
        assert [a.key for a in mon.get_alerts()] == ["rule:queue"]
        await mon.unregister_alert_rule(name)  # its open alert is resolved with it
        assert mon.get_alerts() == []
        assert mon.get_status().alert_rules == ("broken",)
        with pytest.raises(LookupError):
            await mon.unregister_alert_rule(name)
        nursery.cancel_scope.cancel()


async def test_record_metric_types_names_and_errors() -> None:
    mon = make()
    mon.record_metric("frames_rejected_total", 2, MetricType.COUNTER, labels={"platform_id": "qq"})
    mon.record_metric("frames_rejected_total", 1, "counter", labels={"platform_id": "qq"})
    mon.record_metric("nekobot_queue_depth", 3, "gauge")
    mon.record_metric("nekobot_queue_depth", 7, "gauge")  # applied in order: the last one wins
    mon.record_metric("api_call_seconds", 0.2, MetricType.HISTOGRAM)
    async with running(mon):
        await mon.flush()
    text = mon.exposition()[0].decode()
    assert 'nekobot_frames_rejected_total{platform_id="qq"} 3.0' in text
    assert "nekobot_queue_depth 7.0" in text
    assert "nekobot_api_call_seconds_count 1.0" in text
    with pytest.raises(InvalidRequest):
        mon.record_metric("queue_depth", 1, "counter")  # already a gauge
    with pytest.raises(InvalidRequest):
        mon.record_metric("frames_rejected_total", 1, "counter")  # other labels
    with pytest.raises(InvalidRequest):
        mon.record_metric("frames_rejected_total", -1, "counter", labels={"platform_id": "qq"})
    with pytest.raises(InvalidRequest):
        mon.record_metric("bad name", 1, "gauge")
    with pytest.raises(InvalidRequest):
        mon.record_metric("x", 1, "summary")
    with pytest.raises(InvalidRequest):
        mon.record_metric("messages_total", 1, "counter")  # a built-in name
    with pytest.raises(InvalidRequest):
        mon.record_metric("platform_up", 1, "gauge")  # computed at scrape time


async def test_exposition_is_ready_for_get_metrics() -> None:
    registry = CollectorRegistry()
    mon = StatusMonitor.from_config(MonitorConfig(), registry=registry)
    assert mon.registry is registry
    StatusMonitor()  # another monitor, its own registry: no clash
    mon.record_message("qq", "message", 250.0, True)
    mon.record_message("qq", "message", 10.0, False, "ValueError")
    async with running(mon):
        await mon.flush()
    body, content_type = mon.exposition()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert (
        'nekobot_messages_total{message_type="message",outcome="ok",platform_id="qq"} 1.0' in text
    )
    assert 'nekobot_message_errors_total{error_type="ValueError",platform_id="qq"} 1.0' in text
    assert (
        'nekobot_message_latency_seconds_bucket{le="0.25",message_type="message",'
        'platform_id="qq"} 2.0' in text
    )
    assert 'nekobot_platform_error_rate{platform_id="qq"} 0.5' in text
    assert "# TYPE nekobot_alerts_open gauge" in text


async def test_idle_monitor_is_parked(autojump_clock: trio.testing.MockClock) -> None:
    mon = make(alert_interval=10.0)
    evaluations = 0

    async def rule(m: StatusMonitor) -> Alert | None:
        nonlocal evaluations
        evaluations += 1
        return None

    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        await mon.register_alert_rule(rule)
        assert mon.running
        await trio.testing.wait_all_tasks_blocked()
        # parked until the next evaluation: an hour is 360 evaluations, nothing more
        await trio.sleep(3605.0)
        assert evaluations == 360
        nursery.cancel_scope.cancel()
    assert not mon.running


def published_records(mon: StatusMonitor) -> int:
    return mon.get_status().records_applied


async def test_monitor_task_publishes_at_most_once_per_flush_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = make()
    async with running(mon):
        t0 = trio.current_time()
        for _ in range(10):
            mon.record_message("qq", "message", 1.0, True)
        await trio.testing.wait_all_tasks_blocked()
        assert published_records(mon) == 10  # nothing published before: at once
        batches = mon.mailbox_statistics().batches_total
        for _ in range(600):
            mon.record_message("qq", "message", 1.0, True)
        await trio.testing.wait_all_tasks_blocked()
        assert mon.mailbox_statistics().batches_total == batches + 1  # one wake for 600
        assert published_records(mon) == 10  # applied, published 0.5 s after the last
        await trio.sleep(0.4)
        assert published_records(mon) == 10
        await trio.sleep(0.1)
        await trio.testing.wait_all_tasks_blocked()
        assert published_records(mon) == 610
        snap = mon.snapshot
        assert snap is not None and snap.published_at - t0 == 0.5
        assert mon.get_platform_status("qq").throughput_last_minute == 610


async def test_getters_never_change_state(autojump_clock: trio.testing.MockClock) -> None:
    async with running(make()) as mon:
        mon.record_message("qq", "message", 1.0, True)
        await mon.flush()
        batches = mon.mailbox_statistics().batches_total
        # pending: the monitor task has not run since (no checkpoint in between)
        for _ in range(5):
            mon.record_message("qq", "message", 1.0, False)
        mon.fire_alert("k", AlertLevel.ERROR, "x", platform_id="qq")
        mon.set_platform_state("tg", False)

        def read() -> tuple[object, ...]:
            return (
                mon.get_all_platform_status(),
                mon.get_platform_status("qq"),
                mon.get_status(),
                mon.get_alerts(include_resolved=True),
                mon.platform_ids(),
                mon.exposition()[0],
            )

        first = read()
        assert read() == first
        # reading applied nothing (the first message went straight to the parked task)
        assert mon.mailbox_statistics().depth == 6
        assert mon.mailbox_statistics().batches_total == batches
        assert mon.get_platform_status("qq").throughput_last_minute == 1
        assert mon.platform_ids() == ["qq"] and mon.get_alerts() == []
        await mon.flush()
        st = mon.get_platform_status("qq")
        assert (st.throughput_last_minute, st.error_count, st.open_alerts) == (6, 5, 1)
        assert mon.platform_ids() == ["qq", "tg"]
        assert sorted(a.key for a in mon.get_alerts()) == ["k", "platform_down:tg"]


async def test_full_mailbox_drops_and_never_blocks(autojump_clock: trio.testing.MockClock) -> None:
    mon = StatusMonitor(MonitorConfig(), mailbox_size=10)
    async with running(mon):
        # synchronous: each returns None at once (no coroutine to await, no checkpoint)
        calls: list[Callable[[], object]] = [
            lambda: mon.record_message("qq", "message", 1.0, True)
        ] * 25
        calls += [
            lambda: mon.fire_alert("k", AlertLevel.ERROR, "dropped"),
            lambda: mon.record_metric("n", 1, "counter"),
            lambda: mon.set_platform_state("qq", False),
            lambda: mon.clear_alert("k"),
            lambda: mon.forget_platform("qq"),
        ]
        results = [call() for call in calls]
        assert results == [None] * 30
        # 11 taken: 10 fill the mailbox, 1 went straight to the parked monitor task
        assert mon.get_status().records_dropped == 30 - 11
        await mon.flush()
        s = mon.get_status()
        assert (s.records_applied, s.records_dropped) == (11, 19)
        assert mon.get_alerts() == []
        text = mon.exposition()[0].decode()
        assert "nekobot_monitor_records_dropped_total 19.0" in text
        assert "nekobot_n_total 0.0" in text  # declared, its value dropped
        mon.record_message("qq", "message", 1.0, True)  # room again
        await mon.flush()
        assert mon.get_status().records_applied == 12


async def test_idle_platforms_never_wake_the_monitor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = make(alert_interval=10.0)
    async with running(mon):
        for i in range(1000):
            mon.set_platform_state(f"p{i}", True)
        await mon.flush()
        assert mon.get_status().platforms == 1000
        batches = mon.mailbox_statistics().batches_total
        snap = mon.snapshot
        await trio.sleep(60.0)
        assert mon.mailbox_statistics().batches_total == batches
        assert mon.snapshot is snap  # nothing changed: nothing published


async def test_monitor_wakes_only_when_a_window_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = make(alert_interval=10.0, window=60.0)
    wakes: list[float] = []
    handle = mon.handle_batch

    async def spy(batch: list[object]) -> None:
        wakes.append(trio.current_time())
        await handle(batch)

    mon.handle_batch = spy  # type: ignore[method-assign]
    async with running(mon):
        t0 = trio.current_time()
        assert t0 % 0.5 == 0  # the first bucket starts at t0
        for i in range(1000):
            mon.record_message(f"p{i}", "message", 1.0, True)
        await trio.sleep(120.0)
        # the batch; the evaluation after it; the samples leave (60 s), the
        # buckets leave (60.5 s); the evaluation after that; then nothing
        assert [t - t0 for t in wakes] == [0.0, 10.0, 60.0, 60.5, 70.0]
        st = mon.get_platform_status("p999")
        assert st.throughput_last_minute == 0 and st.messages_total == 1
        assert mon.get_alerts() == []


async def test_forget_platform_resolves_its_alerts() -> None:
    async with running(make()) as mon:
        mon.set_platform_state("qq", False)
        mon.fire_alert("other", AlertLevel.INFO, "not about qq")
        await mon.flush()
        assert mon.platform_ids() == ["qq"] and len(mon.get_alerts()) == 2
        mon.forget_platform("qq")
        await mon.flush()
        assert mon.platform_ids() == [] and [a.key for a in mon.get_alerts()] == ["other"]


def test_alert_level_from_a_name_or_number() -> None:
    assert AlertLevel.coerce("warning") is AlertLevel.WARNING
    assert AlertLevel.coerce("CRITICAL") is AlertLevel.CRITICAL
    assert AlertLevel.coerce(3) is AlertLevel.ERROR
    assert AlertLevel.coerce(AlertLevel.INFO) is AlertLevel.INFO
    with pytest.raises(ValueError, match="unknown alert level 'loud'"):
        AlertLevel.coerce("loud")
