"""A concurrency cap per agent that refuses at once instead of queueing."""

from __future__ import annotations

from agentmesh.runtime.errors import AgentError, ErrorCode, Reason


class BulkheadFull(AgentError):
    code = ErrorCode.RESOURCE_EXHAUSTED
    reason = Reason.AGENT_OVERLOADED

    def __init__(self, agent: str, limit: int) -> None:
        super().__init__(
            f"agent {agent!r} is at its concurrency limit ({limit} calls in flight); retry later",
            metadata={"agent": agent},
        )
        self.agent = agent


class Bulkhead:
    """At most ``limit`` calls in flight (0: no cap). Not thread-safe: one event loop."""

    def __init__(self, agent: str, limit: int) -> None:
        self.agent = agent
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.limit and self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def enter(self) -> None:
        """Take a slot or raise :class:`BulkheadFull`."""
        if not self.try_enter():
            raise BulkheadFull(self.agent, self.limit)

    def leave(self) -> None:
        self.in_flight -= 1
