"""External A2A agents in the mesh: an a2a-sdk agent process (gRPC or JSON-RPC binding) on
loopback, declared in the gateway's YAML config, called like a native agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from a2a.types import a2a_pb2 as a2a
from a2atest import a2a_client
from google.protobuf.json_format import MessageToDict
from meshtest import (
    REPO_ROOT,
    ProbeAgent,
    free_port,
    otel_env,
    running_agent,
    service_env,
    serving,
    stop_all,
    wait_until,
)

from agentmesh.gateway import Gateway, GatewaySettings
from agentmesh.gateway.config import load_config
from agentmesh.telemetry.collector import SpanStore, start_receiver
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

Spawn = Callable[..., subprocess.Popen[bytes]]
AGENT_SCRIPT = "tests/a2a/external_agent.py"
BINDINGS = ["grpc", "jsonrpc"]


@dataclass
class External:
    """The a2a-sdk agent process and how the gateway config names it."""

    process: subprocess.Popen[bytes]
    binding: str
    address: str


async def start_external(spawn: Spawn, binding: str) -> External:
    port = free_port()
    process = spawn(AGENT_SCRIPT, "--binding", binding, "--port", str(port))
    if binding == "grpc":
        address = f"127.0.0.1:{port}"

        async def up() -> bool:
            async with grpc.aio.insecure_channel(address) as channel:
                try:
                    await asyncio.wait_for(channel.channel_ready(), 0.2)
                except TimeoutError:
                    return False
                return True
    else:
        address = f"http://127.0.0.1:{port}/"

        async def up() -> bool:
            async with httpx.AsyncClient() as http:
                try:
                    card = await http.get(f"{address}.well-known/agent-card.json", timeout=0.5)
                except httpx.TransportError:
                    return False
                return card.status_code == 200

    await wait_until(up, attempts=400)
    assert process.poll() is None
    return External(process, binding, address)


@dataclass
class Mesh:
    gateway: Gateway
    address: str
    stub: gateway_pb2_grpc.GatewayAsyncStub
    probe: ProbeAgent


@contextlib.asynccontextmanager
async def mesh_with(
    external: External,
    tmp_path: Path,
    *,
    outsider: dict[str, Any] | None = None,
    workflows: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> AsyncIterator[Mesh]:
    """A native probe agent and the external agent ``outsider``, declared in a YAML file."""
    probe = ProbeAgent("probe")
    async with running_agent(probe) as (_, probe_address):
        declared = {
            "address": external.address,
            "a2a": {"binding": external.binding},
            "retry": {"max_attempts": 1},
            **(outsider or {}),
        }
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(
            yaml.safe_dump(
                {
                    "agents": {"probe": {"address": probe_address}, "outsider": declared},
                    "workflows": workflows or {},
                }
            )
        )
        config = load_config(config_file, environ or {})
        gateway = Gateway(GatewaySettings(port=0), config)
        port = await gateway.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Mesh(
                    gateway, f"127.0.0.1:{port}", gateway_pb2_grpc.GatewayStub(channel), probe
                )
        finally:
            await gateway.stop(0)


def request(
    text: str, skill: str = "shout", agent: str = "outsider", **options: Any
) -> pb.InvokeRequest:
    call = pb.InvokeRequest(
        agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text=text)])
    )
    if options:
        call.options.update(options)
    return call


def text_of(response: pb.InvokeResponse) -> str:
    return "".join(p.text for a in response.artifacts for p in a.parts)


def data_of(response: pb.InvokeResponse) -> Any:
    part = next(p for a in response.artifacts for p in a.parts if p.HasField("data"))
    return MessageToDict(part.data)


@pytest.mark.parametrize("binding", BINDINGS)
async def test_an_external_agent_answers_invoke_and_streams_like_a_native_one(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    async with mesh_with(external, tmp_path) as mesh:
        listing = await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=5)
        info = {a.name: a for a in listing.agents}["outsider"]
        assert info.status == gateway_pb2.AGENT_STATUS_SERVING
        assert info.protocol == f"a2a/{binding}"
        assert info.card.version == "2.1.0"
        assert {"shout", "count", "hold"} <= {s.id for s in info.card.skills}
        assert info.card.capabilities.streaming
        assert {a.name: a.protocol for a in listing.agents}["probe"] == "agentmesh"

        reply = await mesh.stub.Invoke(request("hello mesh world"), timeout=10)
        assert (reply.agent, reply.skill, reply.state) == (
            "outsider",
            "shout",
            pb.TASK_STATE_COMPLETED,
        )
        # Appended text chunks are one text part in the result, as a native agent's are.
        assert [[p.text for p in a.parts] for a in reply.artifacts] == [["HELLO MESH WORLD"]]
        assert reply.task_id

        events = [e async for e in mesh.stub.InvokeStream(request("one two three"), timeout=10)]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["started", "partial", "partial", "partial", "final"]
        assert events[0].started.agent == "outsider"
        assert [(e.partial.artifact_id, e.partial.append) for e in events[1:4]] == [
            ("shout", False), ("shout", True), ("shout", True),
        ]  # fmt: skip
        assert "".join(p.text for e in events[1:4] for p in e.partial.parts) == "ONE TWO THREE"
        assert text_of(events[-1].final) == "ONE TWO THREE"

        # An agent that answers with a plain message (no task) is a result too.
        counted = await mesh.stub.Invoke(request("a b c d", skill="count"), timeout=10)
        assert data_of(counted) == {"words": 4}


@pytest.mark.parametrize("binding", BINDINGS)
async def test_configured_headers_options_and_the_agents_failures_carry_over(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    outsider = {"a2a": {"binding": binding, "headers": {"x-api-key": "${OUTSIDER_KEY}"}}}
    async with mesh_with(
        external, tmp_path, outsider=outsider, environ={"OUTSIDER_KEY": "k-123"}
    ) as mesh:
        reply = await mesh.stub.Invoke(request("x", skill="headers", depth=2), timeout=10)
        seen = data_of(reply)
        assert seen["x-api-key"] == "k-123"
        assert seen["x-agentmesh-principal"] == "", "the caller's principal stays in the mesh"
        assert seen["options"] == {"depth": 2}

        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await mesh.stub.Invoke(request("x", skill="fail"), timeout=10)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert "outsider" in (failed.value.details() or "")
        assert "failed on purpose" in (failed.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as asked:
            await mesh.stub.Invoke(request("x", skill="ask"), timeout=10)
        assert asked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "asks for more input" in (asked.value.details() or "")
        assert "which one?" in (asked.value.details() or "")


async def stats(mesh: Mesh) -> Any:
    return data_of(await mesh.stub.Invoke(request("", skill="stats"), timeout=10))


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_call_given_up_cancels_the_external_agents_task(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    async with mesh_with(external, tmp_path) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await mesh.stub.Invoke(request("x", skill="hold"), timeout=1)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

        async def cancelled(count: int) -> bool:
            return bool((await stats(mesh))["cancelled"] == count)

        await wait_until(lambda: cancelled(1))

        # A stream the client walks away from: its task is cancelled too.
        call = mesh.stub.InvokeStream(request("x", skill="hold"), timeout=30)
        first = await call.read()
        assert isinstance(first, pb.InvokeEvent)
        assert first.WhichOneof("event") == "started"
        call.cancel()
        await wait_until(lambda: cancelled(2))


@pytest.mark.parametrize("binding", BINDINGS)
async def test_fan_out_and_workflow_use_the_external_agent_beside_native_ones(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    workflow = {
        "name": "echo-then-shout",
        "steps": [
            {"id": "echo", "agent": "probe", "skill": "echo", "input": "${input.text}"},
            {
                "id": "shout",
                "agent": "outsider",
                "skill": "shout",
                "input": "${steps.echo.output.text} again",
            },
        ],
    }
    async with mesh_with(external, tmp_path, workflows={"echo-then-shout": workflow}) as mesh:
        fanned = await mesh.stub.FanOut(
            gateway_pb2.FanOutRequest(
                targets=[
                    gateway_pb2.Target(agent="probe", skill="echo"),
                    gateway_pb2.Target(agent="outsider", skill="shout"),
                    gateway_pb2.Target(agent="outsider", skill="count"),
                ],
                message=pb.Message(parts=[pb.Part(text="fan me out")]),
            ),
            timeout=10,
        )
        assert (fanned.succeeded, fanned.failed) == (3, 0)
        legs = {(leg.agent, leg.skill): leg for leg in fanned.legs}
        assert text_of(legs["probe", "echo"].result) == "fan me out"
        assert text_of(legs["outsider", "shout"].result) == "FAN ME OUT"
        assert data_of(legs["outsider", "count"].result) == {"words": 3}

        events = [
            e
            async for e in mesh.stub.RunWorkflow(
                gateway_pb2.RunWorkflowRequest(
                    workflow="echo-then-shout", input=pb.Message(parts=[pb.Part(text="hi")])
                ),
                timeout=10,
            )
        ]
        final = events[-1]
        assert final.WhichOneof("event") == "final", final
        assert text_of(final.final.result) == "HI AGAIN"


@pytest.mark.parametrize("binding", BINDINGS)
async def test_the_breaker_opens_when_the_external_agent_stops(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    breaker = {"failure_threshold": 2, "reset_timeout": 60}
    async with mesh_with(external, tmp_path, outsider={"breaker": breaker}) as mesh:
        assert text_of(await mesh.stub.Invoke(request("up"), timeout=10)) == "UP"
        external.process.send_signal(signal.SIGKILL)
        external.process.wait(timeout=10)

        codes = []
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await mesh.stub.Invoke(request("down"), timeout=5)
            codes.append(down.value.code())
        assert codes == [grpc.StatusCode.UNAVAILABLE] * 2

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Invoke(request("down"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker for agent 'outsider' is open" in (refused.value.details() or "")

        listing = await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=5)
        info = {a.name: a for a in listing.agents}["outsider"]
        assert info.breaker.state == gateway_pb2.BREAKER_STATE_OPEN
        # The native agent beside it is untouched.
        probe = await mesh.stub.Invoke(
            request("still here", skill="echo", agent="probe"), timeout=5
        )
        assert text_of(probe) == "still here"


async def test_the_mesh_a2a_card_and_the_cli_show_the_external_agent(
    spawn: Spawn, tmp_path: Path
) -> None:
    external = await start_external(spawn, "jsonrpc")
    async with mesh_with(external, tmp_path) as mesh:
        # An A2A client of the mesh sees (and reaches) the external agent's skills too.
        async with a2a_client(mesh.address) as client:
            card = await client.get_extended_agent_card(a2a.GetExtendedAgentCardRequest())
        assert {"outsider", "outsider/shout", "outsider/count"} <= {s.id for s in card.skills}

        listed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "agentmesh.cli", "agents", "--gateway", mesh.address, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env=service_env(),
        )
        assert listed.returncode == 0, listed.stderr
        agents = {a["name"]: a for a in json.loads(listed.stdout)}
        assert agents["outsider"]["protocol"] == "a2a/jsonrpc"
        assert agents["outsider"]["version"] == "2.1.0"
        assert agents["outsider"]["addresses"] == [external.address]
        assert "shout" in agents["outsider"]["skills"]


@pytest.mark.slow
@pytest.mark.parametrize("binding", BINDINGS)
async def test_the_gateway_passes_its_trace_to_the_external_agent(
    spawn: Spawn, tmp_path: Path, binding: str
) -> None:
    external = await start_external(spawn, binding)
    store = SpanStore()
    receiver = await start_receiver(store)
    try:
        config_file = tmp_path / "gateway.yaml"
        config_file.write_text(
            yaml.safe_dump({"agents": {"outsider": {"address": external.address, "a2a": binding}}})
        )
        port = free_port()
        gateway = spawn(
            "-m", "agentmesh.gateway", "--port", str(port), "--config", str(config_file),
            env=otel_env(receiver.endpoint),
        )  # fmt: skip
        await serving(f"127.0.0.1:{port}")
        trace_id, parent_id = 0x3F2C1A0B9D8E7F6A5B4C3D2E1F0A9B8C, 0x1122334455667788
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await gateway_pb2_grpc.GatewayStub(channel).Invoke(
                request("x", skill="headers"),
                metadata=[("traceparent", f"00-{trace_id:032x}-{parent_id:016x}-01")],
                timeout=20,
            )
        await stop_all([gateway])
        spans = {s.span_id: s for s in store.spans() if s.trace_id == f"{trace_id:032x}"}
    finally:
        await receiver.stop()

    # The agent received the gateway's trace: same trace id, a gateway span as parent.
    version, seen_trace, seen_parent, _ = data_of(reply)["traceparent"].split("-")
    assert (version, seen_trace) == ("00", f"{trace_id:032x}")
    caller = spans[seen_parent]
    assert (caller.service, caller.kind, caller.name) == (
        "gateway", "CLIENT", "agentmesh.v1.Agent/Invoke",
    )  # fmt: skip
    assert caller.attributes["agentmesh.agent"] == "outsider"
    served = spans[caller.parent_id]
    assert (served.name, served.kind, served.parent_id) == (
        "agentmesh.v1.Gateway/Invoke", "SERVER", f"{parent_id:016x}",
    )  # fmt: skip
