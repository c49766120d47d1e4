"""``MessageBuffer.add_message`` throughput: durable (SQLite WAL) vs memory-only.

Run: ``/work/venv/bin/python bench/bench_buffer.py [--messages N] [--producers P]``

Batching and fsync choice (what "durable" means here):

- Group commit: the buffer actor drains its mailbox in batches and writes each
  batch's inserts and deletes in ONE transaction through ``Store.run`` (a worker
  thread); every ``add_message`` of the batch returns only after that
  transaction committed. Concurrent producers therefore share commits; a single
  sequential producer pays one commit per message.
- ``PRAGMA journal_mode=WAL`` with ``PRAGMA synchronous=NORMAL`` (the store's
  default): a committed transaction survives a crash of the process
  (``kill -9``), but the WAL is fsynced only at checkpoints, so a power loss
  may lose the last transactions. ``synchronous=FULL`` fsyncs the WAL at every
  commit (survives power loss); it is measured too, for comparison.

The baseline is the memory-only buffer measured in the same run; the figures
are printed with the ratio. No assertion is made on them.

Second table, live traffic (the reported bug: one message buffered while the
platform was offline made every later reply queue behind it): one message is
buffered offline, the platform comes online, then N replies are sent through
the buffer (``max_size=1000``, ``drop_oldest``, ``replay_rate=50``) by one
sequential producer or by P concurrent ones, to a sender that acknowledges
after one Trio checkpoint. Baseline: the same producers calling the sender
directly (what ``bot.send`` does when the buffer is empty). Printed: delivered
messages per second, the ratio to the baseline, drops and backpressure waits.

Third table, scale (issue 10 item 9): N queues marked online one after the
other (``mark_platform_online``, one call each, with a ``StatusMonitor``), for
N = 1,000 and 10,000. Printed: seconds, microseconds per queue and the
per-queue ratio to N = 1,000 (1.0 = flat; the buffer used to rebuild the
snapshot of every queue on each call, which made this quadratic).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

import trio

from nekobot.buffer.message_buffer import MessageBuffer
from nekobot.config.schema import MonitorConfig
from nekobot.messages import OutboundMessage, SendReceipt
from nekobot.monitor.status_monitor import StatusMonitor
from nekobot.storage import Store

CONTENT = {"group_id": 123456789, "message": [{"type": "text", "data": {"text": "hello " * 8}}]}


async def measure(store: Store | None, messages: int, producers: int) -> tuple[float, int]:
    """Messages per second of ``add_message`` and the number of commits."""
    commits = 0
    if store is not None:
        await store.open()
        run = store.run

        async def counting(fn):  # type: ignore[no-untyped-def]
            nonlocal commits
            commits += 1
            return await run(fn)

        store.run = counting  # type: ignore[method-assign]
    buf = MessageBuffer(messages, global_max_size=messages, default_ttl=math.inf, store=store)
    per = messages // producers

    async def producer(i: int) -> None:
        for _ in range(per):
            await buf.add_message(f"p{i % 4}", "send_group_msg", CONTENT)

    async with trio.open_nursery() as nursery:
        await nursery.start(buf.run)
        commits = 0
        t0 = time.perf_counter()
        async with trio.open_nursery() as producers_nursery:
            for i in range(producers):
                producers_nursery.start_soon(producer, i)
        elapsed = time.perf_counter() - t0
        assert buf.get_buffer_stats().size == per * producers
        nursery.cancel_scope.cancel()
    if store is not None:
        await store.close()
    return per * producers / elapsed, commits


async def measure_live(
    store: Store | None, messages: int, producers: int, *, direct: bool
) -> tuple[float, int, int, int]:
    """Delivered msg/s, delivered, dropped, waits (1 backlog message, then live traffic)."""
    delivered = 0

    async def sender(msg: OutboundMessage) -> SendReceipt:
        nonlocal delivered
        await trio.lowlevel.checkpoint()  # the platform's answer
        delivered += 1
        return SendReceipt(platform_id=msg.platform_id, message_key=msg.message_key)

    if store is not None:
        await store.open()
    buf = MessageBuffer(
        1000, overflow_strategy="drop_oldest", replay_rate=50.0, store=store, deliver=sender
    )
    per = messages // producers

    async def producer(i: int) -> None:
        for _ in range(per):
            if direct:
                await sender(OutboundMessage(platform_id="qq", message_type="m", content=CONTENT))
            else:
                await buf.add_message("qq", "send_group_msg", CONTENT)

    async with trio.open_nursery() as nursery:
        await nursery.start(buf.run)
        if not direct:
            await buf.add_message("qq", "send_group_msg", CONTENT)  # buffered offline
        await buf.mark_platform_online("qq")
        t0 = time.perf_counter()
        async with trio.open_nursery() as producers_nursery:
            for i in range(producers):
                producers_nursery.start_soon(producer, i)
        while buf.pending_count("qq"):  # noqa: ASYNC110 - bench: wait for the drain
            await trio.sleep(0.001)
        elapsed = time.perf_counter() - t0
        st = buf.get_buffer_stats().platforms["qq"]
        nursery.cancel_scope.cancel()
    if store is not None:
        await store.close()
    return delivered / elapsed, delivered, sum(st.dropped.values()), st.waited_total


async def measure_online(queues: int) -> float:
    """Seconds to mark ``queues`` queues online, one call each."""
    buf = MessageBuffer(monitor=StatusMonitor.from_config(MonitorConfig()))
    async with trio.open_nursery() as nursery:
        await nursery.start(buf.run)
        t0 = time.perf_counter()
        for i in range(queues):
            await buf.mark_platform_online(f"p{i}")
        elapsed = time.perf_counter() - t0
        assert buf.is_online(f"p{queues - 1}")
        nursery.cancel_scope.cancel()
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--queues", type=int, nargs="*", default=[1_000, 10_000])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}")
    print("batching: group commit, one transaction per drained mailbox batch")
    print("fsync: WAL + synchronous=NORMAL (survives kill -9; FULL shown for comparison)\n")
    rows = []
    for producers in (args.producers, 1):
        n = args.messages if producers > 1 else max(args.messages // 10, 100)
        mem, _ = await measure(None, n, producers)
        with tempfile.TemporaryDirectory() as tmp:
            normal, c_normal = await measure(Store(Path(tmp) / "n.db"), n, producers)
        with tempfile.TemporaryDirectory() as tmp:
            full, c_full = await measure(
                Store(Path(tmp) / "f.db", synchronous="FULL"), n, producers
            )
        rows.append((producers, n, mem, normal, c_normal, full, c_full))
    print(
        f"{'producers':>9} {'msgs':>7} {'memory msg/s':>13} {'durable NORMAL':>15}"
        f" {'ratio':>6} {'msgs/commit':>11} {'durable FULL':>13} {'ratio':>6} {'msgs/commit':>11}"
    )
    for producers, n, mem, normal, c_normal, full, c_full in rows:
        print(
            f"{producers:>9} {n:>7} {mem:>13,.0f} {normal:>15,.0f} {normal / mem:>6.2f}"
            f" {n / max(c_normal, 1):>11.1f} {full:>13,.0f} {full / mem:>6.2f}"
            f" {n / max(c_full, 1):>11.1f}"
        )
    print("\nratio = durable / memory-only, measured in this run.")

    n = max(args.messages // 5, 100)
    print(f"\nlive traffic behind 1 backlog message: {n} replies, max_size 1000, 50/s")
    print(
        f"{'producers':>9} {'store':>7} {'direct msg/s':>13} {'buffered msg/s':>15}"
        f" {'ratio':>6} {'delivered':>9} {'dropped':>8} {'waits':>6}"
    )
    for producers in (1, args.producers):
        base, _, _, _ = await measure_live(None, n, producers, direct=True)
        for label in ("memory", "durable"):
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(Path(tmp) / "l.db") if label == "durable" else None
                rate, got, dropped, waits = await measure_live(store, n, producers, direct=False)
            print(
                f"{producers:>9} {label:>7} {base:>13,.0f} {rate:>15,.0f} {rate / base:>6.2f}"
                f" {got:>9} {dropped:>8} {waits:>6}"
            )
    print("ratio = through the buffer / direct sends, measured in this run.")

    print("\nscale: N queues marked online, one call each (with a monitor)")
    print(f"{'queues':>9} {'seconds':>9} {'us/queue':>9} {'ratio':>6}")
    base_per: float | None = None
    for n in args.queues:
        seconds = await measure_online(n)
        per = seconds / n
        base_per = base_per or per
        print(f"{n:>9} {seconds:>9.3f} {per * 1e6:>9.1f} {per / base_per:>6.2f}")
    print(f"ratio = us/queue / us/queue at N = {args.queues[0]}, measured in this run.")


if __name__ == "__main__":
    trio.run(main)
