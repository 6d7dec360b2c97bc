"""Calls from the gateway to agents, guarded on every hop.

One logical call (:meth:`Upstream.invoke` or :meth:`Upstream.stream`) goes:

1. deadline: the caller's remaining time minus ``deadline_margin`` (or
   ``default_timeout`` when the caller set none); each attempt also capped by
   the agent's own ``timeout``;
2. the agent is skipped when every replica drains (health NOT_SERVING);
3. circuit breaker: an open breaker refuses at once with UNAVAILABLE naming
   it; in half-open one probe call goes, the others are refused;
4. attempts: each takes a bulkhead slot (RESOURCE_EXHAUSTED when the agent is
   at its cap), picks a replica round-robin (skipping draining and ejected
   ones), and may be hedged on a second replica for idempotent calls;
5. retries: UNAVAILABLE on another replica at once, or after exponential
   backoff with full jitter; RESOURCE_EXHAUSTED only when the agent asked for
   a wait (RetryInfo, or its ``retry-after`` alias); never past the deadline,
   and only while the agent's retry budget allows;
6. fallback: when the agent is open, draining, failing or over its cap, the
   configured fallback agent answers (its response's ``agent`` says so).

The breaker counts the logical call's outcome: a call that failed on one
replica and succeeded on another is a success for the agent, while the
failing replica is counted (and maybe ejected) on its own. Cancellation and
the caller's own errors (INVALID_ARGUMENT, NOT_FOUND, ...) count for nothing.

A DEADLINE_EXCEEDED counts only when the gateway's own limit was the binding
one: the agent's ``timeout`` (shorter than what the caller had left) or the
gateway's ``default_timeout`` (the caller set no deadline). When the deadline
sent downstream was the caller's remaining budget, its expiry is the caller's
doing and counts for nothing, for the agent and for the replica, so a caller
with a short deadline cannot open a breaker or eject a replica for everyone.
A hedge that loses the race while still waiting counts as a failure of its
replica (not of the agent): a hung replica is ejected even when every call
to it is saved by its hedge.

Timing and classification come from the resilience kernel
(:mod:`agentmesh.runtime.resilience`); an agent's rich error details
(ErrorInfo, BadRequest, RetryInfo) reach the gateway's caller with its status.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import random
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from agentmesh.gateway.auth import work_owner
from agentmesh.gateway.config import GatewaySettings
from agentmesh.gateway.registry import AgentEntry, Registry, Replica, StreamCall
from agentmesh.gateway.resilience import AgentGuard, BreakerOpen, BulkheadFull, Outcome
from agentmesh.gateway.resilience.breaker import Ticket
from agentmesh.runtime.delegation import hop_metadata
from agentmesh.runtime.errors import AgentError, DeadlineExceeded, ErrorCode, Reason, Unavailable
from agentmesh.runtime.principal import principal_metadata
from agentmesh.runtime.resilience import (
    CALLER_CODES,
    Deadline,
    is_caller_error,
    is_retryable,
    retry_wait,
)
from agentmesh.runtime.status import details_of, error_code
from agentmesh.telemetry.client import ClientSpan
from agentmesh.telemetry.metrics import (
    UPSTREAM_DURATION,
    UPSTREAM_IN_FLIGHT,
    UPSTREAM_REJECTED,
    UPSTREAM_REQUESTS,
    UPSTREAM_RETRIES,
)
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.upstream")


@functools.cache
def _agent_metrics(agent: str) -> tuple[Any, Any]:
    """``agent``'s in-flight gauge and duration histogram children (``labels()`` is not free)."""
    return UPSTREAM_IN_FLIGHT.labels(agent=agent), UPSTREAM_DURATION.labels(agent=agent)


def _calls_under_way(registry: Registry, agent: str) -> Callable[[], float]:
    """What ``agent``'s in-flight gauge reads when scraped: its replicas' own counts (kept
    per call anyway), so a call costs the gauge nothing. The gauge is process-wide and
    outlives a gateway (tests run several): it must not keep the registry alive."""
    registry_ref = weakref.ref(registry)

    def count() -> float:
        current = registry_ref()
        entry = current.get(agent) if current is not None else None
        return float(sum(r.stats.in_flight for r in entry.replicas)) if entry is not None else 0.0

    return count


