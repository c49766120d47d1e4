"""Tests of nekobot.runtime_manager with fake platforms (tests/platform_fakes.py).

Policy: no network (ports are simulated); the ``autojump_clock`` fixture for
everything about time, exact Trio-clock schedules; no real sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from nekobot.config.schema import FaultIsolationConfig, PlatformConfig, SupervisorConfig
from nekobot.core.actor import Mailbox
from nekobot.errors import (
    CallTimeout,
    ConfigError,
    Conflict,
    InvalidRequest,
    PlatformExists,
    PlatformNotFound,
)
from nekobot.faults.fault_isolation import FaultIsolation
from nekobot.runtime.runtime_manager import (
    DirectChanges,
    PlatformLifecycleStatus,
    PlatformStartError,
    PlatformState,
    RuntimeManager,
)

from .platform_fakes import TYPE, FakeMonitor, World, config

SUP = SupervisorConfig(
    backoff_min=1.0, backoff_max=8.0, jitter=0.0, backoff_reset=10.0, max_restarts=5, period=60.0
)


class Recording:
    """A config owner without history that records the description of every change
    (what the config service would record as a version)."""

    def __init__(self) -> None:
        self.runtime: RuntimeManager | None = None
        self.descriptions: list[str] = []

    async def change_platform(
        self, platform_id: str, config: PlatformConfig | None, **kw: Any
    ) -> None:
        assert self.runtime is not None
        description = kw.pop("description", "")
        for key in ("author", "base_revision"):
            kw.pop(key, None)
        await DirectChanges(self.runtime).change_platform(platform_id, config, **kw)
        self.descriptions.append(description)


@asynccontextmanager
async def running_rm(
    world: World,
    *,
    sup: SupervisorConfig = SUP,
    fi_cfg: FaultIsolationConfig | None = None,
    monitor: Any = None,
    owner: Recording | None = None,
) -> AsyncIterator[RuntimeManager]:
    mailbox: Mailbox[Any] = Mailbox("runtime")
    fi = FaultIsolation.from_config(
        fi_cfg or FaultIsolationConfig(), monitor=monitor, events=mailbox.ref
    )
    rm = RuntimeManager.from_config(
        sup,
        fault_isolation=fi,
        platform_factory=world.factory,
        monitor=monitor,
        config_owner=owner,
        mailbox=mailbox,
    )
    if isinstance(owner, Recording):
        owner.runtime = rm
    async with trio.open_nursery() as n:
        await n.start(fi.run)
        await n.start(rm.run)
        yield rm
        n.cancel_scope.cancel()


def status(rm: RuntimeManager, pid: str) -> PlatformLifecycleStatus:
    st = rm.get_platform_lifecycle_status(pid)
    assert isinstance(st, PlatformLifecycleStatus)
    return st


async def test_lifecycle(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    monitor = FakeMonitor()
    async with running_rm(world, monitor=monitor) as rm:
        await rm.load({"a": config(), "b": config(enabled=False)})
        assert status(rm, "a").state is PlatformState.RUNNING
        assert status(rm, "b").state is PlatformState.STOPPED  # enabled = false: added, not started
        assert rm.get_platform_actor("b") is None
        first = rm.get_platform_actor("a")
        assert first is not None and first.online

        await trio.sleep(1.0)
        st = await rm.stop_platform("a")
        assert st.state is PlatformState.STOPPED and st.since_clock == 1.0
        assert rm.get_platform_actor("a") is None
        assert world.events("a", "exit") == [1.0]

        st = await rm.start_platform("a")
        assert st.state is PlatformState.RUNNING
        second = rm.get_platform_actor("a")
        assert second is not None and second is not first  # a new instance every run
        assert (await rm.start_platform("a")).state is PlatformState.RUNNING  # idempotent

        st = await rm.restart_platform("a")
        assert st.state is PlatformState.RUNNING and st.restart_count == 1
        assert rm.get_platform_actor("a") not in (first, second)

        all_st = rm.get_platform_lifecycle_status()
        assert isinstance(all_st, dict) and set(all_st) == {"a", "b"}
        assert all_st["a"].to_dict()["state"] == "running"

        for call in (rm.start_platform, rm.stop_platform, rm.restart_platform, rm.remove_platform):
            with pytest.raises(PlatformNotFound):
                await call("nope")
        with pytest.raises(PlatformNotFound):
            rm.get_platform_lifecycle_status("nope")
        with pytest.raises(PlatformExists):
            await rm.add_platform("a", config())
        with pytest.raises(InvalidRequest):
            await rm.add_platform("bad id!", config())

        await rm.remove_platform("a")
        assert "a" not in rm.platform_configs
        assert world.alive["a"] == 0
    assert monitor.states[:2] == [("a", True), ("a", False)]  # up, then stopped at 1.0
    assert monitor.expected[1] is True  # a person stopped it: no "platform down" alert
    assert monitor.forgotten == ["a"]  # removed: the monitor drops it


async def test_start_returns_when_started_and_fails_clearly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("slow", config(start_delay=2.5), auto_start=False)
        t0 = trio.current_time()
        st = await rm.start_platform("slow")
        assert trio.current_time() - t0 == 2.5
        assert st.state is PlatformState.RUNNING and world.events("slow", "up") == [2.5]

        await rm.add_platform("bad0", config(), auto_start=False)
        match = "'bad0' failed to start: RuntimeError"
        with pytest.raises(PlatformStartError, match=match) as info:
            await rm.update_platform_config("bad0", {"fail_start": True, "label": "x"})
            await rm.start_platform("bad0")
        assert isinstance(info.value.__cause__, RuntimeError)
        st = status(rm, "bad0")
        assert st.state is PlatformState.ERROR
        assert st.last_error == "RuntimeError: bad0: bad config x"
        await trio.sleep(60.0)
        assert status(rm, "bad0").state is PlatformState.ERROR  # a failed request is not retried


async def test_an_added_platform_that_fails_to_start_is_removed_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    monitor = FakeMonitor()
    owner = Recording()
    hook = owner.descriptions
    async with running_rm(world, monitor=monitor, owner=owner) as rm:
        await rm.add_platform("qq", config(port=7000))
        with pytest.raises(PlatformStartError, match="'qq2' failed to start: OSError") as info:
            await rm.add_platform("qq2", config(port=7000))  # the port is busy
        assert isinstance(info.value.__cause__, OSError)
        assert "address in use" in str(info.value)
        assert "qq2" not in rm.platform_configs
        with pytest.raises(PlatformNotFound):
            rm.get_platform_lifecycle_status("qq2")
        assert hook == ["add platform qq"]  # no change hook: no config version for qq2
        assert "qq2" not in rm.fault_isolation.get_isolation_status().platforms
        assert "fault_isolation:degraded" not in [key for key, _, _ in monitor.fired]
        with pytest.raises(PlatformStartError, match="'bad' failed to start: RuntimeError"):
            await rm.add_platform("bad", {"type": TYPE, "fail_start": True, "label": "x"})
        assert "bad" not in rm.platform_configs
        # nothing left behind: the id can be used again
        st = await rm.add_platform("qq2", config(port=7001))
        assert st.state is PlatformState.RUNNING
        assert hook == ["add platform qq", "add platform qq2"]
        # not started on request: added even if it could not start
        await rm.add_platform("later", config(port=7000), auto_start=False)
        assert status(rm, "later").state is PlatformState.STOPPED


async def test_dict_config_errors_name_the_key_path() -> None:
    world = World()
    async with running_rm(world) as rm:
        with pytest.raises(ConfigError) as info:
            await rm.add_platform(
                "q", {"type": TYPE, "port": "x", "connection": {"reconnect_interval": -1}}
            )
        problems = "\n".join(info.value.problems)
        assert "platforms.q.port: expected int, got 'x'" in problems
        assert "platforms.q.connection" in problems
        assert "q" not in rm.platform_configs


async def test_calls_on_one_platform_are_serialised(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("a", config(start_delay=1.0, port=7000))
        order: list[str] = []

        async def op(name: str, fn: Any) -> None:
            await fn("a")
            order.append(f"{name}@{trio.current_time()}")

        async with trio.open_nursery() as n:
            n.start_soon(op, "restart1", rm.restart_platform)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(op, "stop", rm.stop_platform)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(op, "restart2", rm.restart_platform)
        # each call waited for the previous one; never two instances at once
        assert order == ["restart1@2.0", "stop@2.0", "restart2@3.0"]
        assert world.max_alive["a"] == 1
        assert status(rm, "a").state is PlatformState.RUNNING
        assert "crash" not in [ev for _, ev, _, _ in world.log]  # no "address in use"


async def test_update_builds_a_new_instance_after_the_old_one_is_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    owner = Recording()
    hook = owner.descriptions
    async with running_rm(world, owner=owner) as rm:
        await rm.load({"a": config(port=8000, label="old")})
        assert hook == []  # load is the initial config, not a change
        old = rm.get_platform_actor("a")
        await trio.sleep(1.0)
        st = await rm.update_platform_config("a", {"label": "new"})
        assert st.state is PlatformState.RUNNING and st.config_revision == 2
        new = rm.get_platform_actor("a")
        assert new is not None and new is not old and new.config.label == "new"
        # same port: the old instance was gone before the new one bound it
        assert [(ev, lbl) for t, ev, _, lbl in world.log if t == 1.0] == [
            ("exit", "old"),
            ("start", "new"),
            ("up", "new"),
        ]
        assert hook == ["update platform a: label"]
        # an update that changes nothing is not a change
        await rm.update_platform_config("a", {"label": "new"})
        assert hook == ["update platform a: label"]
        assert rm.platform_configs["a"].settings.label == "new"
        with pytest.raises(ConfigError, match=r"platforms\.a\.port: expected int"):
            await rm.update_platform_config("a", {"port": "80"})
        assert status(rm, "a").config_revision == 2
        # stored only, used at the next start
        await rm.update_platform_config("a", {"label": "later"}, apply_immediately=False)
        assert rm.get_platform_actor("a") is new
        await rm.restart_platform("a")
        assert rm.get_platform_actor("a").config.label == "later"  # type: ignore[union-attr]


async def test_update_that_fails_to_start_rolls_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    owner = Recording()
    hook = owner.descriptions
    async with running_rm(world, owner=owner) as rm:
        await rm.add_platform("a", config(port=9000, label="good"))
        with pytest.raises(PlatformStartError, match="bad config broken"):
            await rm.update_platform_config("a", {"label": "broken", "fail_start": True})
        st = status(rm, "a")
        assert st.state is PlatformState.RUNNING
        assert st.config_revision == 1
        assert rm.platform_configs["a"] == config(port=9000, label="good")
        assert rm.get_platform_actor("a").config.label == "good"  # type: ignore[union-attr]
        assert [(ev, lbl) for _, ev, _, lbl in world.log] == [
            ("start", "good"),
            ("up", "good"),
            ("exit", "good"),
            ("start", "broken"),
            ("start", "good"),
            ("up", "good"),
        ]
        assert hook == ["add platform a"]  # the rolled-back update is not recorded


async def test_enabled_flag_in_updates(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("a", config())
        st = await rm.update_platform_config("a", {"enabled": False})
        assert st.state is PlatformState.STOPPED and not st.enabled
        st = await rm.update_platform_config("a", {"enabled": True})
        assert st.state is PlatformState.RUNNING


async def test_apply_config_touches_only_changed_platforms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.load({"a": config(label="a1"), "b": config(label="b1"), "c": config()})
        a_before = rm.get_platform_actor("a")
        await trio.sleep(5.0)
        await rm.apply_platforms(
            {"a": config(label="a1"), "b": config(label="b2"), "d": config(label="d1")}
        )
        assert rm.get_platform_actor("a") is a_before
        assert world.events("a", "start") == [0.0]
        assert [(t, ev, lbl) for t, ev, pid, lbl in world.log if pid == "b"] == [
            (0.0, "start", "b1"),
            (0.0, "up", "b1"),
            (5.0, "exit", "b1"),
            (5.0, "start", "b2"),
            (5.0, "up", "b2"),
        ]
        assert world.events("c", "exit") == [5.0]
        assert set(rm.platform_configs) == {"a", "b", "d"}
        assert status(rm, "d").state is PlatformState.RUNNING
        await rm.apply_platforms(dict(rm.platform_configs))
        assert len(world.log) == 12  # nothing changed: nothing restarted


async def test_apply_config_rolls_back_a_failing_platform(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.load({"a": config(label="a1"), "b": config(label="b1")})
        with pytest.raises(PlatformStartError):
            await rm.apply_platforms(
                {"a": config(label="a2", fail_start=True), "b": config(label="b2")}
            )
        assert rm.platform_configs["a"] == config(label="a1")
        assert status(rm, "a").state is PlatformState.RUNNING
        assert rm.platform_configs["b"] == config(label="b2")
        with pytest.raises(PlatformStartError):
            await rm.apply_platforms({**rm.platform_configs, "n": config(fail_start=True)})
        assert "n" not in rm.platform_configs


async def test_crash_restart_follows_backoff(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("a", config())
        await rm.add_platform("calm", config())
        for expected in (1.0, 2.0, 4.0):
            t0 = trio.current_time()
            world.crash("a")
            await trio.testing.wait_all_tasks_blocked()
            st = status(rm, "a")
            assert st.state is PlatformState.RESTARTING
            assert st.next_restart_at == t0 + expected
            assert st.last_error == "Crash: a crashed"
            await trio.sleep(expected + 0.5)
            assert status(rm, "a").state is PlatformState.RUNNING
            assert world.events("a", "up")[-1] - t0 == expected
        assert status(rm, "a").restart_count == 3
        assert world.events("calm", "start") == [0.0]


async def test_stop_during_backoff_wins(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("a", config())
        world.crash("a")
        await trio.testing.wait_all_tasks_blocked()
        assert status(rm, "a").state is PlatformState.RESTARTING
        await rm.stop_platform("a")
        await trio.sleep(100.0)
        assert status(rm, "a").state is PlatformState.STOPPED
        assert world.events("a", "start") == [0.0]


async def test_cancelling_run_stops_in_reverse_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.load({p: config() for p in ("p1", "p2", "p3")})
        await trio.sleep(1.0)
    assert [pid for _, ev, pid, _ in world.log if ev == "exit"] == ["p3", "p2", "p1"]


def _degraded_alerts(monitor: FakeMonitor) -> list[str]:
    return [msg for key, _, msg in monitor.fired if key == "fault_isolation:degraded"]


async def test_requested_restarts_are_expected_and_do_not_alert(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    monitor = FakeMonitor()
    async with running_rm(world, monitor=monitor) as rm:
        fi = rm.fault_isolation
        levels: list[str] = []
        real = monitor.set_platform_state

        def spy(platform_id: str, running: bool, *, expected: bool = False) -> None:
            real(platform_id, running, expected=expected)
            levels.append(fi.get_isolation_status().degradation_level.name)

        monitor.set_platform_state = spy  # type: ignore[method-assign]
        await rm.load({"a": config(port=7000, label="a1"), "b": config(label="b1")})
        await trio.sleep(1.0)
        await rm.restart_platform("a")
        await rm.update_platform_config("a", {"label": "a2"})
        await rm.apply_platforms({"a": config(port=7000, label="a3"), "b": config(label="b2")})
        # an update that fails and is rolled back: the old config runs again
        with pytest.raises(PlatformStartError):
            await rm.update_platform_config("a", {"fail_start": True})
        assert status(rm, "a").state is PlatformState.RUNNING
        downs = [
            (pid, exp)
            for (pid, up), exp in zip(monitor.states, monitor.expected, strict=True)
            if not up
        ]
        assert downs and all(exp for _, exp in downs), downs  # every down was expected
        assert "platform_down" not in str(monitor.fired)
        assert _degraded_alerts(monitor) == []
        assert set(levels) == {"NONE"}
        assert fi.get_isolation_status().degradation_level.name == "NONE"
        assert status(rm, "a").restart_count == 1

        # a crash is not expected: it still alerts
        world.crash("b")
        await trio.testing.wait_all_tasks_blocked()
        assert monitor.states[-1] == ("b", False) and monitor.expected[-1] is False
        assert _degraded_alerts(monitor) == ["degraded (MEDIUM): b: restarting (Crash: b crashed)"]
        await trio.sleep(2.0)
        assert status(rm, "b").state is PlatformState.RUNNING
        assert fi.get_isolation_status().degradation_level.name == "NONE"


async def test_a_restart_whose_new_instance_fails_alerts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    monitor = FakeMonitor()
    async with running_rm(world, monitor=monitor) as rm:
        await rm.load({"a": config(port=7000), "b": config()})
        await rm.update_platform_config("a", {"fail_start": True}, apply_immediately=False)
        with pytest.raises(PlatformStartError):
            await rm.restart_platform("a")
        assert status(rm, "a").state is PlatformState.ERROR
        assert monitor.states[-1] == ("a", False) and monitor.expected[-1] is False
        assert _degraded_alerts(monitor) == [
            "degraded (MEDIUM): a: error (RuntimeError: a: bad config v1)"
        ]


async def test_nothing_waits_forever_and_answers_name_the_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        await rm.add_platform("slow", config(start_delay=20.0), auto_start=False)
        await rm.add_platform("other", config())
        results: dict[str, Any] = {}

        async def call(name: str, fn: Any) -> None:
            try:
                answer = await fn()
                results[name] = (trio.current_time(), answer)
            except Exception as exc:
                results[name] = (trio.current_time(), exc)

        async with trio.open_nursery() as n:
            n.start_soon(call, "start", lambda: rm.start_platform("slow", timeout=30.0))
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(call, "stop", lambda: rm.stop_platform("slow", timeout=2.0))
            # another platform is not held up by the slow one
            n.start_soon(call, "other", lambda: rm.restart_platform("other"))
        t, exc = results["stop"]
        assert t == 2.0 and isinstance(exc, CallTimeout)
        assert str(exc) == (
            "stop of platform 'slow': no answer within 2.0 s (platform 'slow' is busy: start)"
        )
        assert results["other"][0] == 0.0 and results["other"][1].state is PlatformState.RUNNING
        assert results["start"][0] == 20.0
        assert results["start"][1].state is PlatformState.RUNNING
        # the stop whose caller gave up was not made afterwards
        await trio.sleep(1.0)
        assert status(rm, "slow").state is PlatformState.RUNNING


async def test_calls_during_a_removal_are_refused_clearly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world, sup=attrs.evolve(SUP, shutdown=5.0)) as rm:
        await rm.add_platform("a", config())
        world.live["a"].hang(3.0)  # its cleanup takes 3 s
        errors: list[BaseException] = []

        async def start_later() -> None:
            await trio.sleep(1.0)
            try:
                await rm.start_platform("a")
            except Conflict as exc:
                errors.append(exc)

        async with trio.open_nursery() as n:
            n.start_soon(rm.remove_platform, "a")
            n.start_soon(start_later)
        assert [str(e) for e in errors] == ["platform 'a' is being removed"]
        assert trio.current_time() == 3.0
        with pytest.raises(PlatformNotFound):
            await rm.start_platform("a")
        await rm.add_platform("a", config())  # the id is free again
        assert status(rm, "a").state is PlatformState.RUNNING


async def test_platform_configs_is_a_live_read_only_view(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with running_rm(world) as rm:
        view = rm.platform_configs
        assert view is rm.platform_configs  # no copy per read (the send path reads it)
        await rm.add_platform("a", config())
        assert list(view) == ["a"]
        with pytest.raises(TypeError):
            view["b"] = config()  # type: ignore[index]


async def test_breaker_trials_are_children_of_the_platforms_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    fi_cfg = FaultIsolationConfig(failure_threshold=1, cooldown=30.0)
    async with running_rm(world, fi_cfg=fi_cfg) as rm:
        await rm.add_platform("a", config())
        world.crash("a")
        await trio.testing.wait_all_tasks_blocked()
        st = status(rm, "a")
        assert st.state is PlatformState.ISOLATED and st.next_restart_at == 30.0
        ids = [c.id for c in rm.supervisor.which_children()]
        assert ids == ["a", "trial:a:2"]
        await trio.sleep(30.0)
        await trio.testing.wait_all_tasks_blocked()
        assert status(rm, "a").state is PlatformState.RUNNING
        assert world.events("a", "start") == [0.0, 30.0]
        # a person's stop drops the pending check timer with the trial
        await rm.stop_platform("a")
        await trio.testing.wait_all_tasks_blocked()
        assert [c.id for c in rm.supervisor.which_children()] == ["a"]
