"""``load_platform_class``: N lookups of a platform ``type``, cached vs read afresh.

Run: ``python bench/bench_platform_lookup.py [-n N]`` (default 10,000).

What is compared, in the same run: *uncached* is the lookup as it was before
issue 10, every call reading the installed packages' entry-point metadata
(``importlib.metadata.entry_points``) before it resolves the name; *cached* is
``load_platform_class`` as it is, which reads the metadata once per process
and remembers each type's class. Each is timed for a built-in name, an entry
point name and an import path. Figures are printed with the ratios; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import attrs

from nekobot.platforms import base


@attrs.frozen
class BenchConfig:
    pass


class BenchPlatform(base.PlatformActor):
    """A platform found by import path (``__main__:BenchPlatform``)."""

    config_class = BenchConfig


TYPES = {
    "built-in": "onebot_v11",
    "import path": "__main__:BenchPlatform",
}


def uncached(type_name: str) -> type[base.PlatformActor]:
    base._entry_points.cache_clear()  # every lookup reads the metadata again
    return base.load_platform_class.__wrapped__(type_name)


def timed(fn: Callable[[str], object], type_name: str, n: int) -> float:
    fn(type_name)  # modules imported before the clock starts
    t0 = time.perf_counter()
    for _ in range(n):
        fn(type_name)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args()
    n = args.n
    # the uncached path costs milliseconds per call: time fewer, scale to n
    slow_n = max(1, n // 50)
    for label, type_name in TYPES.items():
        slow = timed(uncached, type_name, slow_n) * n / slow_n
        fast = timed(base.load_platform_class, type_name, n)
        print(
            f"{n} lookups, {label:11} uncached (metadata read each time): {slow:8.3f} s   "
            f"cached: {fast:8.5f} s   ratio {slow / fast:,.0f}x"
        )


if __name__ == "__main__":
    main()
