"""The ``agentmesh.v1.Gateway`` servicer: wire messages in, routing, wire messages out.

Invoke passes the client's message to the agent untouched and the agent's
response back untouched: the gateway reads only the routing fields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from agentmesh.gateway.auth import caller
from agentmesh.gateway.registry import AgentEntry, Reachability
from agentmesh.gateway.resilience.visibility import fill_resilience
from agentmesh.runtime.status import stream_errors, unary_errors
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from agentmesh.gateway.app import Gateway

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


CACHE_HEADER = "x-agentmesh-cache"
"""Trailing metadata on cacheable calls: "hit" or "miss"."""


def _bypasses_cache(context: Context) -> bool:
    """The client sent ``cache-control: no-cache``: answer fresh (and refresh the entry)."""
    return any(
        key == "cache-control" and "no-cache" in str(value)
        for key, value in context.invocation_metadata() or ()
    )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    """Maps the Gateway service's wire messages onto the gateway's parts."""

    def __init__(self, gateway: Gateway) -> None:
        # The gateway's parts (registry, upstream, fan-out, workflows, jobs...)
        # are read through ``gateway`` so each RPC here stays a thin mapping.
        self._gateway = gateway
        self._registry = gateway.registry
        self._upstream = gateway.upstream

    @unary_errors
    async def ListAgents(
        self, request: gateway_pb2.ListAgentsRequest, context: Context
    ) -> gateway_pb2.ListAgentsResponse:
        if request.refresh:
            await self._registry.refresh_all()
        return gateway_pb2.ListAgentsResponse(
            agents=[agent_info(e) for e in self._registry.entries]
        )

    @unary_errors
    async def Invoke(self, request: pb.InvokeRequest, context: Context) -> pb.InvokeResponse:
        answer = await self._gateway.dispatcher.invoke(
            request, time_remaining=context.time_remaining(), fresh=_bypasses_cache(context)
        )
        if answer.cache:
            context.set_trailing_metadata(((CACHE_HEADER, answer.cache),))
        return answer.response

    @stream_errors
    async def InvokeStream(
        self, request: pb.InvokeRequest, context: Context
    ) -> AsyncIterator[pb.InvokeEvent]:
        async for event in self._gateway.dispatcher.stream(
            request, time_remaining=context.time_remaining()
        ):
            yield event

    @unary_errors
    async def FanOut(
        self, request: gateway_pb2.FanOutRequest, context: Context
    ) -> gateway_pb2.FanOutResponse:
        return await self._gateway.fanout.run(request, time_remaining=context.time_remaining())

    @stream_errors
    async def RunWorkflow(
        self, request: gateway_pb2.RunWorkflowRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]:
        async for event in self._gateway.workflows.run_workflow(
            request, time_remaining=context.time_remaining()
        ):
            yield event

    @unary_errors
    async def SubmitJob(
        self, request: gateway_pb2.SubmitJobRequest, context: Context
    ) -> gateway_pb2.Job:
        principal = caller()
        return await self._gateway.jobs.submit(
            request, owner=principal.owner, max_jobs=principal.max_jobs
        )

    @unary_errors
    async def GetJob(self, request: gateway_pb2.GetJobRequest, context: Context) -> gateway_pb2.Job:
        return await self._gateway.jobs.get(request.job_id, viewer=caller().viewer)

    @stream_errors
    async def WatchJob(
        self, request: gateway_pb2.WatchJobRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        jobs = self._gateway.jobs
        async for event in jobs.watch(request.job_id, request.from_offset, viewer=caller().viewer):
            yield event

    @unary_errors
    async def CancelJob(
        self, request: gateway_pb2.CancelJobRequest, context: Context
    ) -> gateway_pb2.Job:
        return await self._gateway.jobs.cancel(request.job_id, viewer=caller().viewer)

    @unary_errors
    async def ListJobs(
        self, request: gateway_pb2.ListJobsRequest, context: Context
    ) -> gateway_pb2.ListJobsResponse:
        jobs = await self._gateway.jobs.list(request.limit, request.state, viewer=caller().viewer)
        return gateway_pb2.ListJobsResponse(jobs=jobs)
