"""Calls from the gateway to agents, with the caller's deadline passed on.

Every call gets the caller's remaining time minus a small margin (or the
default timeout when the caller set none), capped by the agent's own timeout.
gRPC failures become :class:`AgentError` values naming the agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agentmesh.gateway.config import GatewaySettings
from agentmesh.gateway.registry import AgentEntry, Registry, Replica
from agentmesh.runtime.errors import AgentError, DeadlineExceeded, ErrorCode, Unavailable
from agentmesh.runtime.status import error_code
from agentmesh.v1 import messages_pb2 as pb


class Upstream:
    def __init__(self, settings: GatewaySettings, registry: Registry) -> None:
        self._registry = registry
        self._default_timeout = settings.default_timeout
        self._margin = settings.deadline_margin

    def timeout_for(self, entry: AgentEntry, time_remaining: float | None) -> float:
        """Seconds the agent gets; DeadlineExceeded when nothing is left."""
        budget = self._default_timeout if time_remaining is None else time_remaining - self._margin
        if entry.config.timeout is not None:
            budget = min(budget, entry.config.timeout)
        if budget <= 0:
            raise DeadlineExceeded(
                f"deadline too short to call agent {entry.name!r}: "
                f"{max(time_remaining or 0.0, 0.0) * 1000:.0f} ms left"
            )
        return budget

    async def invoke(
        self, entry: AgentEntry, request: pb.InvokeRequest, *, time_remaining: float | None
    ) -> pb.InvokeResponse:
        timeout = self.timeout_for(entry, time_remaining)
        replica = entry.pick()
        try:
            response: pb.InvokeResponse = await replica.stub.Invoke(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise translate(entry, replica, exc, timeout) from None
        self._answered(entry)
        return response

    async def stream(
        self, entry: AgentEntry, request: pb.InvokeRequest, *, time_remaining: float | None
    ) -> AsyncIterator[pb.InvokeEvent]:
        timeout = self.timeout_for(entry, time_remaining)
        replica = entry.pick()
        call = replica.stub.InvokeStream(request, timeout=timeout)
        try:
            async for event in call:
                yield event
            self._answered(entry)
        except grpc.aio.AioRpcError as exc:
            raise translate(entry, replica, exc, timeout) from None
        finally:
            # The caller went away or failed: stop the agent's work too.
            call.cancel()

    def _answered(self, entry: AgentEntry) -> None:
        if entry.card is None:
            self._registry.refresh_soon(entry)
        entry.mark_serving()


def translate(
    entry: AgentEntry, replica: Replica, exc: grpc.aio.AioRpcError, timeout: float
) -> AgentError:
    """An agent's gRPC failure as the error the gateway's caller sees."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        entry.mark_unavailable(f"{replica.address}: {details}")
        return Unavailable(
            f"agent {entry.name!r} at {replica.address} is unavailable: {details or 'no detail'}"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"agent {entry.name!r} did not answer within {timeout:.3f}s")
    if code == grpc.StatusCode.CANCELLED:
        return AgentError(f"call to agent {entry.name!r} was cancelled", code=ErrorCode.CANCELLED)
    mapped = error_code(code)
    if mapped is ErrorCode.INTERNAL:
        return AgentError(f"agent {entry.name!r} failed: {details}", code=ErrorCode.INTERNAL)
    # The agent's own status (INVALID_ARGUMENT, NOT_FOUND, ...) and message.
    return AgentError(f"agent {entry.name!r}: {details}", code=mapped)


__all__ = ["Upstream", "translate"]