@functools.cache
def _requests_metric(agent: str, code: str) -> Any:
    return UPSTREAM_REQUESTS.labels(agent=agent, code=code)


_INVOKE = "agentmesh.v1.Agent/Invoke"
_INVOKE_STREAM = "agentmesh.v1.Agent/InvokeStream"

# The caller's own mistakes: the agent is fine, so they count for nothing.
CALLER_ERRORS = CALLER_CODES
# Errors after which another agent may well answer.
_FALLBACK_CODES = frozenset(
    {ErrorCode.UNAVAILABLE, ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.INTERNAL,
     ErrorCode.DEADLINE_EXCEEDED}
)  # fmt: skip

T = TypeVar("T")

# Whether the current attempt's deadline is the caller's remaining budget (set by the
# retry loop for each attempt; a hedge, started from it, inherits it).
_caller_bound: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "agentmesh_caller_bound_deadline", default=False
)


def _attempt_outcome(code: grpc.StatusCode, retry_after: float | None = None) -> Outcome:
    """:func:`outcome_of`, with a deadline the caller set counting for nothing."""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and _caller_bound.get():
        return Outcome.NEUTRAL
    return outcome_of(code, retry_after)


def outcome_of(code: grpc.StatusCode, retry_after: float | None = None) -> Outcome:
    """How a status counts for the agent's breaker and the replica's ejection."""
    if code == grpc.StatusCode.OK:
        return Outcome.SUCCESS
    # An overloaded agent asks for a retry later (a failure); RESOURCE_EXHAUSTED
    # without that is a request over the agent's limits, i.e. the caller's.
    return Outcome.NEUTRAL if is_caller_error(code, retry_after) else Outcome.FAILURE


def retry_after_of(exc: grpc.aio.AioRpcError) -> float | None:
    """The wait the server asked for (RetryInfo, or a ``retry-after`` trailer), if any."""
    return details_of(exc).retry_after


class _AttemptFailed(Exception):
    """One attempt's gRPC failure, with the replica it happened on."""

    def __init__(self, error: grpc.aio.AioRpcError, replica: Replica) -> None:
        super().__init__(error.code().name)
        self.error = error
        self.replica = replica
        self.retry_after = retry_after_of(error)
        self.outcome = _attempt_outcome(error.code(), self.retry_after)


class _CallFailed(Exception):
    """The logical call failed: ``error`` goes to the caller, ``outcome`` to the breaker."""

    def __init__(self, error: AgentError, outcome: Outcome) -> None:
        super().__init__(error.message)
        self.error = error
        self.outcome = outcome


@dataclass(slots=True)
class _OpenStream:
    """A streaming call whose first event has arrived (or that ended empty)."""

    call: StreamCall
    first: pb.InvokeEvent | None
    replica: Replica
    timeout: float


Attempt = Callable[[Replica, float, int, bool], Awaitable[T]]
"""Runs one attempt on a replica: (replica, timeout, attempt number, hedge)."""


