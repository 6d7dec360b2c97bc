"""Breaker state shared by two gateway processes' breakers through a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from agentmesh.gateway.policy import (
    BreakerPolicy,
    ResilienceDefaults,
    ResilienceOverrides,
    agent_policy,
)
from agentmesh.gateway.resilience import AgentGuard
from agentmesh.gateway.resilience.breaker import (
    CLOSED,
    OPEN,
    AgentBreaker,
    BreakerOpen,
    Outcome,
    redis_storage,
)


async def test_a_breaker_opened_by_one_gateway_is_open_for_the_other(redis_db: str) -> None:
    policy = BreakerPolicy(failure_threshold=2, reset_timeout=30.0, first_probe=30.0)
    first = AgentBreaker("alpha", policy, storage=redis_storage(redis_db, "alpha"))
    second = AgentBreaker("alpha", policy, storage=redis_storage(redis_db, "alpha"))
    assert first.shared
    for _ in range(2):
        ticket = await first.acquire()
        await first.release(ticket, Outcome.FAILURE)
    assert first.state == OPEN
    with pytest.raises(BreakerOpen) as info:
        await second.acquire()
    assert 25 < (info.value.retry_after or 0) <= 30

    # After the reset timeout the other gateway's probe closes it for both.
    second.clock = first.clock = lambda: time.time() + 31
    probe = await second.acquire()
    assert probe.probe
    await second.release(probe, Outcome.SUCCESS)
    assert first.state == CLOSED
    assert not (await first.acquire()).probe


def test_unreachable_redis_at_start_leaves_a_local_breaker() -> None:
    with pytest.raises(redis.exceptions.ConnectionError):
        redis_storage("redis://127.0.0.1:1/0", "alpha")
    policy = agent_policy(ResilienceDefaults(), ResilienceOverrides())
    guard = AgentGuard.build("alpha", policy, redis_url="redis://127.0.0.1:1/0")
    assert not guard.breaker.shared
    assert guard.breaker.state == CLOSED
