"""What the runtime manager does for each request, one platform at a time.

Each function runs in a worker task of the runtime manager's nursery while the
platform's queue is held for it (``Entry.busy``), so it may wait on the
supervisor and on fault isolation (a lower actor) without holding the actor's
loop, and no two of them ever touch one platform at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..config.schema import PlatformConfig
from ..core.supervisor import ChildRunning, ChildSpec, ChildStartError, ChildStatus
from ..errors import PlatformExists
from ..faults.breaker import BreakerState
from ..faults.events import DisablePlatform, EnablePlatform
from ..faults.records import IsolationStrategy
from .lifecycle import PlatformDisabled, PlatformStartError
from .requests import Put, Restart, Start, Stop, Trial, TrialCheck

if TYPE_CHECKING:
    from .parts import Entry
    from .runtime_manager import RuntimeManager

__all__ = ["Isolate", "deep_merge", "may_restart", "run", "spec"]

log = logging.getLogger("nekobot.runtime_manager")

_ACTIVE = (ChildStatus.STARTING, ChildStatus.RUNNING, ChildStatus.STOPPING)


@attrs.frozen
class Isolate:
    """An adapter fault opened the breaker of a running platform: stop it."""

    platform_id: str


def deep_merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``updates`` merged in, nested tables key by key."""
    out = dict(base)
    for k, v in updates.items():
        old = out.get(k)
        if isinstance(v, Mapping) and isinstance(old, Mapping):
            out[k] = deep_merge(old, v)
        else:
            out[k] = v
    return out


def may_restart(strategy: IsolationStrategy) -> bool:
    """Whether the supervisor may restart a platform after this decision."""
    return strategy in (IsolationStrategy.RESTART_PLATFORM, IsolationStrategy.CONTINUE)


async def run(rm: RuntimeManager, e: Entry, msg: object) -> Any:
    """Carry out one request for the platform of ``e``; the answer to its caller."""
    match msg:
        case Start(_, recover):
            await start(rm, e, recover=recover)
            return rm._status(e)
        case Stop():
            await stop(rm, e)
            return rm._status(e)
        case Restart():
            if e.disabled:
                raise PlatformDisabled(e.pid)
            await rm.supervisor.terminate_child(e.pid)
            e.manual_restarts += 1
            await start(rm, e)
            return rm._status(e)
        case Put():
            await put(rm, e, msg)
        case DisablePlatform(pid, by, reason):
            await rm.fault_isolation.set_manual(pid, disabled=True, by=by, reason=reason)
            e.disabled = True
            rm.cancel_trial(e)
            await rm.supervisor.terminate_child(pid)
        case EnablePlatform(pid, by):
            await rm.fault_isolation.set_manual(pid, disabled=False, by=by)
            e.disabled = False
            if e.config.enabled:
                await start(rm, e)
        case Isolate(pid):
            if rm.fault_isolation.breaker_state(pid) is BreakerState.OPEN:
                await rm.supervisor.terminate_child(pid)
        case Trial():
            await trial(rm, e, msg)
        case _:
            raise TypeError(f"unknown request {msg!r}")
    return None


def spec(rm: RuntimeManager, pid: str) -> ChildSpec:
    async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        e = rm.entries[pid]
        actor = rm.platform_factory(pid, e.config)
        e.actor = actor
        try:
            await actor.run(task_status=task_status)
        finally:
            if e.actor is actor:
                e.actor = None

    return ChildSpec(id=pid, start=start, restart="permanent", shutdown=rm.cfg.shutdown)


