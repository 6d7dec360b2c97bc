"""Inputs shaped to be slow, sent to the reference agents on real servers (port 0).

Each is answered within a generous deadline (the old quadratic splitter, e-mail
pattern and reviewer needed minutes at these sizes), and the agent's health
answers from a concurrent task the whole time. The time each takes against
ordinary text of its size is measured by ``python -m bench.agents_worst``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshtest import running_agent

from agentmesh.agents.code_reviewer import logic as reviewer_logic
from agentmesh.agents.code_reviewer.agent import CodeReviewerAgent
from agentmesh.agents.keywords import logic as keywords_logic
from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.agents.qa import logic as qa_logic
from agentmesh.agents.qa.agent import QAAgent
from agentmesh.agents.sentiment import logic as sentiment_logic
from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.agents.summarizer import logic as summarizer_logic
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.runtime import Agent
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

pytestmark = pytest.mark.slow

DEADLINE = 60.0


def nested_eval(size: int, depth: int = 100) -> str:
    """``eval(eval(...[1,1,...]...))``: ``depth`` evals around a list, ``size`` bytes in all."""
    items = (size - depth * 6 - 2) // 2
    return "eval(" * depth + "[" + "1," * items + "]" + ")" * depth


CASES: dict[str, tuple[Callable[[], Agent], str, dict[str, str]]] = {
    "sentiment: 16 kB of dots": (SentimentAgent, "." * 16_000, {}),
    "sentiment: dots then a letter, at the limit": (
        SentimentAgent,
        "." * (sentiment_logic.MAX_TEXT_CHARS - 1) + "a",
        {},
    ),
    "keywords: 'a%' * 20000": (KeywordsAgent, "a%" * 20_000, {}),
    "keywords: 'a%' at the limit": (KeywordsAgent, "a%" * (keywords_logic.MAX_TEXT_CHARS // 2), {}),
    "summarizer: dots then a letter, at the limit": (
        SummarizerAgent,
        "." * (summarizer_logic.MAX_TEXT_CHARS - 1) + "a",
        {},
    ),
    "qa: dots then a letter, at the limit": (
        QAAgent,
        "." * (qa_logic.MAX_CONTEXT_CHARS - 1) + "a",
        {"question": "What is here?"},
    ),
    "code reviewer: nested eval around a list, at the limit": (
        CodeReviewerAgent,
        nested_eval(reviewer_logic.MAX_SOURCE_BYTES, depth=150),
        {},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_input_is_answered_while_health_keeps_answering(case: str) -> None:
    make, text, options = CASES[case]
    request = pb.InvokeRequest(message=pb.Message(parts=[pb.Part(text=text)]))
    request.options.update(options)
    async with (
        running_agent(make(), max_text_chars=1_000_000) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        statuses: list[int] = []
        first = asyncio.Event()
        done = asyncio.Event()

        async def check_health() -> None:
            while not done.is_set():
                # A starved event loop would miss this deadline and fail the test.
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                statuses.append(reply.status)
                first.set()
                await asyncio.sleep(0.02)

        checker = asyncio.ensure_future(check_health())
        await asyncio.wait(
            [checker, asyncio.ensure_future(first.wait())], return_when="FIRST_COMPLETED"
        )
        try:
            reply = await agent_pb2_grpc.AgentStub(channel).Invoke(request, timeout=DEADLINE)
        finally:
            done.set()
        await checker  # raises if a health check failed
        final = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert reply.state == pb.TASK_STATE_COMPLETED
    assert statuses
    assert set(statuses) == {health_pb2.HealthCheckResponse.SERVING}
    assert final.status == health_pb2.HealthCheckResponse.SERVING
