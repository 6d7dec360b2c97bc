"""The gateway routing core against real agents on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from meshtest import (
    ProbeAgent,
    free_port,
    running_agent,
    running_gateway,
    running_mesh,
    wait_until,
)

from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


def request(text: str = "hi", *, agent: str = "", skill: str = "") -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text=text)])
    )


async def test_routes_by_name_and_by_skill_and_lists_cards() -> None:
    async with running_mesh(ProbeAgent("alpha"), ProbeAgent("beta")) as mesh:
        stub = mesh.stub
        reply = await stub.Invoke(request("one", agent="beta"), timeout=5)
        assert reply.agent == "beta"
        assert reply.artifacts[0].parts[0].text == "one"

        # By skill alone: both offer "echo"; calls spread over them.
        answered = {(await stub.Invoke(request(skill="echo"), timeout=5)).agent for _ in range(4)}
        assert answered == {"alpha", "beta"}

        listing = await stub.ListAgents(gateway_pb2.ListAgentsRequest(refresh=True))
    by_name = {a.name: a for a in listing.agents}
    assert set(by_name) == {"alpha", "beta"}
    assert by_name["alpha"].status == gateway_pb2.AGENT_STATUS_SERVING
    assert by_name["alpha"].card.name == "alpha"
    assert "spell" in {s.id for s in by_name["beta"].card.skills}
    assert list(by_name["beta"].addresses) == [f"127.0.0.1:{mesh.servers['beta'].port}"]


@pytest.mark.parametrize(
    ("message", "code", "fragment"),
    [
        (request(agent="ghost"), grpc.StatusCode.NOT_FOUND, "agent 'ghost' is not registered"),
        (request(skill="translate"), grpc.StatusCode.NOT_FOUND, "no registered agent offers"),
        (request(agent="alpha", skill="fly"), grpc.StatusCode.NOT_FOUND, "has no skill 'fly'"),
        (request(), grpc.StatusCode.INVALID_ARGUMENT, "agent: set agent or skill"),
        (request(agent="Bad Name!"), grpc.StatusCode.INVALID_ARGUMENT, "agent: must be"),
        (request(agent="alpha", skill="echo" * 40), grpc.StatusCode.INVALID_ARGUMENT, "skill:"),
        # The agent's own validation comes back through the gateway unchanged.
        (pb.InvokeRequest(agent="alpha", skill="spell"), grpc.StatusCode.INVALID_ARGUMENT,
         "message.parts: a non-empty text part is required"),
    ],
)  # fmt: skip
async def test_bad_targets_get_clear_statuses(
    message: pb.InvokeRequest, code: grpc.StatusCode, fragment: str
) -> None:
    async with running_mesh(ProbeAgent("alpha")) as mesh:
        stub = mesh.stub
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Invoke(message, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            _ = [e async for e in stub.InvokeStream(message, timeout=5)]
    for info in (unary, streamed):
        assert info.value.code() == code
        assert fragment in (info.value.details() or "")


async def test_stopped_agent_is_unavailable_by_name_within_the_deadline() -> None:
    dead_address = f"127.0.0.1:{free_port()}"  # nothing listens here
    async with running_gateway({"gone": [dead_address]}) as (gateway, gw):
        async with grpc.aio.insecure_channel(gw) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(request(agent="gone"), timeout=5)
            listing = await stub.ListAgents(gateway_pb2.ListAgentsRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"agent 'gone' at {dead_address} is unavailable" in (info.value.details() or "")
    assert listing.agents[0].status == gateway_pb2.AGENT_STATUS_UNAVAILABLE
    assert gateway.registry.get("gone") is not None


async def test_agent_stopped_while_gateway_runs_becomes_unavailable() -> None:
    agent = ProbeAgent("alpha")
    async with running_mesh(agent) as mesh:
        stub = mesh.stub
        assert (await stub.Invoke(request(agent="alpha"), timeout=5)).agent == "alpha"
        await mesh.servers["alpha"].stop(0)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Invoke(request(agent="alpha"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "agent 'alpha'" in (info.value.details() or "")


async def test_the_callers_remaining_deadline_goes_downstream_minus_a_margin() -> None:
    agent = ProbeAgent("alpha")
    async with running_mesh(agent, deadline_margin=3.0) as mesh:
        stub = mesh.stub
        await stub.Invoke(request(agent="alpha"), timeout=10)
        await stub.Invoke(request(agent="alpha"))  # no deadline: the default applies
    with_deadline, defaulted = agent.seen_remaining
    assert with_deadline is not None
    # 10 s minus the 3 s margin; gRPC may round the grpc-timeout header up a little.
    assert 5 < with_deadline < 7.5
    assert defaulted is not None
    assert 29 < defaulted < 31  # the 30 s default, not the 10 s of the first call


async def test_slow_agent_hits_the_callers_deadline_and_is_cancelled() -> None:
    agent = ProbeAgent("alpha")
    async with running_mesh(agent) as mesh:
        stub = mesh.stub
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Invoke(request(agent="alpha", skill="hold"), timeout=0.5)
        await asyncio.wait_for(agent.cancelled.wait(), 10)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_streams_pass_through_event_by_event() -> None:
    async with running_mesh(ProbeAgent("alpha")) as mesh:
        stub = mesh.stub
        events = [
            e
            async for e in stub.InvokeStream(
                request("mesh", agent="alpha", skill="spell"), timeout=5
            )
        ]
    assert [e.WhichOneof("event") for e in events] == ["started"] + ["partial"] * 4 + ["final"]
    assert "".join(e.partial.parts[0].text for e in events[1:5]) == "mesh"
    assert events[-1].final.artifacts[0].parts[0].text == "mesh"


async def test_client_cancelling_a_stream_cancels_the_agent() -> None:
    agent = ProbeAgent("alpha")
    async with running_mesh(agent) as mesh:
        stub = mesh.stub
        call = stub.InvokeStream(request(agent="alpha", skill="hold"), timeout=30)
        first = await call.read()
        assert isinstance(first, pb.InvokeEvent)
        assert first.WhichOneof("event") == "started"
        await agent.entered.wait()
        call.cancel()
        await asyncio.wait_for(agent.cancelled.wait(), 10)


async def test_an_agent_that_starts_after_the_gateway_is_picked_up() -> None:
    port = free_port()
    async with running_gateway({"late": [f"127.0.0.1:{port}"]}) as (gateway, gw):
        entry = gateway.registry.get("late")
        assert entry is not None
        assert entry.card is None
        async with running_agent(ProbeAgent("late"), port=port):
            # Retried with a short backoff, not after the 30 s refresh interval.
            await wait_until(lambda: entry.card is not None)
            async with grpc.aio.insecure_channel(gw) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                listing = await stub.ListAgents(gateway_pb2.ListAgentsRequest())
                reply = await stub.Invoke(request(skill="spell"), timeout=5)
    assert listing.agents[0].status == gateway_pb2.AGENT_STATUS_SERVING
    assert listing.agents[0].card.name == "late"
    assert reply.agent == "late"  # routable by skill once its card is known
