"""Helpers for the A2A tests: a mesh on loopback, the a2a-sdk client for it, OTLP set-up."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from a2a.client import Client, ClientCallContext, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as a2a
from a2a.utils.constants import TransportProtocol
from meshtest import running_agent

from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
from agentmesh.gateway.config import AgentConfig
from agentmesh.runtime.agent import Agent
from agentmesh.telemetry.collector import SpanRecord


@dataclass
class A2AMesh:
    gateway: Gateway
    address: str


@contextlib.asynccontextmanager
async def a2a_mesh(
    *agents: Agent, workflows: Mapping[str, dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[A2AMesh]:
    """Agents and a gateway (with ``workflows`` declared, and ``settings``) on loopback."""
    async with contextlib.AsyncExitStack() as stack:
        addresses: dict[str, AgentConfig] = {}
        for agent in agents:
            _, address = await stack.enter_async_context(running_agent(agent))
            addresses[agent.card.name] = AgentConfig(addresses=[address])
        config = GatewayConfig(agents=addresses, workflows=dict(workflows or {}))
        gateway = Gateway(GatewaySettings(**{"port": 0, **settings}), config)
        port = await gateway.start()
        stack.push_async_callback(gateway.stop, 0)
        yield A2AMesh(gateway, f"127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def a2a_client(
    address: str, *, streaming: bool = True, context: ClientCallContext | None = None
) -> AsyncIterator[Client]:
    """The a2a-sdk client for the gateway's gRPC binding, holding the mesh's extended card."""
    config = ClientConfig(
        streaming=streaming,
        grpc_channel_factory=grpc.aio.insecure_channel,
        supported_protocol_bindings=[TransportProtocol.GRPC],
    )
    seed = a2a.AgentCard(
        name="agentmesh",
        supported_interfaces=[
            a2a.AgentInterface(url=address, protocol_binding="GRPC", protocol_version="1.0")
        ],
        capabilities=a2a.AgentCapabilities(streaming=True, extended_agent_card=True),
    )
    client = ClientFactory(config).create(seed)
    try:
        await client.get_extended_agent_card(a2a.GetExtendedAgentCardRequest(), context=context)
        yield client
    finally:
        await client.close()


def message(text: str, **metadata: Any) -> a2a.SendMessageRequest:
    """A user message with a fresh id (a resent id names the task it first made)."""
    request = a2a.SendMessageRequest(
        message=a2a.Message(
            message_id=uuid.uuid4().hex, role=a2a.ROLE_USER, parts=[a2a.Part(text=text)]
        )
    )
    request.message.metadata.update(metadata)
    return request


def state_of(event: a2a.StreamResponse) -> int | None:
    if event.HasField("task"):
        return event.task.status.state
    if event.HasField("status_update"):
        return event.status_update.status.state
    return None


def texts(artifact: a2a.Artifact) -> str:
    return "".join(p.text for p in artifact.parts)


def assert_one_trace(spans: Sequence[SpanRecord], parent_id: int) -> None:
    """An A2A streamed message to the calculator through the gateway is one trace: the
    gateway's SERVER span under the client's ``parent_id``, its CLIENT span, the agent's."""
    served = [s for s in spans if s.name == "lf.a2a.v1.A2AService/SendStreamingMessage"]
    assert [(s.service, s.kind, s.parent_id) for s in served] == [
        ("gateway", "SERVER", f"{parent_id:016x}")
    ]
    agent_spans = [s for s in spans if s.service == "calculator" and s.kind == "SERVER"]
    assert [s.name for s in agent_spans] == ["agentmesh.v1.Agent/InvokeStream"]
    by_id = {s.span_id: s for s in spans}
    caller = by_id[agent_spans[0].parent_id]
    assert (caller.service, caller.kind) == ("gateway", "CLIENT")
