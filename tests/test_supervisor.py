"""Tests of nekobot.core.supervisor and its parts (child_fault, intensity, child_state).

Policy: no network; every time-dependent test runs under the ``autojump_clock``
fixture and asserts the exact Trio-clock schedule; no real sleeps.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from nekobot.core.backoff import Backoff
from nekobot.core.child_fault import split_fault
from nekobot.core.supervisor import (
    BRUTAL_KILL,
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildNotFound,
    ChildRunning,
    ChildSpec,
    ChildStartError,
    ChildStatus,
    RestartIntensity,
    RestartIntensityExceeded,
    Supervisor,
    is_fault,
)

Log = list[tuple[float, str, str]]


class Boom(Exception):
    pass


def child(
    log: Log,
    cid: str,
    *,
    crash_after: float | None = None,
    crash_with: Callable[[], BaseException] = lambda: Boom("boom"),
    crashes: int | None = None,
    **spec_kw: Any,
) -> ChildSpec:
    """A child that logs start/stop; crashes ``crash_after`` s after starting
    (the first ``crashes`` runs only, if given), else runs until cancelled."""
    runs = [0]

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs[0] += 1
        log.append((trio.current_time(), "start", cid))
        task_status.started()
        try:
            if crash_after is not None and (crashes is None or runs[0] <= crashes):
                await trio.sleep(crash_after)
                log.append((trio.current_time(), "crash", cid))
                raise crash_with()
            await trio.sleep_forever()
        finally:
            log.append((trio.current_time(), "exit", cid))

    return ChildSpec(cid, start, **spec_kw)


def starts(log: Log, cid: str) -> list[float]:
    return [t for t, ev, c in log if ev == "start" and c == cid]


async def run_for(sup: Supervisor, seconds: float) -> None:
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(seconds)
        n.cancel_scope.cancel()


# ---- backoff ---------------------------------------------------------------


def test_backoff_bounds_and_cap() -> None:
    b = Backoff(minimum=1.0, maximum=10.0, factor=2.0, jitter=0.5)
    rng = random.Random(1)
    for attempt in range(12):
        lo, hi = b.bounds(attempt)
        for _ in range(50):
            d = b.delay(attempt, rng)
            assert lo <= d <= hi <= 10.0
    # jitter is applied before the cap: the cap is reached exactly, never passed
    assert b.bounds(6) == (10.0, 10.0)
    assert Backoff(minimum=0.0, maximum=5.0).delay(3) == 0.0
    assert Backoff(minimum=1.0, maximum=5.0).delay(10_000) == 5.0


async def test_exact_backoff_schedule_then_cap(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "a", crash_after=0.0), child(log, "healthy")],
        max_restarts=100,
        period=1000.0,
        backoff=Backoff(minimum=1.0, maximum=8.0, factor=2.0, jitter=0.0, reset_after=5.0),
    )
    await run_for(sup, 40.0)
    # delays 1, 2, 4, 8, then capped at 8
    assert starts(log, "a") == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0]
    assert starts(log, "healthy") == [0.0]
    assert [e for e in log if e[2] == "healthy"] == [
        (0.0, "start", "healthy"),
        (40.0, "exit", "healthy"),
    ]


async def test_jittered_delays_within_bounds_never_above_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    backoff = Backoff(minimum=1.0, maximum=6.0, factor=2.0, jitter=0.5, reset_after=5.0)
    sup = Supervisor(
        [child(log, "a", crash_after=0.0)],
        max_restarts=100,
        period=1000.0,
        backoff=backoff,
        rng=random.Random(7),
    )
    await run_for(sup, 200.0)
    times = starts(log, "a")
    delays = [b - a for a, b in itertools.pairwise(times)]
    assert len(delays) > 10
    for n, d in enumerate(delays):
        lo, hi = backoff.bounds(n)
        assert lo - 1e-9 <= d <= hi + 1e-9
        assert d <= 6.0 + 1e-9
    assert delays[0] != delays[1] / 2  # jitter really applied (seeded)


async def test_backoff_resets_after_healthy_running(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    runs = [0]

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runs[0] += 1
        log.append((trio.current_time(), "start", "a"))
        task_status.started()
        # runs 1-3 crash at once, run 4 runs 10 s (> reset_after) then crashes, then at once
        await trio.sleep(10.0 if runs[0] == 4 else 0.0)
        raise Boom(f"run {runs[0]}")

    sup = Supervisor(
        [ChildSpec("a", start)],
        max_restarts=100,
        period=1000.0,
        backoff=Backoff(minimum=1.0, maximum=100.0, factor=2.0, jitter=0.0, reset_after=5.0),
    )
    await run_for(sup, 22.5)
    # 0 ->(1) 1 ->(2) 3 ->(4) 7, runs 10 s, crash at 17 ->(1, reset) 18 ->(2) 20
    assert starts(log, "a") == [0.0, 1.0, 3.0, 7.0, 18.0, 20.0]


# ---- faults ------------------------------------------------------------------


async def test_system_exit_in_child_is_a_fault_and_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []

    def exit1() -> BaseException:
        return SystemExit(1)

    sup = Supervisor(
        [
            child(log, "sib1"),
            child(log, "bad", crash_after=1.0, crash_with=exit1, crashes=2),
            child(log, "sib2"),
        ],
        max_restarts=5,
        period=60.0,
        backoff=Backoff(minimum=0.5, maximum=5.0, jitter=0.0, reset_after=30.0),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(10.0)
        assert sup.child_info("bad").status is ChildStatus.RUNNING
        assert sup.child_info("bad").restart_count == 2
        records = sup.get_fault_records("bad")
        assert [r.error_type for r in records] == ["SystemExit", "SystemExit"]
        assert "raise crash_with()" in records[0].traceback_str
        assert "SystemExit: 1" in records[0].traceback_str
        n.cancel_scope.cancel()
    # bad: 0 ->crash 1 ->(0.5) 1.5 ->crash 2.5 ->(1.0) 3.5 runs on
    assert starts(log, "bad") == [0.0, 1.5, 3.5]
    # the siblings were never interrupted
    for sib in ("sib1", "sib2"):
        assert [(ev, t) for t, ev, c in log if c == sib] == [("start", 0.0), ("exit", 10.0)]


class CustomBase(BaseException):
    """A custom ``BaseException`` subclass (not an ``Exception``)."""


def _exit3() -> BaseException:
    sys.exit(3)  # the real call: raises SystemExit(3) from here


def _group_of_two() -> BaseException:
    return BaseExceptionGroup("two", [KeyboardInterrupt(), CustomBase("x")])


BASE_EXCEPTIONS: list[tuple[str, Callable[[], BaseException], str]] = [
    ("keyboard_interrupt", KeyboardInterrupt, "KeyboardInterrupt"),
    ("generator_exit", GeneratorExit, "GeneratorExit"),
    ("custom_subclass", lambda: CustomBase("custom"), "CustomBase"),
    ("sys_exit_3", _exit3, "SystemExit"),
    ("group_of_two", _group_of_two, "BaseExceptionGroup"),
]


@pytest.mark.parametrize(
    ("make", "error_type"),
    [(m, t) for _, m, t in BASE_EXCEPTIONS],
    ids=[i for i, _, _ in BASE_EXCEPTIONS],
)
async def test_any_base_exception_in_a_child_is_a_fault_restarted_on_schedule(
    autojump_clock: trio.testing.MockClock,
    make: Callable[[], BaseException],
    error_type: str,
) -> None:
    log: Log = []
    statuses: list[tuple[float, str, ChildStatus]] = []
    sup = Supervisor(
        [
            child(log, "sib1"),
            child(log, "bad", crash_after=1.0, crash_with=make, crashes=2),
            child(log, "sib2"),
        ],
        max_restarts=5,
        period=60.0,
        backoff=Backoff(minimum=0.5, maximum=5.0, jitter=0.0, reset_after=30.0),
        on_status=lambda cid, st, _e: statuses.append((trio.current_time(), cid, st)),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(10.0)
        info = sup.child_info("bad")
        assert info.status is ChildStatus.RUNNING
        assert info.restart_count == 2
        assert type(info.last_error).__name__ == error_type
        records = sup.get_fault_records("bad")
        assert [r.error_type for r in records] == [error_type, error_type]
        assert [r.phase for r in records] == ["run", "run"]
        assert all(r.child_id == "bad" for r in records)
        # the real traceback, down to the line that raised
        assert "raise crash_with()" in records[0].traceback_str
        assert error_type in records[0].traceback_str
        n.cancel_scope.cancel()
    # bad: 0 ->crash 1 ->(0.5) 1.5 ->crash 2.5 ->(1.0) 3.5 runs on
    assert starts(log, "bad") == [0.0, 1.5, 3.5]
    restarting = [t for t, c, st in statuses if c == "bad" and st is ChildStatus.RESTARTING]
    assert restarting == [1.0, 2.5]
    # the siblings were never interrupted
    for sib in ("sib1", "sib2"):
        assert [(ev, t) for t, ev, c in log if c == sib] == [("start", 0.0), ("exit", 10.0)]


async def test_keyboard_interrupt_before_started_is_a_start_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []

    async def interrupted(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1.0)
        raise KeyboardInterrupt

    sup = Supervisor([child(log, "sib")])
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        with pytest.raises(ChildStartError, match="'k' failed to start: KeyboardInterrupt") as info:
            await sup.start_child(ChildSpec("k", interrupted))
        assert isinstance(info.value.error, KeyboardInterrupt)
        assert info.value.__cause__ is info.value.error
        assert trio.current_time() == 1.0
        assert sup.child_info("sib").status is ChildStatus.RUNNING
        # an initial child: run raises the start error, not KeyboardInterrupt
        other = Supervisor([ChildSpec("k", interrupted)])
        with pytest.raises(ChildStartError) as info2:
            await n.start(other.run)
        assert isinstance(info2.value.error, KeyboardInterrupt)
        await trio.sleep(1.0)
        n.cancel_scope.cancel()
    assert [(t, ev, c) for t, ev, c in log] == [(0.0, "start", "sib"), (3.0, "exit", "sib")]


def _group_on_cancel(log: Log, cid: str) -> ChildSpec:
    """When cancelled, its nursery ends with Cancelled beside a KeyboardInterrupt."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async def cleanup_fails() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise KeyboardInterrupt

        log.append((trio.current_time(), "start", cid))
        async with trio.open_nursery() as n:
            n.start_soon(cleanup_fails)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                log.append((trio.current_time(), "exit", cid))

    return ChildSpec(cid, start)


