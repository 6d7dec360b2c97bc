"""One trace from an A2A client over HTTP (JSON-RPC) through the gateway to the agent (OTLP)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from a2a.types import a2a_pb2 as a2a
from a2atest import assert_one_trace, message, state_of
from meshtest import free_port, otel_env, serving, stop_all
from test_http_a2a import http_client

from agentmesh.telemetry.collector import SpanStore, start_receiver

pytestmark = pytest.mark.slow

Spawn = Callable[..., subprocess.Popen[bytes]]


async def test_an_http_a2a_call_is_one_trace_across_client_gateway_and_agent(
    spawn: Spawn,
) -> None:
    store = SpanStore()
    receiver = await start_receiver(store)
    try:
        endpoint = receiver.endpoint
        agent_port, gateway_port, http_port = free_port(), free_port(), free_port()
        agent = spawn(
            "-m", "agentmesh.agents.calculator", "--port", str(agent_port),
            env=otel_env(endpoint),
        )  # fmt: skip
        await serving(f"127.0.0.1:{agent_port}")
        gateway = spawn(
            "-m", "agentmesh.gateway", "--port", str(gateway_port),
            env=otel_env(
                endpoint,
                AGENTMESH_AGENT_CALCULATOR_ADDRESSES=f"127.0.0.1:{agent_port}",
                AGENTMESH_HTTP_PORT=str(http_port),
            ),
        )  # fmt: skip
        await serving(f"127.0.0.1:{gateway_port}")  # the HTTP port is bound before it

        trace_id, parent_id = 0x5B8AA5A2D2C872E8321CF37308D69DF3, 0x051581BF3BB55C46
        traceparent = {"traceparent": f"00-{trace_id:032x}-{parent_id:016x}-01"}
        async with http_client(
            f"http://127.0.0.1:{http_port}", "JSONRPC", headers=traceparent
        ) as client:
            request = message("6*7", skill="calculator/evaluate")
            events = [e async for e in client.send_message(request)]
        assert state_of(events[-1]) == a2a.TASK_STATE_COMPLETED

        await stop_all([gateway, agent])
        spans = [s for s in store.spans() if s.trace_id == f"{trace_id:032x}"]
    finally:
        await receiver.stop()

    assert_one_trace(spans, parent_id)