class Upstream:
    def __init__(
        self, settings: GatewaySettings, registry: Registry, *, rng: random.Random | None = None
    ) -> None:
        self._registry = registry
        self._default_timeout = settings.default_timeout
        self._margin = settings.deadline_margin
        self._rng = rng or random.Random()
        self._gauged: set[str] = set()  # agents whose in-flight gauge reads their replicas

    # -- deadlines -------------------------------------------------------------

    def timeout_for(self, entry: AgentEntry, time_remaining: float | None) -> float:
        """Seconds the agent gets; DeadlineExceeded when nothing is left."""
        budget = self._budget(entry.name, time_remaining)
        if entry.config.timeout is not None:
            budget = min(budget, entry.config.timeout)
        return budget

    def _budget(self, agent: str, time_remaining: float | None) -> float:
        budget = self._default_timeout if time_remaining is None else time_remaining - self._margin
        if budget <= 0:
            raise DeadlineExceeded(
                f"deadline too short to call agent {agent!r}: "
                f"{max(time_remaining or 0.0, 0.0) * 1000:.0f} ms left"
            )
        return budget

    def _deadline(self, entry: AgentEntry, time_remaining: float | None) -> Deadline:
        return Deadline.start(timeout=self._budget(entry.name, time_remaining))

    def _attempt_timeout(self, entry: AgentEntry, deadline: Deadline) -> float:
        left = deadline.remaining() or 0.0
        if entry.config.timeout is not None:
            left = min(left, entry.config.timeout)
        return left

    # -- unary ----------------------------------------------------------------

    async def invoke(
        self,
        entry: AgentEntry,
        request: pb.InvokeRequest,
        *,
        time_remaining: float | None,
        idempotent: bool | None = None,
        use_fallback: bool = True,
        fallback: AgentEntry | None = None,
    ) -> pb.InvokeResponse:
        """``entry``'s answer to ``request`` within ``time_remaining`` seconds.

        ``idempotent`` (default: the agent's setting) allows hedging;
        ``fallback`` (default: the agent's configured one) answers when
        ``entry`` cannot, unless ``use_fallback`` is False. Raises
        :class:`AgentError` with the status the caller should see.
        """
        deadline = self._deadline(entry, time_remaining)
        hedge = entry.guard.policy.idempotent if idempotent is None else idempotent
        caller = time_remaining is not None
        try:
            return await self._guarded(
                entry,
                deadline,
                lambda: self._invoke_attempts(entry, request, deadline, hedge, caller),
            )
        except AgentError as exc:
            backup = self._fallback_for(entry, exc, use_fallback, fallback)
            if backup is None:
                raise
            try:
                return await self._guarded(
                    backup,
                    deadline,
                    lambda: self._invoke_attempts(
                        backup, _readdressed(request, backup), deadline, hedge, caller
                    ),
                )
            except AgentError as second:
                raise _both_failed(entry, exc, backup, second) from None

    async def _invoke_attempts(
        self,
        entry: AgentEntry,
        request: pb.InvokeRequest,
        deadline: Deadline,
        hedge: bool,
        caller: bool,
    ) -> pb.InvokeResponse:
        async def attempt(
            replica: Replica, timeout: float, number: int, hedged: bool
        ) -> pb.InvokeResponse:
            return await self._invoke_once(entry, replica, request, timeout, number, hedged)

        delay = entry.guard.policy.hedge_delay if hedge else 0.0
        return await self._with_retries(
            entry, deadline, attempt, hedge_delay=delay, caller_deadline=caller
        )

    async def _invoke_once(
        self,
        entry: AgentEntry,
        replica: Replica,
        request: pb.InvokeRequest,
        timeout: float,
        number: int,
        hedged: bool,
    ) -> pb.InvokeResponse:
        with _AttemptSpan(_INVOKE, entry, replica, request, number, hedged) as attempt:
            started = self._started(entry, replica)
            try:
                response: pb.InvokeResponse = await replica.stub.Invoke(
                    request, timeout=timeout, metadata=attempt.metadata
                )
            except grpc.aio.AioRpcError as exc:
                self._finished(entry, replica, started, exc.code(), attempt)
                raise _AttemptFailed(exc, replica) from None
            except BaseException:
                self._finished(entry, replica, started, grpc.StatusCode.CANCELLED, attempt)
                raise
            self._finished(entry, replica, started, grpc.StatusCode.OK, attempt)
        self._answered(entry)
        return response

    # -- streaming ------------------------------------------------------------

    async def stream(
        self,
        entry: AgentEntry,
        request: pb.InvokeRequest,
        *,
        time_remaining: float | None,
        use_fallback: bool = True,
        fallback: AgentEntry | None = None,
    ) -> AsyncIterator[pb.InvokeEvent]:
        """``entry``'s events for ``request``.

        Retries and the fallback apply until the first event arrives; after
        that a failure ends the stream with the agent's status.
        """
        deadline = self._deadline(entry, time_remaining)
        caller = time_remaining is not None
        target = entry
        try:
            opened, ticket = await self._open_stream(entry, request, deadline, caller)
        except AgentError as exc:
            backup = self._fallback_for(entry, exc, use_fallback, fallback)
            if backup is None:
                raise
            target = backup
            try:
                opened, ticket = await self._open_stream(
                    backup, _readdressed(request, backup), deadline, caller
                )
            except AgentError as second:
                raise _both_failed(entry, exc, backup, second) from None
        guard = target.guard
        outcome = Outcome.NEUTRAL
        started = time.perf_counter()
        try:
            if opened.first is not None:
                yield opened.first
                # read(), not iteration: the first event was read that way
                # and gRPC refuses to mix the two styles on one call.
                while (event := await opened.call.read()) is not grpc.aio.EOF:
                    yield event
            outcome = Outcome.SUCCESS
            self._answered(target)
        except grpc.aio.AioRpcError as exc:
            _caller_bound.set(self._caller_bound(target, deadline, caller, opened.timeout))
            outcome = _attempt_outcome(exc.code(), retry_after_of(exc))
            self._count(target, opened.replica, outcome)
            raise translate(target, opened.replica, exc, opened.timeout) from None
        finally:
            # The caller went away or failed: stop the agent's work too.
            opened.call.cancel()
            _agent_metrics(target.name)[1].observe(time.perf_counter() - started)
            self._left(target, opened.replica)
            guard.bulkhead.leave()
            guard.breaker.record(ticket, outcome)

    async def _open_stream(
        self, entry: AgentEntry, request: pb.InvokeRequest, deadline: Deadline, caller: bool
    ) -> tuple[_OpenStream, Ticket]:
        """Start the stream (with retries) up to its first event; the bulkhead slot stays taken."""
        self._check_draining(entry)
        ticket = self._admit(entry)

        async def attempt(
            replica: Replica, timeout: float, number: int, hedged: bool
        ) -> _OpenStream:
            return await self._open_once(entry, replica, request, timeout, number)

        try:
            opened = await self._with_retries(
                entry, deadline, attempt, hold_slot=True, caller_deadline=caller
            )
        except _CallFailed as failed:
            entry.guard.breaker.record(ticket, failed.outcome)
            raise failed.error from None
        except BaseException:
            entry.guard.breaker.record(ticket, Outcome.NEUTRAL)
            raise
        return opened, ticket

    async def _open_once(
        self,
        entry: AgentEntry,
        replica: Replica,
        request: pb.InvokeRequest,
        timeout: float,
        number: int,
    ) -> _OpenStream:
        with _AttemptSpan(_INVOKE_STREAM, entry, replica, request, number, False) as attempt:
            started = self._started(entry, replica)
            call = replica.stub.InvokeStream(request, timeout=timeout, metadata=attempt.metadata)
            try:
                first = await call.read()
            except grpc.aio.AioRpcError as exc:
                call.cancel()
                self._left(entry, replica)
                # Counted like a failed unary attempt: error ratios see streams that never began.
                _agent_metrics(entry.name)[1].observe(time.perf_counter() - started)
                _requests_metric(entry.name, exc.code().name).inc()
                self._count(entry, replica, _attempt_outcome(exc.code(), retry_after_of(exc)))
                attempt.finish(exc.code())
                raise _AttemptFailed(exc, replica) from None
            except BaseException:
                call.cancel()
                self._left(entry, replica)
                attempt.finish(grpc.StatusCode.CANCELLED)
                raise
            _requests_metric(entry.name, "OK").inc()
            attempt.finish(grpc.StatusCode.OK)
        if first is grpc.aio.EOF:
            return _OpenStream(call, None, replica, timeout)
        replica.stats.succeeded()
        assert isinstance(first, pb.InvokeEvent)
        return _OpenStream(call, first, replica, timeout)

    # -- the guarded call and its attempts ---------------------------------------

    async def _guarded(
        self, entry: AgentEntry, deadline: Deadline, run: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``run`` (the attempts) inside ``entry``'s breaker."""
        self._check_draining(entry)
        ticket = self._admit(entry)
        outcome = Outcome.NEUTRAL
        try:
            result = await run()
            outcome = Outcome.SUCCESS
            return result
        except _CallFailed as failed:
            outcome = failed.outcome
            raise failed.error from None
        finally:
            entry.guard.breaker.record(ticket, outcome)

    def _admit(self, entry: AgentEntry) -> Ticket:
        try:
            return entry.guard.breaker.admit()
        except BreakerOpen:
            UPSTREAM_REJECTED.labels(agent=entry.name, reason="breaker_open").inc()
            raise

    def _check_draining(self, entry: AgentEntry) -> None:
        if entry.draining:
            UPSTREAM_REJECTED.labels(agent=entry.name, reason="draining").inc()
            raise Unavailable(
                f"agent {entry.name!r} is draining: every replica's health is NOT_SERVING",
                reason=Reason.AGENT_DRAINING,
                metadata={"agent": entry.name},
            )

    async def _with_retries(
        self,
        entry: AgentEntry,
        deadline: Deadline,
        attempt: Attempt[T],
        *,
        hedge_delay: float = 0.0,
        hold_slot: bool = False,
        caller_deadline: bool = False,
    ) -> T:
        """Attempts until one succeeds, a failure is final, or time or budget run out.

        Raises :class:`_CallFailed`. With ``hold_slot`` the successful
        attempt's bulkhead slot stays taken (the caller leaves it).
        """
        guard = entry.guard
        policy = guard.policy.retry
        guard.budget.record_call()
        tried: list[Replica] = []
        number = 0
        while True:
            number += 1
            timeout = self._attempt_timeout(entry, deadline)
            if timeout <= 0:
                raise _CallFailed(
                    DeadlineExceeded(f"no time left to call agent {entry.name!r}"),
                    Outcome.NEUTRAL,
                )
            if not guard.bulkhead.try_enter():
                UPSTREAM_REJECTED.labels(agent=entry.name, reason="bulkhead_full").inc()
                raise _CallFailed(BulkheadFull(entry.name, guard.bulkhead.limit), Outcome.NEUTRAL)
            _caller_bound.set(self._caller_bound(entry, deadline, caller_deadline, timeout))
            held = False
            try:
                if hedge_delay > 0:
                    result = await self._hedged(entry, guard, attempt, tried, timeout, number,
                                                hedge_delay)  # fmt: skip
                else:
                    result = await attempt(entry.pick(exclude=tried), timeout, number, False)
                held = hold_slot
                return result
            except _AttemptFailed as failed:
                code, retry_after = failed.error.code(), failed.retry_after
                final = _CallFailed(
                    translate(entry, failed.replica, failed.error, timeout), failed.outcome
                )
                if not is_retryable(code, retry_after) or number >= policy.max_attempts:
                    raise final from None
                if code == grpc.StatusCode.UNAVAILABLE:
                    tried.append(failed.replica)
            finally:
                if not held:
                    guard.bulkhead.leave()
            # Another replica answers at once; the same one gets time to recover.
            failover = len(entry.replicas) > len(tried) and code == grpc.StatusCode.UNAVAILABLE
            pause = retry_wait(
                None if failover else policy.backoff,
                number,
                deadline=deadline,
                retry_after=retry_after,
                rng=self._rng,
            )
            if pause is None:
                raise final
            if not guard.budget.try_spend():
                UPSTREAM_REJECTED.labels(agent=entry.name, reason="retry_budget").inc()
                raise final
            UPSTREAM_RETRIES.labels(agent=entry.name, reason=code.name).inc()
            if pause:
                await asyncio.sleep(pause)

    async def _hedged(
        self,
        entry: AgentEntry,
        guard: AgentGuard,
        attempt: Attempt[T],
        tried: list[Replica],
        timeout: float,
        number: int,
        delay: float,
    ) -> T:
        """The attempt on one replica, and after ``delay`` a second one on another; first wins."""
        first = entry.pick(exclude=tried)
        primary = asyncio.ensure_future(attempt(first, timeout, number, False))
        try:
            done, _ = await asyncio.wait({primary}, timeout=delay)
            if done:
                return primary.result()
            second = entry.pick(exclude=[*tried, first])
            if (second is first and not first.balanced_by_grpc) or not guard.bulkhead.try_enter():
                return await primary
            if not guard.budget.try_spend():
                guard.bulkhead.leave()
                return await primary
            UPSTREAM_RETRIES.labels(agent=entry.name, reason="HEDGE").inc()
            left = max(0.001, timeout - delay)
            hedge = asyncio.ensure_future(attempt(second, left, number, True))
            try:
                pending = {primary, hedge}
                failure: BaseException | None = None
                while pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        error = task.exception()
                        if error is None:
                            if pending:
                                # The loser was still waiting: slower than its peer by at
                                # least the hedge delay. Count it against its replica.
                                loser = second if task is primary else first
                                self._count(entry, loser, Outcome.FAILURE)
                            return task.result()
                        if task is primary or failure is None:
                            failure = error
                assert failure is not None
                raise failure
            finally:
                if not hedge.done():
                    hedge.cancel()  # the loser: its agent sees the cancellation
                guard.bulkhead.leave()
        finally:
            if not primary.done():
                primary.cancel()

    # -- bookkeeping ----------------------------------------------------------

    def _caller_bound(
        self, entry: AgentEntry, deadline: Deadline, caller_deadline: bool, timeout: float
    ) -> bool:
        """Whether an attempt given ``timeout`` runs to the caller's deadline (not to a
        shorter limit of the gateway's own: the agent's timeout or the default timeout)."""
        if not caller_deadline:
            return False
        left = deadline.remaining()
        if left is None:
            return False
        return entry.config.timeout is None or entry.config.timeout >= left or timeout >= left

    def _fallback_for(
        self,
        entry: AgentEntry,
        error: AgentError,
        use_fallback: bool,
        fallback: AgentEntry | None,
    ) -> AgentEntry | None:
        if not use_fallback or error.code not in _FALLBACK_CODES:
            return None
        if fallback is None and entry.guard.policy.fallback:
            fallback = self._registry.get(entry.guard.policy.fallback)
        if fallback is None or fallback is entry:
            return None
        log.info(
            "falling back",
            extra={"agent": entry.name, "fallback": fallback.name, "code": error.code.value},
        )
        return fallback

    def _started(self, entry: AgentEntry, replica: Replica) -> float:
        self._entered(entry, replica)
        return time.perf_counter()

    def _entered(self, entry: AgentEntry, replica: Replica) -> None:
        replica.stats.in_flight += 1
        if entry.name not in self._gauged:
            self._gauged.add(entry.name)
            _agent_metrics(entry.name)[0].set_function(_calls_under_way(self._registry, entry.name))

    def _left(self, entry: AgentEntry, replica: Replica) -> None:
        replica.stats.in_flight -= 1

    def _finished(
        self,
        entry: AgentEntry,
        replica: Replica,
        started: float,
        code: grpc.StatusCode,
        attempt: ClientSpan,
    ) -> None:
        self._left(entry, replica)
        _agent_metrics(entry.name)[1].observe(time.perf_counter() - started)
        _requests_metric(entry.name, code.name).inc()
        attempt.finish(code)  # CANCELLED (a lost hedge, a caller gone): no error
        if code == grpc.StatusCode.OK:
            replica.stats.succeeded()
        elif code != grpc.StatusCode.CANCELLED:
            self._count(entry, replica, _attempt_outcome(code))

    def _count(self, entry: AgentEntry, replica: Replica, outcome: Outcome) -> None:
        """A failed attempt on ``replica``: maybe eject it."""
        if outcome is not Outcome.FAILURE:
            return
        policy = entry.guard.policy.ejection
        if replica.stats.failed(time.monotonic(), policy, may_eject=entry.may_eject()):
            log.warning(
                "replica ejected",
                extra={
                    "agent": entry.name,
                    "address": replica.address,
                    "seconds": round(replica.stats.ejected_until - time.monotonic(), 3),
                },
            )

    def _answered(self, entry: AgentEntry) -> None:
        if entry.card is None:
            self._registry.refresh_soon(entry)
        entry.mark_serving()


class _AttemptSpan(ClientSpan):
    """The CLIENT span of one attempt, with the agent, replica, attempt and breaker state."""

    __slots__ = ("_about",)

    def __init__(
        self,
        method: str,
        entry: AgentEntry,
        replica: Replica,
        request: pb.InvokeRequest,
        number: int,
        hedged: bool,
    ) -> None:
        super().__init__(method)
        self._about = (entry, replica, request, number, hedged)

    def __enter__(self) -> _AttemptSpan:
        super().__enter__()
        # How deep in delegations the agent is called (the gateway's hop count), and for
        # whom: the principal this gateway admitted (never a header a client sent).
        self.metadata += hop_metadata()
        owner = work_owner()
        if owner is not None:
            self.metadata += principal_metadata(owner)
        return self

    def attributes(self) -> dict[str, str | int | bool]:
        entry, replica, request, number, hedged = self._about
        return {
            "agentmesh.agent": entry.name,
            "agentmesh.skill": request.skill,
            "agentmesh.attempt": number,
            "agentmesh.replica": replica.address,
            "agentmesh.breaker_state": entry.guard.breaker.state,
            "agentmesh.hedge": hedged,
        }


def _readdressed(request: pb.InvokeRequest, entry: AgentEntry) -> pb.InvokeRequest:
    forwarded = pb.InvokeRequest()
    forwarded.CopyFrom(request)
    forwarded.agent = entry.name
    return forwarded


def _both_failed(
    primary: AgentEntry, first: AgentError, backup: AgentEntry, second: AgentError
) -> AgentError:
    return AgentError(
        f"{first.message}; fallback agent {backup.name!r} failed too: {second.message}",
        code=second.code,
        reason=second.reason,
        retry_after=second.retry_after,
        violations=second.violations,
        metadata=second.metadata,
    )


def translate(
    entry: AgentEntry, replica: Replica, exc: grpc.aio.AioRpcError, timeout: float
) -> AgentError:
    """An agent's gRPC failure as the error the gateway's caller sees.

    The agent's rich details (its reason, field violations, asked wait) pass
    through; the ErrorInfo metadata gains ``agent``.
    """
    code, details = exc.code(), exc.details() or ""
    rich = details_of(exc)
    relayed: dict[str, Any] = {
        "retry_after": rich.retry_after,
        "metadata": {**rich.metadata, "agent": entry.name},
    }
    if code == grpc.StatusCode.UNAVAILABLE:
        entry.mark_unavailable(f"{replica.address}: {details}")
        return Unavailable(
            f"agent {entry.name!r} at {replica.address} is unavailable: {details or 'no detail'}",
            **relayed,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"agent {entry.name!r} did not answer within {timeout:.3f}s", **relayed
        )
    if code == grpc.StatusCode.CANCELLED:
        return AgentError(
            f"call to agent {entry.name!r} was cancelled", code=ErrorCode.CANCELLED, **relayed
        )
    mapped = error_code(code)
    if mapped is ErrorCode.INTERNAL:
        return AgentError(
            f"agent {entry.name!r} failed: {details}",
            code=ErrorCode.INTERNAL,
            reason=Reason.INTERNAL,
            **relayed,
        )
    # The agent's own status (INVALID_ARGUMENT, NOT_FOUND, ...), message and details.
    return AgentError(
        f"agent {entry.name!r}: {details}",
        code=mapped,
        reason=rich.reason or None,
        violations=rich.violations,
        **relayed,
    )


__all__ = ["CALLER_ERRORS", "Upstream", "outcome_of", "translate"]
