"""The standard gRPC rich error model on the gateway's error statuses.

Read with plain grpcio and grpcio-status (``rpc_status.aio.from_call`` on a raw
``grpc.aio`` call), the way any gRPC client would, and through agentmesh's own
client's ``CallError``.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from meshtest import ProbeAgent, free_port, running_mesh
from resiliencetest import gateway_with, request

from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


async def rich_status(call: Any) -> status_pb2.Status:
    """The ``google.rpc.Status`` of a failed raw call, as grpcio-status reads it."""
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    status: status_pb2.Status | None = await rpc_status.aio.from_call(call)
    assert status is not None
    return status


def detail(status: status_pb2.Status, kind: type[Any]) -> Any:
    """The one detail of type ``kind`` in ``status``."""
    found = [d for d in status.details if d.Is(kind.DESCRIPTOR)]
    assert len(found) == 1, f"{kind.__name__} in {status}"
    message = kind()
    found[0].Unpack(message)
    return message


async def test_a_bad_invoke_option_names_its_field_in_bad_request() -> None:
    async with running_mesh(SummarizerAgent()) as mesh:
        call = mesh.stub.Invoke(
            request("summarizer", "summarize", "One. Two. Three.", sentences=99), timeout=10
        )
        status = await rich_status(call)
        async with AsyncClient(mesh.address, timeout=10) as client:
            with pytest.raises(CallError) as caught:
                await client.invoke("summarizer", "One. Two.", options={"sentences": 0})

    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad = detail(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["options.sentences"]
    assert "50" in bad.field_violations[0].description
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", "agentmesh")
    assert info.metadata["agent"] == "summarizer"  # relayed by the gateway, which adds who

    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in error.field_violations] == ["options.sentences"]
    assert error.reason == "INVALID_ARGUMENT"
    assert error.retry_after is None


async def test_a_workflow_definition_error_names_the_step_field() -> None:
    definition: dict[str, Any] = {"name": "bad", "steps": [{"id": "summary", "agent": "nobody"}]}
    async with running_mesh(ProbeAgent()) as mesh:
        run = pb.Message(parts=[pb.Part(text="hi")])
        wire = gateway_pb2.RunWorkflowRequest(input=run)
        wire.definition.update(definition)
        stream = mesh.stub.RunWorkflow(wire, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in stream:
                pass
        status = await rpc_status.aio.from_call(stream)
    assert status is not None
    bad = detail(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["steps.summary.agent"]
    assert "unknown agent 'nobody'" in bad.field_violations[0].description


async def test_a_rate_limited_call_carries_retry_info_and_its_alias() -> None:
    config = {"rate_limit": {"clients": {"client:batch": {"rate": 0.5, "burst": 1}}}}
    batch = (("x-agentmesh-client", "batch"),)
    async with gateway_with(config) as (_, stub, address):
        await stub.ListAgents(gateway_pb2.ListAgentsRequest(), metadata=batch, timeout=5)
        call = stub.ListAgents(gateway_pb2.ListAgentsRequest(), metadata=batch, timeout=5)
        status = await rich_status(call)
        trailers = dict(await call.trailing_metadata() or ())
        async with AsyncClient(address, timeout=5, metadata=batch) as client:
            with pytest.raises(CallError) as caught:
                await client.list_agents()

    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    retry = detail(status, error_details_pb2.RetryInfo)
    delay = retry.retry_delay.ToNanoseconds() / 1e9
    assert 0 < delay <= 2.0
    assert float(trailers["retry-after"]) == pytest.approx(delay, abs=0.001)  # the alias
    info = detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("RATE_LIMITED", "agentmesh")

    error = caught.value
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 2.0
    assert "retry after" in "\n".join(error.describe())


async def test_an_unknown_agent_and_an_unknown_skill_have_their_reasons() -> None:
    async with running_mesh(ProbeAgent()) as mesh:
        agent = await rich_status(mesh.stub.Invoke(request("nobody"), timeout=5))
        skill = await rich_status(mesh.stub.Invoke(request("", skill="juggle"), timeout=5))
        async with AsyncClient(mesh.address, timeout=5) as client:
            with pytest.raises(CallError) as caught:
                await client.invoke("nobody", "hi")
    assert agent.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert detail(agent, error_details_pb2.ErrorInfo).reason == "AGENT_NOT_FOUND"
    assert detail(skill, error_details_pb2.ErrorInfo).reason == "SKILL_NOT_FOUND"
    assert caught.value.reason == "AGENT_NOT_FOUND"
    assert caught.value.describe()[1] == "  reason: AGENT_NOT_FOUND"


async def test_an_open_breaker_says_so_and_when_it_probes_next() -> None:
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens: every call is UNAVAILABLE
    config = {
        "agents": {"gone": {"addresses": [nowhere]}},
        "defaults": {
            # The first probe waits first_probe seconds (then doubles, up to reset_timeout).
            "breaker": {"failure_threshold": 1, "reset_timeout": 60, "first_probe": 30},
            "retry": {"max_attempts": 1},
        },
    }
    async with gateway_with(config) as (_, stub, _):
        first = await rich_status(stub.Invoke(request("gone"), timeout=5))
        refused = await rich_status(stub.Invoke(request("gone"), timeout=5))

    assert first.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert detail(first, error_details_pb2.ErrorInfo).reason == "UNAVAILABLE"
    assert refused.code == grpc.StatusCode.UNAVAILABLE.value[0]
    info = detail(refused, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain, info.metadata["agent"]) == (
        "BREAKER_OPEN",
        "agentmesh",
        "gone",
    )
    delay = detail(refused, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() / 1e9
    assert 25 < delay <= 30


async def test_a_shape_limit_names_the_field_and_an_unexpected_error_has_a_reason() -> None:
    async with running_mesh(ProbeAgent(), max_parts=2) as mesh:
        parts = [pb.Part(text="x")] * 3
        wide = pb.InvokeRequest(agent="probe", skill="echo", message=pb.Message(parts=parts))
        shape = await rich_status(mesh.stub.Invoke(wide, timeout=5))
        crash = await rich_status(mesh.stub.Invoke(request("probe", "crash"), timeout=5))

    assert shape.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in detail(shape, error_details_pb2.BadRequest).field_violations] == [
        "message.parts"
    ]
    assert detail(shape, error_details_pb2.ErrorInfo).reason == "LIMIT_EXCEEDED"
    assert crash.code == grpc.StatusCode.INTERNAL.value[0]
    assert detail(crash, error_details_pb2.ErrorInfo).reason == "INTERNAL"
    assert "secret" not in crash.message


async def test_a_caller_known_only_by_its_peer_is_limited_in_the_call_itself() -> None:
    config = {"rate_limit": {"rate": 0.5, "burst": 2}}
    async with gateway_with(config) as (_, stub, _):
        listing = gateway_pb2.ListAgentsRequest()
        for _ in range(2):
            await stub.ListAgents(listing, timeout=5)
        streamed = stub.RunWorkflow(gateway_pb2.RunWorkflowRequest(workflow="none"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in streamed:
                pass
        status = await rpc_status.aio.from_call(streamed)
    assert status is not None
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "peer:127.0.0.1" in status.message
    assert detail(status, error_details_pb2.ErrorInfo).reason == "RATE_LIMITED"
    assert detail(status, error_details_pb2.RetryInfo).retry_delay.ToNanoseconds() > 0
