"""Tests of nekobot.fault_isolation, alone and driving the runtime manager.

Policy: no network (fake platforms, tests/platform_fakes.py); the
``autojump_clock`` fixture for time with exact Trio-clock schedules; no real
sleeps. The Hypothesis model test runs each example in its own ``trio.run``
under a ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nekobot.config.schema import FaultIsolationConfig, SupervisorConfig
from nekobot.core.actor import Mailbox
from nekobot.core.supervisor import Backoff
from nekobot.errors import PlatformNotFound
from nekobot.faults.breaker import (
    Action,
    BreakerPolicy,
    BreakerSnapshot,
    Fault,
    begin_trial,
    decide,
    open_now,
    reset,
    trial_succeeded,
)
from nekobot.faults.fault_isolation import (
    BreakerState,
    DegradationLevel,
    FaultIsolation,
    IsolationStrategy,
)
from nekobot.runtime.runtime_manager import (
    PlatformDisabled,
    PlatformLifecycleStatus,
    PlatformState,
    RuntimeManager,
)
from nekobot.storage import Store

from .platform_fakes import Crash, FakeMonitor, World, config

SUP = SupervisorConfig(
    backoff_min=1.0,
    backoff_max=8.0,
    backoff_factor=2.0,
    jitter=0.1,
    backoff_reset=10.0,
    max_restarts=100,
    period=60.0,
)
FI = FaultIsolationConfig(failure_threshold=4, error_window=60.0, cooldown=30.0, max_cooldown=100.0)


@asynccontextmanager
async def running(
    world: World,
    *,
    sup: SupervisorConfig = SUP,
    fi_cfg: FaultIsolationConfig = FI,
    monitor: Any = None,
) -> AsyncIterator[tuple[RuntimeManager, FaultIsolation]]:
    mailbox: Mailbox[Any] = Mailbox("runtime")
    fi = FaultIsolation.from_config(fi_cfg, monitor=monitor, events=mailbox.ref)
    rm = RuntimeManager.from_config(
        sup, fault_isolation=fi, platform_factory=world.factory, monitor=monitor, mailbox=mailbox
    )
    async with trio.open_nursery() as n:
        await n.start(fi.run)
        await n.start(rm.run)
        yield rm, fi
        n.cancel_scope.cancel()


def state(rm: RuntimeManager, pid: str) -> PlatformState:
    st_ = rm.get_platform_lifecycle_status(pid)
    assert isinstance(st_, PlatformLifecycleStatus)
    return st_.state


# ---- the actor alone ----------------------------------------------------------


@asynccontextmanager
async def alone(fi: FaultIsolation) -> AsyncIterator[FaultIsolation]:
    async with trio.open_nursery() as n:
        await n.start(fi.run)
        yield fi
        n.cancel_scope.cancel()


def _raise(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


async def test_handle_fault_records_and_opens_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    monitor = FakeMonitor()
    fi = FaultIsolation.from_config(
        FaultIsolationConfig(failure_threshold=3, error_window=10.0, max_fault_records=4),
        monitor=monitor,
    )
    async with alone(fi):
        await _breaker_opens(fi, monitor)


async def _breaker_opens(fi: FaultIsolation, monitor: FakeMonitor) -> None:
    rec = await fi.handle_fault("qq", _raise(ValueError("bad frame")), {"source": "supervisor"})
    assert rec.isolation_strategy is IsolationStrategy.RESTART_PLATFORM
    assert (rec.platform_id, rec.error_type, rec.error_message) == ("qq", "ValueError", "bad frame")
    assert "in _raise" in rec.traceback_str and "ValueError: bad frame" in rec.traceback_str
    assert not rec.resolved and rec.resolved_at is None
    # an error the adapter caught itself: it keeps running
    rec = await fi.handle_fault("qq", _raise(KeyError("x")))
    assert rec.isolation_strategy is IsolationStrategy.CONTINUE
    await trio.sleep(11.0)  # both fall out of the error window
    for _ in range(2):
        rec = await fi.handle_fault("qq", _raise(ValueError()), {"source": "supervisor"})
        assert rec.isolation_strategy is IsolationStrategy.RESTART_PLATFORM
    assert fi.breaker_state("qq") is BreakerState.CLOSED
    rec = await fi.handle_fault("qq", _raise(ValueError()), {"source": "supervisor"})
    assert rec.isolation_strategy is IsolationStrategy.DEGRADED_MODE
    assert fi.breaker_state("qq") is BreakerState.OPEN
    assert fi.retry_at("qq") == 11.0 + 30.0
    assert monitor.alerts["fault_isolation:breaker:qq"][0].name == "ERROR"
    # bounded ring per platform
    assert len(fi.get_fault_records("qq")) == 4
    assert fi.get_fault_records("other") == []
    status = fi.get_isolation_status()
    assert status.platforms["qq"].breaker.state is BreakerState.OPEN
    assert status.to_dict()["platforms"]["qq"]["breaker"]["state"] == "open"


def test_degradation_levels() -> None:
    f = DegradationLevel.from_share
    assert [f(o, 4) for o in range(5)] == [
        DegradationLevel.NONE,
        DegradationLevel.LOW,
        DegradationLevel.MEDIUM,
        DegradationLevel.HIGH,
        DegradationLevel.CRITICAL,
    ]
    assert f(0, 0) is DegradationLevel.NONE


async def test_fault_records_persist_to_the_store() -> None:
    store = Store(":memory:")
    await store.open()
    fi = FaultIsolation.from_config(FaultIsolationConfig(), store=store)
    async with alone(fi):
        await fi.handle_fault("qq", _raise(SystemExit(1)), {"source": "supervisor"})
        await fi.handle_fault("tg", _raise(OSError("down")))
        await fi.flush()
    rows = await store.run(
        lambda c: c.execute(
            "SELECT platform_id, error_type, isolation_strategy FROM fault_records ORDER BY id"
        ).fetchall()
    )
    assert rows == [("qq", "SystemExit", "restart_platform"), ("tg", "OSError", "continue")]
    await store.close()


async def test_run_loads_history_and_keeps_the_table_bounded(tmp_path: Any) -> None:
    store = Store(tmp_path / "nekobot.db")
    await store.open()
    cfg = FaultIsolationConfig(max_fault_records=3)
    fi = FaultIsolation.from_config(cfg, store=store)
    async with trio.open_nursery() as n:
        await n.start(fi.run)
        for i in range(5):
            await fi.handle_fault("qq", _raise(ValueError(f"e{i}")), {"source": "supervisor"})
        fi.mark_recovered("qq")
        await fi.handle_fault("tg", _raise(OSError("down")))
        await fi.flush()
        n.cancel_scope.cancel()
    rows = await store.run(
        lambda c: c.execute(
            "SELECT platform_id, error_message, resolved FROM fault_records ORDER BY id"
        ).fetchall()
    )
    assert rows == [("qq", "e2", 1), ("qq", "e3", 1), ("qq", "e4", 1), ("tg", "down", 0)]
    # a new process: the kept records come back
    again = FaultIsolation.from_config(cfg, store=store)
    async with trio.open_nursery() as n:
        await n.start(again.run)
        recs = again.get_fault_records("qq")
        assert [(r.error_message, r.resolved) for r in recs] == [
            ("e2", True),
            ("e3", True),
            ("e4", True),
        ]
        assert "ValueError: e4" in recs[-1].traceback_str
        assert again.get_fault_records("tg")[0].isolation_strategy is IsolationStrategy.CONTINUE
        n.cancel_scope.cancel()
    await store.close()


# ---- with the runtime manager ------------------------------------------------------


async def test_breaker_schedule_exact(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    monitor = FakeMonitor()
    world.crash_at_start["a"] = Crash("fails at once")
    async with running(world, monitor=monitor) as (rm, fi):
        await rm.add_platform("a", config())
        await rm.add_platform("b", config())
        await trio.sleep(450.0)
        starts = world.events("a", "start")
        # three restarts after backoff delays within the jitter bounds, never above the cap
        backoff = Backoff(minimum=1.0, maximum=8.0, factor=2.0, jitter=0.1)
        for n in range(3):
            lo, hi = backoff.bounds(n)
            assert lo <= starts[n + 1] - starts[n] <= hi <= 8.0
        # the 4th fault opened the breaker: not restarted for the cooldown (30 s), then
        # exactly one half-open trial; it fails: 60 s; fails again: 100 s (the cap)
        gaps = [b - a for a, b in itertools.pairwise(starts[3:])]
        assert gaps == pytest.approx([30.0, 60.0, 100.0, 100.0, 100.0], abs=1e-9)
        assert state(rm, "a") is PlatformState.ISOLATED
        assert fi.get_isolation_status().platforms["a"].breaker.cooldown == 100.0
        assert world.events("b", "start") == [0.0]  # the sibling was never touched

        # the platform heals: the next trial runs backoff_reset (10 s) and closes the breaker
        del world.crash_at_start["a"]
        retry = fi.retry_at("a")
        assert retry is not None
        await trio.sleep_until(retry + 9.9)
        assert world.events("a", "start")[-1] == retry
        assert fi.breaker_state("a") is BreakerState.HALF_OPEN
        await trio.sleep(0.2)
        assert fi.breaker_state("a") is BreakerState.CLOSED
        assert state(rm, "a") is PlatformState.RUNNING
        assert "fault_isolation:breaker:a" not in monitor.alerts
        levels = [lvl.name for key, lvl, _ in monitor.fired if key == "fault_isolation:breaker:a"]
        assert levels[:3] == ["ERROR", "WARNING", "ERROR"]
        assert all(r.resolved for r in fi.get_fault_records("a"))


async def test_system_exit_in_a_platform_loop(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running(world) as (rm, fi):
        await rm.load({"a": config(), "b": config(), "c": config()})
        await trio.sleep(1.0)
        world.crash("b", SystemExit(1))
        await trio.sleep(5.0)
        assert state(rm, "b") is PlatformState.RUNNING
        assert 1.9 <= world.events("b", "start")[1] <= 2.1  # after its 1 s (+-10 %) backoff
        rec = fi.get_fault_records("b")[0]
        assert rec.error_type == "SystemExit" and "SystemExit: 1" in rec.traceback_str
        assert rec.isolation_strategy is IsolationStrategy.RESTART_PLATFORM
        for pid in ("a", "c"):
            assert world.events(pid, "start") == [0.0] and world.events(pid, "exit") == []


async def test_manual_disable_beats_automatic_recovery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    monitor = FakeMonitor()
    world.crash_at_start["a"] = Crash("fails at once")
    async with running(world, monitor=monitor) as (rm, fi):
        await rm.add_platform("a", config())
        await rm.add_platform("b", config())
        await trio.sleep(20.0)
        assert state(rm, "a") is PlatformState.ISOLATED  # breaker open, trial pending
        await fi.disable_platform("a", by="alice", reason="maintenance")
        assert state(rm, "a") is PlatformState.DISABLED
        n_starts = len(world.events("a", "start"))
        del world.crash_at_start["a"]
        await trio.sleep(1000.0)
        assert len(world.events("a", "start")) == n_starts  # no trial, no restart
        with pytest.raises(PlatformDisabled):
            await rm.start_platform("a")
        with pytest.raises(PlatformDisabled):
            await rm.restart_platform("a")
        iso = fi.get_isolation_status()
        pa = iso.platforms["a"]
        assert (pa.manually_disabled, pa.disabled_by, pa.disabled_reason) == (
            True,
            "alice",
            "maintenance",
        )
        assert pa.breaker.state is BreakerState.OPEN  # automatic state is kept apart
        assert iso.out == {"a": "disabled by alice: maintenance"}
        assert iso.degradation_level is DegradationLevel.MEDIUM  # 1 of 2 out
        assert monitor.alerts["fault_isolation:degraded"][0].name == "WARNING"

        await fi.enable_platform("a", by="bob")
        assert state(rm, "a") is PlatformState.RUNNING
        pa = fi.get_isolation_status().platforms["a"]
        assert (pa.manually_disabled, pa.enabled_by) == (False, "bob")
        assert pa.breaker.state is BreakerState.CLOSED
        assert fi.get_isolation_status().degradation_level is DegradationLevel.NONE
        assert "fault_isolation:degraded" not in monitor.alerts
        with pytest.raises(PlatformNotFound):
            await fi.disable_platform("nope")


async def test_disable_a_running_platform(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running(world) as (rm, fi):
        await rm.add_platform("a", config(port=1234))
        await fi.disable_platform("a", by="api")
        assert state(rm, "a") is PlatformState.DISABLED
        assert world.alive["a"] == 0 and 1234 not in world.bound
        await trio.sleep(100.0)
        assert world.events("a", "start") == [0.0]
        await fi.enable_platform("a")
        assert state(rm, "a") is PlatformState.RUNNING


async def test_adapter_reported_faults_can_isolate(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running(world) as (rm, fi):
        await rm.add_platform("a", config())
        for _ in range(3):
            rec = await fi.handle_fault("a", ValueError("bad frame"))
            assert rec.isolation_strategy is IsolationStrategy.CONTINUE
        assert state(rm, "a") is PlatformState.RUNNING
        rec = await fi.handle_fault("a", ValueError("bad frame"))
        assert rec.isolation_strategy is IsolationStrategy.DEGRADED_MODE
        await trio.testing.wait_all_tasks_blocked()
        assert state(rm, "a") is PlatformState.ISOLATED
        assert world.events("a", "exit") == [0.0]
        await trio.sleep(30.5)  # the cooldown: one trial, which runs
        assert world.events("a", "start") == [0.0, 30.0]
        await trio.sleep(10.0)
        assert fi.breaker_state("a") is BreakerState.CLOSED


async def test_intensity_isolates_and_opens_the_breaker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    world.crash_at_start["a"] = Crash("x")
    sup = SupervisorConfig(
        backoff_min=0.0, backoff_max=0.0, jitter=0.0, max_restarts=2, period=10.0
    )
    fi_cfg = FaultIsolationConfig(failure_threshold=100, cooldown=30.0)
    async with running(world, sup=sup, fi_cfg=fi_cfg) as (rm, fi):
        await rm.add_platform("a", config())
        await trio.testing.wait_all_tasks_blocked()
        assert world.events("a", "start") == [0.0, 0.0, 0.0]
        assert state(rm, "a") is PlatformState.ISOLATED
        assert fi.breaker_state("a") is BreakerState.OPEN
        assert "restart intensity" in fi.get_isolation_status().platforms["a"].breaker.reason
        await trio.sleep(31.0)
        assert world.events("a", "start")[3] == 30.0  # the trial


# ---- the model test ------------------------------------------------------------------

PIDS = ["p0", "p1", "p2", "p3", "p4"]
MSUP = SupervisorConfig(
    backoff_min=1.0,
    backoff_max=8.0,
    backoff_factor=2.0,
    jitter=0.2,
    backoff_reset=5.0,
    max_restarts=3,
    period=20.0,
)
MFI = FaultIsolationConfig(failure_threshold=4, error_window=30.0, cooldown=15.0, max_cooldown=60.0)

op_strategy = st.one_of(
    st.tuples(st.sampled_from(["crash", "exit", "hang", "disable", "enable"]), st.integers(0, 4)),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 3.0, 7.0, 20.0])),
)


@settings(
    max_examples=int(os.environ.get("NEKOBOT_MODEL_EXAMPLES", "40")),  # more: set the variable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(n_platforms=st.integers(3, 5), ops=st.lists(op_strategy, max_size=25))
# always-run schedules: a crash loop into the open breaker and its trials, a manual
# disable during backoff then enable, a hung platform disabled, clean exits
@example(n_platforms=3, ops=[("crash", 0), ("advance", 1.0)] * 6 + [("advance", 20.0)])
@example(n_platforms=3, ops=[("exit", 0), ("advance", 3.0)] * 8)
@example(
    n_platforms=4,
    ops=[("crash", 1), ("disable", 1), ("advance", 20.0), ("enable", 1), ("crash", 1)],
)
@example(n_platforms=5, ops=[("hang", 2), ("disable", 2), ("exit", 3), ("advance", 3.0)])
def test_model_schedules(n_platforms: int, ops: list[tuple[str, Any]]) -> None:
    pids = PIDS[:n_platforms]
    world = World()
    touched: set[str] = set()
    manual: list[tuple[str, str, int, int]] = []  # (op, pid, log index before, after)
    trials: list[tuple[str, float]] = []

    async def main() -> None:
        mailbox: Mailbox[Any] = Mailbox("runtime")
        fi = FaultIsolation.from_config(MFI, events=mailbox.ref)
        orig = fi.begin_trial

        async def begin_trial(pid: str, *, timeout: float = 8.0) -> bool:
            trials.append((pid, trio.current_time()))
            return await orig(pid, timeout=timeout)

        fi.begin_trial = begin_trial  # type: ignore[method-assign,assignment]
        rm = RuntimeManager.from_config(
            MSUP, fault_isolation=fi, platform_factory=world.factory, mailbox=mailbox
        )
        async with trio.open_nursery() as n:
            await n.start(fi.run)
            await n.start(rm.run)
            await rm.load({p: config() for p in pids})
            for op, arg in ops:
                if op == "advance":
                    await trio.sleep(arg)
                    continue
                pid = pids[arg % n_platforms]
                live = world.live.get(pid)
                is_live = live is not None and world.alive.get(pid, 0) > 0
                if op in ("crash", "exit", "disable"):
                    touched.add(pid)
                if op == "crash" and is_live:
                    world.crash(pid)
                elif op == "exit" and is_live:
                    assert live is not None
                    live.finish()
                elif op == "hang" and is_live:
                    assert live is not None
                    live.hang(2.0)
                elif op in ("disable", "enable"):
                    i0 = len(world.log)
                    if op == "disable":
                        await fi.disable_platform(pid, by="model")
                        assert world.alive.get(pid, 0) == 0
                        assert state(rm, pid) is PlatformState.DISABLED
                    else:
                        await fi.enable_platform(pid, by="model")
                    manual.append((op, pid, i0, len(world.log)))
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(200.0)
            end = len(world.log)
            n.cancel_scope.cancel()
        check(end)

    def check(end: int) -> None:
        backoff = Backoff(
            minimum=MSUP.backoff_min,
            maximum=MSUP.backoff_max,
            factor=MSUP.backoff_factor,
            jitter=MSUP.jitter,
        )
        log = world.log[:end]  # what happened before the final shutdown
        for pid in pids:
            # (log index, time, event) of this platform's starts and exits
            runs = [(i, t, ev) for i, (t, ev, p, _) in enumerate(log) if p == pid]
            starts = [(i, t) for i, t, ev in runs if ev == "start"]
            exits = [(i, t) for i, t, ev in runs if ev == "exit"]
            if pid not in touched:
                # healthy: started once, never restarted, never interrupted
                assert [t for _, t in starts] == [0.0] and exits == [], (pid, runs)
                continue
            # a manually disabled platform never runs until enabled again
            for op, p, _b, e in manual:
                if p != pid or op != "disable":
                    continue
                nxt = min(
                    [b2 for op2, p2, b2, _ in manual if p2 == pid and op2 == "enable" and b2 >= e],
                    default=end,
                )
                assert not [i for i, _ in starts if e <= i < nxt], (pid, e, nxt, runs)
            # no restart sooner than its backoff; restarts within the intensity
            reset_points = {t for p, t in trials if p == pid}
            enable_windows = [(b, e) for op, p, b, e in manual if p == pid and op == "enable"]
            attempt = 0
            window: list[float] = []
            for k in range(1, len(starts)):
                (_, prev_start), (i_start, start) = starts[k - 1], starts[k]
                prev_exit = exits[k - 1][1]
                if start in reset_points or any(b <= i_start <= e for b, e in enable_windows):
                    attempt, window = 0, []  # a half-open trial or a person's enable
                    continue
                if prev_exit - prev_start >= MSUP.backoff_reset:
                    attempt = 0
                lo, _hi = backoff.bounds(attempt)
                assert start - prev_exit >= lo - 1e-9, (pid, k, runs)
                attempt += 1
                window = [t for t in window if t > prev_exit - MSUP.period] + [prev_exit]
                assert len(window) <= MSUP.max_restarts, (pid, window)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# ---- the breaker as a pure function ---------------------------------------------

POLICY = BreakerPolicy(failure_threshold=3, error_window=10.0, cooldown=30.0, max_cooldown=100.0)
CRASH = Fault(crashed=True, summary="Crash: x")


def test_decide_exact_values() -> None:
    s = BreakerSnapshot(cooldown=30.0)
    d = decide(s, CRASH, 1.0, POLICY)
    assert d.action is Action.RESTART and d.restart and d.state.failures == (1.0,)
    d = decide(d.state, Fault(crashed=False, summary="E: y"), 5.0, POLICY)
    assert d.action is Action.CONTINUE and d.state.failures == (1.0, 5.0)
    # 11.0: the fault at 1.0 left the window (10 s); two faults in it, still closed
    d = decide(d.state, CRASH, 11.0, POLICY)
    assert d.action is Action.RESTART and d.state.failures == (5.0, 11.0)
    d = decide(d.state, CRASH, 12.0, POLICY)
    assert d.action is Action.OPEN and not d.restart and d.opened
    assert d.state.state is BreakerState.OPEN
    assert (d.state.retry_at, d.state.cooldown, d.state.failures) == (42.0, 30.0, ())
    assert d.state.reason == "3 faults within 10.0 s (last: Crash: x)"
    assert decide(d.state, CRASH, 13.0, POLICY).action is Action.STAY_OPEN
    trial = begin_trial(d.state)
    assert trial.state is BreakerState.HALF_OPEN and trial.retry_at is None
    d = decide(trial, CRASH, 42.5, POLICY)
    assert d.action is Action.REOPEN and (d.state.cooldown, d.state.retry_at) == (60.0, 102.5)
    d = decide(begin_trial(d.state), CRASH, 103.0, POLICY)
    assert (d.state.cooldown, d.state.retry_at) == (100.0, 203.0)  # capped
    closed = trial_succeeded(begin_trial(d.state), POLICY)
    assert closed.state is BreakerState.CLOSED and closed.cooldown == 30.0
    assert trial_succeeded(closed, POLICY) is closed  # only from HALF_OPEN
    assert begin_trial(closed) is closed  # only from OPEN
    opened = open_now(closed, 7.0, POLICY, "restart intensity")
    assert (opened.state, opened.retry_at, opened.reason) == (
        BreakerState.OPEN,
        37.0,
        "restart intensity",
    )
    disabled = attrs.evolve(closed, disabled=True)
    assert decide(disabled, CRASH, 1.0, POLICY).action is Action.STAY_DISABLED
    assert reset(opened, POLICY, "by hand").state is BreakerState.CLOSED


_events = st.lists(
    st.tuples(
        st.sampled_from(["crash", "adapter", "trial", "trial_ok", "intensity", "reset"]),
        st.floats(0.0, 50.0),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    events=_events,
    threshold=st.integers(1, 6),
    window=st.floats(0.5, 100.0),
    cooldown=st.floats(0.0, 50.0),
    extra=st.floats(0.0, 500.0),
    disabled=st.booleans(),
)
def test_breaker_properties(
    events: list[tuple[str, float]],
    threshold: int,
    window: float,
    cooldown: float,
    extra: float,
    disabled: bool,
) -> None:
    policy = BreakerPolicy(
        failure_threshold=threshold,
        error_window=window,
        cooldown=cooldown,
        max_cooldown=cooldown + extra,
    )
    s = BreakerSnapshot(cooldown=cooldown, disabled=disabled)
    now = 0.0
    closed_faults: list[float] = []  # faults seen while CLOSED, since it last closed
    for kind, dt in events:
        now += dt
        if kind in ("crash", "adapter"):
            before = s
            d = decide(s, Fault(crashed=kind == "crash"), now, policy)
            if disabled:
                assert d.action is Action.STAY_DISABLED and not d.restart  # never restarted
            if before.state is BreakerState.CLOSED and not disabled:
                closed_faults.append(now)
                in_window = [t for t in closed_faults if t > now - window]
                # never opens with fewer than failure_threshold faults in the window
                assert d.opened == (len(in_window) >= threshold), (in_window, d)
                if d.opened:
                    closed_faults = []
            if d.opened:
                assert d.state.retry_at == pytest.approx(now + d.state.cooldown)
            s = d.state
        elif kind == "trial":
            s = begin_trial(s)
        elif kind == "trial_ok":
            if s.state is BreakerState.HALF_OPEN:
                closed_faults = []
            s = trial_succeeded(s, policy)
        elif kind == "intensity":
            s = open_now(s, now, policy, "intensity")
            closed_faults = []
        else:
            if s.state is not BreakerState.CLOSED:
                closed_faults = []
            s = reset(s, policy, "reset")
            closed_faults = []
        # the cooldown never exceeds max_cooldown; an open breaker always has a retry time
        assert s.cooldown <= policy.max_cooldown
        assert (s.retry_at is not None) == (s.state is BreakerState.OPEN)
        assert len(s.failures) < max(threshold, 1)
