"""Graceful shutdown of a real agent process on a real SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshtest import free_port, health_status, running_gateway, wait_until

from agentmesh.gateway.registry import Health
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

SLOW_AGENT = str(Path(__file__).with_name("slow_agent.py"))


async def _read_line_with(process: subprocess.Popen[bytes], marker: bytes) -> None:
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    for _ in range(200):  # bounded: the agent prints a handful of log lines
        line = await loop.run_in_executor(None, process.stdout.readline)
        if marker in line:
            return
        if not line:
            break
    raise AssertionError(f"{marker!r} never printed")


async def test_sigterm_mid_request_finishes_that_request_and_refuses_new_ones(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = spawn(SLOW_AGENT, "--port", str(port), "--grace-period", "20")
    await wait_until(lambda: _serving(address))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        request = pb.InvokeRequest(message=pb.Message(parts=[pb.Part(text="go")]))
        request.options.update({"seconds": 1.5})
        in_flight = asyncio.ensure_future(stub.Invoke(request, timeout=30))
        await _read_line_with(process, b"entered")
        process.send_signal(signal.SIGTERM)
        reply = await in_flight
        assert reply.artifacts[0].parts[0].text == "finished"
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, process.wait, 30) == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async with grpc.aio.insecure_channel(address) as channel:
            await agent_pb2_grpc.AgentStub(channel).Invoke(request, timeout=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def _serving(address: str) -> bool:
    try:
        return await health_status(address) == 1
    except grpc.aio.AioRpcError:
        return False


async def test_an_idle_agent_watched_by_a_gateway_stops_at_once_on_sigterm(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    # A grace period far longer than the wait below: waiting it out fails the test.
    process = spawn(SLOW_AGENT, "--port", str(port), "--grace-period", "120")
    await wait_until(lambda: _serving(address))
    async with (
        running_gateway({"slow": [address]}) as (gateway, _),
        grpc.aio.insecure_channel(address) as channel,
    ):
        entry = gateway.registry.get("slow")
        assert entry is not None
        await wait_until(lambda: entry.replicas[0].health is Health.SERVING)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        process.send_signal(signal.SIGTERM)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await watch.read() is grpc.aio.EOF
        assert await watch.code() == grpc.StatusCode.OK  # ended by the agent, not broken
        assert await asyncio.to_thread(process.wait, 60) == 0
    assert process.stdout is not None
    log = await asyncio.to_thread(process.stdout.read)
    assert b'"draining"' in log
    assert b'"stopped"' in log
    assert b"grace period over" not in log