async def test_fault_while_stopping_is_recorded_and_stop_still_completes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sup = Supervisor([child(log, "sib"), _group_on_cancel(log, "g"), _group_on_cancel(log, "h")])
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(1.0)
        await sup.terminate_child("g")
        assert sup.child_info("g").status is ChildStatus.STOPPED
        [rec] = sup.get_fault_records("g")
        assert rec.phase == "stop"
        assert "KeyboardInterrupt" in rec.traceback_str
        await trio.sleep(1.0)
        assert sup.child_info("sib").status is ChildStatus.RUNNING
        n.cancel_scope.cancel()  # cancelling the supervisor still stops everything
    assert trio.current_time() == 2.0
    assert [(t, ev, c) for t, ev, c in log if ev == "exit"] == [
        (1.0, "exit", "g"),
        (2.0, "exit", "h"),
        (2.0, "exit", "sib"),
    ]
    assert [r.phase for r in sup.get_fault_records("h")] == ["stop"]


def _mixed_group(outer: trio.CancelScope | None) -> ChildSpec:
    """Runs 1 s, then raises a real ``trio.Cancelled`` beside a fault; cancels
    ``outer`` first if given (so a cancellation is in effect when it arrives)."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1.0)
        with trio.CancelScope() as cs:
            cs.cancel()
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled as exc:
                cancelled = exc
        if outer is not None:
            outer.cancel()
        raise BaseExceptionGroup("mixed", [cancelled, CustomBase("bug")])

    return ChildSpec("m", start)


async def test_a_group_holding_cancelled_propagates_and_the_rest_is_the_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    statuses: list[tuple[float, ChildStatus]] = []
    outer = trio.CancelScope()
    sup = Supervisor(
        [child(log, "sib"), _mixed_group(outer)],
        max_restarts=10,
        on_status=lambda cid, st, _e: (
            statuses.append((trio.current_time(), st)) if cid == "m" else None
        ),
    )
    with outer:
        await sup.run()
    # the Cancelled part went on up to the cancelled scope: the supervisor stopped
    assert outer.cancelled_caught
    assert trio.current_time() == 1.0
    assert [(t, ev, c) for t, ev, c in log] == [(0.0, "start", "sib"), (1.0, "exit", "sib")]
    # the rest is the fault: recorded with its traceback, the child not restarted
    [rec] = sup.get_fault_records("m")
    assert (rec.error_type, rec.phase) == ("BaseExceptionGroup", "run")
    assert "CustomBase: bug" in rec.traceback_str
    assert rec.traceback_str.count("Cancelled") == 0
    assert (1.0, ChildStatus.FAILED) in statuses
    assert ChildStatus.RESTARTING not in [st for _, st in statuses]


async def test_a_stray_cancelled_is_part_of_the_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Nothing above is cancelled: re-raising it would silently end the supervisor."""
    log: Log = []
    sup = Supervisor(
        [child(log, "sib"), _mixed_group(None)],
        max_restarts=100,
        period=1000.0,
        backoff=Backoff(minimum=2.0, maximum=2.0, jitter=0.0),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(6.5)
        # crashed at 1 ->(2) 3, crashed at 4 ->(2) 6: the supervisor lives on
        assert sup.child_info("m").restart_count == 2
        assert sup.child_info("m").status is ChildStatus.RUNNING
        records = sup.get_fault_records("m")
        assert [r.error_type for r in records] == ["BaseExceptionGroup"] * 2
        assert "Cancelled" in records[0].traceback_str  # the whole group is the fault
        n.cancel_scope.cancel()
    assert trio.current_time() == 6.5
    assert [(t, ev, c) for t, ev, c in log] == [(0.0, "start", "sib"), (6.5, "exit", "sib")]


async def test_fault_classification() -> None:
    with trio.CancelScope() as cs:
        cs.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            cancelled = exc
    for e in (ValueError(), SystemExit(1), KeyboardInterrupt(), GeneratorExit(), CustomBase()):
        assert is_fault(e)
        assert split_fault(e) == (e, None)
    assert is_fault(ExceptionGroup("g", [ValueError()]))
    assert is_fault(BaseExceptionGroup("g", [ValueError(), KeyboardInterrupt()]))
    assert not is_fault(cancelled)
    assert split_fault(cancelled) == (None, cancelled)
    ki = KeyboardInterrupt()
    mixed = BaseExceptionGroup("g", [ValueError(), BaseExceptionGroup("h", [cancelled, ki])])
    assert not is_fault(mixed)
    fault, cancel = split_fault(mixed)
    assert isinstance(fault, BaseExceptionGroup) and isinstance(cancel, BaseExceptionGroup)
    assert fault.subgroup(trio.Cancelled) is None
    assert fault.subgroup(lambda e: e is ki) is not None
    assert cancel.subgroup(lambda e: e is cancelled) is not None
    assert cancel.split(trio.Cancelled)[1] is None  # nothing but cancellation


async def test_hooks_that_raise_base_exceptions_are_contained(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []

    async def handler(cid: str, exc: BaseException, ctx: dict[str, Any]) -> bool:
        raise KeyboardInterrupt

    def on_status(cid: str, st: ChildStatus, err: BaseException | None) -> None:
        raise CustomBase("status hook bug")

    sup = Supervisor(
        [child(log, "a", crash_after=1.0, crashes=1)],
        max_restarts=10,
        fault_handler=handler,
        on_status=on_status,
        backoff=Backoff(minimum=2.0, maximum=2.0, jitter=0.0),
    )
    await run_for(sup, 5.0)
    assert starts(log, "a") == [0.0, 3.0]  # restarted after the 2 s delay all the same


# ---- restart types -------------------------------------------------------------


async def test_restart_types(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []

    def returning(cid: str, *, fail: bool, **kw: Any) -> ChildSpec:
        async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            log.append((trio.current_time(), "start", cid))
            task_status.started()
            await trio.sleep(1.0)
            if fail:
                raise Boom(cid)

        return ChildSpec(cid, start, **kw)

    sup = Supervisor(
        [
            returning("perm_ok", fail=False, restart="permanent"),
            returning("trans_ok", fail=False, restart="transient"),
            returning("trans_fail", fail=True, restart="transient"),
            returning("temp_fail", fail=True, restart="temporary"),
        ],
        max_restarts=100,
        period=1000.0,
    )
    await run_for(sup, 3.5)
    assert starts(log, "perm_ok") == [0.0, 1.0, 2.0, 3.0]
    assert starts(log, "trans_ok") == [0.0]
    assert starts(log, "trans_fail") == [0.0, 1.0, 2.0, 3.0]
    assert starts(log, "temp_fail") == [0.0]
    ids = [c.id for c in sup.which_children()]
    assert "temp_fail" not in ids  # a temporary child's spec goes when it ends
    assert sup.child_info("trans_ok").status is ChildStatus.STOPPED


# ---- strategies ------------------------------------------------------------------


def _events_after(log: Log, t: float) -> list[tuple[str, str]]:
    return [(ev, c) for tt, ev, c in log if tt >= t]


async def test_one_for_all_restarts_everyone_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "a"), child(log, "b", crash_after=1.0, crashes=1), child(log, "c")],
        strategy="one_for_all",
        max_restarts=10,
        backoff=Backoff(minimum=0.5, maximum=1.0, jitter=0.0),
    )
    await run_for(sup, 5.0)
    assert [(t, ev, c) for t, ev, c in log if 0 < t < 5] == [
        (1.0, "crash", "b"),
        (1.0, "exit", "b"),
        (1.0, "exit", "c"),  # reverse order
        (1.0, "exit", "a"),
        (1.5, "start", "a"),  # then in order, after the backoff delay
        (1.5, "start", "b"),
        (1.5, "start", "c"),
    ]
    assert [(ev, c) for t, ev, c in log if t == 5.0] == [
        ("exit", "c"),
        ("exit", "b"),
        ("exit", "a"),
    ]


