"""Resilience of the gateway's calls to agents.

Per agent: a circuit breaker (:mod:`.breaker`), a concurrency cap
(:mod:`.bulkhead`), retries within a budget (:mod:`.retry`) and per-replica
outlier ejection (:mod:`.outlier`); per client: a rate limit
(:mod:`.ratelimit`, :mod:`.interceptor`). With Redis, breakers are shared
by every replica (:mod:`.shared`). :mod:`agentmesh.gateway.upstream`
applies them to every call; docs/resilience.md describes every knob.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agentmesh.gateway.policy import AgentPolicy
from agentmesh.gateway.resilience.breaker import AgentBreaker, BreakerOpen, Clock, Outcome
from agentmesh.gateway.resilience.bulkhead import Bulkhead, BulkheadFull
from agentmesh.gateway.resilience.retry import RetryBudget


@dataclass(slots=True)
class AgentGuard:
    """Everything that protects one agent, built from its effective policy."""

    policy: AgentPolicy
    breaker: AgentBreaker
    bulkhead: Bulkhead
    budget: RetryBudget

    @classmethod
    def build(
        cls,
        agent: str,
        policy: AgentPolicy,
        *,
        retry_budget: tuple[float, float, float] = (0.2, 10.0, 10.0),
        clock: Clock = time.time,
    ) -> AgentGuard:
        """``retry_budget`` is (ratio, min per second, window seconds)."""
        ratio, min_per_second, window = retry_budget
        return cls(
            policy=policy,
            breaker=AgentBreaker(agent, policy.breaker, clock=clock),
            bulkhead=Bulkhead(agent, policy.max_concurrency),
            budget=RetryBudget(ratio=ratio, min_per_second=min_per_second, window=window),
        )


__all__ = ["AgentGuard", "BreakerOpen", "BulkheadFull", "Outcome"]
