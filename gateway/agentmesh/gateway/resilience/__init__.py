"""Resilience of the gateway's calls to agents.

Per agent: a circuit breaker (:mod:`.breaker`), a concurrency cap
(:mod:`.bulkhead`), retries within a budget (:mod:`.retry`) and per-replica
outlier ejection (:mod:`.outlier`); per client: a rate limit
(:mod:`.ratelimit`, :mod:`.interceptor`). :mod:`agentmesh.gateway.upstream`
applies them to every call; docs/resilience.md describes every knob.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from agentmesh.gateway.policy import AgentPolicy
from agentmesh.gateway.resilience.breaker import AgentBreaker, BreakerOpen, Clock, Outcome
from agentmesh.gateway.resilience.bulkhead import Bulkhead, BulkheadFull
from agentmesh.gateway.resilience.retry import RetryBudget

log = logging.getLogger("agentmesh.gateway.resilience")


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
        redis_url: str | None = None,
        clock: Clock = time.time,
    ) -> AgentGuard:
        """``retry_budget`` is (ratio, min per second, window seconds)."""
        storage = None
        if redis_url:
            from agentmesh.gateway.resilience.breaker import redis_storage

            try:
                storage = redis_storage(redis_url, agent)
            except Exception as exc:  # Redis down at start: protect locally rather than not at all
                log.warning(
                    "shared breaker state unavailable; using this process's own",
                    extra={"agent": agent, "error": type(exc).__name__},
                )
        ratio, min_per_second, window = retry_budget
        return cls(
            policy=policy,
            breaker=AgentBreaker(agent, policy.breaker, storage=storage, clock=clock),
            bulkhead=Bulkhead(agent, policy.max_concurrency),
            budget=RetryBudget(ratio=ratio, min_per_second=min_per_second, window=window),
        )


__all__ = ["AgentGuard", "BreakerOpen", "BulkheadFull", "Outcome"]
