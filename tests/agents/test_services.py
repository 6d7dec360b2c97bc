"""The offline reference agents served for real, called through the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from meshtest import running_mesh

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.agents.code_reviewer.agent import CodeReviewerAgent
from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.agents.memory.agent import MemoryAgent
from agentmesh.agents.qa.agent import QAAgent
from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError, Final, Partial, Started
from agentmesh.runtime import Agent

ARTICLE = (
    "Solar power capacity grew faster than any other energy source last year. "
    "Cheap panels made from silicon drove most of that growth. "
    "My neighbour painted his fence blue on Tuesday. "
    "Analysts expect solar capacity to keep growing as panel prices fall further. "
    "Storage batteries are the missing piece for solar power at night."
)


@contextlib.asynccontextmanager
async def mesh() -> AsyncIterator[AsyncClient]:
    agents: list[Agent] = [
        SummarizerAgent(), SentimentAgent(), KeywordsAgent(),
        CalculatorAgent(), CodeReviewerAgent(), QAAgent(), MemoryAgent(),
    ]  # fmt: skip
    async with running_mesh(*agents) as served, AsyncClient(served.address, timeout=10) as client:
        yield client


async def test_each_agent_does_its_job_through_the_gateway() -> None:
    async with mesh() as client:
        listed = await client.list_agents()
        assert {a.name for a in listed} == {
            "summarizer", "sentiment", "keywords", "calculator", "code-reviewer", "qa", "memory",
        }  # fmt: skip
        assert all(a.card is not None and a.card.skills for a in listed)

        assert (await client.invoke("calculator", "2*(3+4)**2")).text == "98"
        assert (await client.invoke("skill:evaluate", "7/2")).data["value"] == 3.5

        summary = await client.invoke("summarizer", ARTICLE, options={"sentences": 2})
        assert summary.data["sentence_count"] == 5
        assert len(summary.data["sentences"]) == 2
        assert "fence" not in summary.text

        mood = await client.invoke("sentiment", "The service was not good. The food was awful!")
        assert mood.data["label"] == "negative"

        found = await client.invoke("keywords/entities", "Mail ops@example.com by 2024-05-01.")
        kinds = {e["kind"] for e in found.data["entities"]}
        assert {"email", "date"} <= kinds

        review = await client.invoke("code-reviewer", "import os\nx = eval(input())\n")
        assert review.data["max_severity"] == "high"
        assert any(f["line"] == 2 and f["severity"] == "high" for f in review.data["findings"])

        answer = await client.invoke(
            "qa", ARTICLE, options={"question": "What drove the growth of solar?"}
        )
        assert "panels" in answer.text
        assert answer.data["supporting"]

        for sentence in ARTICLE.split(". "):
            await client.invoke("memory/remember", sentence, context_id="solar")
        recalled = await client.invoke("memory", "fence colour", skill="recall", context_id="solar")
        assert recalled.text.startswith("My neighbour painted his fence blue")


async def test_streaming_through_the_gateway_ends_with_the_final_reply() -> None:
    async with mesh() as client:
        events = [e async for e in client.stream("summarizer", ARTICLE)]
    assert isinstance(events[0], Started)
    assert events[0].agent == "summarizer"
    assert isinstance(events[-1], Final)
    assert events[-1].reply.text
    assert not [e for e in events if isinstance(e, Partial)]  # one-shot agent: no partials


@pytest.mark.parametrize(
    ("target", "text", "options", "code", "fragment"),
    [
        ("calculator", "1/0", {}, "INVALID_ARGUMENT", "division by zero"),
        ("calculator", "__import__('os')", {}, "INVALID_ARGUMENT", "expression"),
        ("calculator", "9**9**9", {}, "RESOURCE_EXHAUSTED", "expression"),
        ("summarizer", "Some text.", {"sentences": 0}, "INVALID_ARGUMENT", "options.sentences"),
        ("summarizer", "Some text.", {"sentences": "two"}, "INVALID_ARGUMENT", "options.sentences"),
        ("summarizer", "   ", {}, "INVALID_ARGUMENT", "message.parts"),
        ("code-reviewer", "def (:", {}, "INVALID_ARGUMENT", "syntax error at line 1"),
        ("qa", "context only", {}, "INVALID_ARGUMENT", "options.question"),
        ("keywords", "x" * 200_001, {}, "INVALID_ARGUMENT", "the limit is 200000"),
    ],
)
async def test_bad_input_is_refused_with_a_status_naming_it(
    target: str, text: str, options: dict[str, object], code: str, fragment: str
) -> None:
    async with mesh() as client:
        with pytest.raises(CallError) as info:
            await client.invoke(target, text, options=options)
    assert info.value.code.name == code
    assert fragment in info.value.message
