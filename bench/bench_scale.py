"""Cost per platform as the number of platforms grows (issue 10, item 9).

In one run, for N = 100, 1,000, 10,000 trivial in-process platforms (an
``IdlePlatform`` that calls ``task_status.started()`` and sleeps):

* **from config**: seconds from entering ``open_nekobot`` (N platforms in
  ``[platforms]``) until the bot is ready;
* **adds**: seconds to add N platforms one by one with
  ``bot.runtime_manager.add_platform`` (each through the config service:
  applied, then recorded as a version), starting from an empty bot;
* **memory**: KiB per idle platform (``tracemalloc``, allocated after start
  minus before, in a separate run at N = 1,000);
* **idle CPU**: process CPU seconds over 1 s of wall clock with N = 1,000 idle.

Each row prints seconds and the per-platform cost as a ratio to N = 100
(1.0 means flat). Targets: 10,000 from config in <= 2 s; 1,000 adds in <= 2 s;
<= 20 KiB per idle platform; idle CPU ~0.

Run: ``python bench/bench_scale.py [max_n]`` (default 10000).
"""

from __future__ import annotations

import gc
import logging
import sys
import tempfile
import time
import tracemalloc
from typing import Any

import attrs
import trio

import nekobot

TYPE = "__main__:IdlePlatform"


@attrs.frozen
class IdleSettings:
    label: str = "idle"


class IdlePlatform(nekobot.PlatformActor):
    platform_type = "idle"
    config_class = IdleSettings

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def send(self, message: nekobot.OutboundMessage) -> nekobot.SendReceipt:
        return nekobot.SendReceipt(platform_id=self.platform_id, message_key=message.message_key)


def config(data_dir: str, n: int) -> dict[str, Any]:
    return {
        "bot": {"data_dir": data_dir},
        "buffer": {"durable": False},
        "api": {"enable": False},
        "platforms": {f"p{i}": {"type": TYPE} for i in range(n)},
    }


async def from_config(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        async with nekobot.open_nekobot(config(d, n)):
            elapsed = time.perf_counter() - t0
        return elapsed


async def adds(n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        async with nekobot.open_nekobot(config(d, 0)) as bot:
            t0 = time.perf_counter()
            for i in range(n):
                await bot.runtime_manager.add_platform(f"p{i}", {"type": TYPE})
            return time.perf_counter() - t0


async def memory_and_idle(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        async with nekobot.open_nekobot(config(d, n)):
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            cpu0 = time.process_time()
            await trio.sleep(1.0)
            idle_cpu = time.process_time() - cpu0
        return (after - before) / n / 1024, idle_cpu


def row(name: str, results: dict[int, float]) -> None:
    base = results[min(results)] / min(results)
    cells = []
    for n, secs in sorted(results.items()):
        per = secs / n
        cells.append(f"N={n}: {secs:.3f} s ({per * 1e6:.0f} µs/platform, {per / base:.2f}x)")
    print(f"{name:12} " + "  ".join(cells))


async def main(max_n: int) -> None:
    logging.disable(logging.WARNING)
    sizes = [n for n in (100, 1_000, 10_000) if n <= max_n]
    print("per-platform cost as a ratio to N=100 (1.00x = flat)")
    row("from config", {n: await from_config(n) for n in sizes})
    row("adds", {n: await adds(n) for n in sizes})
    kib, idle = await memory_and_idle(1_000)
    print(f"memory       {kib:.1f} KiB per idle platform (N=1000, tracemalloc)")
    print(f"idle CPU     {idle:.3f} s of CPU over 1 s of wall clock (N=1000 idle platforms)")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
