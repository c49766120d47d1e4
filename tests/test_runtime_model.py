"""Model test: the real runtime manager, fault isolation and config service side by
side with a tiny model of what a person expects (STYLE.md "model tests").

Hypothesis draws lists of steps on 3 platform ids: add / remove / start / stop /
restart / update / disable / enable / rollback / advance the clock, some of them
*concurrent* (several operations started in one nursery at once). Each example
runs in its own ``trio.run`` under ``MockClock(autojump_threshold=0)``, so a hang
shows as the Trio clock passing a deadline, in milliseconds.

After every step:

* every call answered within :data:`DEADLINE` seconds (Trio clock), with a
  result or an expected refusal (not found, exists, disabled, busy), never a
  ``CallTimeout``;
* the reported lifecycle equals what is running: a platform's status says
  RUNNING exactly when its supervisor child runs and exactly one instance of
  it is alive; the runtime's configs, its entries, the supervisor's platform
  children and the config service's ``[platforms]`` name the same ids; DISABLED
  is never reported as enabled and matches fault isolation's manual state;
* after a sequential step, ids, labels, running and disabled equal the model.

Policy: fake platforms (tests/platform_fakes.py), no network, no real sleeps.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nekobot.config.schema import FaultIsolationConfig, NekoBotConfig, SupervisorConfig
from nekobot.config.service import ConfigService, PlatformChanges
from nekobot.config.versions import ConfigVersionManager
from nekobot.core.actor import Mailbox
from nekobot.core.supervisor import ChildStatus
from nekobot.errors import CallTimeout, Conflict, NekoBotError, PlatformNotFound
from nekobot.faults.fault_isolation import FaultIsolation
from nekobot.runtime.runtime_manager import (
    PlatformLifecycleStatus,
    PlatformState,
    RuntimeManager,
    is_timer,
)
from nekobot.storage import Store

from .platform_fakes import World, config

T = TypeVar("T")
PIDS = ("p0", "p1", "p2")
LABELS = ("a", "b", "c")
DEADLINE = 10.0
"""Seconds (Trio clock) any one call may take (the HTTP API answers within 9 s)."""

SUP = SupervisorConfig(backoff_min=0.5, backoff_max=4.0, jitter=0.0, backoff_reset=5.0)
FI = FaultIsolationConfig(failure_threshold=3, error_window=30.0, cooldown=5.0)

_op = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(PIDS), st.sampled_from(LABELS), st.booleans()),
    st.tuples(st.just("update"), st.sampled_from(PIDS), st.sampled_from(LABELS), st.just(True)),
    st.tuples(
        st.sampled_from(["remove", "start", "stop", "restart", "disable", "enable"]),
        st.sampled_from(PIDS),
        st.just(""),
        st.just(True),
    ),
    st.tuples(st.just("rollback"), st.just(""), st.just(""), st.integers(0, 30)),
    st.tuples(st.just("advance"), st.just(""), st.just(""), st.sampled_from([0.1, 1.0, 7.0])),
)
_step = st.one_of(_op.map(lambda op: [op]), st.lists(_op, min_size=2, max_size=4))


@attrs.define
class Model:
    """What a person expects: per id, its label, whether it should run, whether disabled."""

    label: dict[str, str] = attrs.field(factory=dict)
    want: dict[str, bool] = attrs.field(factory=dict)
    disabled: dict[str, bool] = attrs.field(factory=dict)
    versions: dict[int, dict[str, str]] = attrs.field(factory=dict)
    """Revision -> labels of that config version."""

    def running(self, pid: str) -> bool:
        return self.want[pid] and not self.disabled[pid]


class InlineStore(Store):
    """The real SQLite store (``:memory:``), its statements run in the Trio thread:
    a worker thread would let the autojump clock leap past every deadline."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await trio.lowlevel.checkpoint()
        return self.run_sync(fn)


