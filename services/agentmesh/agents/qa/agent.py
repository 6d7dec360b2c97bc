"""The qa service: answers a question from a supplied context, by BM25 retrieval offline
and by the configured model over the retrieved passages when there is one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from agentmesh.agents._history import earlier_turns
from agentmesh.agents._model import ModelAgent, ModelOptions, SkillPrompt
from agentmesh.agents.qa import logic
from agentmesh.llm import LLMClient
from agentmesh.runtime import DataPart, InvalidInput, Request, Result, StreamItem, TextPart, offload
from agentmesh.runtime.types import AgentCard, JSONValue, Skill

#: Contexts up to this size go to the model whole; longer ones as their best passages.
MODEL_CONTEXT_CHARS = 24_000

ROLE_PROMPT = (
    "You are ${agent}. Answer the question using only the context the user gives. If the "
    "context does not contain the answer, say so instead of guessing. Answer briefly, in "
    "${language}."
)
USER_PROMPT = "Context:\n<context>\n${context}\n</context>\n\nQuestion: ${question}"


class AnswerOptions(ModelOptions):
    """Options of the answer skill."""

    question: str | None = Field(None, description="the question (the text is the context)")
    top_k: int = Field(3, ge=1, le=logic.MAX_TOP_K, description="supporting sentences returned")


class QAAgent(ModelAgent):
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
                options=AnswerOptions,
            ),
        ),
        takes_history=True,
    )
    prompts = {
        "answer": SkillPrompt(
            ROLE_PROMPT,
            USER_PROMPT,
            {"language": "the language of the question"},
            supplied=frozenset({"context", "question"}),
        )
    }

    async def offline(self, request: Request) -> Result:
        question, context = _question_and_context(request)
        top_k = request.int_option("top_k", 3, minimum=1, maximum=logic.MAX_TOP_K)
        answer = await offload(logic.answer, question, context, top_k=top_k)
        return Result.of(text=answer.answer, data=answer.to_dict())

    async def with_model(self, request: Request, llm: LLMClient) -> AsyncIterator[StreamItem]:
        question, context = _question_and_context(request)
        top_k = request.int_option("top_k", 3, minimum=1, maximum=logic.MAX_TOP_K)
        # Retrieval validates the inputs and ranks the passages the answer rests on.
        retrieved = await offload(logic.answer, question, context, top_k=logic.MAX_TOP_K)
        if len(context) <= MODEL_CONTEXT_CHARS:
            shown = context
        else:  # the best passages, in the order they appear in the context
            shown = "\n".join(p.text for p in sorted(retrieved.supporting, key=lambda p: p.index))
        earlier = earlier_turns(request.message)
        chat = self.chat(request, earlier=earlier, context=shown, question=question)

        def data(answer: str) -> JSONValue:
            return {
                "answer": answer,
                "supporting": [p.to_dict() for p in retrieved.supporting[:top_k]],
                "context_given": "whole" if shown is context else "passages",
            }

        async for item in self.stream_answer(request, llm, chat, data=data):
            yield item


def _question_and_context(request: Request) -> tuple[str, str]:
    """Accept the three documented ways of sending a question with its context."""
    data = next(
        (
            p.data
            for p in request.message.parts
            if isinstance(p, DataPart) and isinstance(p.data, dict) and "history" not in p.data
        ),
        None,
    )
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
