"""Skill schemas: declared on the skill as a typed model, enforced by the agent before its
handler runs, carried on the card to ListAgents and the A2A card, and checked by the
workflow validator and FanOut before any agent is called."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from meshtest import running_agent, running_mesh
from pydantic import BaseModel, Field

from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, wire
from agentmesh.v1 import agent_pb2, agent_pb2_grpc, gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

TEXT = "The cat sat on the mat. The dog lay by the door. A bird sang in the tree."


class CountOptions(BaseModel):
    sentences: int = Field(3, ge=1, le=50)
    style: str = "plain"


class CountingAgent(Agent):
    """Counts the calls its handler receives (none must arrive when options are refused)."""

    card = AgentCard(
        name="counting",
        description="test agent with declared options",
        skills=(Skill(id="count", options=CountOptions),),
    )

    def __init__(self) -> None:
        self.calls = 0

    async def invoke(self, request: Request) -> Result:
        self.calls += 1
        return Result.of(text=request.text)


def invoke_request(text: str, **options: object) -> pb.InvokeRequest:
    request = pb.InvokeRequest(message=pb.Message(parts=[pb.Part(text=text)]))
    wire.dict_to_struct(options, request.options)
    return request


async def test_the_agent_refuses_an_unknown_option_listing_the_known_ones() -> None:
    async with running_agent(SummarizerAgent()) as (_, address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Invoke(invoke_request(TEXT, sentence=1), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            detail = caught.value.details() or ""
            assert detail.startswith("options.sentence: unknown option")
            assert "did you mean 'sentences'?" in detail
            assert "takes: max_tokens, model, ratio, sentences, temperature" in detail

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Invoke(invoke_request(TEXT, sentences="two"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == "options.sentences: must be an integer"

            reply = await stub.Invoke(invoke_request(TEXT, sentences=1), timeout=10)
            assert reply.state == pb.TASK_STATE_COMPLETED


async def test_a_mistyped_option_never_reaches_the_handler() -> None:
    agent = CountingAgent()
    async with running_agent(agent) as (_, address):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            for options, expected in (
                ({"style": 3}, "options.style: must be a string"),
                ({"sentences": True}, "options.sentences: must be an integer"),
                ({"sentences": 2.5}, "options.sentences: must be an integer"),
                ({"sentences": 99}, "options.sentences: must be from 1 to 50"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Invoke(invoke_request("x", **options), timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert caught.value.details() == expected
            assert agent.calls == 0
            card = await stub.GetCard(agent_pb2.GetCardRequest(), timeout=10)
            schema = wire.struct_to_dict(card.skills[0].options_schema)
            assert schema["properties"]["sentences"]["maximum"] == 50


async def test_list_agents_shows_each_skills_options_schema() -> None:
    async with running_mesh(SummarizerAgent(), CountingAgent()) as mesh:
        listing = await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(refresh=True))
        cards = {a.name: a.card for a in listing.agents}
        summarize = cards["summarizer"].skills[0]
        assert summarize.HasField("options_schema")
        properties = wire.struct_to_dict(summarize.options_schema)["properties"]
        assert properties["sentences"]["type"] == "integer"
        assert properties["sentences"]["maximum"] == 50
        # The JSON form (what `agentmesh agents --json` prints) carries it too.
        as_json = json.dumps(json_format.MessageToDict(listing))
        assert '"optionsSchema"' in as_json


async def test_a_workflow_with_an_unknown_option_is_refused_before_any_call() -> None:
    agent = CountingAgent()
    async with running_mesh(agent) as mesh:
        await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(refresh=True))
        for options, fragment in (
            ({"sentence": 1}, "steps.first.options.sentence: unknown option (did you mean "),
            ({"sentences": "two"}, "steps.first.options.sentences: must be an integer"),
        ):
            definition: dict[str, Any] = {
                "name": "typo",
                "steps": [
                    {"id": "ok", "agent": "counting", "skill": "count"},
                    {"id": "first", "agent": "counting", "skill": "count", "options": options},
                ],
            }
            request = gateway_pb2.RunWorkflowRequest(input=pb.Message(parts=[pb.Part(text="x")]))
            request.definition.update(definition)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in mesh.stub.RunWorkflow(request, timeout=10):
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert fragment in (caught.value.details() or "")
        # A templated value is known only at run time: its name is checked, not its type.
        definition = {
            "name": "templated",
            "steps": [
                {
                    "id": "first",
                    "agent": "counting",
                    "skill": "count",
                    "options": {"style": "${input.text}"},
                }
            ],
        }
        request = gateway_pb2.RunWorkflowRequest(input=pb.Message(parts=[pb.Part(text="x")]))
        request.definition.update(definition)
        events = [e async for e in mesh.stub.RunWorkflow(request, timeout=10)]
        assert events[-1].WhichOneof("event") == "final"
        assert agent.calls == 1


async def test_fan_out_checks_literal_options_against_every_legs_card() -> None:
    agent = CountingAgent()
    async with running_mesh(agent) as mesh:
        await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(refresh=True))
        request = gateway_pb2.FanOutRequest(
            targets=[gateway_pb2.Target(agent="counting", skill="count")],
            message=pb.Message(parts=[pb.Part(text="x")]),
        )
        request.options.update({"stile": "bold"})
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.stub.FanOut(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "options.stile: unknown option (did you mean 'style'?)" in (
            caught.value.details() or ""
        )
        assert agent.calls == 0
