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
