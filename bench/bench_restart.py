"""Crash -> running-again latency of a restarted child, zero backoff.

Measures, in one run (wall clock, ``time.perf_counter``):

* **bare**: a hand-written Trio restart loop (``while True: try: await
  nursery.start(child) ...``): the floor any supervisor is compared with;
* **Supervisor**: :class:`nekobot.supervisor.Supervisor`, ``one_for_one``,
  zero backoff, a fault record (with traceback) per crash;
* **RuntimeManager**: a fake platform under :class:`RuntimeManager` with
  :class:`FaultIsolation` (breaker threshold out of reach): a new instance
  from the factory per run, ``handle_fault`` per crash.

Each child calls ``task_status.started()``, yields once, then raises; the
latency is from just before the ``raise`` to the next instance's
``started()``. Prints p50 / p99 in microseconds and the ratio to bare.

The runtime manager path: the supervisor asks fault isolation (an actor: one
request/reply hop) for the decision; the fault is kept as the exception and
its traceback formatted only when someone reads it. Target: p50 <= 2x bare.

Run: ``python bench/bench_restart.py [iterations]``.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import attrs
import trio

from nekobot.config.schema import FaultIsolationConfig, PlatformConfig, SupervisorConfig
from nekobot.core.actor import Mailbox
from nekobot.core.supervisor import ChildSpec, Supervisor
from nekobot.faults.fault_isolation import FaultIsolation
from nekobot.platforms.base import PlatformActor, PlatformContext
from nekobot.runtime.runtime_manager import RuntimeManager


class Boom(Exception):
    pass


class _Probe:
    def __init__(self, n: int) -> None:
        self.n = n
        self.crashed_at = 0.0
        self.latencies: list[float] = []
        self.done = trio.Event()

    def up(self) -> None:
        if self.crashed_at:
            self.latencies.append(time.perf_counter() - self.crashed_at)
            self.crashed_at = 0.0
            if len(self.latencies) >= self.n:
                self.done.set()

    async def crash(self) -> None:
        await trio.lowlevel.checkpoint()
        if self.done.is_set():
            await trio.sleep_forever()
        self.crashed_at = time.perf_counter()
        raise Boom("crash")


async def bench_bare(n: int) -> list[float]:
    probe = _Probe(n)

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        probe.up()
        task_status.started()
        await probe.crash()

    async def keeper() -> None:
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(child)
            except* Boom:
                pass

    async with trio.open_nursery() as n_:
        n_.start_soon(keeper)
        await probe.done.wait()
        n_.cancel_scope.cancel()
    return probe.latencies


async def bench_supervisor(n: int) -> list[float]:
    probe = _Probe(n)

    async def child(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        probe.up()
        task_status.started()
        await probe.crash()

    sup = Supervisor([ChildSpec("c", child)], max_restarts=10**9, period=1.0)
    async with trio.open_nursery() as n_:
        await n_.start(sup.run)
        await probe.done.wait()
        n_.cancel_scope.cancel()
    return probe.latencies


@attrs.frozen
class _Settings:
    pass


class _CrashingPlatform(PlatformActor):
    platform_type = "bench_crash"
    config_class = _Settings
    probe: _Probe

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.probe.up()
        task_status.started()
        await self.probe.crash()

    async def send(self, message: Any) -> Any:
        raise NotImplementedError


async def bench_runtime_manager(n: int) -> list[float]:
    probe = _Probe(n)

    context = PlatformContext()  # one for every instance, as app.py builds them

    def factory(pid: str, pc: PlatformConfig) -> PlatformActor:
        p = _CrashingPlatform(pid, pc.settings, connection=pc.connection, context=context)
        p.probe = probe
        return p

    sup_cfg = SupervisorConfig(
        backoff_min=0.0, backoff_max=0.0, jitter=0.0, max_restarts=10**9, period=1.0
    )
    mailbox: Mailbox[Any] = Mailbox("runtime")
    fi = FaultIsolation.from_config(
        FaultIsolationConfig(failure_threshold=10**9, error_window=1e-3, max_fault_records=100),
        events=mailbox.ref,
    )
    rm = RuntimeManager.from_config(
        sup_cfg, fault_isolation=fi, platform_factory=factory, mailbox=mailbox
    )
    async with trio.open_nursery() as n_:
        await n_.start(fi.run)
        await n_.start(rm.run)
        await rm.add_platform("p", PlatformConfig(type="bench", settings=_Settings()))
        await probe.done.wait()
        n_.cancel_scope.cancel()
    return probe.latencies


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def main(n: int) -> None:
    # warm up, then measure each in turn
    for fn in (bench_bare, bench_supervisor, bench_runtime_manager):
        await fn(200)
    results = {
        "bare nursery loop": await bench_bare(n),
        "Supervisor": await bench_supervisor(n),
        "RuntimeManager+FaultIsolation": await bench_runtime_manager(n),
    }
    base50 = _pct(results["bare nursery loop"], 0.5)
    base99 = _pct(results["bare nursery loop"], 0.99)
    print(f"crash -> running again, zero backoff, {n} restarts each (microseconds)")
    print(f"{'':32} {'p50':>9} {'p99':>9} {'mean':>9} {'p50 ratio':>10} {'p99 ratio':>10}")
    for name, xs in results.items():
        p50, p99 = _pct(xs, 0.5), _pct(xs, 0.99)
        print(
            f"{name:32} {p50 * 1e6:9.1f} {p99 * 1e6:9.1f} {statistics.fmean(xs) * 1e6:9.1f}"
            f" {p50 / base50:9.2f}x {p99 / base99:9.2f}x"
        )


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # the supervisor logs every crash
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