class Bench:
    """The real components wired as app.py wires them."""

    def __init__(self) -> None:
        self.world = World()
        self.store = InlineStore(":memory:")
        self.store.open_sync()
        runtime_mb: Mailbox[Any] = Mailbox("runtime")
        config_mb: Mailbox[Any] = Mailbox("config")
        self.fi = FaultIsolation.from_config(FI, store=self.store, events=runtime_mb.ref)
        self.rm = RuntimeManager.from_config(
            SUP,
            fault_isolation=self.fi,
            platform_factory=self.world.factory,
            config_owner=PlatformChanges(config_mb.ref),
            mailbox=runtime_mb,
        )
        self.svc = ConfigService(
            NekoBotConfig(),
            history=ConfigVersionManager(store=self.store),
            runtime=self.rm,
            mailbox=config_mb,
        )

    async def call(self, model: Model | None, op: tuple[str, str, str, Any]) -> None:
        """Make one call; with a model, check its answer and update the model."""
        kind, pid, label, arg = op
        rm, fi = self.rm, self.fi
        exists = model is not None and pid in model.label
        expect: type[BaseException] | None = None
        if model is not None and kind not in ("add", "rollback", "advance") and not exists:
            expect = PlatformNotFound
        elif model is not None and kind == "add" and exists:
            expect = Conflict  # PlatformExists
        elif model is not None and kind in ("start", "restart") and model.disabled[pid]:
            expect = Conflict  # PlatformDisabled
        err: BaseException | None = None
        with trio.fail_after(DEADLINE):  # a hang fails here, in Trio-clock time
            try:
                if kind == "advance":
                    await trio.sleep(arg)
                elif kind == "add":
                    await rm.add_platform(pid, config(label=label), auto_start=arg)
                elif kind == "update":
                    await rm.update_platform_config(pid, {"label": label})
                elif kind == "remove":
                    await rm.remove_platform(pid)
                elif kind == "start":
                    await rm.start_platform(pid)
                elif kind == "stop":
                    await rm.stop_platform(pid)
                elif kind == "restart":
                    await rm.restart_platform(pid)
                elif kind == "disable":
                    await fi.disable_platform(pid, by="model")
                elif kind == "enable":
                    await fi.enable_platform(pid, by="model")
                else:
                    revisions = sorted(model.versions) if model is not None else [1]
                    target = revisions[arg % len(revisions)]
                    await self.svc.rollback_to_version(target)
            except CallTimeout:
                raise  # never: every call answers within its deadline
            except NekoBotError as exc:
                err = exc
        if model is None:  # concurrent: a refusal (not found, exists, disabled, busy) is fine
            assert err is None or isinstance(err, (Conflict, LookupError)), (op, err)
            return
        if expect is not None:
            assert isinstance(err, expect), (op, "should have raised", expect, err)
            return
        assert err is None, (op, err)
        self._apply(model, op)

    def _apply(self, m: Model, op: tuple[str, str, str, Any]) -> None:
        kind, pid, label, arg = op
        if kind == "add":
            m.label[pid], m.want[pid], m.disabled[pid] = label, bool(arg), False
        elif kind == "update":
            m.label[pid] = label
        elif kind == "remove":
            for d in (m.label, m.want, m.disabled):
                del d[pid]
        elif kind in ("start", "restart"):
            m.want[pid] = True
        elif kind == "stop":
            m.want[pid] = False
        elif kind == "disable":
            m.disabled[pid] = True
        elif kind == "enable":
            m.disabled[pid], m.want[pid] = False, True
        elif kind == "rollback":
            target = m.versions[sorted(m.versions)[arg % len(m.versions)]]
            for p in list(m.label):
                if p not in target:
                    for d in (m.label, m.want, m.disabled):
                        del d[p]
            for p, lbl in target.items():
                if p not in m.label:
                    m.label[p], m.want[p], m.disabled[p] = lbl, True, False
                m.label[p] = lbl
        if kind in ("add", "update", "remove", "rollback"):
            rev = self.svc.current_revision
            assert rev is not None
            m.versions[rev] = dict(m.label)

    def observed(self) -> Model:
        """The model as the running components show it (after a concurrent step)."""
        m = Model()
        for pid, pc in self.rm.platform_configs.items():
            st_ = self.status(pid)
            m.label[pid] = pc.settings.label
            m.disabled[pid] = st_.state is PlatformState.DISABLED
            m.want[pid] = self.rm.entries[pid].want
        return m

    def status(self, pid: str) -> PlatformLifecycleStatus:
        st_ = self.rm.get_platform_lifecycle_status(pid)
        assert isinstance(st_, PlatformLifecycleStatus)
        return st_

    def check(self, model: Model) -> None:
        rm, world = self.rm, self.world
        children = {c.id: c.status for c in rm.supervisor.which_children() if not is_timer(c.id)}
        ids = set(rm.platform_configs)
        assert ids == set(rm.entries) == set(children) == set(self.svc.config.platforms)
        assert ids == set(model.label), (ids, model)
        for pid in ids:
            st_ = self.status(pid)
            running = st_.state is PlatformState.RUNNING
            assert running == (children[pid] is ChildStatus.RUNNING), (pid, st_, children)
            assert world.alive.get(pid, 0) == (1 if running else 0), (pid, st_)
            assert world.max_alive.get(pid, 0) <= 1  # never two instances at once
            assert not (st_.state is PlatformState.DISABLED and st_.enabled)
            assert (st_.state is PlatformState.DISABLED) == self.fi.is_disabled(pid)
            assert rm.platform_configs[pid] == self.svc.config.platforms[pid]
            assert rm.platform_configs[pid].settings.label == model.label[pid], pid
            assert running == model.running(pid), (pid, st_, model)
            assert (st_.state is PlatformState.DISABLED) == model.disabled[pid], (pid, st_)


