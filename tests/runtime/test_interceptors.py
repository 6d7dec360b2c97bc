"""The shared handler wrapping of server interceptors, and the resilience kernel's rules."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest
from meshtest import ProbeAgent

from agentmesh.runtime import ServerSettings, agent_server
from agentmesh.runtime.errors import Reason
from agentmesh.runtime.resilience import (
    Backoff,
    Deadline,
    is_caller_error,
    is_retryable,
    retry_wait,
)
from agentmesh.runtime.status import StatusDetails, abort_status, details_of
from agentmesh.telemetry.handlers import Handler, MethodInterceptor, PerMethod, checked
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


class Gate(MethodInterceptor):
    """Refuses ``Agent`` calls whose text is "no"; counts the wrappers it builds."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        if not method.startswith("/agentmesh.v1.Agent/Invoke"):
            return handler
        return self._wrapped.get(method, handler, self._build, method)

    def _build(self, handler: Handler, method: str) -> Handler:
        self.built.append(method)
        return checked(handler, self._check)

    async def _check(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if request.message.parts[0].text == "no":
            details = StatusDetails(Reason.PERMISSION_DENIED, metadata={"by": "gate"})
            await abort_status(context, grpc.StatusCode.PERMISSION_DENIED, "gate says no", details)


def ask(text: str) -> pb.InvokeRequest:
    return pb.InvokeRequest(skill="spell", message=pb.Message(parts=[pb.Part(text=text)]))


async def letters(stream: Any) -> str:
    return "".join([e.partial.parts[0].text async for e in stream if e.HasField("partial")])


async def test_a_wrapper_is_built_once_per_method_and_refuses_unary_and_streams() -> None:
    gate = Gate()
    server = agent_server(ProbeAgent(), ServerSettings(port=0), interceptors=[gate])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            for _ in range(5):
                assert (await stub.Invoke(ask("ok"), timeout=5)).artifacts
                assert await letters(stub.InvokeStream(ask("ab"), timeout=5)) == "ab"
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.Invoke(ask("no"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as stream:
                await letters(stub.InvokeStream(ask("no"), timeout=5))
    finally:
        await server.stop(0)
    assert sorted(gate.built) == ["/agentmesh.v1.Agent/Invoke", "/agentmesh.v1.Agent/InvokeStream"]
    for refused in (unary.value, stream.value):
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        rich = details_of(refused)
        assert (rich.reason, rich.domain, dict(rich.metadata)) == (
            "PERMISSION_DENIED",
            "agentmesh",
            {"by": "gate"},
        )


def test_retryable_and_caller_codes() -> None:
    codes = grpc.StatusCode
    assert is_retryable(codes.UNAVAILABLE)
    assert is_retryable(codes.RESOURCE_EXHAUSTED, retry_after=0.5)
    assert not is_retryable(codes.RESOURCE_EXHAUSTED)  # over a limit: the same answer again
    assert not is_retryable(codes.INVALID_ARGUMENT)
    assert not is_retryable(codes.DEADLINE_EXCEEDED)
    assert is_caller_error(codes.INVALID_ARGUMENT)
    assert is_caller_error(codes.CANCELLED)
    assert is_caller_error(codes.RESOURCE_EXHAUSTED)
    assert not is_caller_error(codes.RESOURCE_EXHAUSTED, retry_after=1.0)  # overloaded
    assert not is_caller_error(codes.UNAVAILABLE)


def test_retry_wait_honours_the_asked_wait_and_the_deadline() -> None:
    now = [100.0]
    deadline = Deadline.start(timeout=2.0, clock=lambda: now[0])
    backoff = Backoff(initial=0.1, maximum=1.0)
    rng = random.Random(3)
    assert 0.0 <= (retry_wait(backoff, 1, deadline=deadline, rng=rng) or 0.0) <= 0.1
    assert retry_wait(None, 1, deadline=deadline) == 0.0  # failover: no wait
    assert retry_wait(backoff, 1, deadline=deadline, retry_after=1.5) == 1.5
    assert retry_wait(backoff, 1, deadline=deadline, retry_after=2.5) is None  # past the deadline
    now[0] += 2.0
    assert retry_wait(None, 1, deadline=deadline) is None
    assert [Backoff(0.1, 1.0).cap(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
