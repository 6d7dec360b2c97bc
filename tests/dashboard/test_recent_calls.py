"""The dashboard's recent figures per agent: differences of the gateway's cumulative metrics
over a sliding window (a clock the test moves; metrics in a registry of the test's own)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from agentmesh.gateway.recent import RecentCalls, quantile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Metrics:
    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.requests = Counter("r", "calls", ["agent", "code"], registry=registry)
        self.duration = Histogram(
            "d", "seconds", ["agent"], buckets=(0.01, 0.1, 1.0), registry=registry
        )
        self.rejected = Counter("x", "refused", ["agent", "reason"], registry=registry)

    def call(self, agent: str, code: str, seconds: float) -> None:
        self.requests.labels(agent=agent, code=code).inc()
        self.duration.labels(agent=agent).observe(seconds)

    def recent(self, clock: Clock, window: float = 300.0) -> RecentCalls:
        return RecentCalls(
            window,
            requests=self.requests,
            duration=self.duration,
            rejected=self.rejected,
            clock=clock,
        )


def test_quantiles_interpolate_within_the_bucket_they_fall_in() -> None:
    inf = float("inf")
    # 10 observations: 4 up to 10 ms, 4 more up to 100 ms, 2 beyond 1 s.
    buckets = [(0.01, 4.0), (0.1, 8.0), (1.0, 8.0), (inf, 10.0)]
    assert quantile(0.2, buckets) == pytest.approx(0.005)  # rank 2 of 4 in [0, 10 ms]
    assert quantile(0.5, buckets) == pytest.approx(0.01 + 0.09 * 0.25)  # rank 5: 1 of 4 in bucket 2
    assert quantile(0.99, buckets) == 1.0  # in +Inf: the last finite bound
    assert quantile(0.5, [(0.01, 0.0), (inf, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_figures_count_only_the_window_and_split_errors_from_callers_mistakes() -> None:
    metrics, clock = Metrics(), Clock()
    metrics.call("calc", "OK", 0.5)  # before the gateway: never counted
    recent = metrics.recent(clock)
    assert recent.step == 10.0
    for _ in range(3):
        metrics.call("calc", "OK", 0.005)
    metrics.call("calc", "INTERNAL", 0.05)
    metrics.call("calc", "UNAVAILABLE", 0.05)
    metrics.call("calc", "INVALID_ARGUMENT", 0.005)
    metrics.call("calc", "CANCELLED", 0.005)
    metrics.rejected.labels(agent="calc", reason="breaker_open").inc(2)
    metrics.call("other", "OK", 0.05)
    clock.now += 5
    covered, figures = recent.figures()
    assert covered == 5.0
    calc = figures["calc"]
    assert (calc.calls, calc.errors, calc.caller_errors, calc.cancelled) == (6, 2, 1, 1)
    assert calc.rejected == 2
    assert calc.error_rate == pytest.approx(2 / 6)
    assert calc.codes == {"OK": 3, "INTERNAL": 1, "UNAVAILABLE": 1, "INVALID_ARGUMENT": 1,
                          "CANCELLED": 1}  # fmt: skip
    # 7 attempts: 5 within 10 ms, 2 within 100 ms.
    assert calc.p50_ms == pytest.approx(10 * 3.5 / 5)
    assert calc.p99_ms == pytest.approx(10 + 90 * (6.93 - 5) / 2)
    assert calc.mean_ms == pytest.approx((5 * 0.005 + 2 * 0.05) / 7 * 1000)
    assert figures["other"].errors == 0
    assert figures["other"].error_rate == 0.0


def test_the_window_slides_a_step_at_a_time() -> None:
    metrics, clock = Metrics(), Clock()
    recent = metrics.recent(clock, window=100.0)  # a reading every 10 s
    metrics.call("calc", "INTERNAL", 0.05)  # at 1000
    for _ in range(10):  # the sampler's readings at 1010 ... 1100
        clock.now += 10
        recent.sample()
    metrics.call("calc", "OK", 0.005)  # at 1100
    clock.now += 5  # 1105: the window starts at the reading of 1000 (the newest 100 s old)
    covered, figures = recent.figures()
    assert covered == 105.0
    assert (figures["calc"].calls, figures["calc"].errors) == (2, 1)
    clock.now += 5  # 1110: it starts at 1010, after the failure
    recent.sample()
    covered, figures = recent.figures()
    assert covered == 100.0
    assert (figures["calc"].calls, figures["calc"].errors) == (1, 0)
    assert figures["calc"].p99_ms is not None
    assert figures["calc"].p99_ms <= 10
    clock.now += 1000  # a quiet spell with no readings: from the last one, however old
    covered, figures = recent.figures()
    assert covered == 1000.0
    assert figures["calc"].calls == 0
    assert figures["calc"].error_rate is None
    assert figures["calc"].p50_ms is None


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        RecentCalls(0)
