"""MessageRouter: priority, dedup window, retries, dead letters, backpressure.

Policy: no I/O; the ``autojump_clock`` fixture for anything about time (tests
assert exact Trio-clock schedules); ``wait_all_tasks_blocked`` to let the
router settle; no real sleeps.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing

from nekobot.config.schema import RouterConfig
from nekobot.errors import CallTimeout, InvalidRequest
from nekobot.messages import Message, MessagePriority
from nekobot.monitor.status_monitor import StatusMonitor
from nekobot.routing.message_router import DeadLetter, Handler, MessageRouter

P = MessagePriority


def make_router(**cfg: object) -> MessageRouter:
    return MessageRouter.from_config(RouterConfig(**cfg))  # type: ignore[arg-type]


def assert_conserved(router: MessageRouter) -> None:
    s = router.get_stats()
    assert s.received == (
        s.processed
        + s.dead_lettered
        + s.deduplicated
        + s.dropped
        + s.queued
        + s.retry_waiting
        + s.in_flight
    )


async def test_strict_priority_order_and_fifo_within_priority() -> None:
    router = make_router(max_concurrency=1)
    seen: list[tuple[int, int]] = []

    async def handler(m: Message) -> None:
        seen.append((m.priority, m.content))
        await trio.lowlevel.checkpoint()

    router.register_handler("message", handler)
    order = [P.LOW, P.HIGH, P.NORMAL, P.CRITICAL, P.LOW, P.HIGH, P.NORMAL, P.CRITICAL] * 25
    for i, p in enumerate(order):  # queued before the worker runs: a loaded queue
        assert await router.route_message("qq", "message", i, p)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    expected = sorted(((p, i) for i, p in enumerate(order)), key=lambda x: (-x[0], x[1]))
    assert seen == expected
    assert router.get_stats().processed == len(order)
    assert_conserved(router)


async def test_strict_priority_starves_low_while_high_keeps_coming() -> None:
    """The documented policy is strict priority (no aging): LOW waits."""
    router = make_router(max_concurrency=1)
    log: list[str] = []
    high_left = 30

    async def handler(m: Message) -> None:
        nonlocal high_left
        log.append(m.priority.name)
        if m.priority == P.HIGH and high_left:
            high_left -= 1
            await router.route_message("qq", "message", "more", P.HIGH)
        await trio.lowlevel.checkpoint()

    router.register_handler("message", handler)
    for _ in range(5):
        await router.route_message("qq", "message", "low", P.LOW)
    await router.route_message("qq", "message", "high", P.HIGH)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert log == ["HIGH"] * 31 + ["LOW"] * 5


async def test_priority_under_concurrent_load() -> None:
    """While a LOW flood keeps the queue full, a HIGH message jumps every LOW."""
    router = make_router(max_concurrency=1, max_queue_size=50)
    log: list[str] = []

    async def handler(m: Message) -> None:
        log.append(m.content)
        await trio.lowlevel.checkpoint()

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)

        async def flood() -> None:
            for i in range(300):
                await router.route_message("qq", "message", f"low{i}", P.LOW)

        nursery.start_soon(flood)
        while len(log) < 100:
            await trio.lowlevel.checkpoint()
        queued_low = router.get_stats().queue_size["LOW"]
        assert queued_low > 0
        await router.route_message("qq", "message", "high", P.HIGH)
        pos = len(log)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # the HIGH message was the very next one taken (at most the one in flight before it)
    assert "high" in log[pos : pos + 2]
    assert len(log) == 301


async def test_dedup_inside_and_after_window(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dedup_window=300.0)
    handled: list[str] = []

    async def handler(m: Message) -> None:
        handled.append(m.message_id)

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        assert await router.route_message("qq", "message", {}, dedup_key=(1, 42))
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        # another platform with the same key is another message
        assert await router.route_message("tg", "message", {}, dedup_key=(1, 42))
        await trio.sleep(299.9)
        assert not await router.route_message("qq", "message", {}, dedup_key=(1, 42))
        await trio.sleep(0.1)
        assert trio.current_time() - t0 == pytest.approx(300.0)
        assert await router.route_message("qq", "message", {}, dedup_key=(1, 42))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(handled) == 3
    s = router.get_stats()
    assert (s.deduplicated, s.processed) == (1, 3)
    assert_conserved(router)


async def test_no_dedup_key_is_never_deduplicated() -> None:
    router = make_router()
    assert await router.route_message("qq", "message", {})
    assert await router.route_message("qq", "message", {})
    assert router.get_stats().queued == 2


async def test_dedup_disabled() -> None:
    router = MessageRouter(enable_dedup=False)
    assert await router.route_message("qq", "message", {}, dedup_key=1)
    assert await router.route_message("qq", "message", {}, dedup_key=1)
    assert router.get_stats().deduplicated == 0


async def test_duplicate_while_queued_and_in_flight_is_dropped() -> None:
    router = make_router()
    release = trio.Event()
    handled: list[Message] = []

    async def handler(m: Message) -> None:
        await release.wait()
        handled.append(m)

    router.register_handler("message", handler)
    assert await router.route_message("qq", "message", "first", dedup_key="k")
    assert not await router.route_message("qq", "message", "queued-dup", dedup_key="k")
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        assert router.get_stats().in_flight == 1
        assert not await router.route_message("qq", "message", "inflight-dup", dedup_key="k")
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert not await router.route_message("qq", "message", "seen-dup", dedup_key="k")
        nursery.cancel_scope.cancel()
    assert [m.content for m in handled] == ["first"]
    assert router.get_stats().deduplicated == 3


async def test_dead_letter_after_max_retries_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mon = StatusMonitor()
    router = MessageRouter.from_config(RouterConfig(max_retries=2, retry_backoff=0.5), monitor=mon)
    attempts: list[float] = []

    async def broken(m: Message) -> None:
        attempts.append(trio.current_time())
        raise ValueError("boom")

    router.register_handler("notice", broken, name="broken")
    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        await nursery.start(router.run)
        await router.route_message("qq", "notice", {"x": 1}, dedup_key="n1")
        await trio.sleep(10)
        await mon.flush()
        nursery.cancel_scope.cancel()
    t0 = attempts[0]
    assert [t - t0 for t in attempts] == [0.0, 0.5, 1.5]
    s = router.get_stats()
    assert (s.failed, s.retried, s.dead_lettered, s.processed) == (3, 2, 1, 0)
    (dl,) = s.dead_letters
    assert isinstance(dl, DeadLetter)
    assert dl.attempts == 3 and dl.handlers == ("broken",) and dl.error_type == "ValueError"
    assert dl.message.content == {"x": 1}
    assert dl.at - t0 == 1.5
    # recorded at the monitor as a handler fault and a failed message
    st = mon.get_platform_status("qq")
    assert (st.throughput_last_minute, st.error_count, st.error_breakdown) == (
        1,
        1,
        {"handler:ValueError": 1},
    )
    body, _ = mon.exposition()
    text = body.decode()
    assert (
        'nekobot_router_handler_errors_total{error_type="ValueError",handler="broken",'
        'message_type="notice"} 3.0' in text
    )
    assert 'nekobot_router_messages_total{outcome="dead_lettered"} 1.0' in text
    assert_conserved(router)


async def test_dead_letter_ring_is_bounded() -> None:
    router = make_router(max_retries=0, dead_letter_size=3)

    async def broken(m: Message) -> None:
        raise RuntimeError(m.content)

    router.register_handler("message", broken)
    for i in range(5):
        await router.route_message("qq", "message", i)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    s = router.get_stats()
    assert s.dead_lettered == 5
    assert [d.message.content for d in s.dead_letters] == [2, 3, 4]


async def test_failed_message_routed_again_is_handled() -> None:
    router = make_router(max_retries=0)
    calls: list[str] = []

    async def flaky(m: Message) -> None:
        calls.append(m.message_id)
        if len(calls) == 1:
            raise OSError("first try fails")

    router.register_handler("message", flaky)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        assert await router.route_message("qq", "message", {}, dedup_key=7)
        await trio.testing.wait_all_tasks_blocked()
        assert router.get_stats().dead_lettered == 1
        assert await router.route_message("qq", "message", {}, dedup_key=7)
        await trio.testing.wait_all_tasks_blocked()
        # now it succeeded: seen
        assert not await router.route_message("qq", "message", {}, dedup_key=7)
        nursery.cancel_scope.cancel()
    assert len(calls) == 2
    s = router.get_stats()
    assert (s.processed, s.dead_lettered, s.deduplicated) == (1, 1, 1)


async def test_failing_handler_never_blocks_others(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(max_concurrency=1, max_retries=3, retry_backoff=5.0)
    good_calls: list[str] = []
    other: list[float] = []

    async def bad(m: Message) -> None:
        raise KeyError("bad")

    async def good(m: Message) -> None:
        good_calls.append(m.message_id)

    async def other_type(m: Message) -> None:
        other.append(trio.current_time())

    router.register_handler("message", bad)
    router.register_handler("message", good)
    router.register_handler("notice", other_type)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        t0 = trio.current_time()
        await router.route_message("qq", "message", {})
        await router.route_message("qq", "notice", {})
        await trio.testing.wait_all_tasks_blocked()
        # the notice went through at once although the only worker met a failure
        assert other == [t0]
        assert router.get_stats().retry_waiting == 1
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    # the good handler ran once: only the failing handler is retried
    assert len(good_calls) == 1
    s = router.get_stats()
    assert (s.failed, s.retried, s.dead_lettered, s.processed) == (4, 3, 1, 1)


async def test_empty_router_is_blocked_not_spinning() -> None:
    router = make_router(max_concurrency=4)
    handled: list[Message] = []

    async def handler(m: Message) -> None:
        handled.append(m)

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        # a spinning worker (or timer) would keep this from ever returning
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert router.running
        await router.route_message("qq", "message", "x")
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert len(handled) == 1
        nursery.cancel_scope.cancel()
    assert not router.running


async def test_backpressure_blocks_route_when_full() -> None:
    router = make_router(max_queue_size=2)
    handled: list[int] = []

    async def handler(m: Message) -> None:
        handled.append(m.content)

    router.register_handler("message", handler)
    await router.route_message("qq", "message", 0)
    await router.route_message("qq", "message", 1)
    returned: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def third() -> None:
            returned.append(await router.route_message("qq", "message", 2))

        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == []  # waiting for room
        assert router.get_stats().queued == 2
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        assert returned == [True]
        nursery.cancel_scope.cancel()
    assert handled == [0, 1, 2]
    assert router.get_stats().dropped == 0


async def test_cancelled_wait_for_room_routes_nothing() -> None:
    router = make_router(max_queue_size=1)
    await router.route_message("qq", "message", 0)
    with trio.move_on_after(0.01):
        await router.route_message("qq", "message", 1)
    s = router.get_stats()
    assert (s.received, s.queued) == (1, 1)


async def test_drop_lowest_overflow() -> None:
    router = make_router(max_queue_size=3, overflow="drop_lowest")
    handled: list[str] = []

    async def handler(m: Message) -> None:
        handled.append(m.content)

    router.register_handler("message", handler)
    assert await router.route_message("qq", "message", "a", P.LOW)
    assert await router.route_message("qq", "message", "b", P.NORMAL)
    assert await router.route_message("qq", "message", "c", P.LOW)
    assert await router.route_message("qq", "message", "d", P.HIGH)  # drops a
    assert await router.route_message("qq", "message", "e", P.LOW)  # drops c
    assert await router.route_message("qq", "message", "f", P.CRITICAL)  # drops e
    # queue: b NORMAL, d HIGH, f CRITICAL; a LOW is lower than all of them
    assert not await router.route_message("qq", "message", "g", P.LOW, dedup_key="g")
    s = router.get_stats()
    assert s.dropped == 4 and s.queued == 3
    # a dropped message's key is not pending: routed again later, it is accepted
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        assert await router.route_message("qq", "message", "g", P.LOW, dedup_key="g")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert handled == ["f", "d", "b", "g"]
    assert_conserved(router)


async def test_dedup_entries_bounded_oldest_forgotten() -> None:
    router = make_router(max_dedup_entries=2)

    async def handler(m: Message) -> None:
        pass

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        for k in (1, 2, 3):
            await router.route_message("qq", "message", {}, dedup_key=k)
            await trio.testing.wait_all_tasks_blocked()
        assert router.get_stats().dedup_entries == 2
        assert not await router.route_message("qq", "message", {}, dedup_key=3)
        assert await router.route_message("qq", "message", {}, dedup_key=1)
        nursery.cancel_scope.cancel()


async def test_expired_keys_are_evicted(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router(dedup_window=10.0)

    async def handler(m: Message) -> None:
        pass

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        for k in range(5):
            await router.route_message("qq", "message", {}, dedup_key=k)
        await trio.testing.wait_all_tasks_blocked()
        assert router.get_stats().dedup_entries == 5
        await trio.sleep(11)
        await router.route_message("qq", "message", {}, dedup_key="new")
        await trio.testing.wait_all_tasks_blocked()
        assert router.get_stats().dedup_entries == 1
        nursery.cancel_scope.cancel()


async def test_sync_handlers_thread_unless_cheap() -> None:
    router = make_router()
    threads: dict[str, int] = {}
    done = trio.Event()

    def slow(m: Message) -> None:
        threads["slow"] = threading.get_ident()

    def cheap(m: Message) -> None:  # runs after slow, in the Trio thread
        threads["cheap"] = threading.get_ident()
        done.set()

    router.register_handler("message", slow)
    router.register_handler("message", cheap, cheap=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await router.route_message("qq", "message", {})
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert threads["cheap"] == threading.get_ident()
    assert threads["slow"] != threading.get_ident()


async def test_star_handler_unregister_and_stats(autojump_clock: trio.testing.MockClock) -> None:
    router = make_router()
    star: list[str] = []
    msgs: list[str] = []

    async def on_any(m: Message) -> None:
        star.append(m.message_type)

    async def on_message(m: Message) -> None:
        msgs.append(m.message_type)

    router.register_handler("*", on_any)
    router.register_handler("message", on_message)
    with pytest.raises(InvalidRequest):
        router.register_handler("message", on_message)
    assert router.get_stats().handlers == {"*": 1, "message": 1}
    await router.route_message("qq", "message", {}, P.HIGH)
    await router.route_message("qq", "notice", {})
    await router.route_message("qq", "meta_event", {}, P.LOW)
    s = router.get_stats()
    assert s.queue_size == {"CRITICAL": 0, "HIGH": 1, "NORMAL": 1, "LOW": 1}
    assert s.queue_wait_p50_ms is None
    await trio.sleep(2)  # they wait 2 s in the queue
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        s = router.get_stats()
        assert s.queue_wait_p50_ms == 2000.0 and s.queue_wait_p99_ms == 2000.0
        assert router.unregister_handler("message", on_message)
        assert not router.unregister_handler("message", on_message)
        await router.route_message("qq", "message", {})
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert star == ["message", "notice", "meta_event", "message"]
    assert msgs == ["message"]
    assert router.get_stats().handlers == {"*": 1}


async def test_unhandled_messages_are_processed_and_counted() -> None:
    router = make_router()
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await router.route_message("qq", "request", {}, dedup_key=1)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    s = router.get_stats()
    assert (s.processed, s.unhandled) == (1, 1)


async def test_route_stamps_message_and_validates_priority() -> None:
    router = make_router()
    got: list[Message] = []

    async def handler(m: Message) -> None:
        got.append(m)

    router.register_handler("message", handler)
    original = Message(platform_id="qq", message_type="message", content={"a": 1}, dedup_key=5)
    assert await router.route(original)
    with pytest.raises(InvalidRequest):
        await router.route_message("qq", "message", {}, 9)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    (m,) = got
    assert m.message_id != "" and m.received_at > 0 and m.content == {"a": 1}
    assert original.message_id == ""  # the caller's object is untouched


async def test_router_records_every_message_at_monitor() -> None:
    mon = StatusMonitor()
    router = MessageRouter.from_config(RouterConfig(), monitor=mon)

    async def handler(m: Message) -> None:
        pass

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(mon.run)
        await nursery.start(router.run)
        for i in range(20):
            await router.route_message("qq", "message", i)
        await router.route_message("qq", "message", 0, dedup_key="d")
        await router.route_message("qq", "message", 0, dedup_key="d")
        await trio.testing.wait_all_tasks_blocked()
        await mon.flush()
        nursery.cancel_scope.cancel()
    st = mon.get_platform_status("qq")
    assert st.throughput_last_minute == 21 and st.error_count == 0
    assert (
        'nekobot_router_messages_total{outcome="deduplicated"} 1.0' in mon.exposition()[0].decode()
    )


async def test_hung_handler_times_out_is_retried_then_dead_lettered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router = MessageRouter.from_config(
        RouterConfig(max_retries=1, retry_backoff=1.0, handler_timeout=10.0, max_concurrency=1)
    )
    started: list[float] = []
    done: list[tuple[str, float]] = []

    async def hangs(m: Message) -> None:
        started.append(trio.current_time())
        await trio.sleep_forever()

    async def fine(m: Message) -> None:
        done.append((m.content["n"], trio.current_time()))

    router.register_handler("hang", hangs, name="hangs")
    router.register_handler("hang", fine, name="fine")  # runs after the hung one
    router.register_handler("ok", fine)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        t0 = trio.current_time()
        await router.route_message("qq", "hang", {"n": "h"})
        await router.route_message("qq", "ok", {"n": "after"})
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    # Attempt at 0 is cancelled at exactly 10; the next handler of the same
    # message still runs, then the queue moves on; the retry 1 s later is
    # cancelled at 21 and the message is dead-lettered.
    assert [t - t0 for t in started] == [0.0, 11.0]
    assert [(n, t - t0) for n, t in done] == [("h", 10.0), ("after", 10.0)]
    s = router.get_stats()
    (dl,) = s.dead_letters
    assert dl.error_type == "TooSlowError" and dl.handlers == ("hangs",)
    assert dl.at - t0 == 21.0
    assert (s.failed, s.retried, s.dead_lettered, s.processed, s.in_flight) == (2, 1, 1, 1, 0)


async def test_handler_timeout_spares_handlers_that_finish_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router = MessageRouter.from_config(RouterConfig(handler_timeout=5.0, max_concurrency=2))
    finished: list[float] = []

    async def slow_but_in_time(m: Message) -> None:
        await trio.sleep(4.9)
        finished.append(trio.current_time())

    router.register_handler("x", slow_but_in_time)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        for n in range(6):
            await router.route_message("qq", "x", {"n": n})
            await trio.sleep(1.0)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert len(finished) == 6
    s = router.get_stats()
    assert (s.failed, s.dead_lettered, s.processed) == (0, 0, 6)


# ---- containment: anything but cancellation is a handler failure -------------


class CustomBaseError(BaseException):
    """A BaseException subclass a plugin might define."""


def _exit_3() -> None:
    sys.exit(3)


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _generator_exit() -> None:
    raise GeneratorExit


def _custom() -> None:
    raise CustomBaseError("custom")


def _group() -> None:
    raise BaseExceptionGroup("plugin", [SystemExit(3), KeyboardInterrupt(), ValueError("v")])


@pytest.mark.parametrize(
    ("raiser", "error_type"),
    [
        (_exit_3, "SystemExit"),
        (_keyboard_interrupt, "KeyboardInterrupt"),
        (_generator_exit, "GeneratorExit"),
        (_custom, "CustomBaseError"),
        (_group, "BaseExceptionGroup"),
    ],
)
@pytest.mark.parametrize("kind", ["async", "cheap"])
async def test_base_exception_in_handler_is_contained_retried_and_dead_lettered(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    raiser: Callable[[], None],
    error_type: str,
    kind: str,
) -> None:
    router = make_router(max_concurrency=1, max_retries=2, retry_backoff=1.0)
    tries: list[float] = []
    handled: list[tuple[str, float]] = []

    async def async_bad(m: Message) -> None:
        tries.append(trio.current_time())
        raiser()

    def sync_bad(m: Message) -> None:
        tries.append(trio.current_time())
        raiser()

    async def good(m: Message) -> None:
        handled.append((m.content, trio.current_time()))

    bad: Handler = async_bad if kind == "async" else sync_bad  # cheap: inline
    router.register_handler("bad", bad, cheap=kind == "cheap", name="bad")
    router.register_handler("good", good)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        t0 = trio.current_time()
        await router.route_message("qq", "bad", "b", dedup_key="b")
        await router.route_message("qq", "good", "first")
        await trio.sleep(1.5)
        await router.route_message("qq", "good", "between retries")
        await trio.sleep(100)
        assert router.running  # the worker and the router live on
        await router.route_message("qq", "good", "after dead letter")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [t - t0 for t in tries] == [0.0, 1.0, 3.0]  # Backoff: 1 s, then 2 s
    assert [(c, t - t0) for c, t in handled] == [
        ("first", 0.0),
        ("between retries", 1.5),
        ("after dead letter", 101.5),
    ]
    s = router.get_stats()
    assert (s.failed, s.retried, s.dead_lettered, s.processed) == (3, 2, 1, 3)
    (dl,) = router.get_dead_letters()
    assert (dl.error_type, dl.handlers, dl.attempts, dl.at - t0) == (error_type, ("bad",), 3, 3.0)
    # logged with the traceback, once per failed call
    failures = [r for r in caplog.records if r.getMessage().startswith("handler bad failed")]
    assert len(failures) == 3 and all(r.exc_info for r in failures)
    assert_conserved(router)


@pytest.mark.parametrize("raiser", [_exit_3, _keyboard_interrupt, _generator_exit, _custom, _group])
async def test_base_exception_in_threaded_handler_is_contained(
    raiser: Callable[[], None],
) -> None:
    """A plain handler runs in a thread (no autojump clock: it cannot see
    threads); what it raises comes back to the worker and is contained."""
    router = make_router(max_concurrency=1, max_retries=2, retry_backoff=0.0)
    tries: list[int] = []
    handled: list[str] = []

    def bad(m: Message) -> None:
        tries.append(threading.get_ident())
        raiser()

    async def good(m: Message) -> None:
        handled.append(m.content)

    router.register_handler("bad", bad)
    router.register_handler("good", good)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run)
            await router.route_message("qq", "bad", "b")
            while router.get_stats().dead_lettered < 1:  # noqa: ASYNC110 - no event for it
                await trio.sleep(0.001)
            await router.route_message("qq", "good", "after")
            await router.drain()
            nursery.cancel_scope.cancel()
    assert len(tries) == 3 and threading.get_ident() not in tries
    assert handled == ["after"]
    s = router.get_stats()
    assert (s.failed, s.retried, s.dead_lettered, s.processed) == (3, 2, 1, 1)


async def _raise_in_child_when_cancelled(exc: BaseException) -> None:
    try:
        await trio.sleep_forever()
    finally:
        raise exc


async def test_group_holding_cancelled_times_out_once_and_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The watchdog cancels a handler whose nursery answers with a group of
    Cancelled + KeyboardInterrupt: the failure is counted once, the
    cancellation still reaches the worker's scope, the queue moves on."""
    router = make_router(max_concurrency=1, max_retries=1, retry_backoff=1.0, handler_timeout=5.0)
    starts: list[float] = []
    handled: list[float] = []

    async def spawns(m: Message) -> None:
        starts.append(trio.current_time())
        async with trio.open_nursery() as inner:
            inner.start_soon(_raise_in_child_when_cancelled, KeyboardInterrupt())
            await trio.sleep_forever()

    async def good(m: Message) -> None:
        handled.append(trio.current_time())

    router.register_handler("grp", spawns, name="spawns")
    router.register_handler("ok", good)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        t0 = trio.current_time()
        await router.route_message("qq", "grp", {})
        await router.route_message("qq", "ok", {})
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert [t - t0 for t in starts] == [0.0, 6.0]
    assert [t - t0 for t in handled] == [5.0]
    s = router.get_stats()
    assert (s.failed, s.retried, s.dead_lettered, s.processed) == (2, 1, 1, 1)
    (dl,) = s.dead_letters
    assert dl.at - t0 == 11.0 and "KeyboardInterrupt" in dl.error
    assert "Cancelled" not in dl.error