def _run(steps: list[list[tuple[str, str, str, Any]]]) -> None:
    async def main() -> None:
        bench = Bench()
        model = Model()
        async with trio.open_nursery() as n:
            await n.start(bench.fi.run)
            await n.start(bench.rm.run)
            await n.start(bench.svc.run)
            await bench.svc.record_start("start")
            assert bench.svc.current_revision is not None
            model.versions[bench.svc.current_revision] = {}
            for step in steps:
                if len(step) == 1:
                    await bench.call(model, step[0])
                else:
                    async with trio.open_nursery() as ops:
                        for op in step:
                            ops.start_soon(bench.call, None, op)
                    versions = model.versions
                    model = bench.observed()
                    model.versions = versions  # rollbacks go to states known before
                await trio.testing.wait_all_tasks_blocked()
                bench.check(model)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(
    max_examples=int(os.environ.get("NEKOBOT_MODEL_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(started=st.lists(st.booleans(), min_size=3, max_size=3), steps=st.lists(_step, max_size=14))
@example(
    started=[True, False, True],
    steps=[
        [("disable", "p0", "", True)],
        [("stop", "p0", "", True)],
        [("enable", "p0", "", True)],
        [("update", "p1", "b", True), ("rollback", "", "", 0), ("start", "p1", "", True)],
    ],
)
def test_random_interleavings_keep_lifecycle_true(
    started: list[bool], steps: list[list[tuple[str, str, str, Any]]]
) -> None:
    # the three ids exist at first (auto_start drawn), so most steps act on a platform
    first = [[("add", pid, "a", on)] for pid, on in zip(PIDS, started, strict=True)]
    _run(first + steps)


def test_three_clients_on_one_id_never_hang() -> None:
    """The issue's report: add / delete / restart / stop / start / disable at once."""
    ops = [
        ("add", "p0", "a", True),
        ("remove", "p0", "", True),
        ("restart", "p0", "", True),
        ("stop", "p0", "", True),
        ("start", "p0", "", True),
        ("disable", "p0", "", True),
        ("enable", "p0", "", True),
        ("update", "p0", "b", True),
    ]
    steps = [[("add", "p0", "a", True)]]
    for i in range(12):
        steps.append([ops[i % 8], ops[(i * 3 + 1) % 8], ops[(i * 5 + 2) % 8]])
    steps.append([("add", "p1", "c", True)])  # afterwards a new platform can be added
    steps.append([("remove", "p1", "", True)])
    _run(steps)


def test_a_wrong_model_is_caught() -> None:
    """The checks can fail: a platform stopped behind the model's back is noticed."""

    async def main() -> None:
        bench = Bench()
        async with trio.open_nursery() as n:
            await n.start(bench.fi.run)
            await n.start(bench.rm.run)
            await n.start(bench.svc.run)
            await bench.svc.record_start("start")
            model = Model(versions={1: {}})
            await bench.call(model, ("add", "p0", "a", True))
            await bench.rm.supervisor.terminate_child("p0")
            with pytest.raises(AssertionError):
                bench.check(model)
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
