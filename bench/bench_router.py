"""Router benchmark: throughput vs a bare Trio memory channel, and HIGH wait under a LOW flood.

Run: ``/work/venv/bin/python bench/bench_router.py [N]``

1. Throughput: N messages from ``route_message`` to handler done (one async
   handler, NORMAL priority, dedup key None), against a bare Trio memory-channel
   producer/consumer pair moving N items into the same trivial consumer, in the
   same process and run (also shown: the bare pair with a batch-draining
   consumer, i.e. what batching alone buys). Each figure is the median of ``REPEAT`` runs; the
   ratio is router / bare (target >= 0.7). Also measured: the router recording
   into a StatusMonitor, and with a dedup key per message.
2. Priority: a producer floods LOW messages (the queue stays full, ``block``
   backpressure) while another task routes one HIGH message per millisecond;
   the handler yields once per message (``trio.lowlevel.checkpoint()``). Prints the queue
   wait (accept -> handler start, Trio clock) p50/p99 of HIGH and of LOW.
"""

from __future__ import annotations

import statistics
import sys
import time

import trio

from nekobot.config.schema import RouterConfig
from nekobot.messages import Message, MessagePriority
from nekobot.monitor.status_monitor import StatusMonitor
from nekobot.routing.message_router import MessageRouter

REPEAT = 5


async def bare_pair(n: int, buffer: int) -> float:
    send, recv = trio.open_memory_channel[int](buffer)
    done = trio.Event()
    count = 0

    async def consumer() -> None:
        nonlocal count
        async for _ in recv:
            count += 1
            if count == n:
                done.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        t0 = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await done.wait()
        t1 = time.perf_counter()
    return n / (t1 - t0)


async def bare_pair_batched(n: int, buffer: int) -> float:
    """The same pair, but the consumer drains in batches (receive, then receive_nowait)."""
    send, recv = trio.open_memory_channel[int](buffer)
    done = trio.Event()
    count = 0

    async def consumer() -> None:
        nonlocal count
        while True:
            await recv.receive()
            count += 1
            while True:
                try:
                    recv.receive_nowait()
                except trio.WouldBlock:
                    break
                count += 1
            if count >= n:
                done.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        t0 = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await done.wait()
        t1 = time.perf_counter()
    return n / (t1 - t0)


async def router_run(n: int, *, monitor: bool = False, dedup: bool = False) -> float:
    mon = StatusMonitor() if monitor else None
    router = MessageRouter.from_config(RouterConfig(), monitor=mon)
    done = trio.Event()
    count = 0

    async def handler(message: Message) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        if mon is not None:
            await nursery.start(mon.run)
        await nursery.start(router.run)
        route = router.route_message
        t0 = time.perf_counter()
        if dedup:
            for i in range(n):
                await route("bench", "message", i, dedup_key=i)
        else:
            for i in range(n):
                await route("bench", "message", i)
        await done.wait()
        t1 = time.perf_counter()
        nursery.cancel_scope.cancel()
    return n / (t1 - t0)


async def priority_run(flood: int, flooders: int = 4) -> tuple[list[float], list[float]]:
    router = MessageRouter.from_config(RouterConfig(max_queue_size=1000, max_concurrency=2))
    high: list[float] = []
    low: list[float] = []
    all_low_done = trio.Event()
    per_flooder = flood // flooders

    async def handler(message: Message) -> None:
        wait = trio.current_time() - message.received_at
        if message.priority == MessagePriority.HIGH:
            high.append(wait)
        else:
            low.append(wait)
            if len(low) == per_flooder * flooders:
                all_low_done.set()
        await trio.lowlevel.checkpoint()

    router.register_handler("message", handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)

        async def flooder() -> None:
            for i in range(per_flooder):
                await router.route_message("bench", "message", i, MessagePriority.LOW)

        async def high_sender() -> None:
            while not all_low_done.is_set():
                await router.route_message("bench", "message", "h", MessagePriority.HIGH)
                await trio.sleep(0.001)

        for _ in range(flooders):
            nursery.start_soon(flooder)
        nursery.start_soon(high_sender)
        await all_low_done.wait()
        nursery.cancel_scope.cancel()
    return high, low


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, -(-len(s) * p // 100) - 1)] * 1000.0


async def main(n: int) -> None:
    bare: list[float] = []
    bare_batched: list[float] = []
    plain: list[float] = []
    with_monitor: list[float] = []
    with_dedup: list[float] = []
    await router_run(2000)  # warm-up
    for _ in range(REPEAT):
        bare.append(await bare_pair(n, RouterConfig().max_queue_size))
        bare_batched.append(await bare_pair_batched(n, RouterConfig().max_queue_size))
        plain.append(await router_run(n))
        with_monitor.append(await router_run(n, monitor=True))
        with_dedup.append(await router_run(n, dedup=True))
    b = statistics.median(bare)
    print(f"throughput, {n} messages, median of {REPEAT} runs (messages/s):")
    print(f"  {'bare memory channel pair':<32}{b:10,.0f}   ratio 1.00")
    for label, xs in (
        ("bare pair, batch-drain consumer", bare_batched),
        ("router (one handler, NORMAL)", plain),
        ("router + StatusMonitor", with_monitor),
        ("router + dedup key", with_dedup),
    ):
        m = statistics.median(xs)
        print(f"  {label:<32}{m:10,.0f}   ratio {m / b:.2f}")
    high, low = await priority_run(max(20_000, n // 2))
    print(
        f"priority under a LOW flood ({len(low)} LOW from 4 tasks, {len(high)} HIGH at 1/ms, "
        "queue 1000 full, 2 workers, handler yields once):"
    )
    print(f"  HIGH queue wait p50 {pct(high, 50):8.3f} ms   p99 {pct(high, 99):8.3f} ms")
    print(f"  LOW  queue wait p50 {pct(low, 50):8.3f} ms   p99 {pct(low, 99):8.3f} ms")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
