"""Backoff with full jitter and the retry budget (time injected)."""

from __future__ import annotations

import random

from agentmesh.gateway.policy import RetryPolicy
from agentmesh.gateway.resilience.retry import RetryBudget


def test_backoff_is_jittered_below_a_growing_capped_ceiling() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.5, multiplier=2.0)
    rng = random.Random(7)
    for retry, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        waits = [policy.backoff.delay(retry, rng=rng) for _ in range(200)]
        assert all(0.0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8  # full jitter spreads over the whole range
        assert min(waits) < cap * 0.2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retries_are_a_share_of_recent_calls() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(10):
        budget.record_call()
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 5.0
    assert not budget.try_spend()  # still inside the window
    for _ in range(2):
        budget.record_call()
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 9.0  # the first calls leave the window, the later ones stay
    assert budget.calls == 2
    assert budget.retries == 1
    clock.now += 10.0
    assert budget.calls == 0
    assert not budget.try_spend()


def test_a_floor_of_retries_per_second_without_traffic() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=2.0, window=5.0, clock=Clock())
    assert sum(budget.try_spend() for _ in range(20)) == 10
