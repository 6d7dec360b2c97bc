"""Span status of cancelled calls and discovery calls, in process.

A real grpc.aio server on 127.0.0.1 serves the runtime's ``AgentServicer``
behind the :class:`TelemetryInterceptor`, whose tracer belongs to a provider
of the test's own (spans end up in an in-memory exporter as they end); the
process-wide OpenTelemetry provider is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from meshtest import ProbeAgent, wait_until
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentmesh.runtime import ServerSettings
from agentmesh.runtime.service import AgentServicer
from agentmesh.telemetry import TelemetryInterceptor
from agentmesh.telemetry.rpcstatus import is_error, set_rpc_status
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Traced:
    agent: ProbeAgent
    stub: agent_pb2_grpc.AgentAsyncStub
    exporter: InMemorySpanExporter

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


@pytest.fixture
async def traced() -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agent = ProbeAgent()
    server = grpc.aio.server(
        interceptors=[TelemetryInterceptor(tracer=provider.get_tracer("test"))]
    )
    agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(agent, ServerSettings()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: agent_pb2_grpc.AgentAsyncStub = agent_pb2_grpc.AgentStub(channel)
            yield Traced(agent, stub, exporter)
    finally:
        await server.stop(0)
        provider.shutdown()


def _request(skill: str, text: str) -> pb.InvokeRequest:
    return pb.InvokeRequest(skill=skill, message=pb.Message(parts=[pb.Part(text=text)]))


def _assert_cancelled(span: ReadableSpan) -> None:
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert span.status.status_code is StatusCode.UNSET, span.status
    assert [e.name for e in span.events] == []


async def test_a_stream_cancelled_mid_flight_ends_cancelled_without_an_error_log(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    # 50,000 one-letter events are far more than the flow-control window: the
    # handler is blocked writing when the cancellation arrives.
    caplog.set_level(logging.WARNING)
    call = traced.stub.InvokeStream(_request("spell", "x" * 50_000), timeout=30)
    for _ in range(3):
        await call.read()
    call.cancel()
    await wait_until(lambda: traced.spans("agentmesh.v1.Agent/InvokeStream"))
    (span,) = traced.spans("agentmesh.v1.Agent/InvokeStream")
    _assert_cancelled(span)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_unary_call_cancelled_while_the_agent_works_ends_cancelled(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    call = traced.stub.Invoke(_request("hold", "wait"), timeout=30)
    await traced.agent.entered.wait()
    call.cancel()
    await traced.agent.cancelled.wait()
    await wait_until(lambda: traced.spans("agentmesh.v1.Agent/Invoke"))
    (span,) = traced.spans("agentmesh.v1.Agent/Invoke")
    _assert_cancelled(span)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_card_fetch_is_traced_only_inside_a_callers_trace(traced: Traced) -> None:
    # The gateway's periodic card refreshes: no trace context, no trace.
    for _ in range(3):
        await traced.stub.GetCard(agent_pb2.GetCardRequest(), timeout=5)
    # A request that is part of a trace is recorded in it. Spans end in call
    # order, so once this one is exported the three before would have been.
    await traced.stub.GetCard(
        agent_pb2.GetCardRequest(), timeout=5, metadata=(("traceparent", TRACEPARENT),)
    )
    await wait_until(lambda: traced.spans("agentmesh.v1.Agent/GetCard"))
    await traced.stub.Invoke(_request("echo", "hi"), timeout=5)
    await wait_until(lambda: traced.spans("agentmesh.v1.Agent/Invoke"))
    (card,) = traced.spans("agentmesh.v1.Agent/GetCard")
    assert f"{card.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert [s.name for s in traced.exporter.get_finished_spans()] == [
        "agentmesh.v1.Agent/GetCard",
        "agentmesh.v1.Agent/Invoke",
    ]


@pytest.mark.parametrize(
    ("code", "server", "error"),
    [
        (grpc.StatusCode.OK, True, False),
        (grpc.StatusCode.OK, False, False),
        (grpc.StatusCode.CANCELLED, True, False),
        (grpc.StatusCode.CANCELLED, False, False),
        (grpc.StatusCode.INVALID_ARGUMENT, True, False),
        (grpc.StatusCode.INVALID_ARGUMENT, False, True),
        (grpc.StatusCode.UNAVAILABLE, True, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False, True),
    ],
)
def test_cancelled_is_never_an_error_and_every_span_carries_its_code(
    code: grpc.StatusCode, server: bool, error: bool
) -> None:
    assert is_error(code, server=server) is error
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("test").start_span("call")
    set_rpc_status(span, code, server=server, message="why")
    span.end()
    (ended,) = exporter.get_finished_spans()
    assert ended.attributes == {"rpc.grpc.status_code": code.value[0]}
    assert ended.status.status_code is (StatusCode.ERROR if error else StatusCode.UNSET)
    if error:
        assert ended.status.description == f"{code.name}: why"


async def test_a_stream_blocked_writing_when_cancelled_is_closed_and_ends_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    closed = asyncio.Event()

    async def flood(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        try:
            for _ in range(1_000_000):  # bounded; flow control stops it long before
                yield b"x" * 1024
        finally:
            closed.set()

    handler = grpc.method_handlers_generic_handler(
        "test.Flood", {"Flood": grpc.unary_stream_rpc_method_handler(flood)}
    )
    server = grpc.aio.server(interceptors=[TelemetryInterceptor(tracer=provider.get_tracer("t"))])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            flood_method = channel.unary_stream(
                "/test.Flood/Flood",
                request_serializer=bytes,
                response_deserializer=bytes,
            )
            call = flood_method(b"", timeout=30)
            await call.read()
            call.cancel()
            await closed.wait()
            await wait_until(exporter.get_finished_spans)
    finally:
        await server.stop(0)
    (span,) = exporter.get_finished_spans()
    _assert_cancelled(span)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
