"""The resilience kernel: what every agentmesh caller that waits and retries shares.

The gateway's calls to agents (:mod:`agentmesh.gateway.upstream`), workflow
step retries and the LLM providers (:mod:`agentmesh.llm`) all use

* :class:`Deadline`: an absolute point on the monotonic clock, or none;
* :class:`Backoff`: exponential backoff with full jitter; retries count from 1;
* :func:`retry_wait`: the wait before a retry (the backoff's, at least what the
  server asked for), or None when the retry could not start before the deadline;
* the classification of gRPC status codes: :func:`is_retryable` (worth asking
  again) and :func:`is_caller_error` (the caller's own doing: it says nothing
  about the callee's health).

The per-attempt CLIENT span lives beside the other spans, in
:func:`agentmesh.telemetry.client.client_span`.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Awaitable, Callable

import grpc

SleepFn = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the ``time.monotonic()`` clock, or none (unbounded)."""

    at: float | None
    clock: Clock = time.monotonic

    @classmethod
    def start(
        cls,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
        clock: Clock = time.monotonic,
    ) -> Deadline:
        """The earlier of ``now + timeout`` and the absolute ``deadline``."""
        candidates = [] if deadline is None else [deadline]
        if timeout is not None:
            candidates.append(clock() + max(0.0, timeout))
        return cls(min(candidates) if candidates else None, clock)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` when unbounded."""
        if self.at is None:
            return None
        return max(0.0, self.at - self.clock())

    @property
    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0.0

    def clamp(self, seconds: float) -> float:
        """``seconds``, shortened to what is left of the deadline."""
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter.

    Before retry number ``retry`` (1 for the first retry) the wait is drawn
    uniformly from ``[0, min(maximum, initial * multiplier**(retry - 1))]``, so
    that callers failing together do not retry together.
    """

    initial: float
    maximum: float
    multiplier: float = 2.0

    def cap(self, retry: int) -> float:
        """The largest wait before retry number ``retry``."""
        exponent = min(max(retry - 1, 0), 62)
        return min(self.maximum, self.initial * self.multiplier**exponent)

    def delay(self, retry: int, *, rng: random.Random | None = None) -> float:
        """A wait before retry number ``retry``: uniform in ``[0, cap(retry)]``."""
        return (rng or random).uniform(0.0, self.cap(retry))


def retry_wait(
    backoff: Backoff | None,
    retry: int,
    *,
    deadline: Deadline,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before retry number ``retry`` (1 for the first), or None.

    ``backoff``'s jittered delay (no wait without one, as for a failover to
    another replica), at least ``retry_after`` when the server asked for a
    wait; None when that wait would reach ``deadline``: then there is no retry.
    """
    delay = backoff.delay(retry, rng=rng) if backoff is not None else 0.0
    if retry_after is not None:
        delay = max(delay, retry_after)
    remaining = deadline.remaining()
    if remaining is not None and delay >= remaining:
        return None
    return delay


# -- status classification -------------------------------------------------------------

#: Codes worth retrying: UNAVAILABLE always; RESOURCE_EXHAUSTED when a wait is known.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})

#: The caller's own mistakes, and cancellation: the callee is fine.
CALLER_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


def is_retryable(code: grpc.StatusCode, retry_after: float | None = None) -> bool:
    """Whether asking again may succeed: UNAVAILABLE, or RESOURCE_EXHAUSTED with a known wait.

    RESOURCE_EXHAUSTED without one is a request over a limit: asking again
    gets the same answer. INVALID_ARGUMENT and the other caller errors never are.
    """
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return retry_after is not None
    return code in RETRYABLE_CODES


def is_caller_error(code: grpc.StatusCode, retry_after: float | None = None) -> bool:
    """Whether a failure is the caller's doing (or a cancellation), not the callee's.

    RESOURCE_EXHAUSTED counts as the caller's unless the callee asked for a
    wait (it is overloaded, not refusing the request).
    """
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return retry_after is None
    return code in CALLER_CODES


__all__ = [
    "CALLER_CODES",
    "RETRYABLE_CODES",
    "Backoff",
    "Clock",
    "Deadline",
    "SleepFn",
    "is_caller_error",
    "is_retryable",
    "retry_wait",
]