async def test_rest_for_one_restarts_the_rest_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sup = Supervisor(
        [
            child(log, "a"),
            child(log, "b", crash_after=1.0, crashes=1),
            child(log, "c"),
            child(log, "d"),
        ],
        strategy="rest_for_one",
        max_restarts=10,
    )
    await run_for(sup, 5.0)
    assert [(ev, c) for t, ev, c in log if 0 < t < 5] == [
        ("crash", "b"),
        ("exit", "b"),
        ("exit", "d"),
        ("exit", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    assert starts(log, "a") == [0.0]


async def test_one_for_all_skips_stopped_children(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "a"), child(log, "b", crash_after=2.0, crashes=1), child(log, "c")],
        strategy="one_for_all",
        max_restarts=10,
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await sup.terminate_child("c")
        await trio.sleep(5.0)
        assert sup.child_info("c").status is ChildStatus.STOPPED
        n.cancel_scope.cancel()
    assert starts(log, "a") == [0.0, 2.0]
    assert starts(log, "b") == [0.0, 2.0]
    assert starts(log, "c") == [0.0]


async def test_group_restart_goes_on_when_the_failed_child_is_terminated(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "a"), child(log, "b", crash_after=1.0, crashes=1), child(log, "c")],
        strategy="one_for_all",
        max_restarts=10,
        backoff=Backoff(minimum=2.0, maximum=2.0, jitter=0.0),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(1.5)  # b crashed at 1, a and c stopped, restart due at 3
        assert {c.id: c.status for c in sup.which_children()} == {
            "a": ChildStatus.RESTARTING,
            "b": ChildStatus.RESTARTING,
            "c": ChildStatus.RESTARTING,
        }
        await sup.terminate_child("b")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.child_info("a").status is ChildStatus.RUNNING
        assert sup.child_info("c").status is ChildStatus.RUNNING
        assert sup.child_info("b").status is ChildStatus.STOPPED
        n.cancel_scope.cancel()
    assert starts(log, "a") == [0.0, 1.5] and starts(log, "c") == [0.0, 1.5]
    assert starts(log, "b") == [0.0]


