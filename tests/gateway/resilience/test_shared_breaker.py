"""Breakers shared by gateway replicas through a real Redis (each replica its own client)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from agentmesh.gateway.policy import BreakerPolicy
from agentmesh.gateway.resilience.breaker import (
    CLOSED,
    OPEN,
    AgentBreaker,
    BreakerOpen,
    Outcome,
)
from agentmesh.gateway.resilience.shared import BreakerSync

Replica = tuple[AgentBreaker, BreakerSync]


@pytest.fixture
async def replicas(redis_db: str) -> AsyncIterator[Callable[..., Replica]]:
    """Builds replicas of one gateway: each a breaker for agent ``alpha`` and its own sync."""
    opened: list[tuple[BreakerSync, aioredis.Redis]] = []

    def replica(threshold: int = 2, *, clock: Callable[[], float] = time.time) -> Replica:
        client = aioredis.Redis.from_url(redis_db)
        sync = BreakerSync(client)
        policy = BreakerPolicy(failure_threshold=threshold, reset_timeout=30.0, first_probe=30.0)
        breaker = AgentBreaker("alpha", policy, clock=clock)
        sync.attach([breaker])
        opened.append((sync, client))
        return breaker, sync

    yield replica
    for sync, client in opened:
        await sync.close()
        await client.aclose()


async def started(replica: Replica) -> Replica:
    await replica[1].start()
    await asyncio.wait_for(replica[1].ready(), 10)
    return replica


def fail(breaker: AgentBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), Outcome.FAILURE)


async def test_a_breaker_opened_by_one_replica_is_open_for_the_other(
    replicas: Callable[..., Replica],
) -> None:
    first, first_sync = await started(replicas())
    second, second_sync = await started(replicas())
    changed = second_sync.changed()
    fail(first, 2)
    assert first.state == OPEN
    await asyncio.wait_for(changed.wait(), 10)
    assert second.state == OPEN
    with pytest.raises(BreakerOpen) as info:
        second.admit()
    assert 25 < (info.value.retry_after or 0) <= 30

    # After the reset timeout the other replica's probe closes it for both.
    second.clock = first.clock = lambda: time.time() + 31
    changed = first_sync.changed()
    probe = second.admit()
    assert probe.probe
    second.record(probe, Outcome.SUCCESS)
    await asyncio.wait_for(changed.wait(), 10)
    assert first.state == CLOSED
    assert not first.admit().probe


async def test_failures_seen_by_different_replicas_open_the_breaker_for_all(
    replicas: Callable[..., Replica],
) -> None:
    first, first_sync = await started(replicas(threshold=4))
    second, second_sync = await started(replicas(threshold=4))
    fail(first, 2)
    await first_sync.settled()
    assert first.state == second.state == CLOSED  # two of four, each replica below its own
    changed = first_sync.changed()
    fail(second, 2)
    await second_sync.settled()  # the fourth failure opened it: this replica at once
    assert second.state == OPEN
    await asyncio.wait_for(changed.wait(), 10)  # the other through the channel
    assert first.state == OPEN


async def test_a_success_resets_the_shared_count(replicas: Callable[..., Replica]) -> None:
    first, first_sync = await started(replicas(threshold=3))
    second, second_sync = await started(replicas(threshold=3))
    fail(first, 2)
    first.record(first.admit(), Outcome.SUCCESS)
    await first_sync.settled()
    fail(second, 2)
    await second_sync.settled()
    assert first.state == second.state == CLOSED


async def test_a_replica_that_starts_while_the_breaker_is_open_starts_open(
    replicas: Callable[..., Replica],
) -> None:
    first, first_sync = await started(replicas())
    fail(first, 2)
    await first_sync.settled()
    late, _ = await started(replicas())
    assert late.state == OPEN
    with pytest.raises(BreakerOpen):
        late.admit()


async def test_a_healthy_agent_costs_no_redis_command_per_call(
    replicas: Callable[..., Replica], redis_db: str
) -> None:
    breaker, sync = await started(replicas())
    fail(breaker, 1)
    breaker.record(breaker.admit(), Outcome.SUCCESS)  # resets the shared count once
    await sync.settled()
    client = aioredis.Redis.from_url(redis_db)
    try:
        before = (await client.info("stats"))["total_commands_processed"]
        for _ in range(500):
            breaker.record(breaker.admit(), Outcome.SUCCESS)
        await sync.settled()
        after = (await client.info("stats"))["total_commands_processed"]
    finally:
        await client.aclose()
    assert after - before == 1  # the INFO command itself


async def test_unreachable_redis_leaves_each_replica_its_own_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    sync = BreakerSync(client)
    policy = BreakerPolicy(failure_threshold=2, reset_timeout=30.0, first_probe=30.0)
    breaker = AgentBreaker("alpha", policy)
    sync.attach([breaker])
    await sync.start()
    try:
        with caplog.at_level(logging.WARNING, logger="agentmesh.gateway.breaker"):
            fail(breaker, 2)  # never waits on Redis
            assert breaker.state == OPEN
            await asyncio.wait_for(sync.settled(), 10)
        assert "shared breaker state unreachable" in caplog.text
    finally:
        await sync.close()
        await client.aclose()