async def start(rm: RuntimeManager, e: Entry, *, recover: bool = False) -> None:
    """Start the platform unless it runs; returns once it called ``started()``.

    Raises:
        PlatformDisabled: a person disabled it.
        PlatformStartError: it failed to start (with ``recover`` the failure
            is also handed to the normal fault path: restarted by policy).
    """
    if e.disabled:
        raise PlatformDisabled(e.pid)
    e.want = True
    rm.cancel_trial(e)  # a person's start supersedes a pending half-open trial
    fi = rm.fault_isolation
    if fi.breaker_state(e.pid) is not BreakerState.CLOSED:
        await fi.reset_breaker(e.pid, reason="started on request")
    while True:
        status = rm._child_status(e)
        if status is ChildStatus.RUNNING:
            return
        if status in _ACTIVE:
            await e.changed.wait()  # an automatic restart is under way
            continue
        try:
            await rm.supervisor.restart_child(e.pid, recover=recover)
            return
        except ChildRunning:
            await e.changed.wait()
        except ChildStartError as exc:
            if not recover:
                ctx = {"source": "supervisor", "phase": "start"}
                await fi.decide_fault(e.pid, exc.error, ctx)
            raise PlatformStartError(e.pid, exc.error) from exc.error


async def stop(rm: RuntimeManager, e: Entry) -> None:
    """Stop the platform; returns once its task finished."""
    e.want = False
    rm.cancel_trial(e)
    await rm.supervisor.terminate_child(e.pid)


async def remove(rm: RuntimeManager, e: Entry) -> None:
    """Stop the platform and forget it."""
    e.removing = True
    await stop(rm, e)
    try:
        await rm.supervisor.delete_child(e.pid)
    except LookupError:
        pass
    rm.drop_entry(e)


async def put(rm: RuntimeManager, e: Entry, msg: Put) -> None:
    """Add, change or remove the platform's section."""
    if e.fresh:
        e.fresh = False
        rm.supervisor.add_child(spec(rm, e.pid))
        if not (msg.start and e.config.enabled):
            return
        try:
            await start(rm, e, recover=msg.recover)
        except PlatformStartError:
            if not msg.recover:  # as if never added
                await remove(rm, e)
            raise
        return
    if msg.exists is False:
        raise PlatformExists(e.pid)
    if msg.config is None:
        await remove(rm, e)
        return
    new = msg.config
    if new == e.config:
        return
    if not msg.restart:
        rm.set_config(e, new)
        e.revision += 1
        return
    await replace(rm, e, new)


async def replace(rm: RuntimeManager, e: Entry, new: PlatformConfig) -> None:
    """Rebuild with ``new``: the old instance stops first (its port is free).

    Raises:
        PlatformStartError: the new section failed to start; the previous one
            was restored (and started again if it should run).
    """
    old, old_rev = e.config, e.revision
    should_run = (e.want or (new.enabled and not old.enabled)) and not e.disabled
    await rm.supervisor.terminate_child(e.pid)
    rm.set_config(e, new)
    e.revision += 1
    if not new.enabled:
        e.want = False
        return
    if not should_run:
        return
    try:
        await start(rm, e)
    except PlatformStartError as exc:
        log.error("%s; restoring the previous config", exc)
        await rm.supervisor.terminate_child(e.pid)
        rm.set_config(e, old)
        e.revision = old_rev
        if old.enabled:
            try:
                await start(rm, e, recover=True)
            except PlatformStartError as again:
                log.error("the previous config failed to start too: %s", again)
        else:
            e.want = False
        raise


async def trial(rm: RuntimeManager, e: Entry, msg: Trial) -> None:
    """The half-open trial: one start after the cooldown."""
    fi = rm.fault_isolation
    if e.trial_gen != msg.gen or e.disabled or not e.want:
        return
    if rm._child_status(e) in _ACTIVE:
        return
    if not await fi.begin_trial(e.pid):
        return
    e.isolated = False
    e.retry_at = None
    try:
        await rm.supervisor.restart_child(e.pid)
    except ChildStartError as exc:  # the breaker reopens (fault isolation tells us)
        await fi.decide_fault(e.pid, exc.error, {"source": "supervisor", "phase": "start"})
        return
    started = rm._started_at(e)
    pid = e.pid
    await rm.schedule(
        e, trio.current_time() + rm.cfg.backoff_reset, lambda gen: TrialCheck(pid, gen, started)
    )
