"""The asyncio circuit breaker's state machine under concurrent callers (time injected)."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.gateway.policy import BreakerPolicy
from agentmesh.gateway.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    AgentBreaker,
    BreakerOpen,
    Outcome,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **policy: float) -> AgentBreaker:
    settings = {"failure_threshold": 3, "reset_timeout": 10.0, "first_probe": 10.0, **policy}
    return AgentBreaker("alpha", BreakerPolicy.model_validate(settings), clock=clock)


def fail(b: AgentBreaker, times: int) -> None:
    for _ in range(times):
        b.record(b.admit(), Outcome.FAILURE)


def test_opens_after_consecutive_failures_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 2)
    b.record(b.admit(), Outcome.SUCCESS)
    fail(b, 2)
    assert b.state == CLOSED
    assert b.snapshot().failures == 2
    fail(b, 1)
    assert b.state == OPEN
    with pytest.raises(BreakerOpen) as info:
        b.admit()
    assert info.value.retry_after == pytest.approx(10.0)
    assert "circuit breaker for agent 'alpha' is open" in str(info.value)
    clock.now += 4
    assert b.snapshot().retry_after == pytest.approx(6.0)


def test_neutral_outcomes_count_for_nothing() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 2)
    for _ in range(10):
        b.record(b.admit(), Outcome.NEUTRAL)
    assert b.state == CLOSED
    assert b.snapshot().failures == 2


async def test_exactly_one_probe_among_concurrent_callers_then_closed() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 10.0
    probe_running = asyncio.Event()
    finish_probe = asyncio.Event()
    admitted: list[bool] = []
    refused: list[BreakerOpen] = []

    async def caller() -> None:
        try:
            ticket = b.admit()
        except BreakerOpen as exc:
            refused.append(exc)
            return
        admitted.append(ticket.probe)
        probe_running.set()
        await finish_probe.wait()  # the probe is in flight while the others arrive
        b.record(ticket, Outcome.SUCCESS)

    callers = [asyncio.create_task(caller()) for _ in range(50)]
    await probe_running.wait()
    await asyncio.sleep(0)  # let every other caller reach the breaker
    assert b.state == HALF_OPEN
    finish_probe.set()
    await asyncio.gather(*callers)
    assert admitted == [True]
    assert len(refused) == 49
    assert all(e.retry_after is None and "probe" in str(e) for e in refused)
    assert b.state == CLOSED
    assert not b.admit().probe


def test_failed_probe_reopens_for_a_new_reset_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 10.0
    probe = b.admit()
    assert probe.probe
    b.record(probe, Outcome.FAILURE)
    assert b.state == OPEN
    with pytest.raises(BreakerOpen) as info:
        b.admit()
    assert info.value.retry_after == pytest.approx(10.0)


def test_a_cancelled_probe_lets_the_next_caller_probe() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 10.0
    b.record(b.admit(), Outcome.NEUTRAL)  # e.g. CancelledError
    assert b.state == HALF_OPEN
    assert b.admit().probe


def test_success_threshold_needs_that_many_probes_in_a_row() -> None:
    clock = FakeClock()
    b = breaker(clock, success_threshold=2)
    fail(b, 3)
    clock.now += 10.0
    b.record(b.admit(), Outcome.SUCCESS)
    assert b.state == HALF_OPEN
    b.record(b.admit(), Outcome.SUCCESS)
    assert b.state == CLOSED


def test_outcomes_of_calls_admitted_before_opening_are_ignored() -> None:
    clock = FakeClock()
    b = breaker(clock)
    early = b.admit()
    fail(b, 3)
    b.record(early, Outcome.SUCCESS)  # finished after the breaker opened
    assert b.state == OPEN
    clock.now += 10.0
    probe = b.admit()
    b.record(early, Outcome.FAILURE)  # stale again: not the probe
    assert b.state == HALF_OPEN
    b.record(probe, Outcome.SUCCESS)
    assert b.state == CLOSED


def test_probes_start_soon_and_back_off_up_to_the_reset_timeout() -> None:
    clock = FakeClock()
    b = breaker(clock, first_probe=1.0, reset_timeout=5.0)
    fail(b, 3)
    waits = []
    for _ in range(5):
        with pytest.raises(BreakerOpen) as info:
            b.admit()
        assert info.value.retry_after is not None
        waits.append(info.value.retry_after)
        clock.now += info.value.retry_after
        b.record(b.admit(), Outcome.FAILURE)  # the probe fails: open again, for longer
    assert waits == pytest.approx([1.0, 2.0, 4.0, 5.0, 5.0])
    clock.now += 5.0
    b.record(b.admit(), Outcome.SUCCESS)
    assert b.state == CLOSED
    fail(b, 3)  # closed in between: the backoff starts over
    with pytest.raises(BreakerOpen) as info:
        b.admit()
    assert info.value.retry_after == pytest.approx(1.0)


def test_a_replica_serving_again_lets_the_next_call_probe_at_once() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    with pytest.raises(BreakerOpen):
        b.admit()
    b.probe_soon()
    assert b.admit().probe
