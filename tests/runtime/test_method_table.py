"""One method table per server: every service's methods found by one lookup, none registered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import pytest
from meshtest import ProbeAgent

from agentmesh.runtime import ServerSettings
from agentmesh.runtime.server import MethodTable
from agentmesh.runtime.service import AgentServicer
from agentmesh.v1 import agent_pb2, agent_pb2_grpc


async def test_generated_services_are_served_from_the_table_without_registering() -> None:
    server = grpc.aio.server()
    registered: list[str] = []

    def refuse(service: str, handlers: Mapping[str, Any]) -> None:
        registered.append(service)  # grpc.aio would await one future per registered method

    server.add_registered_method_handlers = refuse  # type: ignore[method-assign,assignment]
    table = MethodTable()
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentServicer(ProbeAgent(), ServerSettings()), table.server
    )
    table.install(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            card = await agent_pb2_grpc.AgentStub(channel).GetCard(
                agent_pb2.GetCardRequest(), timeout=5
            )
            assert card.name == "probe"
            # A method the table does not know is still UNIMPLEMENTED, from gRPC itself.
            unknown: Any = channel.unary_unary("/agentmesh.v1.Agent/Nope")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unknown(b"", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
    assert registered == []


async def test_the_table_answers_full_method_names() -> None:
    table = MethodTable()
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentServicer(ProbeAgent(), ServerSettings()), table.server
    )

    class Details(grpc.HandlerCallDetails):
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    assert table.service(Details("/agentmesh.v1.Agent/Invoke")) is not None
    assert table.service(Details("/agentmesh.v1.Agent/Nope")) is None
    assert table.service(Details("/agentmesh.v1.Gateway/Invoke")) is None
