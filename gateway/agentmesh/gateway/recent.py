"""Each agent's recent calls, error rate and latency, read from the gateway's own metrics.

The gateway already counts every call attempt to an agent
(``agentmesh_upstream_requests`` by final code, ``agentmesh_upstream_duration_seconds``,
``agentmesh_upstream_rejected``). :class:`RecentCalls` reads those cumulative
figures now and then (every ``window / STEPS`` seconds, and on every read) and
keeps the readings of the last ``window`` seconds; a window's figures are the
difference between a reading taken now and the newest one at least ``window``
seconds old (or the first, while the gateway is younger), the way
Prometheus's ``increase()`` and ``histogram_quantile()`` work on a range. Nothing
is added to a call: the metrics are updated as they always were, and only read here.

An error is a code a server span marks as one
(:data:`~agentmesh.telemetry.rpcstatus.SERVER_ERROR_CODES`: UNKNOWN,
DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); a caller's
mistake (INVALID_ARGUMENT, NOT_FOUND, ...) is a call but no error, and a
cancelled attempt (a caller gone, a lost hedge) is no call. Latency quantiles are
interpolated within the histogram's buckets (1 ms to 60 s), over every attempt.

The metrics have no replica label, so the figures are per agent; per replica the
gateway knows consecutive failures, ejection and calls in flight (``AgentInfo``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from agentmesh.telemetry.metrics import UPSTREAM_DURATION, UPSTREAM_REJECTED, UPSTREAM_REQUESTS
from agentmesh.telemetry.rpcstatus import SERVER_ERROR_CODES

STEPS = 30  # readings per window: a 300 s window is read every 10 s
ERROR_CODES = frozenset(code.name for code in SERVER_ERROR_CODES)
NOT_CALLS = frozenset({grpc.StatusCode.CANCELLED.name})


class Collectable(Protocol):
    """A prometheus-client metric (what ``collect()`` gives is all that is used)."""

    def collect(self) -> Iterable[Any]: ...


@dataclass(slots=True)
class AgentReading:
    """One agent's cumulative figures at one moment."""

    codes: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    seconds: float = 0.0  # the histogram's sum
    rejected: float = 0.0


@dataclass(frozen=True, slots=True)
class Reading:
    at: float
    agents: Mapping[str, AgentReading]


@dataclass(frozen=True, slots=True)
class Recent:
    """One agent's figures over the window (``covered_seconds`` of it, so far)."""

    calls: int
    errors: int
    caller_errors: int
    cancelled: int
    rejected: int
    error_rate: float | None  # errors / calls; None without calls
    p50_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    codes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "caller_errors": self.caller_errors,
            "cancelled": self.cancelled,
            "rejected": self.rejected,
            "error_rate": self.error_rate,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms,
            "codes": self.codes,
        }


NOTHING = Recent(0, 0, 0, 0, 0, None, None, None, None, {})


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram given as (upper bound, cumulative count) pairs
    in increasing bound order, ending with ``inf``: linear within the bucket it falls in,
    as Prometheus's ``histogram_quantile`` (beyond the last finite bound: that bound)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank and cumulative > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def read(
    requests: Collectable, duration: Collectable, rejected: Collectable, *, at: float
) -> Reading:
    """The metrics' cumulative figures per agent, now."""
    agents: dict[str, AgentReading] = {}

    def of(labels: Mapping[str, str]) -> AgentReading | None:
        agent = labels.get("agent")
        if agent is None:
            return None
        return agents.setdefault(agent, AgentReading())

    for metric in requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and (entry := of(sample.labels)) is not None:
                code = sample.labels.get("code", "")
                entry.codes[code] = entry.codes.get(code, 0.0) + sample.value
    for metric in duration.collect():
        for sample in metric.samples:
            entry = of(sample.labels)
            if entry is None:
                continue
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                entry.buckets[bound] = entry.buckets.get(bound, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                entry.seconds += sample.value
    for metric in rejected.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and (entry := of(sample.labels)) is not None:
                entry.rejected += sample.value
    return Reading(at, agents)


def difference(now: AgentReading, then: AgentReading | None) -> Recent:
    """What happened between two readings of one agent."""
    then = then or AgentReading()
    codes = {
        code: round(count - then.codes.get(code, 0.0))
        for code, count in now.codes.items()
        if count - then.codes.get(code, 0.0) > 0
    }
    cancelled = sum(n for code, n in codes.items() if code in NOT_CALLS)
    calls = sum(codes.values()) - cancelled
    errors = sum(n for code, n in codes.items() if code in ERROR_CODES)
    buckets = [
        (bound, max(0.0, count - then.buckets.get(bound, 0.0)))
        for bound, count in sorted(now.buckets.items())
    ]
    observed = buckets[-1][1] if buckets else 0.0
    seconds = max(0.0, now.seconds - then.seconds)
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    return Recent(
        calls=calls,
        errors=errors,
        caller_errors=calls - errors - codes.get(grpc.StatusCode.OK.name, 0),
        cancelled=cancelled,
        rejected=round(max(0.0, now.rejected - then.rejected)),
        error_rate=errors / calls if calls else None,
        p50_ms=None if p50 is None else p50 * 1000,
        p99_ms=None if p99 is None else p99 * 1000,
        mean_ms=seconds / observed * 1000 if observed else None,
        codes=codes,
    )


class RecentCalls:
    """Readings of the gateway's upstream metrics over the last ``window`` seconds."""

    def __init__(
        self,
        window: float = 300.0,
        *,
        requests: Collectable = UPSTREAM_REQUESTS,
        duration: Collectable = UPSTREAM_DURATION,
        rejected: Collectable = UPSTREAM_REJECTED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window > 0:
            raise ValueError(f"window: {window!r} is not a number of seconds > 0")
        self.window = window
        self.step = window / STEPS
        self._metrics = (requests, duration, rejected)
        self._clock = clock
        self._readings: deque[Reading] = deque()
        self._readings.append(self._read())  # what came before this gateway is not counted

    def _read(self) -> Reading:
        requests, duration, rejected = self._metrics
        return read(requests, duration, rejected, at=self._clock())

    def sample(self) -> Reading:
        """Read the metrics now; keep the reading if the last kept one is a step old."""
        now = self._read()
        if now.at - self._readings[-1].at >= self.step:
            self._readings.append(now)
        # The oldest reading kept starts the window: the newest one at least ``window``
        # old (so the figures cover the window and at most one step more), or, while
        # the gateway is younger than that, its first.
        start = now.at - self.window
        while len(self._readings) > 1 and self._readings[1].at <= start:
            self._readings.popleft()
        return now

    def figures(self) -> tuple[float, dict[str, Recent]]:
        """The seconds the window covers so far, and each agent's figures over them."""
        now = self.sample()
        start = self._readings[0]
        covered = max(0.0, now.at - start.at)
        return covered, {
            agent: difference(reading, start.agents.get(agent))
            for agent, reading in now.agents.items()
        }


__all__ = ["NOTHING", "Recent", "RecentCalls", "difference", "quantile", "read"]
