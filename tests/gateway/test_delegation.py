"""Delegation: a handler calls the mesh through ``request.mesh``; the call goes through the
gateway with the remaining deadline and a hop count, and a loop ends at the depth limit."""

from __future__ import annotations

import grpc
import pytest

from agentmesh.client import CallError
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.testing import RecordingAgent, running_mesh
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


class Relay(Agent):
    """Passes its text on to ``target`` through the mesh and reports what came back."""

    def __init__(self, name: str, target: str) -> None:
        self.card = AgentCard(name=name, description="delegates", skills=(Skill(id="relay"),))
        self.target = target
        self.seen_hops: list[int] = []

    async def invoke(self, request: Request) -> Result:
        self.seen_hops.append(request.hops)
        answer = await request.mesh.invoke(
            self.target, request.text, options={"via": self.card.name}
        )
        return Result.of(text=f"{self.card.name}> {answer.text}", data={"hops": request.hops})


class StreamRelay(Relay):
    async def invoke(self, request: Request) -> Result:
        texts = []
        async for item in request.mesh.stream(self.target, request.text):
            if isinstance(item, Result):
                texts.append(item.text)
        return Result.of(text=" ".join(texts))


async def test_a_handler_calls_another_agent_through_the_gateway() -> None:
    recorder = RecordingAgent("notes", skills=["store"])
    relay = Relay("relay", "notes/store")
    async with running_mesh(relay, recorder, delegation=True) as mesh:
        reply = await mesh.client.invoke("relay", "hello", timeout=5)
        assert reply.text == "relay> hello"
        call = recorder.assert_called(
            times=1, skill="store", text="hello", options={"via": "relay"}
        )
        assert call.hops == 1  # one delegation led to it
        assert relay.seen_hops == [0]
        remaining = call.time_remaining()
        assert remaining is not None  # the relay's deadline travelled with the call:
        assert remaining < 15  # the caller's 5 s, not the gateway's default 30 s
        # The gateway routed it like any call: it counts in the callee's picks.
        listing = await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest())
        assert {a.name for a in listing.agents} == {"relay", "notes"}


async def test_stream_through_the_mesh() -> None:
    recorder = RecordingAgent("notes", skills=["store"])
    async with running_mesh(StreamRelay("relay", "notes"), recorder, delegation=True) as mesh:
        reply = await mesh.client.invoke("relay", "streamed", timeout=20)
    assert reply.text == "streamed"
    recorder.assert_called(times=1, text="streamed")


async def test_a_delegation_loop_is_refused_at_the_depth_limit() -> None:
    ping, pong = Relay("ping", "pong"), Relay("pong", "ping")
    async with running_mesh(ping, pong, delegation=True, max_delegation_depth=3) as mesh:
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("ping", "ball", timeout=20)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "delegation depth 4 is over the gateway's limit of 3" in refused.value.message
    # ping (0), pong (1), ping (2), pong (3); the call at depth 4 never reached an agent.
    assert ping.seen_hops == [0, 2]
    assert pong.seen_hops == [1, 3]


async def test_an_agent_without_a_gateway_says_how_to_give_it_one() -> None:
    relay = Relay("relay", "notes")
    async with running_mesh(relay) as mesh:  # no delegation: the agents know no gateway
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("relay", "hi", timeout=20)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "AGENTMESH_GATEWAY" in refused.value.message


async def test_a_forged_hop_count_past_the_limit_is_refused_before_any_call() -> None:
    recorder = RecordingAgent("notes")
    async with running_mesh(recorder, max_delegation_depth=2) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Invoke(
                pb.InvokeRequest(agent="notes", message=pb.Message(parts=[pb.Part(text="x")])),
                metadata=(("x-agentmesh-hops", "3"),),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "delegation depth 3" in (refused.value.details() or "")
    assert recorder.calls == []
