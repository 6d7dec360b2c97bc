"""An agent's resilience state on the wire (ListAgents' AgentInfo fields)."""

from __future__ import annotations

import time

from agentmesh.gateway.registry import AgentEntry
from agentmesh.gateway.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from agentmesh.v1 import gateway_pb2

_BREAKER_STATE = {
    CLOSED: gateway_pb2.BREAKER_STATE_CLOSED,
    OPEN: gateway_pb2.BREAKER_STATE_OPEN,
    HALF_OPEN: gateway_pb2.BREAKER_STATE_HALF_OPEN,
}


def fill_resilience(info: gateway_pb2.AgentInfo, entry: AgentEntry) -> None:
    """Set ``info``'s breaker, replicas, in-flight, cap and fallback from ``entry``."""
    guard = entry.guard
    snapshot = guard.breaker.snapshot()
    info.breaker.state = _BREAKER_STATE.get(snapshot.state, gateway_pb2.BREAKER_STATE_UNSPECIFIED)
    info.breaker.failures = snapshot.failures
    info.breaker.opened_at = snapshot.opened_at
    info.breaker.retry_after_seconds = snapshot.retry_after
    now = time.monotonic()
    for replica in entry.replicas:
        stats = replica.stats
        info.replicas.add(
            address=replica.address,
            ejected=stats.ejected(now),
            ejected_for_seconds=max(0.0, stats.ejected_until - now),
            consecutive_failures=stats.consecutive_failures,
            in_flight=stats.in_flight,
        )
    info.in_flight = guard.bulkhead.in_flight
    info.max_concurrency = guard.bulkhead.limit
    info.fallback = guard.policy.fallback or ""
    if entry.draining:
        info.status = gateway_pb2.AGENT_STATUS_NOT_SERVING
        info.detail = info.detail or "every replica's health is NOT_SERVING (draining)"