async def test_shutdown_cancellation_passes_through_a_group() -> None:
    """Cancelling the router while a handler's nursery raises Cancelled +
    SystemExit: the SystemExit is the handler's failure, the cancellation ends
    the router, and nothing escapes to the caller."""
    router = make_router(max_concurrency=1)
    started = trio.Event()

    async def spawns(m: Message) -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(_raise_in_child_when_cancelled, SystemExit(3))
            started.set()
            await trio.sleep_forever()

    router.register_handler("grp", spawns)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(router.run)
            await router.route_message("qq", "grp", {})
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    s = router.get_stats()
    assert not s.running and s.failed == 1 and s.in_flight == 0


async def test_drain_answers_once_the_queue_is_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router = make_router(max_concurrency=1)

    async def slow(m: Message) -> None:
        await trio.sleep(1.0)

    router.register_handler("m", slow)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        for n in range(3):
            await router.route_message("qq", "m", n)
        t0 = trio.current_time()
        await router.drain()
        assert trio.current_time() - t0 == 3.0
        s = router.get_stats()
        assert (s.processed, s.queued, s.in_flight) == (3, 0, 0)
        await router.route_message("qq", "m", 4)
        with pytest.raises(CallTimeout):
            await router.drain(timeout=0.5)
        assert trio.current_time() - t0 == 3.5
        fresh = await router.stats()
        assert fresh.in_flight == 1 and fresh.queue_wait_p50_ms == 0.0
        nursery.cancel_scope.cancel()
