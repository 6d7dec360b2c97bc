"""A circuit breaker per agent, on pybreaker, made for asyncio callers.

pybreaker keeps the state machine (closed, open, half-open) and the counters
in this process; this module adds what an event loop needs:

* admission and the recording of an outcome are two separate, non-blocking
  steps around an awaited call (pybreaker's ``call`` cannot await); a closed
  breaker admits from one local flag, and a success that changes nothing
  does not reach pybreaker at all;
* in half-open exactly one call — the probe — is admitted; every other caller
  fails fast until the probe's outcome is known;
* only outcomes the caller classifies as the agent's failure count; a
  cancelled call or a caller-side error (``Outcome.NEUTRAL``) changes nothing;
* time comes from an injectable clock, so tests drive the reset timeout.

With several gateway replicas, a :class:`~agentmesh.gateway.resilience.shared.BreakerSync`
shares openings, closings and failure counts through Redis. It is told of
them here and writes them in the background, so no call waits on Redis: the
hot path stays local (see that module). The single probe is per gateway
process: with N gateway replicas sharing a breaker, at most N probes go out.
All methods run on the event loop's thread.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import pybreaker

from agentmesh.gateway.policy import BreakerPolicy
from agentmesh.runtime.errors import Reason, Unavailable
from agentmesh.telemetry.metrics import BREAKER_STATE, BREAKER_TRANSITIONS

log = logging.getLogger("agentmesh.gateway.breaker")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

Clock = Callable[[], float]
"""Seconds since the epoch (pybreaker stores when a breaker opened as a UTC datetime)."""


class Outcome(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"  # the agent failed: counts towards opening
    NEUTRAL = "neutral"  # cancelled, or the caller's own error: not counted either way


class BreakerOpen(Unavailable):
    """The agent's breaker refused the call; nothing was sent to the agent.

    ``retry_after`` (seconds until the next probe; None while a probe is in
    flight) reaches the caller as RetryInfo.
    """

    reason = Reason.BREAKER_OPEN

    def __init__(self, agent: str, *, retry_after: float | None) -> None:
        if retry_after is None:
            why = "half-open and its probe call is in flight"
        else:
            why = f"open after repeated failures; next probe in {retry_after:.1f}s"
        super().__init__(
            f"circuit breaker for agent {agent!r} is {why}",
            retry_after=retry_after,
            metadata={"agent": agent},
        )
        self.agent = agent


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted call; hand it back to :meth:`AgentBreaker.release`."""

    probe: bool


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    state: str
    failures: int
    opened_at: float  # unix seconds; 0 when closed
    retry_after: float  # seconds until a probe may go; 0 unless open


_CLOSED_TICKET = Ticket(probe=False)
_PROBE_TICKET = Ticket(probe=True)


