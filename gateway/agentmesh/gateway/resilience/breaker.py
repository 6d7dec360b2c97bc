"""A circuit breaker per agent, on pybreaker, made safe for asyncio callers.

pybreaker keeps the state machine (closed, open, half-open), the counters and
the optional shared storage; this module adds what an event loop needs:

* admission and the recording of an outcome are two separate, non-blocking
  steps around an awaited call (pybreaker's ``call`` cannot await);
* in half-open exactly one call — the probe — is admitted; every other caller
  fails fast until the probe's outcome is known;
* only outcomes the caller classifies as the agent's failure count; a
  cancelled call or a caller-side error (``Outcome.NEUTRAL``) changes nothing;
* time comes from an injectable clock, so tests drive the reset timeout.

With shared state (pybreaker's Redis storage) the storage is synchronous, so
:meth:`AgentBreaker.acquire` and :meth:`AgentBreaker.release` run its calls in
a worker thread; a breaker known to be open fails fast from a local copy of
its reopening time without touching Redis. The single probe is per gateway
process: with N gateway replicas sharing a breaker, at most N probes go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

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


class AgentBreaker:
    """The circuit breaker of one agent."""

    def __init__(
        self,
        agent: str,
        policy: BreakerPolicy,
        *,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.agent = agent
        self.policy = policy
        self.clock = clock
        self.shared = storage is not None
        self._storage = storage or pybreaker.CircuitMemoryStorage(CLOSED)
        self._lock = threading.Lock()
        self._probing = False
        # Local copy of when an open breaker may probe: the fast-fail path
        # reads only this float.
        self._open_until = 0.0
        # Openings in a row without closing: the wait before the next probe doubles.
        self._opened_in_row = 0
        self._probe_now = False  # a replica reported SERVING again: probe at once
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

    # -- the two steps around a call ------------------------------------------

    def admit(self) -> Ticket:
        """Admit one call or raise :class:`BreakerOpen` (never blocks on I/O when local)."""
        now = self.clock()
        if now < self._open_until:
            raise BreakerOpen(self.agent, retry_after=self._open_until - now)
        with self._lock:
            state = self._breaker.current_state
            if state == CLOSED:
                return _CLOSED_TICKET
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
        with self._lock:
            if ticket.probe:
                self._probing = False
            if outcome is Outcome.NEUTRAL:
                return
            state = self._breaker.current_state
            # A call admitted while closed that ends after the breaker opened
            # says nothing about the agent's recovery: only the probe does.
            if state == CLOSED or (state == HALF_OPEN and ticket.probe):
                with contextlib.suppress(_Failed, pybreaker.CircuitBreakerError):
                    self._breaker.call(_succeed if outcome is Outcome.SUCCESS else _fail)

    async def acquire(self) -> Ticket:
        """:meth:`admit`, off the event loop when the state lives in Redis."""
        if not self.shared or self.clock() < self._open_until:
            return self.admit()
        return await asyncio.to_thread(self.admit)

    async def release(self, ticket: Ticket, outcome: Outcome) -> None:
        """:meth:`record`, off the event loop when the state lives in Redis."""
        if not self.shared:
            self.record(ticket, outcome)
            return
        await asyncio.to_thread(self.record, ticket, outcome)

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

    def _wait(self) -> float:
        """Seconds an open breaker waits before its probe: ``first_probe``, doubled for
        each failed probe in a row, at most ``reset_timeout``."""
        first = min(self.policy.first_probe, self.policy.reset_timeout)
        doublings = min(max(self._opened_in_row - 1, 0), 32)
        return float(min(self.policy.reset_timeout, first * 2.0**doublings))

    def _retry_at(self) -> float:
        opened = self._storage.opened_at
        if opened is None or self._probe_now:  # unknown (shared state) or asked: probe now
            return 0.0
        return opened.timestamp() + self._wait()

    def _on_transition(self, old: str | None, new: str) -> None:
        if new == OPEN:
            now = self.clock()
            self._opened_in_row += 1
            self._probe_now = False
            # pybreaker stamps the opening with the wall clock; use ours so
            # an injected clock drives the reset timeout.
            self._storage.opened_at = datetime.fromtimestamp(now, UTC)
            self._open_until = now + self._wait()
        else:
            if new == CLOSED:
                self._opened_in_row = 0
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


def redis_storage(redis_url: str, agent: str) -> pybreaker.CircuitBreakerStorage:
    """Shared breaker state for ``agent`` in Redis (raises when Redis cannot be reached)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return pybreaker.CircuitRedisStorage(CLOSED, client, namespace=f"agentmesh:breaker:{agent}")


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "AgentBreaker",
    "BreakerOpen",
    "BreakerSnapshot",
    "Outcome",
    "Ticket",
]
