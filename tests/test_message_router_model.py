"""Model test of the MessageRouter (Hypothesis).

Random sequences of route / duplicate / burst / handler-ok / handler-fail /
time-jump run against a real router under a ``MockClock(autojump_threshold=0)``
and against a small model of the dedup window. Checked:

- every routed message is handled exactly once, or counted as deduplicated,
  dropped or dead-lettered: nothing vanishes and nothing is handled twice;
- each route's answer matches the model (a key is a duplicate while its
  message is pending, or for ``dedup_window`` seconds after it was handled);
- a handler is never tried more than ``1 + max_retries`` times per message.

No I/O, no real sleeps: each example runs in its own ``trio.run``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from typing import Any

import trio
import trio.testing
from hypothesis import event, given, settings

from nekobot.config.schema import RouterConfig
from nekobot.messages import Message, MessagePriority
from nekobot.routing.message_router import MessageRouter

from .strategies import router_model_configs, router_ops

WINDOW = 60.0
MAX_RETRIES = 2


async def drive(cfg: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    router = MessageRouter.from_config(
        RouterConfig(dedup_window=WINDOW, max_retries=MAX_RETRIES, retry_backoff=0.5, **cfg)
    )
    mode = "ok"
    attempts: Counter[str] = Counter()
    successes: list[tuple[str, Hashable | None, float]] = []

    async def handler(m: Message) -> None:
        attempts[m.message_id] += 1
        if mode == "fail":
            raise RuntimeError("handler-fail")
        successes.append((m.message_id, m.dedup_key, trio.current_time()))

    router.register_handler("message", handler)

    pending: Counter[Hashable] = Counter()  # key -> accepted messages not yet finished
    seen_until: dict[Hashable, float] = {}
    keys: list[Hashable | None] = []
    routes = 0
    n_succ = n_dead = 0

    def observe() -> None:
        """Bring the model up to date with what the router finished."""
        nonlocal n_succ, n_dead
        for _, key, t in successes[n_succ:]:
            if key is not None:
                pending[key] -= 1
                seen_until[key] = max(seen_until.get(key, -math.inf), t + WINDOW)
        n_succ = len(successes)
        dead = router.get_dead_letters()
        for dl in dead[n_dead:]:
            if dl.message.dedup_key is not None:
                pending[dl.message.dedup_key] -= 1
        n_dead = len(dead)

    async def route_one(key: Hashable | None, priority: int) -> None:
        nonlocal routes
        observe()
        s = router.get_stats()
        full = s.queued + s.retry_waiting >= cfg["max_queue_size"]
        now = trio.current_time()
        dup = key is not None and (pending[key] > 0 or seen_until.get(key, -math.inf) > now)
        ok = await router.route_message(
            "p", "message", None, MessagePriority(priority), dedup_key=key
        )
        routes += 1
        if full and cfg["overflow"] == "block":
            pass  # route waited for room while retries ran: the model cannot tell when
        elif dup:
            assert not ok, f"key {key!r} is pending or seen, yet it was accepted"
        elif not full:
            assert ok, f"key {key!r} is new and the queue had room, yet it was refused"
        elif cfg["overflow"] == "drop_lowest" and s.queued == 0:
            assert not ok  # only retries hold the room: the incoming one is dropped
        if ok and key is not None:
            pending[key] += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(router.run)
        for op in ops:
            kind = op[0]
            if kind == "route":
                keys.append(op[1])
                await route_one(op[1], op[2])
            elif kind == "dup":
                if keys:
                    await route_one(keys[op[1] % len(keys)], MessagePriority.NORMAL)
            elif kind == "burst":
                for priority in op[1]:
                    await router.route_message("p", "message", None, MessagePriority(priority))
                    routes += 1
            elif kind in ("ok", "fail"):
                mode = kind
            else:
                await trio.sleep(op[1])
            await trio.testing.wait_all_tasks_blocked()
        # let every retry run out (handled or dead-lettered)
        await trio.sleep(1000)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    s = router.get_stats()
    assert (s.queued, s.retry_waiting, s.in_flight) == (0, 0, 0)
    handled_ids = [mid for mid, _, _ in successes]
    dead_ids = [dl.message.message_id for dl in router.get_dead_letters()]
    # handled exactly once
    assert len(set(handled_ids)) == len(handled_ids)
    assert len(set(dead_ids)) == len(dead_ids) == s.dead_lettered
    assert not set(handled_ids) & set(dead_ids)
    assert s.processed == len(handled_ids)
    # nothing vanishes
    assert s.received == routes
    assert routes == len(handled_ids) + s.dead_lettered + s.deduplicated + s.dropped
    assert max(attempts.values(), default=0) <= 1 + MAX_RETRIES
    for mid in dead_ids:
        assert attempts[mid] == 1 + MAX_RETRIES
    if cfg["overflow"] == "block":
        assert s.dropped == 0
    observe()
    assert all(n == 0 for n in pending.values())  # the model agrees: nothing left pending
    for name in ("deduplicated", "dropped", "dead_lettered", "retried"):
        event(f"{name}: {'some' if getattr(s, name) else 'none'}")


@settings(max_examples=500, deadline=None)
@given(cfg=router_model_configs, ops=router_ops)
def test_router_model(cfg: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        # Trio clock: a router that hangs fails here instead of hanging the suite
        with trio.fail_after(1_000_000):
            await drive(cfg, ops)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
