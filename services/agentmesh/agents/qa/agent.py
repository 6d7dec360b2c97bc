"""The qa service: answers a question from a supplied context by BM25 retrieval."""

from __future__ import annotations

import asyncio

from agentmesh.agents.qa import logic
from agentmesh.runtime import Agent, AgentCard, InvalidInput, Request, Result, Skill, TextPart


class QAAgent(Agent):
    card = AgentCard(
        name="qa",
        version="1.0.0",
        description="Answers a question from the context you supply, with supporting sentences.",
        skills=(
            Skill(
                id="answer",
                name="Answer from context",
                description="Question in options.question (or the first text part, or a data "
                "part {question, context}); context in the text. Option: top_k (1-20).",
                tags=("text", "question-answering", "retrieval"),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        question, context = _question_and_context(request)
        top_k = request.int_option("top_k", 3, minimum=1, maximum=logic.MAX_TOP_K)
        answer = await asyncio.to_thread(logic.answer, question, context, top_k=top_k)
        return Result.of(text=answer.answer, data=answer.to_dict())


def _question_and_context(request: Request) -> tuple[str, str]:
    """Accept the three documented ways of sending a question with its context."""
    data = request.message.data
    if isinstance(data, dict) and ("question" in data or "context" in data):
        question, context = data.get("question"), data.get("context")
        if not isinstance(question, str) or not isinstance(context, str):
            raise InvalidInput("message.parts.data", "question and context must be strings")
        return question, context
    if "question" in request.options:
        return request.str_option("question", ""), request.text
    texts = [p.text for p in request.message.parts if isinstance(p, TextPart)]
    if len(texts) >= 2:
        return texts[0], "\n\n".join(texts[1:])
    raise InvalidInput(
        "options.question",
        "give the question in options.question (context as text), as the first of two "
        "text parts, or as a data part {question, context}",
    )
