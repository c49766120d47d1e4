"""The circuit breaker as a pure decision function (Akka ``CircuitBreaker``).

:func:`decide` maps a breaker's state, one fault and the time to a
:class:`Decision`; :func:`open_now`, :func:`begin_trial`,
:func:`trial_succeeded` and :func:`reset` are the other transitions. None of
them has side effects: :class:`~nekobot.faults.fault_isolation.FaultIsolation`
(an actor) keeps the state and carries the decisions out.

Times are Trio clock seconds (``trio.current_time()``).
"""

from __future__ import annotations

import bisect
import enum

import attrs

__all__ = [
    "Action",
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "Decision",
    "Fault",
    "begin_trial",
    "decide",
    "open_now",
    "reset",
    "trial_succeeded",
]


class BreakerState(enum.Enum):
    """A platform's circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Action(enum.Enum):
    """What a fault leads to."""

    RESTART = "restart"
    """The platform crashed; restart it after its backoff delay (breaker closed)."""
    CONTINUE = "continue"
    """An adapter fault; the platform still runs and the breaker stays closed."""
    OPEN = "open"
    """Too many faults in the window: open the breaker until ``retry_at``."""
    REOPEN = "reopen"
    """The half-open trial failed: open again, the cooldown doubled (capped)."""
    STAY_OPEN = "stay_open"
    """The breaker is open already: nothing starts before ``retry_at``."""
    STAY_DISABLED = "stay_disabled"
    """A person disabled the platform: it is never restarted automatically."""


@attrs.frozen(kw_only=True)
class BreakerPolicy:
    """The ``[fault_isolation]`` numbers the breaker uses."""

    failure_threshold: int = 5
    """Faults within ``error_window`` that open the breaker."""
    error_window: float = 60.0
    """Seconds (Trio clock) a fault counts towards the threshold."""
    cooldown: float = 30.0
    """Seconds of the first open period."""
    max_cooldown: float = 600.0
    """Cap of the doubled cooldown, seconds."""


@attrs.frozen(kw_only=True)
class BreakerSnapshot:
    """One breaker's state (immutable; every transition returns a new one)."""

    state: BreakerState = BreakerState.CLOSED
    failures: tuple[float, ...] = ()
    """Trio clock times of the faults inside the error window (state CLOSED)."""
    cooldown: float = 30.0
    """Seconds the current (OPEN) or next open period lasts."""
    retry_at: float | None = None
    """Trio clock time of the half-open trial (state OPEN), else ``None``."""
    disabled: bool = False
    """A person disabled the platform."""
    reason: str = ""
    """Why it is in this state."""


@attrs.frozen(kw_only=True)
class Fault:
    """One fault as the breaker sees it."""

    crashed: bool
    """The platform's task ended with it (else an adapter reported it and runs on)."""
    summary: str = ""
    """``"Type: message"``, for the reason text."""


@attrs.frozen(kw_only=True)
class Decision:
    """What :func:`decide` answers."""

    action: Action
    state: BreakerSnapshot
    """The breaker after the fault."""

    @property
    def restart(self) -> bool:
        """The supervisor may restart the platform (by its backoff)."""
        return self.action in (Action.RESTART, Action.CONTINUE)

    @property
    def opened(self) -> bool:
        """The breaker went (back) to OPEN because of this fault."""
        return self.action in (Action.OPEN, Action.REOPEN)


def _open(s: BreakerSnapshot, now: float, cooldown: float, reason: str) -> BreakerSnapshot:
    return attrs.evolve(
        s,
        state=BreakerState.OPEN,
        failures=(),
        cooldown=cooldown,
        retry_at=now + cooldown,
        reason=reason,
    )


def decide(state: BreakerSnapshot, fault: Fault, now: float, policy: BreakerPolicy) -> Decision:
    """Decide what one fault leads to.

    Args:
        state: The breaker before the fault.
        fault: The fault.
        now (float): Trio clock seconds.
        policy: Threshold, window and cooldowns.

    Returns:
        The action and the breaker after it. A disabled platform is never
        restarted; the breaker opens only when ``failure_threshold`` faults
        fell within ``error_window`` seconds (or a half-open trial failed);
        no cooldown exceeds ``max_cooldown``.
    """
    if state.disabled:
        return Decision(action=Action.STAY_DISABLED, state=state)
    if state.state is BreakerState.HALF_OPEN:
        cooldown = min(state.cooldown * 2, policy.max_cooldown)
        why = f"half-open trial failed: {fault.summary}"
        return Decision(action=Action.REOPEN, state=_open(state, now, cooldown, why))
    if state.state is BreakerState.OPEN:
        return Decision(action=Action.STAY_OPEN, state=state)
    # failures are ascending: drop those out of the window (a C-level slice), and
    # keep only the last threshold - 1 (no older one can count towards an opening)
    kept = state.failures[bisect.bisect_right(state.failures, now - policy.error_window) :]
    failures = (*kept[max(0, len(kept) - policy.failure_threshold + 1) :], now)
    if len(failures) >= policy.failure_threshold:
        why = f"{len(failures)} faults within {policy.error_window} s (last: {fault.summary})"
        cooldown = min(state.cooldown, policy.max_cooldown)
        return Decision(action=Action.OPEN, state=_open(state, now, cooldown, why))
    action = Action.RESTART if fault.crashed else Action.CONTINUE
    # (the constructor, not attrs.evolve: this is the restart path)
    after = BreakerSnapshot(
        state=state.state,
        failures=failures,
        cooldown=state.cooldown,
        retry_at=state.retry_at,
        disabled=state.disabled,
        reason=state.reason,
    )
    return Decision(action=action, state=after)


def open_now(
    state: BreakerSnapshot, now: float, policy: BreakerPolicy, reason: str
) -> BreakerSnapshot:
    """Open the breaker at once (e.g. the restart intensity was exceeded).

    From HALF_OPEN the cooldown doubles (capped at ``max_cooldown``).
    """
    cooldown = state.cooldown
    if state.state is BreakerState.HALF_OPEN:
        cooldown = cooldown * 2
    return _open(state, now, min(cooldown, policy.max_cooldown), reason)


def begin_trial(state: BreakerSnapshot) -> BreakerSnapshot:
    """OPEN -> HALF_OPEN: the cooldown passed, one trial start is made."""
    if state.state is not BreakerState.OPEN:
        return state
    return attrs.evolve(
        state, state=BreakerState.HALF_OPEN, retry_at=None, reason="cooldown passed"
    )


def trial_succeeded(state: BreakerSnapshot, policy: BreakerPolicy) -> BreakerSnapshot:
    """HALF_OPEN -> CLOSED: the trial ran long enough; the cooldown resets."""
    if state.state is not BreakerState.HALF_OPEN:
        return state
    return attrs.evolve(
        state,
        state=BreakerState.CLOSED,
        failures=(),
        cooldown=policy.cooldown,
        retry_at=None,
        reason="half-open trial succeeded",
    )


def reset(state: BreakerSnapshot, policy: BreakerPolicy, reason: str) -> BreakerSnapshot:
    """Close the breaker at once (a person intervened); the cooldown resets."""
    return attrs.evolve(
        state,
        state=BreakerState.CLOSED,
        failures=(),
        cooldown=policy.cooldown,
        retry_at=None,
        reason=reason if state.state is not BreakerState.CLOSED else state.reason,
    )
