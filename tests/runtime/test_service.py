"""The agent servicer and server bootstrap, against real grpc.aio servers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from meshtest import ProbeAgent, health_status, running_agent, wait_until

from agentmesh.runtime import ServerSettings, agent_server
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def text_request(text: str, skill: str = "echo") -> pb.InvokeRequest:
    return pb.InvokeRequest(skill=skill, message=pb.Message(parts=[pb.Part(text=text)]))


async def test_card_invoke_and_stream() -> None:
    async with (
        running_agent(ProbeAgent()) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = agent_pb2_grpc.AgentStub(channel)
        card = await stub.GetCard(agent_pb2.GetCardRequest())
        assert card.name == "probe"
        assert [s.id for s in card.skills] == ["echo", "hold", "crash", "spell"]
        assert card.capabilities.streaming

        reply = await stub.Invoke(text_request("hello"), timeout=5)
        assert reply.agent == "probe"
        assert reply.skill == "echo"
        assert reply.state == pb.TASK_STATE_COMPLETED
        assert reply.artifacts[0].parts[0].text == "hello"
        assert reply.artifacts[0].parts[1].data.struct_value["agent"] == "probe"
        assert reply.task_id

        events = [e async for e in stub.InvokeStream(text_request("abc", "spell"), timeout=5)]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["started", "partial", "partial", "partial", "final"]
        assert [e.partial.parts[0].text for e in events[1:4]] == ["a", "b", "c"]
        # Without a final Result from the handler, the final event assembles the partials.
        assert events[-1].final.artifacts[0].parts[0].text == "abc"
        assert events[0].started.task_id == events[-1].final.task_id


async def test_first_skill_is_the_default() -> None:
    async with (
        running_agent(ProbeAgent()) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        reply = await agent_pb2_grpc.AgentStub(channel).Invoke(text_request("x", skill=""))
        assert reply.skill == "echo"


@pytest.mark.parametrize(
    ("request_message", "code", "fragment"),
    [
        (text_request("x", skill="nope"), grpc.StatusCode.NOT_FOUND, "no skill 'nope'"),
        (pb.InvokeRequest(skill="echo", message=pb.Message(parts=[pb.Part()])),
         grpc.StatusCode.INVALID_ARGUMENT, "message.parts[0]: part has no content"),
        (pb.InvokeRequest(skill="spell"), grpc.StatusCode.INVALID_ARGUMENT,
         "message.parts: a non-empty text part is required"),
        (pb.InvokeRequest(skill="echo", message=pb.Message(parts=[pb.Part(text="x")] * 9)),
         grpc.StatusCode.INVALID_ARGUMENT, "9 parts given; the limit is 8"),
    ],
)  # fmt: skip
async def test_bad_input_gets_a_status_naming_the_field(
    request_message: pb.InvokeRequest, code: grpc.StatusCode, fragment: str
) -> None:
    async with running_agent(ProbeAgent(), max_parts=8) as (_, address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            for call in (stub.Invoke, _drain_stream(stub)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request_message, timeout=5)
                assert info.value.code() == code
                assert fragment in (info.value.details() or "")


def _drain_stream(stub: agent_pb2_grpc.AgentAsyncStub):  # type: ignore[no-untyped-def]
    async def call(request: pb.InvokeRequest, timeout: float) -> list[pb.InvokeEvent]:
        return [e async for e in stub.InvokeStream(request, timeout=timeout)]

    return call


async def test_oversized_message_is_refused_by_size() -> None:
    async with running_agent(ProbeAgent(), max_message_bytes=64 * 1024) as (_, address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(text_request("x" * (65 * 1024)), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Just under the limit passes.
            reply = await stub.Invoke(text_request("y" * (60 * 1024)), timeout=5)
            assert len(reply.artifacts[0].parts[0].text) == 60 * 1024


async def test_unexpected_error_is_internal_with_a_reference_and_no_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        running_agent(ProbeAgent()) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await agent_pb2_grpc.AgentStub(channel).Invoke(text_request("x", "crash"))
    details = info.value.details() or ""
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert details.startswith("internal error (ref ")
    for leak in ("secret", "/etc", "Traceback", "RuntimeError", "token"):
        assert leak not in details
    ref = details.removeprefix("internal error (ref ").rstrip(")")
    logged = [r for r in caplog.records if getattr(r, "ref", None) == ref]
    assert logged
    assert logged[0].exc_info is not None


async def test_deadline_reaches_the_handler() -> None:
    agent = ProbeAgent()
    async with running_agent(agent) as (_, address), grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        await stub.Invoke(text_request("x"), timeout=7)
        await stub.Invoke(text_request("x"))
    with_deadline, without = agent.seen_remaining
    assert with_deadline is not None
    assert 0 < with_deadline <= 7.2  # gRPC may round the grpc-timeout header up a little
    assert without is None


async def test_health_and_reflection_list_the_services() -> None:
    async with running_agent(ProbeAgent()) as (_, address):
        assert await health_status(address) == SERVING
        assert await health_status(address, "agentmesh.v1.Agent") == SERVING
        async with grpc.aio.insecure_channel(address) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
            names = {s.name for s in replies[0].list_services_response.service}
            # The same servicer answers under the v1 name that newer clients try first.
            v1 = channel.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            v1_replies = [r async for r in v1(iter([request]))]
    assert {
        "agentmesh.v1.Agent",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= names
    assert {s.name for s in v1_replies[0].list_services_response.service} == names


async def test_reflection_describes_every_service_it_lists() -> None:
    async with (
        running_agent(ProbeAgent()) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listed = [
            r
            async for r in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        ]
        names = [s.name for s in listed[0].list_services_response.service]
        asks = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=n) for n in names]
        replies = [r async for r in stub.ServerReflectionInfo(iter(asks))]
    for name, reply in zip(names, replies, strict=True):
        assert reply.WhichOneof("message_response") == "file_descriptor_response", name
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in reply.file_descriptor_response.file_descriptor_proto
        ]
        services = {f"{f.package}.{s.name}" for f in files for s in f.service}
        assert name in services


async def test_health_list_gives_every_service_and_follows_the_drain() -> None:
    server = agent_server(ProbeAgent(), ServerSettings(port=0, drain_delay=1))
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def statuses() -> dict[str, int]:
                listed = await stub.List(health_pb2.HealthListRequest(), timeout=5)
                return {name: reply.status for name, reply in listed.statuses.items()}

            assert await statuses() == {"": SERVING, "agentmesh.v1.Agent": SERVING}
            stopping = asyncio.ensure_future(server.stop())

            async def draining() -> bool:
                # Within drain_delay the server still answers, and says it is draining.
                return await statuses() == {"": NOT_SERVING, "agentmesh.v1.Agent": NOT_SERVING}

            await wait_until(draining)
            await stopping
    finally:
        await server.stop(0)


async def test_drain_reports_not_serving_finishes_in_flight_and_refuses_new_calls() -> None:
    agent = ProbeAgent()
    server = agent_server(agent, ServerSettings(port=0, drain_delay=2, grace_period=30))
    port = await server.start()
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        in_flight = asyncio.ensure_future(stub.Invoke(text_request("x", "hold"), timeout=60))
        await agent.entered.wait()
        stopping = asyncio.ensure_future(server.stop())
        await wait_until(lambda: _is_not_serving(address))
        assert not in_flight.done()
        agent.release.set()
        reply = await in_flight
        assert reply.artifacts[0].parts[0].text == "released"
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Invoke(text_request("too late"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def _is_not_serving(address: str) -> bool:
    return bool(await health_status(address) == NOT_SERVING)


async def test_port_clash_is_a_clear_error() -> None:
    async with running_agent(ProbeAgent()) as (server, _):
        clash = agent_server(ProbeAgent(), ServerSettings(port=server.port))
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{server.port}"):
            await clash.start()