# ---- intensity -----------------------------------------------------------------


async def test_root_escalates_with_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "sib"), child(log, "bad", crash_after=1.0)],
        name="root",
        max_restarts=2,
        period=10.0,
    )
    with pytest.raises(
        RestartIntensityExceeded, match=r"root.*'bad'.*more than 2 restarts within 10\.0 s"
    ):
        await sup.run()  # the error itself, not wrapped in a group
    assert starts(log, "bad") == [0.0, 1.0, 2.0]
    # the sibling was stopped in order before the error came out
    assert log[-1] == (3.0, "exit", "sib")
    # the error names the child and carries its exception
    with pytest.raises(RestartIntensityExceeded) as info:
        await Supervisor([child(log, "bad2", crash_after=1.0)], max_restarts=0).run()
    assert info.value.child_id == "bad2"
    assert isinstance(info.value.error, Boom) and info.value.__cause__ is info.value.error


async def test_isolating_supervisor_isolates_only_that_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    isolated: list[tuple[str, str]] = []
    sup = Supervisor(
        [child(log, "sib"), child(log, "bad", crash_after=1.0)],
        max_restarts=2,
        period=10.0,
        on_intensity="isolate",
        on_isolate=lambda cid, why: isolated.append((cid, why)),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(20.0)
        assert sup.child_info("bad").status is ChildStatus.ISOLATED
        assert sup.child_info("sib").status is ChildStatus.RUNNING
        assert sup.count_children().isolated == 1
        assert isolated == [("bad", "more than 2 restarts within 10.0 s")]
        await sup.restart_child("bad")  # a person restarts it: the window starts over
        assert sup.child_info("bad").status is ChildStatus.RUNNING
        n.cancel_scope.cancel()
    assert starts(log, "bad") == [0.0, 1.0, 2.0, 20.0]
    assert starts(log, "sib") == [0.0]


async def test_intensity_window_slides(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor([child(log, "slow", crash_after=5.5)], max_restarts=2, period=10.0)
    await run_for(sup, 50.0)  # one restart every 5.5 s: at most 2 within any 10 s
    assert starts(log, "slow") == [5.5 * k for k in range(10)]


async def test_fault_handler_veto_isolates(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    seen: list[tuple[str, str, str]] = []

    async def handler(cid: str, exc: BaseException, ctx: dict[str, Any]) -> bool:
        seen.append((cid, type(exc).__name__, ctx["source"]))
        return len(seen) < 2

    sup = Supervisor([child(log, "a", crash_after=1.0)], max_restarts=10, fault_handler=handler)
    await run_for(sup, 10.0)
    assert seen == [("a", "Boom", "supervisor"), ("a", "Boom", "supervisor")]
    assert starts(log, "a") == [0.0, 1.0]
    assert sup.child_info("a").status is ChildStatus.STOPPED  # stopped at the end


# ---- dynamic children -------------------------------------------------------------


async def test_dynamic_children_and_otp_errors(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor()
    up = trio.Event()

    async def slow_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(2.0)
        up.set()
        task_status.started()
        await trio.sleep_forever()

    async def bad_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(1.0)
        raise OSError("port in use")

    async with trio.open_nursery() as n:
        await n.start(sup.run)
        t0 = trio.current_time()
        await sup.start_child(ChildSpec("slow", slow_start))
        assert up.is_set() and trio.current_time() - t0 == 2.0  # returns once started()
        assert sup.child_info("slow").status is ChildStatus.RUNNING

        with pytest.raises(ChildStartError) as info:
            await sup.start_child(ChildSpec("bad", bad_start))
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(ChildNotFound):
            sup.child_info("bad")  # a failed start_child keeps no spec

        with pytest.raises(ChildAlreadyStarted):
            await sup.start_child(ChildSpec("slow", slow_start))
        with pytest.raises(ChildRunning):
            await sup.restart_child("slow")
        with pytest.raises(ChildRunning):
            await sup.delete_child("slow")

        await sup.start_child(child(log, "x"))
        await sup.terminate_child("x")
        assert sup.child_info("x").status is ChildStatus.STOPPED
        assert log[-1][1:] == ("exit", "x")
        with pytest.raises(ChildAlreadyPresent):
            await sup.start_child(child(log, "x"))
        await sup.restart_child("x")
        assert sup.child_info("x").status is ChildStatus.RUNNING
        counts = sup.count_children()
        assert (counts.specs, counts.active) == (2, 2)
        assert [c.id for c in sup.which_children()] == ["slow", "x"]
        await sup.terminate_child("x")
        await sup.delete_child("x")
        for call in (sup.terminate_child, sup.restart_child, sup.delete_child):
            with pytest.raises(ChildNotFound):
                await call("x")
        n.cancel_scope.cancel()


async def test_start_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async def stuck(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep_forever()  # never calls started()

    async def late(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(4.0)
        task_status.started()
        await trio.sleep_forever()  # runs on well past the start timeout

    sup = Supervisor(start_timeout=5.0)
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        with pytest.raises(ChildStartError, match=r"within 5\.0 s") as info:
            await sup.start_child(ChildSpec("stuck", stuck))
        assert isinstance(info.value.error, trio.TooSlowError)
        assert trio.current_time() == 5.0
        await sup.start_child(ChildSpec("late", late))
        await trio.sleep(100.0)
        assert sup.child_info("late").status is ChildStatus.RUNNING
        n.cancel_scope.cancel()


async def test_terminate_cancels_a_pending_restart(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor(
        [child(log, "a", crash_after=1.0)],
        max_restarts=10,
        backoff=Backoff(minimum=5.0, maximum=5.0, jitter=0.0),
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(2.0)
        assert sup.child_info("a").status is ChildStatus.RESTARTING
        assert sup.child_info("a").next_restart_at == 6.0
        await sup.terminate_child("a")
        await trio.sleep(20.0)
        assert sup.child_info("a").status is ChildStatus.STOPPED
        n.cancel_scope.cancel()
    assert starts(log, "a") == [0.0]


async def test_initial_child_that_fails_to_start_fails_run() -> None:
    log: Log = []

    async def bad(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ValueError("bad config")

    sup = Supervisor([child(log, "a"), ChildSpec("b", bad)])
    async with trio.open_nursery() as n:
        with pytest.raises(ChildStartError, match="'b' failed to start: ValueError: bad config"):
            await n.start(sup.run)
    assert [(ev, c) for _, ev, c in log] == [("start", "a"), ("exit", "a")]


# ---- shutdown ------------------------------------------------------------------------


def stubborn(log: Log, cid: str, ignore_for: float, **kw: Any) -> ChildSpec:
    """Ignores cancellation for ``ignore_for`` seconds (a shielded cleanup with a deadline)."""

    async def start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        log.append((trio.current_time(), "start", cid))
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as cs:
                cs.deadline = trio.current_time() + ignore_for
                await trio.sleep_forever()
            log.append((trio.current_time(), "exit", cid))

    return ChildSpec(cid, start, **kw)


async def test_stop_order_is_reverse_of_start(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor([child(log, c) for c in "abcd"])
    await run_for(sup, 1.0)
    assert [(ev, c) for _, ev, c in log] == [
        *[("start", c) for c in "abcd"],
        *[("exit", c) for c in "dcba"],
    ]


async def test_shutdown_is_bounded_by_the_deadlines(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    sup = Supervisor(
        [
            child(log, "a", shutdown=1.0),
            stubborn(log, "b", ignore_for=10.0, shutdown=2.0),
            stubborn(log, "c", ignore_for=0.5, shutdown=2.0),
        ]
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(1.0)
        n.cancel_scope.cancel()
    end = trio.current_time()
    exits = {c: t for t, ev, c in log if ev == "exit"}
    # reverse order: c cleans up in 0.5 s (< its deadline); b, cancelled at 1.5,
    # overruns its 2 s deadline, so the supervisor moves on to a at 3.5; the
    # tree ends when b's own shield ends (1.5 + 10)
    assert exits == {"c": 1.5, "a": 3.5, "b": 11.5}
    assert end == 11.5


async def test_graceful_stop_hook_then_cancel(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []
    asked = trio.Event()

    async def polite(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await asked.wait()
        await trio.sleep(1.0)  # finishes its work, then returns by itself
        log.append((trio.current_time(), "exit", "polite"))

    async def deaf(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            await trio.sleep_forever()  # ignores the stop request
        finally:
            log.append((trio.current_time(), "exit", "deaf"))

    sup = Supervisor(
        [
            ChildSpec("deaf", deaf, shutdown=3.0, stop=lambda: None),
            ChildSpec("polite", polite, shutdown=3.0, stop=asked.set),
            child(log, "brutal", shutdown=BRUTAL_KILL),
        ]
    )
    await run_for(sup, 1.0)
    assert log[-3:] == [(1.0, "exit", "brutal"), (2.0, "exit", "polite"), (5.0, "exit", "deaf")]


async def test_terminate_child_waits_for_the_real_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    sup = Supervisor([stubborn(log, "b", ignore_for=4.0, shutdown=1.0)])
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await sup.terminate_child("b")
        assert trio.current_time() == 4.0  # its port would be released by now
        assert sup.child_info("b").status is ChildStatus.STOPPED
        n.cancel_scope.cancel()


async def test_auto_shutdown_any_significant(autojump_clock: trio.testing.MockClock) -> None:
    log: Log = []

    async def job(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(3.0)

    sup = Supervisor(
        [child(log, "a"), ChildSpec("job", job, restart="transient", significant=True)],
        auto_shutdown="any_significant",
    )
    async with trio.open_nursery() as n:
        await n.start(sup.run)
    assert trio.current_time() == 3.0
    assert log == [(0.0, "start", "a"), (3.0, "exit", "a")]


# ---- the process lives on ----------------------------------------------------------

_PROCESS_SCRIPT = """
import sys, trio, trio.testing
from nekobot.core.supervisor import ChildSpec, Supervisor

async def bad(*, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    await trio.sleep(1.0)
    sys.exit(3)

async def interrupted(*, task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    await trio.sleep(1.5)
    raise KeyboardInterrupt

async def main():
    sup = Supervisor([ChildSpec("bad", bad), ChildSpec("ki", interrupted)], max_restarts=100,
                     period=1000.0)
    async with trio.open_nursery() as n:
        await n.start(sup.run)
        await trio.sleep(10.0)
        print(sup.child_info("bad").restart_count, sup.child_info("ki").restart_count)
        n.cancel_scope.cancel()

trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
print("alive")
"""


def test_sys_exit_and_keyboard_interrupt_in_children_do_not_end_the_process() -> None:
    """Under the mock clock in a subprocess: exit code 0, not 3 or 130."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROCESS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # bad exits at 1, 2, ... 9 (zero backoff); ki at 1.5, 3, ... 9
    assert proc.stdout.split() == ["9", "6", "alive"]


# ---- intensity window ---------------------------------------------------------------


def test_restart_intensity_window_is_exact() -> None:
    w = RestartIntensity(max_restarts=2, period=10.0)
    assert w.note(0.0) and w.note(5.0)
    assert not w.note(9.9)  # three within 10 s
    assert w.note(15.0)  # 0.0 and 5.0 have left the window (t <= now - period)
    assert len(w) == 2
    w.clear()
    assert len(w) == 0 and w.note(15.0)
    with pytest.raises(ValueError):
        RestartIntensity(max_restarts=-1, period=1.0)
    with pytest.raises(ValueError):
        RestartIntensity(max_restarts=1, period=0.0)
