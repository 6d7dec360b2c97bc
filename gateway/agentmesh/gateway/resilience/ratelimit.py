"""Rate limiting per client identity: one token bucket per key.

A hand-written bucket rather than a library: the available ones either wait
for a token (aiolimiter) or count in windows (limits), and the gateway needs
to refuse at once and say when a token will be there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agentmesh.gateway.resilience.policy import RateLimitPolicy


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is there."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per client key; ``check`` says whether a request may go."""

    def __init__(
        self, policy: RateLimitPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.policy.rate > 0 or bool(self.policy.clients)

    def check(self, client: str) -> float:
        """0.0 when ``client`` may proceed, else the seconds until it may retry."""
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            limits = self.policy.clients.get(client)
            if limits is not None:
                rate, burst = limits.rate, limits.burst
            elif self.policy.rate > 0:
                rate, burst = self.policy.rate, self.policy.burst or max(1.0, self.policy.rate)
            else:
                return 0.0  # no default limit and none for this client
            bucket = TokenBucket(rate, burst, burst, now)
            if len(self._buckets) >= self.policy.max_clients:
                # Least recently seen first: dict order is kept by re-inserting.
                del self._buckets[next(iter(self._buckets))]
        self._buckets[client] = bucket
        return bucket.take(now)
