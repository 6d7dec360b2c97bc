"""Token buckets per client identity (time injected) and the identity itself."""

from __future__ import annotations

import pytest

from agentmesh.gateway.policy import RateLimitPolicy
from agentmesh.gateway.resilience.interceptor import client_identity
from agentmesh.gateway.resilience.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_with_the_wait_until_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitPolicy(rate=2.0, burst=3.0), clock=clock)
    assert [limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.check("a") == pytest.approx(0.5)
    assert limiter.check("b") == 0.0  # another client has its own bucket
    clock.now += 0.25
    assert limiter.check("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.check("a") == 0.0
    clock.now += 100.0  # refills up to the burst, not beyond
    assert [limiter.check("a") for _ in range(4)][-1] > 0


def test_per_client_limits_and_off_by_default() -> None:
    clock = Clock()
    policy = RateLimitPolicy.model_validate({"clients": {"client:batch": {"rate": 1, "burst": 1}}})
    limiter = RateLimiter(policy, clock=clock)
    assert limiter.enabled
    assert limiter.check("client:batch") == 0.0
    assert limiter.check("client:batch") == pytest.approx(1.0)
    assert all(limiter.check("client:other") == 0.0 for _ in range(100))  # no default rate
    assert not RateLimiter(RateLimitPolicy()).enabled


def test_bucket_count_is_bounded() -> None:
    limiter = RateLimiter(RateLimitPolicy(rate=1.0, burst=1.0, max_clients=2), clock=Clock())
    for client in ("a", "b", "c"):
        limiter.check(client)
    assert limiter.check("a") == 0.0  # "a" was evicted: a fresh, full bucket


def test_identity_from_metadata_else_peer_host() -> None:
    assert client_identity((("x-agentmesh-client", "ci"),), lambda: "ipv4:1.2.3.4:5") == "client:ci"
    assert client_identity((), lambda: "ipv4:10.0.0.7:40000") == "peer:10.0.0.7"
    assert client_identity(None, lambda: "ipv6:[::1]:40000") == "peer:[::1]"


async def test_replicas_sharing_a_bucket_lease_tokens_and_never_pass_more_than_the_burst(
    redis_db: str,
) -> None:
    import redis.asyncio as aioredis

    policy = RateLimitPolicy(rate=0.001, burst=2000)  # no refill to speak of
    clients = [aioredis.Redis.from_url(redis_db) for _ in range(3)]
    try:
        replicas = [RateLimiter(policy, redis=client) for client in clients[:2]]
        before = (await clients[2].info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
        granted = [0, 0]
        refused = [False, False]
        for turn in range(6000):  # bounded: 2000 tokens, two replicas
            index = turn % 2
            if refused[index]:
                if all(refused):
                    break
                continue
            wait = await replicas[index].take("tenant-a")
            if wait:
                refused[index] = True
            else:
                granted[index] += 1
        after = (await clients[2].info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        for client in clients:
            await client.aclose()
    assert all(refused)
    assert sum(granted) == 2000  # every token once, none twice
    assert min(granted) > 0  # both replicas drew from the one bucket
    # Leases of 100 tokens: about 20 scripts for 2,000 calls, not 2,000.
    assert 20 <= after - before <= 30


async def test_a_caller_over_a_shared_limit_is_refused_without_a_script_per_call(
    redis_db: str,
) -> None:
    import redis.asyncio as aioredis

    client, counter = aioredis.Redis.from_url(redis_db), aioredis.Redis.from_url(redis_db)
    try:
        limiter = RateLimiter(RateLimitPolicy(rate=0.001, burst=5), redis=client)
        assert [await limiter.take("tenant-a") for _ in range(5)] == [0.0] * 5
        first = await limiter.take("tenant-a")
        assert first > 0  # empty: the wait until a token is back
        stats = await counter.info("commandstats")
        before = stats.get("cmdstat_evalsha", {}).get("calls", 0)
        waits = [await limiter.take("tenant-a") for _ in range(100)]
        stats = await counter.info("commandstats")
        after = stats.get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        await client.aclose()
        await counter.aclose()
    assert all(0 < wait <= first for wait in waits)  # still refused, with a shrinking wait
    assert after == before  # decided here: the bucket cannot refill sooner
