"""One request is one trace: real gateway and agent processes, configured only by OTEL_*
variables, export over OTLP/gRPC to a real receiver on 127.0.0.1.

Each process flushes its spans when it exits after SIGTERM, so once every
process has exited the receiver holds everything: no waiting on timers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import grpc
import httpx
import pytest
from meshtest import free_port, otel_env, serving, stop_all
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.client import AsyncClient
from agentmesh.telemetry.collector import ReceiverHandle, SpanStore, start_receiver
from agentmesh.v1 import agent_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

pytestmark = pytest.mark.slow

Spawn = Callable[..., subprocess.Popen[bytes]]
SECRET = "s3cr3t-abc123"  # what crashing_agent.py puts in its exception text
AGENT_INVOKE = "agentmesh.v1.Agent/Invoke"


@dataclass
class Receiver:
    store: SpanStore
    handle: ReceiverHandle


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    store = SpanStore()
    handle = await start_receiver(store)
    yield Receiver(store, handle)
    await handle.stop()


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


T = TypeVar("T")


def only(items: Iterable[T]) -> T:
    found = list(items)
    assert len(found) == 1, found
    return found[0]


async def test_a_fanout_is_one_trace_across_four_services(spawn: Spawn, receiver: Receiver) -> None:
    endpoint = receiver.handle.endpoint
    ports = {name: free_port() for name in ("calculator", "sentiment", "crasher")}
    agents = {
        "calculator": spawn(
            "-m", "agentmesh.agents.calculator", "--port", str(ports["calculator"]),
            env=otel_env(endpoint),
        ),
        "sentiment": spawn(
            "-m", "agentmesh.agents.sentiment", "--port", str(ports["sentiment"]),
            env=otel_env(endpoint),
        ),
        "crasher": spawn(
            "tests/telemetry/crashing_agent.py", "--port", str(ports["crasher"]),
            env=otel_env(endpoint),
        ),
    }  # fmt: skip
    await asyncio.gather(*(serving(f"127.0.0.1:{port}") for port in ports.values()))
    gateway_port, metrics_port = free_port(), free_port()
    registry = {
        f"AGENTMESH_AGENT_{n.upper()}_ADDRESSES": f"127.0.0.1:{p}" for n, p in ports.items()
    }
    gateway = spawn(
        "-m", "agentmesh.gateway", "--port", str(gateway_port),
        "--metrics-port", str(metrics_port),
        env=otel_env(endpoint, **registry),
    )  # fmt: skip
    gateway_address = f"127.0.0.1:{gateway_port}"
    await serving(gateway_address)

    # 1. A client that sends its own traceparent (any W3C-speaking caller).
    fan_trace, fan_parent = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    async with grpc.aio.insecure_channel(gateway_address) as channel:
        fanout = await gateway_pb2_grpc.GatewayStub(channel).FanOut(
            gateway_pb2.FanOutRequest(
                targets=[
                    gateway_pb2.Target(agent="calculator", skill="evaluate"),
                    gateway_pb2.Target(agent="sentiment", skill="sentiment"),
                    gateway_pb2.Target(agent="crasher", skill="crash"),
                ],
                message=pb.Message(parts=[pb.Part(text="2+2")]),
            ),
            metadata=[("traceparent", traceparent(fan_trace, fan_parent))],
            timeout=20,
        )
    assert (fanout.succeeded, fanout.failed) == (2, 1)

    # 2. The Python client library, called while the application has a span active.
    lib_trace, lib_parent = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    parent = SpanContext(lib_trace, lib_parent, is_remote=False, trace_flags=TraceFlags(1))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        async with AsyncClient(gateway_address, timeout=20) as client:
            assert (await client.invoke("calculator", "6*7")).text == "42"
    finally:
        otel_context.detach(token)

    # The gateway's metrics endpoint counts the calls it served.
    async with httpx.AsyncClient() as http:
        scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    counts = {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(scraped)
        if family.name == "agentmesh_rpc_requests"
        for s in family.samples
        if s.name == "agentmesh_rpc_requests_total"
    }
    assert counts[("agentmesh.v1.Gateway/FanOut", "OK")] == 1
    assert counts[("agentmesh.v1.Gateway/Invoke", "OK")] == 1

    await stop_all([gateway, *agents.values()])
    spans = receiver.store.spans()

    # Every agent call belongs to one of the two requests: one trace id each.
    assert {s.trace_id for s in spans if s.name == AGENT_INVOKE} == {
        f"{fan_trace:032x}",
        f"{lib_trace:032x}",
    }

    fan = [s for s in spans if s.trace_id == f"{fan_trace:032x}"]
    by_id = {s.span_id: s for s in fan}
    root = only(s for s in fan if s.name == "agentmesh.v1.Gateway/FanOut")
    assert (root.service, root.kind, root.parent_id) == ("gateway", "SERVER", f"{fan_parent:016x}")
    assert {"gateway", "calculator", "sentiment", "crasher"} <= {s.service for s in fan}
    agent_spans = [s for s in fan if s.name == AGENT_INVOKE and s.kind == "SERVER"]
    assert sorted(s.service for s in agent_spans) == ["calculator", "crasher", "sentiment"]
    for agent_span in agent_spans:
        assert agent_span.kind == "SERVER"
        caller = by_id[agent_span.parent_id]
        assert (caller.service, caller.kind) == ("gateway", "CLIENT"), caller

    failed = only(s for s in agent_spans if s.service == "crasher")
    assert failed.status == "ERROR"
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    exception = only(e for e in failed.events if e.name == "exception")
    assert exception.attributes["exception.type"] == "RuntimeError"
    assert "internal error (ref" in exception.attributes["exception.message"]
    assert by_id[failed.parent_id].status == "ERROR"  # the gateway's call to it failed too
    assert SECRET not in json.dumps([s.to_json() for s in spans])

    # The failing agent's log line carries the trace and span it was written under.
    crasher_out = agents["crasher"].stdout
    assert crasher_out is not None
    lines = [json.loads(line) for line in crasher_out.read().splitlines() if line.startswith(b"{")]
    logged = only(line for line in lines if line["msg"] == "about to fail")
    assert (logged["trace_id"], logged["span_id"]) == (failed.trace_id, failed.span_id)

    # The client library propagated the application's span to the gateway.
    lib = [s for s in spans if s.trace_id == f"{lib_trace:032x}"]
    served = only(s for s in lib if s.name == "agentmesh.v1.Gateway/Invoke")
    assert served.parent_id == f"{lib_parent:016x}"
    assert only(s for s in lib if s.name == AGENT_INVOKE and s.kind == "SERVER").service == (
        "calculator"
    )


@pytest.mark.parametrize(
    "off", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}], ids=str
)
async def test_with_tracing_off_nothing_is_exported(
    spawn: Spawn, receiver: Receiver, off: dict[str, str]
) -> None:
    port = free_port()
    process = spawn(
        "-m", "agentmesh.agents.calculator", "--port", str(port),
        env=otel_env(receiver.handle.endpoint, **off),
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    await serving(address)
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await agent_pb2_grpc.AgentStub(channel).Invoke(
            pb.InvokeRequest(skill="evaluate", message=pb.Message(parts=[pb.Part(text="1+1")])),
            metadata=[("traceparent", traceparent(1, 1))],
            timeout=10,
        )
    assert reply.artifacts[0].parts[0].text == "2"
    await stop_all([process])
    assert receiver.store.spans() == []


async def test_a_stream_its_client_cancels_ends_cancelled_in_every_service_without_error_logs(
    spawn: Spawn, receiver: Receiver
) -> None:
    endpoint = receiver.handle.endpoint
    agent_port, gateway_port = free_port(), free_port()
    agent = spawn(
        "tests/telemetry/flooding_agent.py", "--port", str(agent_port), env=otel_env(endpoint)
    )
    await serving(f"127.0.0.1:{agent_port}")
    gateway = spawn(
        "-m", "agentmesh.gateway", "--port", str(gateway_port),
        env=otel_env(endpoint, AGENTMESH_AGENT_FLOODER_ADDRESSES=f"127.0.0.1:{agent_port}"),
    )  # fmt: skip
    gateway_address = f"127.0.0.1:{gateway_port}"
    await serving(gateway_address)

    trace_id, parent = 0x5AF7651916CD43DD8448EB211C80319C, 0xC7AD6B7169203331
    async with grpc.aio.insecure_channel(gateway_address) as channel:
        call = gateway_pb2_grpc.GatewayStub(channel).InvokeStream(
            pb.InvokeRequest(
                agent="flooder", skill="flood", message=pb.Message(parts=[pb.Part(text="go")])
            ),
            metadata=[("traceparent", traceparent(trace_id, parent))],
            timeout=30,
        )
        for _ in range(3):  # the agent is streaming through the gateway
            await call.read()
        call.cancel()
    await stop_all([gateway, agent])

    spans = [s for s in receiver.store.spans() if s.trace_id == f"{trace_id:032x}"]
    served = {
        s.service: s for s in spans if s.kind == "SERVER" and s.name.endswith("/InvokeStream")
    }
    assert set(served) == {"gateway", "flooder"}
    for span in served.values():
        assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
        assert span.status == "UNSET", span
        assert [e.name for e in span.events] == []
    assert [s for s in spans if s.status == "ERROR"] == []
    for process in (gateway, agent):
        assert process.stdout is not None
        output = process.stdout.read().decode()
        assert "Failed to detach context" not in output
        assert "Traceback" not in output
        assert '"level": "ERROR"' not in output


async def test_a_delegation_is_one_trace_across_agent_gateway_and_agent(
    spawn: Spawn, receiver: Receiver
) -> None:
    endpoint = receiver.handle.endpoint
    gateway_port, relay_port, calculator_port = free_port(), free_port(), free_port()
    gateway_address = f"127.0.0.1:{gateway_port}"
    relay = spawn(
        "tests/telemetry/delegating_agent.py", "--port", str(relay_port),
        "--gateway", gateway_address, env=otel_env(endpoint),
    )  # fmt: skip
    calculator = spawn(
        "-m", "agentmesh.agents.calculator", "--port", str(calculator_port),
        env=otel_env(endpoint),
    )  # fmt: skip
    registry = {
        "AGENTMESH_AGENT_RELAY_ADDRESSES": f"127.0.0.1:{relay_port}",
        "AGENTMESH_AGENT_CALCULATOR_ADDRESSES": f"127.0.0.1:{calculator_port}",
    }
    gateway = spawn(
        "-m", "agentmesh.gateway", "--port", str(gateway_port), env=otel_env(endpoint, **registry)
    )
    for port in (relay_port, calculator_port, gateway_port):
        await serving(f"127.0.0.1:{port}")

    trace_id, parent = 0x5AF7651916CD43DD8448EB211C80319D, 0xC7AD6B7169203332
    async with grpc.aio.insecure_channel(gateway_address) as channel:
        reply = await gateway_pb2_grpc.GatewayStub(channel).Invoke(
            pb.InvokeRequest(agent="relay", message=pb.Message(parts=[pb.Part(text="6*7")])),
            metadata=[("traceparent", traceparent(trace_id, parent))],
            timeout=20,
        )
    assert reply.artifacts[0].parts[0].text == "the calculator says 42"

    await stop_all([gateway, relay, calculator])
    spans = [s for s in receiver.store.spans() if s.trace_id == f"{trace_id:032x}"]
    by_id = {s.span_id: s for s in spans}
    # client -> gateway -> relay -> (delegation) gateway -> calculator, one trace
    root = only(
        s
        for s in spans
        if s.name == "agentmesh.v1.Gateway/Invoke" and s.parent_id == f"{parent:016x}"
    )
    assert (root.service, root.kind) == ("gateway", "SERVER")
    relay_served = only(s for s in spans if s.name == AGENT_INVOKE and s.service == "relay")
    delegated = only(
        s for s in spans if s.service == "relay" and s.name == "agentmesh.v1.Gateway/Invoke"
    )
    assert delegated.kind == "CLIENT"
    assert delegated.parent_id == relay_served.span_id
    second = only(
        s for s in spans if s.service == "gateway" and s.kind == "SERVER" and s is not root
    )
    assert second.parent_id == delegated.span_id
    calculator_served = only(
        s for s in spans if s.name == AGENT_INVOKE and s.service == "calculator"
    )
    assert by_id[calculator_served.parent_id].service == "gateway"
    hop = by_id[calculator_served.parent_id]
    while hop.parent_id in by_id and hop.span_id != second.span_id:
        hop = by_id[hop.parent_id]
    assert hop.span_id == second.span_id  # the calculator was called for the delegated call


async def test_a_request_sampled_out_by_its_caller_is_traced_nowhere_downstream(
    spawn: Spawn, receiver: Receiver
) -> None:
    """parentbased sampling (the default): the gateway starts no span for a caller's
    unsampled trace and passes the decision on, so the agent traces nothing either."""
    endpoint = receiver.handle.endpoint
    agent_port, gateway_port = free_port(), free_port()
    agent = spawn(
        "-m", "agentmesh.agents.calculator", "--port", str(agent_port), env=otel_env(endpoint)
    )  # fmt: skip
    await serving(f"127.0.0.1:{agent_port}")
    gateway = spawn(
        "-m", "agentmesh.gateway", "--port", str(gateway_port),
        env=otel_env(endpoint, AGENTMESH_AGENT_CALCULATOR_ADDRESSES=f"127.0.0.1:{agent_port}"),
    )  # fmt: skip
    await serving(f"127.0.0.1:{gateway_port}")
    sampled_out, sampled_in = 0x1F, 0x2F
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        for trace_id, flags in ((sampled_out, "00"), (sampled_in, "01")):
            reply = await stub.Invoke(
                pb.InvokeRequest(
                    agent="calculator", skill="evaluate",
                    message=pb.Message(parts=[pb.Part(text="6*7")]),
                ),
                metadata=[("traceparent", f"00-{trace_id:032x}-{0xAB:016x}-{flags}")],
                timeout=10,
            )  # fmt: skip
            assert reply.artifacts[0].parts[0].text == "42"
    await stop_all([gateway, agent])
    spans = receiver.store.spans()
    assert {span.trace_id for span in spans} == {f"{sampled_in:032x}"}
    services = {span.service for span in spans}
    assert {"gateway", "calculator"} <= services
