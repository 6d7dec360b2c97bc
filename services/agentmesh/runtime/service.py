"""Serving an :class:`~agentmesh.runtime.agent.Agent` over gRPC.

:class:`AgentServicer` only maps wire messages to domain types and errors to
statuses; the agent's logic never sees gRPC. :func:`run` is a service's whole
entry point::

    if __name__ == "__main__":
        run(SummarizerAgent())
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import grpc
from opentelemetry import trace

from agentmesh.runtime import wire
from agentmesh.runtime.agent import Agent, Assembler
from agentmesh.runtime.delegation import GatewayConnection, hops_from
from agentmesh.runtime.logs import configure_logging
from agentmesh.runtime.principal import principal_from
from agentmesh.runtime.schema import check_options
from agentmesh.runtime.server import GrpcServer, ServiceBinding, run_server
from agentmesh.runtime.settings import AgentSettings, ServerSettings, load_settings
from agentmesh.runtime.status import stream_errors, unary_errors
from agentmesh.runtime.tls import TLSConfigError
from agentmesh.runtime.types import Request
from agentmesh.runtime.work import WorkPool, bind
from agentmesh.telemetry import start_telemetry
from agentmesh.telemetry.handlers import call_metadata
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

AGENT_SERVICE = "agentmesh.v1.Agent"

Context = grpc.aio.ServicerContext[pb.InvokeRequest, object]


class AgentServicer(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        agent: Agent,
        settings: ServerSettings,
        work: WorkPool | None = None,
        gateway: GatewayConnection | None = None,
    ) -> None:
        self._agent = agent
        self._gateway = gateway
        self._work = work
        self._name = agent.card.name
        self._max_parts = settings.max_parts
        self._card = wire.card_to_proto(agent.card)
        self._schemas = {s.id: s.options_schema for s in agent.card.skills}

    async def GetCard(
        self, request: agent_pb2.GetCardRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.AgentCard:
        return self._card

    def _request(self, request: pb.InvokeRequest, context: Context) -> Request:
        domain = wire.request_from_proto(
            request, time_remaining=context.time_remaining(), max_parts=self._max_parts
        )
        skill = self._agent.resolve_skill(domain.skill)
        check_options(
            self._schemas.get(skill),
            domain.options,
            owner=f"skill {skill!r} of agent {self._name!r}",
        )
        if self._work is not None:
            bind(self._work, domain.deadline)  # offload() in this call uses them
        metadata = call_metadata(context)
        hops = hops_from(metadata)
        principal = principal_from(metadata)
        if self._gateway is not None:
            mesh = self._gateway.for_request(hops=hops, deadline=domain.deadline)
            domain = replace(domain, mesh=mesh, hops=hops, principal=principal)
        elif hops or principal:
            domain = replace(domain, hops=hops, principal=principal)
        trace.get_current_span().set_attributes(
            {"agentmesh.agent": self._name, "agentmesh.skill": skill}
        )
        if skill == domain.skill and domain.task_id:
            return domain
        return replace(domain, skill=skill, task_id=domain.task_id or uuid.uuid4().hex)

    @unary_errors
    async def Invoke(self, request: pb.InvokeRequest, context: Context) -> pb.InvokeResponse:
        domain = self._request(request, context)
        result = await self._agent.invoke(domain)
        return wire.result_to_proto(
            result, agent=self._name, skill=domain.skill, task_id=domain.task_id
        )

    @stream_errors
    async def InvokeStream(
        self, request: pb.InvokeRequest, context: Context
    ) -> AsyncIterator[pb.InvokeEvent]:
        domain = self._request(request, context)
        started = pb.InvokeEvent()
        started.started.task_id = domain.task_id
        started.started.agent = self._name
        started.started.skill = domain.skill
        yield started
        assembler = Assembler()
        async for item in self._agent.stream(domain):
            partial = assembler.feed(item)
            if partial is not None:
                yield wire.partial_to_proto(partial)
        event = pb.InvokeEvent()
        event.final.CopyFrom(
            wire.result_to_proto(
                assembler.result(), agent=self._name, skill=domain.skill, task_id=domain.task_id
            )
        )
        yield event


def agent_server(
    agent: Agent,
    settings: ServerSettings,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> GrpcServer:
    """A :class:`GrpcServer` serving ``agent`` (not started); with ``settings.gateway``
    (:class:`AgentSettings`) its handlers can call the mesh through ``request.mesh``."""
    work = WorkPool(settings.work_processes, name=agent.card.name)
    gateway = (
        GatewayConnection.from_settings(settings) if isinstance(settings, AgentSettings) else None
    )
    servicer = AgentServicer(agent, settings, work, gateway)

    async def stopped() -> None:
        await work.close()
        if gateway is not None:
            await gateway.close()
        await agent.shutdown()

    return GrpcServer(
        settings,
        [
            ServiceBinding(
                AGENT_SERVICE, lambda s: agent_pb2_grpc.add_AgentServicer_to_server(servicer, s)
            )
        ],
        interceptors=interceptors,
        on_stopped=stopped,
    )


async def serve(agent: Agent, settings: ServerSettings) -> None:
    """Start ``agent`` and serve until SIGTERM/SIGINT, then drain."""
    await agent.startup()
    await run_server(agent_server(agent, settings))


def run(agent: Agent, argv: Sequence[str] | None = None) -> None:
    """A service's entry point: settings from env and flags, logs, serve."""
    settings = load_settings(AgentSettings, argv, prog=f"agentmesh-{agent.card.name}")
    configure_logging(agent.card.name, level=settings.log_level, fmt=settings.log_format)
    start_telemetry(agent.card.name, host=settings.host, metrics_port=settings.metrics_port)
    try:
        asyncio.run(serve(agent, settings))
    except TLSConfigError as exc:  # an unreadable certificate or key file, named
        raise SystemExit(f"agentmesh-{agent.card.name}: {exc}") from None
