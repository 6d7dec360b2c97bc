"""The A2A card carries the skills' JSON Schemas (a card extension) and names their options."""

from __future__ import annotations

from a2a.types import a2a_pb2 as a2a
from a2atest import a2a_client
from google.protobuf import json_format
from meshtest import running_mesh

from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.v1 import gateway_pb2


async def test_the_a2a_card_carries_the_schemas() -> None:
    async with running_mesh(SummarizerAgent()) as mesh:
        await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest(refresh=True))
        async with a2a_client(mesh.address) as client:
            card = await client.get_extended_agent_card(a2a.GetExtendedAgentCardRequest())
        skill = next(s for s in card.skills if s.id == "summarizer/summarize")
        assert "[options: " in skill.description
        assert "sentences (integer)" in skill.description
        extension = next(
            e for e in card.capabilities.extensions if e.uri.endswith("/skill-schemas/v1")
        )
        schemas = json_format.MessageToDict(extension.params)["summarizer/summarize"]
        assert schemas["options"]["properties"]["sentences"]["maximum"] == 50
