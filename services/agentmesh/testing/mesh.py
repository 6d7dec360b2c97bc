"""Agents and a gateway served in the test's own process, on 127.0.0.1 and port 0."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

import grpc

from agentmesh.client import AsyncClient
from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
from agentmesh.gateway.config import AgentConfig
from agentmesh.runtime import Agent, AgentSettings, GrpcServer, agent_server
from agentmesh.v1 import gateway_pb2_grpc


@contextlib.asynccontextmanager
async def running_agent(agent: Agent, **settings: object) -> AsyncIterator[tuple[GrpcServer, str]]:
    """Serve ``agent`` on a free port of 127.0.0.1; yields ``(server, "127.0.0.1:PORT")``.

    ``settings`` are :class:`~agentmesh.runtime.AgentSettings` fields
    (``gateway="HOST:PORT"`` lets its handlers call the mesh). The
    agent's ``startup``/``shutdown`` hooks are not called: construct it with
    what it needs (an ``LLMClient`` pointing at a :class:`FakeModel`, say).
    """
    server = agent_server(agent, AgentSettings(**{"port": 0, **settings}))  # type: ignore[arg-type]
    port = await server.start()
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def running_gateway(
    agents: Mapping[str, Sequence[str]], **settings: object
) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway on a free port that knows ``agents`` (name -> addresses).

    ``settings`` are :class:`~agentmesh.gateway.GatewaySettings` fields."""
    config = GatewayConfig(
        agents={name: AgentConfig(addresses=list(addrs)) for name, addrs in agents.items()}
    )
    gateway = Gateway(GatewaySettings(**{"port": 0, **settings}), config)  # type: ignore[arg-type]
    port = await gateway.start()
    try:
        yield gateway, f"127.0.0.1:{port}"
    finally:
        await gateway.stop(0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class Mesh:
    """Agents and a gateway in this process.

    ``client`` is an :class:`~agentmesh.client.AsyncClient` of the gateway,
    ``stub`` the raw gRPC stub, ``servers`` each agent's server by card name.
    """

    address: str
    gateway: Gateway
    servers: dict[str, GrpcServer]
    stub: gateway_pb2_grpc.GatewayAsyncStub
    client: AsyncClient


@contextlib.asynccontextmanager
async def running_mesh(
    *agents: Agent,
    delegation: bool = False,
    agent_settings: Mapping[str, object] | None = None,
    api_key: str | None = None,
    **gateway_settings: object,
) -> AsyncIterator[Mesh]:
    """Serve ``agents`` and a gateway that knows each by its card name.

    With ``delegation`` the agents' handlers can call the mesh (``request.mesh``)
    through this gateway. ``agent_settings`` are
    :class:`~agentmesh.runtime.AgentSettings` fields given to every agent
    (``mesh_api_key=KEY``: the key their calls through the mesh present);
    ``api_key`` is the key the mesh's ``client`` presents. ``gateway_settings``
    are :class:`~agentmesh.gateway.GatewaySettings` fields."""
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, GrpcServer] = {}
        addresses: dict[str, list[str]] = {}
        settings: dict[str, object] = dict(agent_settings or {})
        if delegation:  # the agents must know the gateway's address before it starts
            port = gateway_settings.get("port") or _free_port()
            gateway_settings = {**gateway_settings, "port": port}
            settings.setdefault("gateway", f"127.0.0.1:{port}")
        for agent in agents:
            server, address = await stack.enter_async_context(running_agent(agent, **settings))
            servers[agent.card.name] = server
            addresses[agent.card.name] = [address]
        gateway, gateway_address = await stack.enter_async_context(
            running_gateway(addresses, **gateway_settings)
        )
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(gateway_address))
        client = await stack.enter_async_context(
            AsyncClient(gateway_address, channel=channel, api_key=api_key)
        )
        yield Mesh(gateway_address, gateway, servers, gateway_pb2_grpc.GatewayStub(channel), client)
