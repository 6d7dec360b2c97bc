"""One trace from an A2A client through the gateway's job to the agent (real processes, OTLP)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from a2a.client import ClientCallContext
from a2a.types import a2a_pb2 as a2a
from a2atest import a2a_client, assert_one_trace, message, state_of
from meshtest import free_port, otel_env, serving, stop_all

from agentmesh.telemetry.collector import SpanStore, start_receiver

pytestmark = pytest.mark.slow

Spawn = Callable[..., subprocess.Popen[bytes]]


async def test_an_a2a_call_is_one_trace_across_client_gateway_and_agent(spawn: Spawn) -> None:
    store = SpanStore()
    receiver = await start_receiver(store)
    try:
        endpoint = receiver.endpoint
        agent_port, gateway_port = free_port(), free_port()
        agent = spawn(
            "-m", "agentmesh.agents.calculator", "--port", str(agent_port),
            env=otel_env(endpoint),
        )  # fmt: skip
        await serving(f"127.0.0.1:{agent_port}")
        gateway = spawn(
            "-m", "agentmesh.gateway", "--port", str(gateway_port),
            env=otel_env(endpoint, AGENTMESH_AGENT_CALCULATOR_ADDRESSES=f"127.0.0.1:{agent_port}"),
        )  # fmt: skip
        address = f"127.0.0.1:{gateway_port}"
        await serving(address)

        trace_id, parent_id = 0x5B8AA5A2D2C872E8321CF37308D69DF2, 0x051581BF3BB55C45
        context = ClientCallContext(
            service_parameters={"traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01"},
            timeout=20,
        )
        async with a2a_client(address) as client:
            request = message("6*7", skill="calculator/evaluate")
            events = [e async for e in client.send_message(request, context=context)]
        assert state_of(events[-1]) == a2a.TASK_STATE_COMPLETED

        await stop_all([gateway, agent])
        spans = [s for s in store.spans() if s.trace_id == f"{trace_id:032x}"]
    finally:
        await receiver.stop()

    assert_one_trace(spans, parent_id)