class _Failed(Exception):
    """Replayed into pybreaker to record a failure."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _Failed


class SharedState(Protocol):
    """Where a breaker reports what other replicas must know (never blocks)."""

    def failure(self, agent: str, threshold: int, probe_at: float) -> None: ...

    def reset(self, agent: str) -> None: ...

    def opened(self, agent: str, opened_at: float, probe_at: float) -> None: ...

    def closed(self, agent: str) -> None: ...


class AgentBreaker:
    """The circuit breaker of one agent."""

    def __init__(
        self,
        agent: str,
        policy: BreakerPolicy,
        *,
        clock: Clock = time.time,
    ) -> None:
        self.agent = agent
        self.policy = policy
        self.clock = clock
        self.sync: SharedState | None = None
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._closed = True  # mirrors the state: the closed path reads only this flag
        self._probing = False
        # When an open breaker may probe; the fast-fail path reads only _open_until.
        self._probe_at = 0.0
        self._open_until = 0.0
        # Openings in a row without closing: the wait before the next probe doubles.
        self._opened_in_row = 0
        self._probe_now = False  # a replica reported SERVING again: probe at once
        self._from_shared = False  # applying another replica's transition: don't report it back
        self._shared_failures = False  # failures reported since the last success
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=policy.failure_threshold,
            reset_timeout=policy.reset_timeout,
            success_threshold=policy.success_threshold,
            state_storage=self._storage,
            name=agent,
            throw_new_error_on_trip=False,
            listeners=[_Transitions(self)],
        )
        BREAKER_STATE.labels(agent=agent).set(_GAUGE.get(self._breaker.current_state, 0))

    @property
    def shared(self) -> bool:
        return self.sync is not None

    # -- the two steps around a call ------------------------------------------

    def admit(self) -> Ticket:
        """Admit one call or raise :class:`BreakerOpen` (never blocks)."""
        if self._closed:
            return _CLOSED_TICKET
        now = self.clock()
        if now < self._open_until:
            raise BreakerOpen(self.agent, retry_after=self._open_until - now)
        state = self._breaker.current_state
        if state == OPEN:
            retry_at = self._retry_at()
            if now < retry_at:
                self._open_until = retry_at
                raise BreakerOpen(self.agent, retry_after=retry_at - now)
            if self._probing:
                raise BreakerOpen(self.agent, retry_after=None)
            self._breaker.half_open()
        if self._probing:
            raise BreakerOpen(self.agent, retry_after=None)
        self._probing = True
        return _PROBE_TICKET

    def record(self, ticket: Ticket, outcome: Outcome) -> None:
        """Count the outcome of an admitted call (stale outcomes are ignored)."""
        if ticket.probe:
            self._probing = False
        if outcome is Outcome.NEUTRAL:
            return
        if self._closed:
            if outcome is Outcome.SUCCESS:
                if self._storage.counter == 0 and not self._shared_failures:
                    return  # nothing to reset: the common case costs two reads
                if self._shared_failures and self.sync is not None:
                    self._shared_failures = False
                    self.sync.reset(self.agent)
        elif not (ticket.probe and self._breaker.current_state == HALF_OPEN):
            # A call admitted while closed that ends after the breaker opened
            # says nothing about the agent's recovery: only the probe does.
            return
        with contextlib.suppress(_Failed, pybreaker.CircuitBreakerError):
            self._breaker.call(_succeed if outcome is Outcome.SUCCESS else _fail)
        if outcome is Outcome.FAILURE and self._closed and self.sync is not None:
            # Still closed here: the other replicas' failures may open it together.
            self._shared_failures = True
            now = self.clock()
            self.sync.failure(self.agent, self.policy.failure_threshold, now + self._first_wait())

    def apply_shared(self, state: str, opened_at: float, probe_at: float) -> None:
        """Take a transition another replica made (or that the shared count decided)."""
        self._from_shared = True
        try:
            current = self._breaker.current_state
            if state == OPEN:
                if current == OPEN and self._probe_at == probe_at:
                    return
                if current != OPEN:
                    self._breaker.open()
                self._storage.opened_at = datetime.fromtimestamp(opened_at, UTC)
                self._probe_at = probe_at
                self._open_until = probe_at
                self._probe_now = False
            elif state == CLOSED and current != CLOSED:
                self._breaker.close()
            self._shared_failures = False
        finally:
            self._from_shared = False

    # -- visibility ----------------------------------------------------------------

    def snapshot(self) -> BreakerSnapshot:
        state = self._breaker.current_state
        if state == CLOSED:
            return BreakerSnapshot(CLOSED, self._breaker.fail_counter, 0.0, 0.0)
        opened = self._storage.opened_at
        opened_at = opened.timestamp() if opened is not None else 0.0
        retry_after = 0.0
        if state == OPEN:
            retry_after = max(0.0, self._retry_at() - self.clock())
        return BreakerSnapshot(state, self._breaker.fail_counter, opened_at, retry_after)

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    def probe_soon(self) -> None:
        """Let the next call probe an open breaker now (a replica's health says SERVING)."""
        if self._open_until or self._breaker.current_state == OPEN:
            self._probe_now = True
            self._open_until = 0.0

    def _first_wait(self) -> float:
        return float(min(self.policy.first_probe, self.policy.reset_timeout))

    def _wait(self) -> float:
        """Seconds an open breaker waits before its probe: ``first_probe``, doubled for
        each failed probe in a row, at most ``reset_timeout``."""
        doublings = min(max(self._opened_in_row - 1, 0), 32)
        return float(min(self.policy.reset_timeout, self._first_wait() * 2.0**doublings))

    def _retry_at(self) -> float:
        return 0.0 if self._probe_now else self._probe_at

    def _on_transition(self, old: str | None, new: str) -> None:
        self._closed = new == CLOSED
        if new == OPEN:
            now = self.clock()
            self._opened_in_row += 1
            self._probe_now = False
            # pybreaker stamps the opening with the wall clock; use ours so
            # an injected clock drives the reset timeout.
            self._storage.opened_at = datetime.fromtimestamp(now, UTC)
            self._probe_at = self._open_until = now + self._wait()
            if self.sync is not None and not self._from_shared:
                self.sync.opened(self.agent, now, self._probe_at)
        else:
            if new == CLOSED:
                self._opened_in_row = 0
                if self.sync is not None and not self._from_shared:
                    self.sync.closed(self.agent)
            self._probe_now = False
            self._open_until = 0.0
        BREAKER_STATE.labels(agent=self.agent).set(_GAUGE.get(new, 0))
        BREAKER_TRANSITIONS.labels(agent=self.agent, to=new).inc()
        log.warning(
            "circuit breaker %s",
            new,
            extra={
                "agent": self.agent,
                "from_state": old,
                "to_state": new,
                "failures": self._breaker.fail_counter,
                "shared": self._from_shared,
            },
        )


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: AgentBreaker) -> None:
        self._owner = owner

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._owner._on_transition(old_state.name if old_state else None, new_state.name)


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "AgentBreaker",
    "BreakerOpen",
    "BreakerSnapshot",
    "Outcome",
    "SharedState",
    "Ticket",
]
