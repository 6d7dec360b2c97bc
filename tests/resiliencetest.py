"""Helpers for the resilience tests: a gateway from a full config, and a settable clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


class OffsetClock:
    """Wall-clock time plus an offset the test moves forward (drives reset timeouts)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@contextlib.asynccontextmanager
async def gateway_with(
    config: dict[str, Any], *, clock: OffsetClock | None = None, **settings: object
) -> AsyncIterator[tuple[Gateway, gateway_pb2_grpc.GatewayAsyncStub, str]]:
    """An in-process gateway built from ``config``; yields (gateway, stub, address)."""
    gateway = Gateway(
        GatewaySettings(**{"port": 0, **settings}),  # type: ignore[arg-type]
        GatewayConfig.model_validate(config),
    )
    if clock is not None:
        for entry in gateway.registry.entries:
            entry.guard.breaker.clock = clock
    port = await gateway.start()
    address = f"127.0.0.1:{port}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield gateway, gateway_pb2_grpc.GatewayStub(channel), address
    finally:
        await gateway.stop(0)


def request(agent: str, skill: str = "echo", text: str = "hi", **options: Any) -> pb.InvokeRequest:
    message = pb.InvokeRequest(
        agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text=text)])
    )
    if options:
        message.options.update(options)
    return message


async def breaker_of(stub: gateway_pb2_grpc.GatewayAsyncStub, agent: str) -> gateway_pb2.AgentInfo:
    listing = await stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=5)
    return next(a for a in listing.agents if a.name == agent)
