"""Rate limiting per client identity: one token bucket per key.

A hand-written bucket rather than a library: the available ones either wait
for a token (aiolimiter) or count in windows (limits), and the gateway needs
to refuse at once and say when a token will be there.

Without Redis each gateway process keeps its own buckets (a client talking to
N replicas gets up to N times its rate). With a Redis client the buckets live
in Redis (one Lua script refills by Redis's own clock, then takes), so every
replica draws from the same bucket atomically. A replica does not go to Redis
for every call: it takes a *lease* of tokens (1/20 of the bucket's burst, at
least one) and spends it locally for up to a
second. A lease is taken from the shared bucket, so the replicas together
never pass more than the limit; what a replica leased and did not spend in
that second is lost, so a client's effective rate can be a little below its
limit, never above. A burst of fewer than 40 tokens leases one token at a
time: every call is counted in Redis, exactly.

A call costs ``cost`` tokens (a fan-out its legs, a workflow its steps: see
``agentmesh.gateway.guard``); a cost above the bucket's burst is charged the
burst, so such a call needs a full bucket rather than never passing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from agentmesh.gateway.policy import RateLimitPolicy

PREFIX = "agentmesh:ratelimit:v1"

# KEYS: the bucket; ARGV: rate, burst, need, want. Takes between need and want tokens:
# returns {granted, 0}, or {0, the wait in seconds until need tokens are there}.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local need, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(held[1]) or burst
local updated = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local granted, wait = 0, 0
if tokens >= need then
  granted = math.min(tokens, want)
  tokens = tokens - granted
else
  wait = (need - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {tostring(granted), tostring(wait)}
"""

LEASE_SHARE = 20
"""A lease is at most 1/LEASE_SHARE of a bucket's burst."""
LEASE_SECONDS = 1.0
"""How long a replica may spend a lease."""


@dataclass(slots=True)
class _Lease:
    """Tokens this replica took from a shared bucket and may spend until ``until``."""

    tokens: float = 0.0
    until: float = 0.0
    fetching: asyncio.Future[None] | None = None
    # The last refusal: until when the bucket cannot hold ``refused_need`` tokens (it only
    # refills at its rate; other replicas only take), so a caller over its limit is refused
    # here until then, without a script per refused call.
    refused_until: float = 0.0
    refused_need: float = 0.0


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else the seconds until they are there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class RateLimiter:
    """One bucket per client key; ``check`` (this process) or ``take`` (shared, when a
    Redis client is given) says whether a request may go."""

    def __init__(
        self,
        policy: RateLimitPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        redis: aioredis.Redis | None = None,
        prefix: str = PREFIX,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_TAKE) if redis is not None else None
        self._leases: dict[str, _Lease] = {}

    @property
    def enabled(self) -> bool:
        return self.policy.rate > 0 or bool(self.policy.clients)

    @property
    def shared(self) -> bool:
        """Whether the buckets live in Redis (shared by every gateway replica)."""
        return self._script is not None

    def limits(self, client: str) -> tuple[float, float] | None:
        """``client``'s (rate, burst), or None when it is not limited."""
        limits = self.policy.clients.get(client)
        if limits is not None:
            return limits.rate, limits.burst
        if self.policy.rate > 0:
            return self.policy.rate, self.policy.burst or max(1.0, self.policy.rate)
        return None

    async def take(self, client: str, cost: float = 1.0) -> float:
        """0.0 when ``client`` may proceed (``cost`` tokens taken), else the seconds until
        it may retry; counted in Redis when the limiter has a Redis client."""
        if self._script is None:
            return self.check(client, cost)
        limits = self.limits(client)
        if limits is None:
            return 0.0
        rate, burst = limits
        cost = min(max(cost, 1.0), burst)
        chunk = max(1.0, float(int(burst // LEASE_SHARE)))
        lease = self._leases.pop(client, None) or _Lease()
        if len(self._leases) >= self.policy.max_clients:
            del self._leases[next(iter(self._leases))]  # least recently seen
        self._leases[client] = lease
        # One fetch at a time per client: the others wait for it, then look again.
        while lease.fetching is not None:
            await asyncio.shield(lease.fetching)
        now = self._clock()
        have = lease.tokens if now < lease.until else 0.0
        if have >= cost:
            lease.tokens = have - cost
            return 0.0
        if now < lease.refused_until and cost - have >= lease.refused_need:
            return lease.refused_until - now
        fetching = lease.fetching = asyncio.get_running_loop().create_future()
        try:
            granted, wait = await self._script(
                keys=[f"{self._prefix}:{client}"],
                args=[rate, burst, cost - have, max(chunk, cost) - have],
            )
        finally:
            lease.fetching = None
            fetching.set_result(None)
        if float(wait) > 0:
            lease.tokens = have
            lease.refused_until, lease.refused_need = now + float(wait), cost - have
            return float(wait)
        lease.tokens, lease.until = have + float(granted) - cost, now + LEASE_SECONDS
        return 0.0

    def check(self, client: str, cost: float = 1.0) -> float:
        """0.0 when ``client`` may proceed, else the seconds until it may retry (this
        process's buckets)."""
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            limits = self.limits(client)
            if limits is None:
                return 0.0  # no default limit and none for this client
            rate, burst = limits
            bucket = TokenBucket(rate, burst, burst, now)
            if len(self._buckets) >= self.policy.max_clients:
                # Least recently seen first: dict order is kept by re-inserting.
                del self._buckets[next(iter(self._buckets))]
        self._buckets[client] = bucket
        return bucket.take(now, min(max(cost, 1.0), bucket.burst))

    def update(self, policy: RateLimitPolicy) -> None:
        """Use ``policy`` from now on (keys reloaded); buckets of changed clients restart."""
        changed = {
            c for c in set(policy.clients) | set(self.policy.clients)
            if policy.clients.get(c) != self.policy.clients.get(c)
        }  # fmt: skip
        self.policy = policy
        for client in changed:
            self._buckets.pop(client, None)
