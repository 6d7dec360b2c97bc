"""The ``agentmesh.v1.Gateway`` servicer: wire messages in, routing, wire messages out.

Invoke passes the client's message to the agent untouched and the agent's
response back untouched: the gateway reads only the routing fields.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh.gateway.auth import caller
from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.fanout import FanOut
from agentmesh.gateway.jobs import JobManager
from agentmesh.gateway.registry import AgentEntry, Reachability, Registry
from agentmesh.gateway.resilience.breaker import CLOSED, HALF_OPEN, OPEN
from agentmesh.gateway.sessions import SessionStore, check_context_id
from agentmesh.gateway.workflows import WorkflowService
from agentmesh.runtime.delegation import HOPS_HEADER, current_hops, hops_from
from agentmesh.runtime.errors import FailedPrecondition, NotFound
from agentmesh.runtime.status import stream_errors, unary_errors
from agentmesh.telemetry.handlers import call_metadata
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {
    Reachability.UNKNOWN: gateway_pb2.AGENT_STATUS_UNSPECIFIED,
    Reachability.SERVING: gateway_pb2.AGENT_STATUS_SERVING,
    Reachability.UNAVAILABLE: gateway_pb2.AGENT_STATUS_UNAVAILABLE,
}


def agent_info(entry: AgentEntry) -> gateway_pb2.AgentInfo:
    info = gateway_pb2.AgentInfo(
        name=entry.name,
        addresses=entry.addresses,
        status=_STATUS[entry.reachability],
        detail=entry.detail,
        protocol=entry.config.protocol,
    )
    if entry.card is not None:
        info.card.CopyFrom(entry.card)
    fill_resilience(info, entry)
    return info


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
    if entry.draining and entry.reachability is not Reachability.UNAVAILABLE:
        # Draining, still answering; once it stops answering it is UNAVAILABLE.
        info.status = gateway_pb2.AGENT_STATUS_NOT_SERVING
        info.detail = info.detail or "every replica's health is NOT_SERVING (draining)"


CACHE_HEADER = "x-agentmesh-cache"
"""Trailing metadata on cacheable calls: "hit" or "miss"."""


def _bypasses_cache(context: Context) -> bool:
    """The client sent ``cache-control: no-cache``: answer fresh (and refresh the entry)."""
    return any(
        key == "cache-control" and "no-cache" in str(value) for key, value in call_metadata(context)
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Maps the Gateway service's wire messages onto the gateway's parts."""

    def __init__(
        self,
        *,
        registry: Registry,
        dispatcher: Dispatcher,
        fanout: FanOut,
        workflows: WorkflowService,
        jobs: JobManager,
        sessions: SessionStore,
        max_hops: int = 8,
    ) -> None:
        self._max_hops = max_hops
        self._registry = registry
        self._dispatcher = dispatcher
        self._fanout = fanout
        self._workflows = workflows
        self._jobs = jobs
        self._sessions = sessions

    @unary_errors
    async def ListAgents(
        self, request: gateway_pb2.ListAgentsRequest, context: Context
    ) -> gateway_pb2.ListAgentsResponse:
        if request.refresh:
            await self._registry.refresh_all()
        return gateway_pb2.ListAgentsResponse(
            agents=[agent_info(e) for e in self._registry.entries]
        )

    def _delegation(self, context: Context) -> None:
        """Refuse a call past the delegation depth; pass the hop count on to the agent."""
        hops = hops_from(call_metadata(context))
        if hops > self._max_hops:
            raise FailedPrecondition(
                f"delegation depth {hops} is over the gateway's limit of {self._max_hops} "
                f"({HOPS_HEADER}): do agents call each other in a loop?"
            )
        current_hops.set(hops)

    @unary_errors
    async def Invoke(self, request: pb.InvokeRequest, context: Context) -> pb.InvokeResponse:
        self._delegation(context)
        answer = await self._dispatcher.invoke(
            request, time_remaining=context.time_remaining(), fresh=_bypasses_cache(context)
        )
        if answer.cache:
            context.set_trailing_metadata(((CACHE_HEADER, answer.cache),))
        return answer.response

    @stream_errors
    async def InvokeStream(
        self, request: pb.InvokeRequest, context: Context
    ) -> AsyncIterator[pb.InvokeEvent]:
        self._delegation(context)
        async for event in self._dispatcher.stream(
            request, time_remaining=context.time_remaining()
        ):
            yield event

    @unary_errors
    async def FanOut(
        self, request: gateway_pb2.FanOutRequest, context: Context
    ) -> gateway_pb2.FanOutResponse:
        return await self._fanout.run(request, time_remaining=context.time_remaining())

    @stream_errors
    async def RunWorkflow(
        self, request: gateway_pb2.RunWorkflowRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]:
        async for event in self._workflows.run_workflow(
            request, time_remaining=context.time_remaining()
        ):
            yield event

    @unary_errors
    async def SubmitJob(
        self, request: gateway_pb2.SubmitJobRequest, context: Context
    ) -> gateway_pb2.Job:
        principal = caller()
        return await self._jobs.submit(request, owner=principal.owner, max_jobs=principal.max_jobs)

    @unary_errors
    async def GetJob(self, request: gateway_pb2.GetJobRequest, context: Context) -> gateway_pb2.Job:
        return await self._jobs.get(request.job_id, viewer=caller().viewer)

    @stream_errors
    async def WatchJob(
        self, request: gateway_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        jobs = self._jobs
        async for event in jobs.watch(
            request.job_id,
            request.from_offset,
            viewer=caller().viewer,
            until_input=request.until_input,
        ):
            yield event

    @unary_errors
    async def CancelJob(
        self, request: gateway_pb2.CancelJobRequest, context: Context
    ) -> gateway_pb2.Job:
        return await self._jobs.cancel(request.job_id, viewer=caller().viewer)

    @unary_errors
    async def ResumeJob(
        self, request: gateway_pb2.ResumeJobRequest, context: Context
    ) -> gateway_pb2.Job:
        # Only the job's owner answers its question (an operator sees it, but did not ask).
        return await self._jobs.resume(request.job_id, request.message, owner=caller().owner)

    @unary_errors
    async def ListJobs(
        self, request: gateway_pb2.ListJobsRequest, context: Context
    ) -> gateway_pb2.ListJobsResponse:
        jobs = await self._jobs.list(request.limit, request.state, viewer=caller().viewer)
        return gateway_pb2.ListJobsResponse(jobs=jobs)

    # Sessions belong to their owner: another caller's context id is simply not found.

    @unary_errors
    async def GetSession(
        self, request: gateway_pb2.GetSessionRequest, context: Context
    ) -> gateway_pb2.Session:
        check_context_id(request.context_id)
        session = await self._sessions.get(caller().owner, request.context_id)
        if session is None:
            raise NotFound(f"no session {request.context_id[:64]!r}")
        return session

    @unary_errors
    async def ListSessions(
        self, request: gateway_pb2.ListSessionsRequest, context: Context
    ) -> gateway_pb2.ListSessionsResponse:
        limit = min(request.limit or 100, 1000)
        sessions = await self._sessions.list(caller().owner, limit)
        return gateway_pb2.ListSessionsResponse(sessions=sessions)

    @unary_errors
    async def DeleteSession(
        self, request: gateway_pb2.DeleteSessionRequest, context: Context
    ) -> gateway_pb2.DeleteSessionResponse:
        check_context_id(request.context_id)
        if not await self._sessions.delete(caller().owner, request.context_id):
            raise NotFound(f"no session {request.context_id[:64]!r}")
        return gateway_pb2.DeleteSessionResponse(deleted=True)
